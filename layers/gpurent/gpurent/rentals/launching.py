"""Launching a rental: the reserve and the row in one transaction, then the provider call
(failing over across listings), a replayed launch resumed, an instance adopted by label.

No machine is ever lost: the row (status `provisioning`, locked price, listing,
provider) is written with the one-hour reserve *before* any provider call; our rental id
is the instance's label at the provider, and the provider's instance id is stored as soon
as it is known.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gpurent import catalog, clock, ids, keys, wallet
from gpurent.errors import ApiError
from gpurent.providers import registry
from gpurent.providers.base import AllocateRequest, Instance, Offer, ProviderError
from gpurent.rentals import instances, settlement, views
from gpurent.store import money as money_store
from gpurent.store import rentals as store
from gpurent.telemetry import count, logger
from gpurent.templates import DEFAULT_TEMPLATE, get_template

MAX_ATTEMPTS = 3  # listings tried per launch (failover)
ALLOCATION_LEASE = 60  # seconds a launch owns its allocation (a Lambda lives 29 s); a retry takes over after


class Launch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    familyId: str = Field(max_length=64)
    gpuCount: int
    templateId: str = Field(default=DEFAULT_TEMPLATE, max_length=64)
    region: str | None = Field(default=None, max_length=8)
    name: str | None = Field(default=None, max_length=64)
    autoStopAfterHours: float | None = Field(default=None, gt=0, le=720)
    maxTotalCents: int | None = Field(default=None, ge=1, le=100_000_000)


def launch(user_id: str, body: Launch, idempotency_key: str | None) -> tuple[dict[str, Any], int]:
    """`POST /v1/rentals`: (answer, HTTP status)."""
    catalog.check_family(body.familyId)
    catalog.check_gpu_count(body.gpuCount)
    template = get_template(body.templateId)
    if template is None:
        raise ApiError("validation_failed", "templateId is not a known template", {"templateId": "unknown template"})
    region = catalog.check_region(body.region)
    name = keys.check_name(body.name) if body.name is not None else None

    rental_id = ids.new_id("rent")
    description = {"op": "launch", "body": body.model_dump()}
    op_key = f"launch:{user_id}:{idempotency_key}" if idempotency_key else f"launch:{rental_id}"
    if idempotency_key:
        previous = money_store.get_op(op_key)
        if previous is not None:
            if previous.get("fingerprint") != wallet.fingerprint(description):
                raise wallet.IdempotencyMismatch()
            rental_id = previous["result"]["steps"][0]["rentalId"]
            return _resume(user_id, rental_id)

    found = catalog.candidates(body.familyId, body.gpuCount, region)
    if not found:
        raise ApiError("model_unavailable", "No provider available for this config. Try again in 30 s, "
                       "another region or another family.")
    listing = found[0]
    price = int(listing["pricePerHourCents"])
    ssh_keys = keys.public_keys(user_id)
    now = clock.now()
    record = {
        "id": rental_id, "userId": user_id, "name": name, "status": "provisioning",
        "familyId": body.familyId, "gpuCount": body.gpuCount, "templateId": template.id,
        "regionFilter": region, "pricePerHourCents": price, "listingId": listing["id"],
        "provider": listing["provider"], "region": listing["region"], "regionCode": listing["regionCode"],
        "model": listing["model"], "offer": _offer_of(listing), "createdAt": now, "reserveCents": price,
        "chargedCents": 0, "billedSeconds": 0, "refundedCents": 0, "overageCents": 0,
        "autoStopAfterHours": body.autoStopAfterHours, "maxTotalCents": body.maxTotalCents,
        "sshKeyCount": len(ssh_keys), "attempts": [], "version": 1, "idempotencyKey": idempotency_key,
        "allocatingUntil": now + ALLOCATION_LEASE,
    }

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
        return _resume(user_id, result.steps[0]["rentalId"])
    count("Launches")
    return _finish_launch(record, _allocate(record, ssh_keys, found))


def _warnings(ssh_key_count: int) -> list[str]:
    if ssh_key_count:
        return []
    return ["No SSH key on file: the pod will not be reachable over SSH. Add one with POST /v1/ssh-keys "
            "before launching."]


def _finish_launch(record: dict[str, Any], final: dict[str, Any]) -> tuple[dict[str, Any], int]:
    if final["status"] == "failed":
        return ({"error": "model_unavailable", "message": final.get("error") or "No provider available",
                 "details": {"rentalId": final["id"]}}, 400)
    answer = views.launch_answer(final, _warnings(int(record.get("sshKeyCount", 0))))
    try:
        store.update(record["userId"], record["id"], {"launchAnswer": answer}, ())
    except store.StaleRental:
        pass
    return answer, 200


def _resume(user_id: str, rental_id: str) -> tuple[dict[str, Any], int]:
    """A replayed launch: the first answer if there is one; else, if the first attempt died
    before the provider call finished (its lease expired), finish the launch now."""
    r = store.get(user_id, rental_id)
    if r is None:
        raise AssertionError("a launch marker points at a missing rental")
    if r.get("launchAnswer"):
        return dict(r["launchAnswer"]), 200
    if r["status"] == "failed" and not r.get("instanceId"):
        return ({"error": "model_unavailable", "message": r.get("error") or "No provider available",
                 "details": {"rentalId": r["id"]}}, 400)
    now = clock.now()
    if r["status"] != "provisioning" or r.get("instanceId") or now < float(r.get("allocatingUntil", 0)):
        return views.launch_answer(r, _warnings(int(r.get("sshKeyCount", 0)))), 200
    return _finish_launch(r, continue_launch(r))


def continue_launch(r: dict[str, Any]) -> dict[str, Any]:
    """Finish a launch whose first attempt died before recording an instance (its lease
    expired): take the lease, adopt an instance found under our label, else allocate."""
    try:
        r = store.update(r["userId"], r["id"], {"allocatingUntil": clock.now() + ALLOCATION_LEASE},
                         ("provisioning",), int(r["version"]))
    except store.StaleRental as exc:
        return exc.current or r
    try:
        inst = instances.find_by_label(r)
    except ProviderError:
        return r
    if inst is not None:
        return adopt(r, inst)
    listing = dict(r["offer"])
    others = [c for c in catalog.candidates(r["familyId"], int(r["gpuCount"]), r.get("regionFilter"))
              if c["id"] != listing["id"] and c["id"] not in (r.get("attempts") or [])]
    return _allocate(r, keys.public_keys(r["userId"]), [listing, *others])


def adopt(r: dict[str, Any], inst: Instance) -> dict[str, Any]:
    """Record an instance found under our label as this rental's."""
    try:
        return store.update(r["userId"], r["id"], {"instanceId": inst.instance_id, "allocationUncertain": None},
                            ("provisioning",))
    except store.StaleRental as exc:
        return exc.current or r


def _allocate(record: dict[str, Any], ssh_keys: list[str], candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """Allocate at the provider, failing over on capacity-like refusals; returns the rental."""
    user_id, rental_id = record["userId"], record["id"]
    template = get_template(record["templateId"])
    assert template is not None
    tried: list[str] = []
    current = record
    quoted = int(record["pricePerHourCents"])
    last_error = "No provider available for this config"
    for listing in [c for c in candidates if int(c["pricePerHourCents"]) <= quoted][:MAX_ATTEMPTS]:
        if listing["id"] != current["listingId"]:
            # Record the next attempt before calling its provider.
            current = store.update(user_id, rental_id, {
                "listingId": listing["id"], "provider": listing["provider"], "region": listing["region"],
                "regionCode": listing["regionCode"], "model": listing["model"], "offer": _offer_of(listing),
                "attempts": tried,
            }, ("provisioning",))
        req = AllocateRequest(rental_id=rental_id, offer=_to_offer(current["offer"]), image=template.image,
                              start_command=template.start_command, ssh_public_keys=tuple(ssh_keys))
        try:
            instance_id = instances.run(registry.adapter(listing["provider"]).allocate(req))
        except ProviderError as exc:
            tried.append(listing["id"])
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
                    return store.update(user_id, rental_id, {"allocationUncertain": True, "attempts": tried},
                                        ("provisioning",))
                if inst is not None:
                    return adopt(current, inst)
                break
            if exc.kind in ("capacity", "quota"):
                count("LaunchFailovers")
                continue
            break
        try:
            return store.update(user_id, rental_id, {"instanceId": instance_id, "attempts": tried},
                                ("provisioning",))
        except store.StaleRental:
            # Stopped while we allocated: the stop path (or the reconciler) terminates it by label.
            found = store.get(user_id, rental_id)
            assert found is not None
            return found
    return settlement.fail(current, last_error)


def _offer_of(listing: dict[str, Any]) -> dict[str, Any]:
    return {k: listing[k] for k in ("id", "provider", "offerKey", "gpuName", "family", "model", "vramGb", "gpuCount",
                                    "costCentsPerHour", "pricePerHourCents", "region", "regionCode")} | {
        "interconnect": listing.get("interconnect")}


def _to_offer(o: dict[str, Any]) -> Offer:
    return Offer(provider=o["provider"], offer_key=o["offerKey"], gpu_name=o["gpuName"], family=o["family"],
                 model=o["model"], vram_gb=int(o["vramGb"]), gpu_count=int(o["gpuCount"]),
                 price_cents_per_hour=int(o["costCentsPerHour"]), region=o["region"], region_code=o["regionCode"],
                 interconnect=o.get("interconnect"))
