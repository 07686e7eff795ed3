"""A rental: one pod's life from launch to settlement.

No machine is ever lost:
- the rental row (status `provisioning`, locked price, listing, provider) is
  written in the same transaction that takes the one-hour reserve, *before*
  any provider call;
- our rental id is the instance's label at the provider, and the provider's
  instance id is stored as soon as it is known;
- the reconciler adopts an instance it finds by label (a crash between
  "allocated" and "recorded"), and terminates any labelled instance that has
  no live rental;
- a rental is `stopped` only once the provider confirms termination.

Every status change is a conditional write on the status the actor saw, so two
actors can never both move the same rental.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from gpurent import catalog, clock, ids, keys, timers, wallet
from gpurent.billing import invoices
from gpurent.errors import ApiError
from gpurent.money import charge_for_seconds, seconds_within_cap, whole_seconds
from gpurent.providers.base import AllocateRequest, Instance, Offer, ProviderAdapter, ProviderError
from gpurent.store import money as money_store
from gpurent.store import rentals as store
from gpurent.telemetry import count, logger
from gpurent.templates import DEFAULT_TEMPLATE, get_template

STATUSES = ("provisioning", "running", "stopping", "stopped", "failed")
MAX_ATTEMPTS = 3  # listings tried per launch (failover)
REFUND_WINDOW = 60  # a pod that ran less than this many seconds is refunded in full…
SHORT_RUN_ALLOWANCE = 3  # …at most this many times per user per rolling SHORT_RUN_PERIOD (a provider's
SHORT_RUN_PERIOD = 86_400  # crash is always refunded and not counted); beyond it a short run is billed
ADOPT_GRACE = 300  # a provisioning rental with no instance found by label after this long fails
POLL_EVERY = 2.0  # GET refreshes a provisioning rental from its provider at most this often
FOLLOW_UP = 3  # seconds after a stop to ask the provider whether the instance is gone
FOLLOW_UP_FOR = 600  # … and again every FOLLOW_UP seconds for this long; then the reconciler's minute is enough
ALLOCATION_LEASE = 60  # seconds a launch owns its allocation (a Lambda lives 29 s); a retry takes over after

T = TypeVar("T")


class Settled(Exception):
    """Another actor already moved this rental out of its live state."""


class Launch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    familyId: str = Field(max_length=64)
    gpuCount: int
    templateId: str = Field(default=DEFAULT_TEMPLATE, max_length=64)
    region: str | None = Field(default=None, max_length=8)
    name: str | None = Field(default=None, max_length=64)
    autoStopAfterHours: float | None = Field(default=None, gt=0, le=720)
    maxTotalCents: int | None = Field(default=None, ge=1, le=100_000_000)


# ---------------------------------------------------------------- providers

_adapters: dict[str, ProviderAdapter] | None = None
_adapters_lock = threading.Lock()


def adapters() -> dict[str, ProviderAdapter]:
    global _adapters
    with _adapters_lock:
        if _adapters is None:
            from gpurent.providers.registry import build_adapters
            from gpurent.providers.settings import adapter_settings

            _adapters = build_adapters(adapter_settings())
        return _adapters


def set_adapters(value: dict[str, ProviderAdapter] | None) -> None:
    """Tests and the local stack install adapters (None: build from settings again)."""
    global _adapters
    with _adapters_lock:
        _adapters = value


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _adapter(code: str) -> ProviderAdapter:
    found = adapters().get(code)
    if found is None:
        raise ProviderError(code, "auth", "provider is not configured on this deployment")
    return found


# ---------------------------------------------------------------- answers

def metered_cents(r: dict[str, Any]) -> int:
    """What the rental's usage has been metered at so far: taken from the wallet plus overage."""
    return int(r.get("chargedCents", 0)) + int(r.get("overageCents", 0))


def usage_cents(r: dict[str, Any]) -> int:
    """A settled rental's cost to the user: charged net of refunds, plus the invoiced overage."""
    return metered_cents(r) - int(r.get("refundedCents", 0))


def charged_now(r: dict[str, Any], now: float) -> tuple[int, int]:
    """(billed seconds, total charged cents) as of `now`: live while running."""
    if r["status"] == "running" and r.get("runningAt") is not None:
        seconds = whole_seconds(now - float(r["runningAt"]))
        return seconds, charge_for_seconds(seconds, int(r["pricePerHourCents"]))
    return int(r.get("billedSeconds", 0)), usage_cents(r)


def public(r: dict[str, Any], full: bool = True) -> dict[str, Any]:
    _, charged = charged_now(r, clock.now())
    out = {
        "id": r["id"],
        "name": r.get("name"),
        "status": r["status"],
        "familyId": r["familyId"],
        "gpuCount": int(r["gpuCount"]),
        "pricePerHourCents": int(r["pricePerHourCents"]),
        "host": r.get("host"),
        "port": r.get("port"),
        "region": r["region"],
        "startedAt": clock.iso(r["createdAt"]),
        "stoppedAt": clock.iso(r["stoppedAt"]) if r.get("stoppedAt") else None,
        "totalChargedCents": charged,
        # extensions
        "templateId": r["templateId"],
        "runningAt": clock.iso(r["runningAt"]) if r.get("runningAt") else None,
        "autoStopAfterHours": r.get("autoStopAfterHours"),
        "maxTotalCents": r.get("maxTotalCents"),
        "stopReason": r.get("stopReason"),
    }
    if full:
        out["provider"] = r["provider"]
        out["error"] = r.get("error")
    return out


def launch_answer(r: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "status": r["status"],
        "host": r.get("host"),
        "port": r.get("port"),
        "pricePerHourCents": int(r["pricePerHourCents"]),
        "startedAt": clock.iso(r["createdAt"]),
        "warnings": warnings,
    }


def get_owned(user_id: str, rental_id: str) -> dict[str, Any]:
    """The caller's rental, or 404 `rental_not_found` (never a 403, never a leak)."""
    if not ids.is_id(rental_id, "rent"):
        raise ApiError("rental_not_found", "No rental with that id")
    r = store.get(user_id, rental_id)
    if r is None:
        raise ApiError("rental_not_found", "No rental with that id")
    return r


# ---------------------------------------------------------------- launch

def _offer_of(listing: dict[str, Any]) -> dict[str, Any]:
    return {k: listing[k] for k in ("id", "provider", "offerKey", "gpuName", "family", "model", "vramGb", "gpuCount",
                                    "costCentsPerHour", "pricePerHourCents", "region", "regionCode")} | {
        "interconnect": listing.get("interconnect")}


def _to_offer(o: dict[str, Any]) -> Offer:
    return Offer(provider=o["provider"], offer_key=o["offerKey"], gpu_name=o["gpuName"], family=o["family"],
                 model=o["model"], vram_gb=int(o["vramGb"]), gpu_count=int(o["gpuCount"]),
                 price_cents_per_hour=int(o["costCentsPerHour"]), region=o["region"], region_code=o["regionCode"],
                 interconnect=o.get("interconnect"))


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
    answer = launch_answer(final, _warnings(int(record.get("sshKeyCount", 0))))
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
        return launch_answer(r, _warnings(int(r.get("sshKeyCount", 0)))), 200
    return _finish_launch(r, _continue_launch(r))


def _continue_launch(r: dict[str, Any]) -> dict[str, Any]:
    """Finish a launch whose first attempt died before recording an instance (its lease
    expired): take the lease, adopt an instance found under our label, else allocate."""
    try:
        r = store.update(r["userId"], r["id"], {"allocatingUntil": clock.now() + ALLOCATION_LEASE},
                         ("provisioning",), int(r["version"]))
    except store.StaleRental as exc:
        return exc.current or r
    try:
        inst = _find_by_label(r)
    except ProviderError:
        return r
    if inst is not None:
        return _adopt(r, inst)
    listing = dict(r["offer"])
    others = [c for c in catalog.candidates(r["familyId"], int(r["gpuCount"]), r.get("regionFilter"))
              if c["id"] != listing["id"] and c["id"] not in (r.get("attempts") or [])]
    return _allocate(r, keys.public_keys(r["userId"]), [listing, *others])


def _adopt(r: dict[str, Any], inst: Instance) -> dict[str, Any]:
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
            instance_id = _run(_adapter(listing["provider"]).allocate(req))
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
                    inst = _find_by_label(current)
                except ProviderError:
                    return store.update(user_id, rental_id, {"allocationUncertain": True, "attempts": tried},
                                        ("provisioning",))
                if inst is not None:
                    return _adopt(current, inst)
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
    return fail(current, last_error)


# ---------------------------------------------------------------- transitions

def fail(r: dict[str, Any], error: str) -> dict[str, Any]:
    """provisioning → failed: never billed, the reserve goes back to available."""
    user_id, rental_id = r["userId"], r["id"]
    held = int(r.get("reserveCents", 0))
    now = clock.now()
    sets = {"status": "failed", "error": error[:500], "reserveCents": 0, "stoppedAt": now}
    try:
        wallet.release(user_id, held, f"fail:{rental_id}",
                       extras=lambda w, steps: [store.update_item(user_id, rental_id, sets, ("provisioning",),
                                                                  int(r["version"]))])
    except (wallet.BusinessConditionFailed, wallet.IdempotencyMismatch):
        pass  # someone else moved it on first
    count("LaunchFailures")
    found = store.get(user_id, rental_id)
    assert found is not None
    return found


def mark_running(r: dict[str, Any], inst: Instance) -> dict[str, Any]:
    now = clock.now()
    try:
        found = store.update(r["userId"], r["id"], {
            "status": "running", "host": inst.host, "port": inst.ssh_port, "runningAt": now,
            "meteredUntil": now, "lastHealthyAt": now, "instanceId": inst.instance_id,
        }, ("provisioning",), int(r["version"]))
    except store.StaleRental as exc:
        return exc.current or r
    # Billing starts: have the wallet looked at now, so a deadline before the next sweep
    # (a short autoStop, a wallet that this rental drains fast) gets its timer.
    timers.arm(str(r["userId"]), now)
    return found


@dataclass(frozen=True)
class Settlement:
    """How a rental's final charge comes out (`plan_settlement`)."""

    charged: int  # total taken from the wallet (ledger rental_charge rows)
    refund: int  # given back (ledger refund row)
    overage: int  # owed beyond the money: the overage invoice


def plan_settlement(r: dict[str, Any], seconds: int, split: wallet.ChargeSplit, ran: float | None = None,
                    refund_short: bool = True) -> Settlement:
    """The rental's final numbers, given the last charge's split; `ran` is the raw running time
    (seconds, unrounded) that the under-a-minute refund compares (default: `seconds`);
    `refund_short` False: the user's short-run allowance is spent, a short run is billed.

    - a pod that ran under a minute gets everything it paid back, and its overage is forgiven;
    - otherwise what was metered beyond the billed end (a provider crash billed up to the last
      healthy moment, after a tick had already charged past it) is given back: the overage
      is cut first, then the rest is refunded;
    - the remaining overage is invoiced.
    """
    total = charge_for_seconds(seconds, int(r["pricePerHourCents"]))
    paid = int(r.get("chargedCents", 0)) + split.charged
    overage = int(r.get("overageCents", 0)) + split.overage
    if (seconds if ran is None else ran) < REFUND_WINDOW and refund_short:
        return Settlement(paid, paid, 0)
    excess = max(0, paid + overage - total)
    cut = min(excess, overage)
    return Settlement(paid, excess - cut, overage - cut)


def settle(r: dict[str, Any], reason: str, until: float | None = None, to_status: str = "stopping",
           error: str | None = None) -> dict[str, Any]:
    """running → stopping (or failed): the final charge to the second, the refund of a pod
    that ran under a minute, the rest of the reserve back to available — one transaction.

    Billing ends at `until` when given (a crash: the last healthy moment), never
    after now nor after the rental's own limit (`autoStopAfterHours`,
    `maxTotalCents`), whoever stops it and however late.

    Raises `Settled` when another actor settled this rental first (its replay answered).
    """
    user_id, rental_id = r["userId"], r["id"]
    now = clock.now()
    end = now if until is None else min(now, until)
    deadline = limit_deadline(r)
    if deadline is not None:
        end = min(end, deadline[0])
    ran = max(0.0, end - float(r["runningAt"]))  # raw: the refund rule compares this
    seconds = whole_seconds(ran)  # billed: whole seconds (floor)
    total = charge_for_seconds(seconds, int(r["pricePerHourCents"]))
    delta = max(0, total - metered_cents(r))
    held = int(r.get("reserveCents", 0))
    invoice: dict[str, Any] = {}  # the overage invoice this attempt plans, if any
    # A short run's refund draws on the user's allowance (kept on the wallet item, so two
    # settlements racing cannot both take the last one); a provider's crash is always refunded.
    counted = ran < REFUND_WINDOW and reason != "provider_failure" and total > 0  # a free run costs no slot
    short: dict[str, Any] = {}

    def planner(w: wallet.Wallet) -> list[wallet.Step]:
        charge = wallet.plan_charge(w, held, delta, 0, {"rentalId": rental_id})
        split = charge.info["split"]
        w2 = wallet.Wallet(user_id, w.available + charge.available_delta, w.reserved + charge.reserved_delta)
        steps = [charge, wallet.plan_release(w2, split.reserve_after)]
        short.clear()
        if counted:
            recent = [t for t in w.short_run_refunds if t > now - SHORT_RUN_PERIOD]
            refunded = len(recent) < SHORT_RUN_ALLOWANCE
            log = [*recent, now] if refunded else recent
            short.update({"refunded": refunded, "remaining": max(0, SHORT_RUN_ALLOWANCE - len(log)),
                          "limit": SHORT_RUN_ALLOWANCE, "windowHours": SHORT_RUN_PERIOD // 3600})
            steps[-1] = replace(steps[-1], wallet_sets={"shortRunRefunds": log})
        final = plan_settlement(r, seconds, split, ran, refund_short=short.get("refunded", True))
        if final.refund > 0:
            steps.append(wallet.plan_credit(w2, final.refund, "refund", {"rentalId": rental_id}))
        invoice.clear()
        if final.overage > 0:
            invoice.update(invoices.overage_record(r, final.overage, end))
            steps.append(invoices.plan_open(invoice))
        return steps

    def extras(w: wallet.Wallet, steps: Any) -> list[Any]:
        final = plan_settlement(r, seconds, steps[0].info["split"], ran, refund_short=short.get("refunded", True))
        sets = {"status": to_status, "stoppedAt": now, "stopReason": reason, "billedSeconds": seconds,
                "chargedCents": final.charged, "refundedCents": final.refund, "reserveCents": 0,
                "overageCents": final.overage, "meteredUntil": end, "overageInvoiceId": invoice.get("id"),
                "shortRunRefund": dict(short) or None}
        if error:
            sets["error"] = error[:500]
        items = [store.update_item(user_id, rental_id, sets, ("running",), int(r["version"]))]
        return items + (invoices.open_items(invoice) if invoice else [])

    def effects(w: wallet.Wallet, steps: Any) -> list[wallet.Effect]:
        # The overage invoice's Stripe copy is made by the timer function, never inside a stop.
        return [("invoice_mirror", {"invoiceId": invoice["id"]})] if invoice else []

    result = wallet.apply(user_id, f"settle:{rental_id}",
                          {"op": "settle", "rental": rental_id, "seconds": seconds}, planner, extras,
                          effects=effects)
    if result.replayed:
        raise Settled()
    found = store.get(user_id, rental_id)
    assert found is not None
    return found


def stop(user_id: str, rental_id: str, reason: str = "user") -> dict[str, Any]:
    """`POST /v1/rentals/{id}/stop` and every server-initiated stop.

    Exactly one of several concurrent stops wins (the others answer 409
    `already_stopped`); a stop whose rental another actor touched meanwhile
    (a health check, a metering tick) re-reads it and tries again.
    """
    already = ApiError("already_stopped", "This rental is already in a terminal state")
    for _ in range(5):
        r = get_owned(user_id, rental_id)
        if r["status"] in ("stopping", "stopped", "failed"):
            raise already
        try:
            if r["status"] == "provisioning":
                held = int(r.get("reserveCents", 0))
                sets = {"status": "stopping", "stoppedAt": clock.now(), "stopReason": reason, "reserveCents": 0}
                result = wallet.release(
                    user_id, held, f"stop:{rental_id}",
                    extras=lambda w, steps, sets=sets, r=r: [  # type: ignore[misc]
                        store.update_item(user_id, rental_id, sets, ("provisioning",), int(r["version"]))])
                if result.replayed:
                    raise already
                r = get_owned(user_id, rental_id)
            else:
                r = settle(r, reason)
        except (Settled, wallet.IdempotencyMismatch):
            raise already from None
        except wallet.BusinessConditionFailed:
            continue  # the rental moved on under us: look again
        count("Stops")
        _terminate_quietly(r)
        timers.arm(user_id, clock.now() + FOLLOW_UP, rental_id)  # stopping → stopped without waiting a minute
        answer = {"id": r["id"], "status": "stopping", "finalChargedCents": metered_cents(r),
                  "refundedCents": int(r.get("refundedCents", 0))}
        if r.get("shortRunRefund"):  # extension: it ran under a minute; was it refunded, how many are left
            answer["shortRunRefund"] = {k: r["shortRunRefund"][k] for k in ("refunded", "remaining", "limit",
                                                                             "windowHours")}
        return answer
    raise ApiError("internal_error", "The rental kept changing; please retry the stop")


def _terminate_quietly(r: dict[str, Any]) -> None:
    """Send terminate once now; a failure is retried by the reconciler until it succeeds."""
    if not r.get("instanceId"):
        return
    try:
        _run(_adapter(r["provider"]).terminate(str(r["instanceId"])))
    except ProviderError as exc:
        logger.warning("terminate failed; the reconciler retries", extra={"rentalId": r["id"], "kind": exc.kind})


# ---------------------------------------------------------------- advancing (reconciler, GET)

def advance(r: dict[str, Any]) -> dict[str, Any]:
    """Move one live rental forward from what its provider says."""
    status = r["status"]
    try:
        if status == "provisioning":
            return _advance_provisioning(r)
        if status == "running":
            return _check_running(r)
        if status == "stopping":
            return _finish_stopping(r)
    except ProviderError as exc:
        logger.warning("provider check failed", extra={"rentalId": r["id"], "kind": exc.kind})
    return r


def _find_by_label(r: dict[str, Any]) -> Instance | None:
    for inst in _run(_adapter(r["provider"]).list_instances()):
        if inst.label == r["id"]:
            return inst
    return None


def _advance_provisioning(r: dict[str, Any]) -> dict[str, Any]:
    now = clock.now()
    inst: Instance | None
    if r.get("instanceId"):
        inst = _run(_adapter(r["provider"]).get_instance(str(r["instanceId"])))
    else:
        if now < float(r.get("allocatingUntil", 0)):
            return r  # a launch is calling the provider right now
        if not r.get("allocationUncertain"):
            return _continue_launch(r)  # its launch died before the provider call finished
        inst = _find_by_label(r)
        if inst is not None:
            r = _adopt(r, inst)
            if r["status"] != "provisioning":
                return r
        elif now - float(r["createdAt"]) > ADOPT_GRACE:
            return fail(r, "Provision failed: the provider never created the instance")
        else:
            return r
    try:
        r = store.update(r["userId"], r["id"], {"lastCheckedAt": now}, ("provisioning",))
    except store.StaleRental as exc:
        return exc.current or r  # someone else moved it on meanwhile
    if inst is None or inst.status in ("failed", "terminated", "stopped"):
        found = fail(r, f"Provision failed: {inst.error if inst and inst.error else 'the instance did not start'}")
        if inst is not None:
            _terminate_quietly(found)
        return found
    if inst.status == "running":
        return mark_running(r, inst)
    return store.get(r["userId"], r["id"]) or r


def limit_deadline(r: dict[str, Any]) -> tuple[float, str] | None:
    """When a running rental must stop by its own limits: (moment, reason), or None.

    `autoStopAfterHours` counts from `runningAt`; `maxTotalCents` stops it at the
    last second whose charge stays within the cap.
    """
    if r.get("runningAt") is None:
        return None
    started = float(r["runningAt"])
    found: list[tuple[float, str]] = []
    if r.get("autoStopAfterHours"):
        found.append((started + whole_seconds(float(r["autoStopAfterHours"]) * 3600), "auto_stop"))
    if r.get("maxTotalCents"):
        found.append((started + seconds_within_cap(int(r["maxTotalCents"]), int(r["pricePerHourCents"])),
                      "max_total"))
    return min(found) if found else None


def enforce_limit(r: dict[str, Any]) -> dict[str, Any]:
    """Stop a running rental whose own limit (`autoStopAfterHours`, `maxTotalCents`) is due,
    billed up to the limit's moment, not to when we got round to it."""
    deadline = limit_deadline(r)
    if deadline is None or clock.now() < deadline[0]:
        return r
    try:
        found = settle(r, deadline[1], until=deadline[0])
    except (Settled, wallet.BusinessConditionFailed, wallet.IdempotencyMismatch):
        return store.get(r["userId"], r["id"]) or r
    count("LimitStops")
    _terminate_quietly(found)
    timers.arm(str(r["userId"]), clock.now() + FOLLOW_UP, str(r["id"]))
    return found


def _check_running(r: dict[str, Any]) -> dict[str, Any]:
    now = clock.now()
    deadline = limit_deadline(r)
    if deadline is not None and now >= deadline[0]:
        return enforce_limit(r)
    inst = _run(_adapter(r["provider"]).get_instance(str(r["instanceId"])))
    if inst is not None and inst.status == "running":
        try:
            return store.update(r["userId"], r["id"], {"lastHealthyAt": now}, ("running",))
        except store.StaleRental as exc:
            return exc.current or r
    # The provider lost it or it crashed: billed up to the last moment it was known healthy.
    error = f"The provider reported the pod {inst.status if inst else 'gone'}"
    if inst is not None and inst.error:
        error += f": {inst.error}"
    try:
        found = settle(r, "provider_failure", until=float(r.get("lastHealthyAt") or r["runningAt"]),
                       to_status="failed", error=error)
    except (Settled, wallet.BusinessConditionFailed, wallet.IdempotencyMismatch):
        return store.get(r["userId"], r["id"]) or r
    _terminate_quietly(found)
    return found


def _finish_stopping(r: dict[str, Any]) -> dict[str, Any]:
    adapter = _adapter(r["provider"])
    inst: Instance | None
    if r.get("instanceId"):
        _run(adapter.terminate(str(r["instanceId"])))
        inst = _run(adapter.get_instance(str(r["instanceId"])))
    else:
        inst = _find_by_label(r)
        if inst is not None:
            _run(adapter.terminate(inst.instance_id))
            inst = _run(adapter.get_instance(inst.instance_id))
        elif clock.now() - float(r["createdAt"]) <= ADOPT_GRACE:
            return r  # an allocation may still surface under our label
    if inst is None or inst.status == "terminated":
        try:
            return store.update(r["userId"], r["id"], {"status": "stopped", "terminatedAt": clock.now()},
                                ("stopping",))
        except store.StaleRental as exc:
            return exc.current or r
    return r


def on_timer(user_id: str, rental_id: str) -> dict[str, int]:
    """A follow-up timer: move a stopping rental on; until the provider confirms, ask again soon."""
    r = store.get(user_id, rental_id)
    if r is None or r["status"] != "stopping":
        return {"followed": 0}
    r = advance(r)
    if r["status"] == "stopping" and clock.now() - float(r.get("stoppedAt") or 0) < FOLLOW_UP_FOR:
        timers.arm(user_id, clock.now() + FOLLOW_UP, rental_id)
    return {"followed": 1}


def refresh_if_provisioning(r: dict[str, Any]) -> dict[str, Any]:
    """GET /v1/rentals/{id}: a provisioning rental is checked with its provider (at most every 2 s)."""
    if r["status"] != "provisioning":
        return r
    if clock.now() - float(r.get("lastCheckedAt", 0)) < POLL_EVERY:
        return r
    return advance(r)


def reconcile() -> dict[str, int]:
    """One pass: advance every live rental, then terminate labelled instances with no live rental."""
    counts = {"advanced": 0, "orphansTerminated": 0, "errors": 0}
    live_ids: set[str] = set()
    for r in store.live():
        live_ids.add(str(r["id"]))
        try:
            advance(r)
            counts["advanced"] += 1
        except Exception:
            counts["errors"] += 1
            logger.exception("reconcile failed for a rental", extra={"rentalId": r["id"]})
    for code, adapter in adapters().items():
        try:
            instances = _run(adapter.list_instances())
        except ProviderError as exc:
            counts["errors"] += 1
            logger.warning("listing instances failed", extra={"provider": code, "kind": exc.kind})
            continue
        for inst in instances:
            if not inst.label or inst.status == "terminated" or inst.label in live_ids:
                continue
            owner = _owner_of(inst.label)
            if owner is not None and owner["status"] in store.LIVE:
                continue  # became live after our read
            try:
                _run(adapter.terminate(inst.instance_id))
                counts["orphansTerminated"] += 1
                count("OrphansTerminated")
            except ProviderError:
                counts["errors"] += 1
    return counts


def _owner_of(label: str) -> dict[str, Any] | None:
    """The rental a label names, wherever its owner is (labels are rental ids)."""
    if not ids.is_id(label, "rent"):
        return None
    return store.find_by_id(label)


# ---------------------------------------------------------------- reading

def list_page(user_id: str, status: str | None, raw_cursor: str | None, page_size: int) -> dict[str, Any]:
    from gpurent import cursor

    if status is not None and status not in STATUSES:
        raise ApiError("validation_failed", f"status must be one of {', '.join(STATUSES)}",
                       {"status": f"must be one of {', '.join(STATUSES)}"})
    before = None
    if raw_cursor:
        before = cursor.decode("rentals", user_id, raw_cursor).get("before")
        if not ids.is_id(before, "rent"):
            raise ApiError("validation_failed", "cursor is not valid", {"cursor": "not a cursor this list issued"})
    rows, more = store.list_for_user(user_id, before, page_size, status)
    next_cursor = cursor.encode("rentals", user_id, {"before": rows[-1]["id"]}) if more and rows else None
    return {"rentals": [public(r, full=False) for r in rows], "nextCursor": next_cursor}


def meter(r: dict[str, Any]) -> dict[str, Any]:
    seconds, charged = charged_now(r, clock.now())
    if r["status"] != "running":
        charged = metered_cents(r)  # the formula's charge for its seconds (before any refund)
    last = r.get("lastHealthyAt") if r["status"] == "running" else None
    if r["status"] == "running":
        last = clock.now()
    return {
        "rentalId": r["id"],
        "ratePerHour": int(r["pricePerHourCents"]) / 100,
        "secondsBilled": seconds,
        "currentChargeCents": charged,
        "lastHeartbeatAt": clock.iso(last) if last else None,
    }
