"""Launching a rental: the reserve and the row in one transaction, then the provider call
(failing over across listings), a replayed launch resumed, an instance adopted by label.

No machine is ever lost: the row (status `provisioning`, locked price, listing,
provider) is written with the one-hour reserve *before* any provider call; our rental id
is the instance's label at the provider, and the provider's instance id is stored as soon
as it is known.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpurent import catalog, clock, ids, ssh_keys, wallet
from gpurent.errors import ApiError
from gpurent.listing import Listing, failover
from gpurent.providers import registry
from gpurent.providers.base import AllocateRequest, Instance, ProviderError
from gpurent.records import LaunchAnswer, Rental, RentalChanges
from gpurent.rentals import instances, settlement, views
from gpurent.store import money as money_store
from gpurent.store import rentals as store
from gpurent.telemetry import count, logger
from gpurent.templates import get_template
from gpurent.text import check_name

if TYPE_CHECKING:
    from gpurent.bodies import Launch  # the request body (`POST /v1/rentals`)

MAX_ATTEMPTS = 3  # listings tried per launch (failover)
ALLOCATION_LEASE = 60  # seconds a launch owns its allocation (a Lambda lives 29 s); a retry takes over after


def launch(user_id: str, body: Launch, idempotency_key: str | None) -> tuple[dict[str, Any], int]:
    """`POST /v1/rentals`: (answer, HTTP status)."""
    catalog.check_family(body.familyId)
    catalog.check_gpu_count(body.gpuCount)
    template = get_template(body.templateId)
    if template is None:
        raise ApiError("validation_failed", "templateId is not a known template", {"templateId": "unknown template"})
    region = catalog.check_region(body.region)
    name = check_name(body.name) if body.name is not None else None

    rental_id = ids.new_id("rent")
    description = {"op": "launch", "body": body.model_dump()}
    op_key = f"launch:{user_id}:{idempotency_key}" if idempotency_key else f"launch:{rental_id}"
    if idempotency_key:
        previous = money_store.get_op_marker(op_key)
        if previous is not None:
            if previous.fingerprint != wallet.fingerprint(description):
                raise wallet.IdempotencyMismatch()
            return _resume(user_id, str(previous.result.steps[0]["rentalId"]), op_key, previous.launch_answer)

    found = catalog.candidates(body.familyId, body.gpuCount, region)
    if not found:
        raise ApiError("model_unavailable", "No provider available for this config. Try again in 30 s, "
                       "another region or another family.")
    listing = found[0]
    price = listing.price_per_hour_cents
    if body.maxPricePerHourCents is not None and body.maxPricePerHourCents < price:
        raise ApiError("model_unavailable", f"No listing at or below maxPricePerHourCents "
                       f"({body.maxPricePerHourCents}); the cheapest is {price} cents per hour.",
                       {"cheapestPricePerHourCents": price})
    keys = ssh_keys.public_keys(user_id)
    now = clock.now()
    record = Rental(
        id=rental_id, user_id=user_id, name=name, status="provisioning", family_id=body.familyId,
        gpu_count=body.gpuCount, template_id=template.id, region_filter=region, price_per_hour_cents=price,
        listing_id=listing.id, provider=listing.provider, region=listing.region, region_code=listing.region_code,
        model=listing.model, offer=listing.snapshot(), created_at=now, reserve_cents=price,
        auto_stop_after_hours=body.autoStopAfterHours, max_total_cents=body.maxTotalCents,
        ssh_key_count=len(keys), version=1, idempotency_key=idempotency_key,
        allocating_until=now + ALLOCATION_LEASE, max_price_per_hour_cents=body.maxPricePerHourCents,
    )

    def planner(w: wallet.Wallet) -> list[wallet.Step]:
        step = wallet.plan_reserve(w, price)
        return [wallet.with_step_info(step, rentalId=rental_id)]

    try:
        result = wallet.apply(user_id, op_key, description, planner,
                              extras=lambda w, steps: [store.put_item(record), store.owner_item(rental_id, user_id)])
    except wallet.InsufficientBalance:
        raise ApiError("insufficient_balance", "Available balance is below the 1-hour reserve",
                       {"requiredCents": price}) from None
    if result.replayed:  # a concurrent duplicate won the race
        won = money_store.get_op_marker(op_key)
        return _resume(user_id, result.steps[0]["rentalId"], op_key, won.launch_answer if won else None)
    count("Launches")
    return _finish_launch(record, _allocate(record, keys, found), op_key)


def _warnings(r: Rental) -> list[str]:
    out = []
    if not r.ssh_key_count:
        out.append("No SSH key on file: the pod will not be reachable over SSH. Add one with POST /v1/ssh-keys "
                   "before launching.")
    quoted = r.quoted_price_per_hour_cents
    if quoted is not None and quoted != r.price_per_hour_cents:
        out.append(f"Placed at {r.price_per_hour_cents} cents per hour instead of the quoted {quoted} (the "
                   f"quoted listing was unavailable; your maxPricePerHourCents is {r.max_price_per_hour_cents}). "
                   "That rate is the one charged and reserved.")
    return out


def _unavailable(r: Rental) -> tuple[dict[str, Any], int]:
    return ({"error": "model_unavailable", "message": r.error or "No provider available",
             "details": {"rentalId": r.id}}, 400)


def _finish_launch(record: Rental, final: Rental, op_key: str) -> tuple[dict[str, Any], int]:
    """The launch's answer, kept on its operation marker (not on the rental: the rental item is
    rewritten every minute while it runs, so it carries nothing it does not need)."""
    if final.status == "failed":
        return _unavailable(final)
    answer = views.launch_answer(final, _warnings(final))
    money_store.set_launch_answer(op_key, answer)  # False: a concurrent duplicate answered first
    return dict(answer), 200


def _resume(user_id: str, rental_id: str, op_key: str, answer: LaunchAnswer | None) -> tuple[dict[str, Any], int]:
    """A replayed launch: the first answer if there is one; else, if the first attempt died
    before the provider call finished (its lease expired), finish the launch now."""
    if answer:
        return dict(answer), 200
    r = store.get(user_id, rental_id)
    if r is None:
        raise AssertionError("a launch marker points at a missing rental")
    if r.launch_answer:  # launched before answers moved to the marker
        return dict(r.launch_answer), 200
    if r.status == "failed" and not r.instance_id:
        return _unavailable(r)
    now = clock.now()
    if r.status != "provisioning" or r.instance_id or now < r.allocating_until:
        return dict(views.launch_answer(r, _warnings(r))), 200
    return _finish_launch(r, continue_launch(r), op_key)


def continue_launch(r: Rental, listed: instances.Listed | None = None) -> Rental:
    """Finish a launch whose first attempt died before recording an instance (its lease
    expired): take the lease, adopt an instance found under our label, else allocate."""
    try:
        r = store.update(r.user_id, r.id, {"allocating_until": clock.now() + ALLOCATION_LEASE},
                         ("provisioning",), r.version)
    except store.StaleRental as exc:
        return exc.current or r
    try:
        inst = instances.find_by_label(r, listed)
    except ProviderError:
        return r
    if inst is not None:
        return adopt(r, inst)
    tried = [r.offer] if r.offer is not None else []
    others = [c for c in catalog.candidates(r.family_id, r.gpu_count, r.region_filter)
              if c.id != r.listing_id and c.id not in r.attempts]
    return _allocate(r, ssh_keys.public_keys(r.user_id), [*tried, *others])


def adopt(r: Rental, inst: Instance) -> Rental:
    """Record an instance found under our label as this rental's."""
    try:
        return store.update(r.user_id, r.id, {"instance_id": inst.instance_id, "allocation_uncertain": None},
                            ("provisioning",))
    except store.StaleRental as exc:
        return exc.current or r


def _move_to(r: Rental, listing: Listing, tried: tuple[str, ...]) -> Rental | None:
    """The rental, now on `listing`; None when the wallet cannot cover the reserve at its price.

    At the same price only the listing changes. At another price (within the launch's
    `maxPricePerHourCents`) the rate and the one-hour reserve change with it, in one
    transaction: the difference moves between available and the reserve, the rental row
    is written conditioned on its version, and the quote is kept
    (`quotedPricePerHourCents`).
    """
    changes: RentalChanges = {
        "listing_id": listing.id, "provider": listing.provider, "region": listing.region,
        "region_code": listing.region_code, "model": listing.model, "offer": listing.snapshot(),
        "attempts": tried,
    }
    new_price = listing.price_per_hour_cents
    if new_price == r.price_per_hour_cents:
        return store.update(r.user_id, r.id, changes, ("provisioning",))
    delta = new_price - r.reserve_cents
    changes.update({"price_per_hour_cents": new_price, "reserve_cents": new_price,
                    "quoted_price_per_hour_cents": r.quoted_price_per_hour_cents or r.price_per_hour_cents})

    def planner(w: wallet.Wallet) -> list[wallet.Step]:
        if delta > 0:
            return [wallet.plan_reserve(w, delta)]
        if delta < 0:
            return [wallet.plan_release(w, -delta)]
        return []

    try:
        wallet.apply(
            r.user_id, f"reprice:{r.id}:{listing.id}",
            {"op": "reprice", "rental": r.id, "listing": listing.id, "from": r.reserve_cents, "to": new_price},
            planner, extras=lambda w, steps: [store.update_item(r.user_id, r.id, changes, ("provisioning",),
                                                                r.version)])
    except wallet.InsufficientBalance:
        logger.info("failover listing too dear for the wallet", extra={"rentalId": r.id, "listingId": listing.id})
        return None
    except (wallet.BusinessConditionFailed, wallet.IdempotencyMismatch):
        found = store.get(r.user_id, r.id)
        assert found is not None
        return found
    count("LaunchReprices")
    found = store.get(r.user_id, r.id)
    assert found is not None
    return found


def _allocate(record: Rental, public_keys: list[str], candidates: list[Listing]) -> Rental:
    """Allocate at the provider, failing over on capacity-like refusals; returns the rental."""
    user_id, rental_id = record.user_id, record.id
    template = get_template(record.template_id)
    assert template is not None
    tried: list[str] = []
    current = record
    last_error = "No provider available for this config"
    ceiling = record.max_price_per_hour_cents or record.quoted_price_per_hour_cents or record.price_per_hour_cents
    for listing in failover(candidates, ceiling, MAX_ATTEMPTS):
        if listing.id != current.listing_id:
            # Record the next attempt before calling its provider (at another price: the
            # rental's rate and reserve move with it, in one money transaction).
            moved = _move_to(current, listing, tuple(tried))
            if moved is None:
                tried.append(listing.id)
                last_error = ("Provision failed: available balance does not cover the 1-hour reserve at "
                              f"{listing.price_per_hour_cents} cents per hour")
                continue
            current = moved
            if current.status != "provisioning":
                return current  # stopped meanwhile: nothing allocated
        offer = current.offer if current.offer is not None else listing  # a provisioning rental has its offer
        req = AllocateRequest(rental_id=rental_id, offer=offer.to_offer(), image=template.image,
                              start_command=template.start_command, ssh_public_keys=tuple(public_keys))
        try:
            instance_id = instances.run(registry.adapter(listing.provider).allocate(req))
        except ProviderError as exc:
            tried.append(listing.id)
            last_error = f"Provision failed: {exc}"
            logger.warning("allocate refused", extra={"rentalId": rental_id, "provider": exc.provider,
                                                      "kind": exc.kind})
            if exc.kind == "transient":
                # A timeout or a 5xx: the instance may exist. Look for it under our label;
                # if it is there, it is ours; if not, this launch failed (an instance that
                # surfaces later has no live rental, so the reconciler terminates it).
                try:
                    inst = instances.find_by_label(current)
                except ProviderError:
                    return store.update(user_id, rental_id, {"allocation_uncertain": True, "attempts": tuple(tried)},
                                        ("provisioning",))
                if inst is not None:
                    return adopt(current, inst)
                break
            if exc.kind in ("capacity", "quota"):
                count("LaunchFailovers")
                continue
            break
        try:
            return store.update(user_id, rental_id, {"instance_id": instance_id, "attempts": tuple(tried)},
                                ("provisioning",))
        except store.StaleRental:
            # Stopped while we allocated: the stop path (or the reconciler) terminates it by label.
            found = store.get(user_id, rental_id)
            assert found is not None
            return found
    return settlement.fail(current, last_error)
