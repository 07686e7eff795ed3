"""Settling a rental's money: the final charge to the second (never past its own limits),
the short-run refund, overage, the reserve back; stops, limit stops and failed launches.

Every status change is a conditional write on the status the actor saw, inside the
wallet's transaction, so two actors can never both settle the same rental.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from gpurent import clock, timers, wallet
from gpurent.billing import invoices
from gpurent.errors import ApiError
from gpurent.money import charge_for_seconds, seconds_within_cap, whole_seconds
from gpurent.records import Invoice, LiveRental, Rental, RentalChanges, ShortRunRefund, StopReason
from gpurent.rentals import instances, meters, views
from gpurent.store import rentals as store
from gpurent.store.money import TransactItem
from gpurent.telemetry import count

REFUND_WINDOW = 60  # a pod that ran less than this many seconds is refunded in full…
SHORT_RUN_ALLOWANCE = 3  # …at most this many times per user per rolling SHORT_RUN_PERIOD (a provider's
SHORT_RUN_PERIOD = 86_400  # crash is always refunded and not counted); beyond it a short run is billed
FOLLOW_UP = 3  # seconds after a stop to ask the provider whether the instance is gone


class Settled(Exception):
    """Another actor already moved this rental out of its live state."""


@dataclass(frozen=True)
class Settlement:
    """How a rental's final charge comes out (`plan_settlement`)."""

    charged: int  # total taken from the wallet (ledger rental_charge rows)
    refund: int  # given back (ledger refund row)
    overage: int  # owed beyond the money: the overage invoice


def plan_settlement(r: Rental, seconds: int, split: wallet.ChargeSplit, ran: float | None = None,
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
    total = charge_for_seconds(seconds, r.price_per_hour_cents)
    paid = r.charged_cents + split.charged
    overage = r.overage_cents + split.overage
    if (seconds if ran is None else ran) < REFUND_WINDOW and refund_short:
        return Settlement(paid, paid, 0)
    excess = max(0, paid + overage - total)
    cut = min(excess, overage)
    return Settlement(paid, excess - cut, overage - cut)


def limit_deadline(r: Rental | LiveRental) -> tuple[float, StopReason] | None:
    """When a running rental must stop by its own limits: (moment, reason), or None.

    `autoStopAfterHours` counts from `runningAt`; `maxTotalCents` stops it at the
    last second whose charge stays within the cap.
    """
    if r.running_at is None:
        return None
    started = r.running_at
    found: list[tuple[float, StopReason]] = []
    if r.auto_stop_after_hours:
        found.append((started + whole_seconds(r.auto_stop_after_hours * 3600), "auto_stop"))
    if r.max_total_cents:
        found.append((started + seconds_within_cap(r.max_total_cents, r.price_per_hour_cents), "max_total"))
    return min(found) if found else None


def settle(r: Rental, reason: StopReason, until: float | None = None,
           to_status: Literal["stopping", "failed"] = "stopping", error: str | None = None) -> Rental:
    """running → stopping (or failed): the final charge to the second, the refund of a pod
    that ran under a minute, the rest of the reserve back to available — one transaction.

    Billing ends at `until` when given (a crash: the last healthy moment), never
    after now nor after the rental's own limit (`autoStopAfterHours`,
    `maxTotalCents`), whoever stops it and however late.

    Raises `Settled` when another actor settled this rental first (its replay answered).
    """
    user_id, rental_id = r.user_id, r.id
    if r.running_at is None:
        raise ValueError("only a running rental is settled")
    now = clock.now()
    end = now if until is None else min(now, until)
    deadline = limit_deadline(r)
    if deadline is not None:
        end = min(end, deadline[0])
    ran = max(0.0, end - r.running_at)  # raw: the refund rule compares this
    seconds = whole_seconds(ran)  # billed: whole seconds (floor)
    total = charge_for_seconds(seconds, r.price_per_hour_cents)
    invoice: list[Invoice] = []  # the overage invoice this attempt plans (at most one)
    # A short run's refund draws on the user's allowance (kept on the wallet item, so two
    # settlements racing cannot both take the last one); a provider's crash is always refunded.
    counted = ran < REFUND_WINDOW and reason != "provider_failure" and total > 0  # a free run costs no slot
    short: list[ShortRunRefund] = []  # what this attempt planned (at most one)

    def refund_short() -> bool:
        return short[0]["refunded"] if short else True

    def planner(w: wallet.Wallet) -> list[wallet.Step]:
        m = meters.of(w, r)  # its meter as of this wallet (on the wallet once metering ticked it)
        delta = max(0, total - views.metered_cents(m))
        charge = wallet.plan_charge(w, m.reserve_cents, delta, 0, {"rentalId": rental_id})
        if meters.on_wallet(w, r):
            charge = replace(charge, meters={rental_id: None})  # settled: the meter goes back to the rental
        split = charge.info["split"]
        w2 = wallet.Wallet(user_id, w.available + charge.available_delta, w.reserved + charge.reserved_delta)
        steps = [charge, wallet.plan_release(w2, split.reserve_after)]
        short.clear()
        if counted:
            recent = [t for t in w.short_run_refunds if t > now - SHORT_RUN_PERIOD]
            refunded = len(recent) < SHORT_RUN_ALLOWANCE
            log = [*recent, now] if refunded else recent
            short.append({"refunded": refunded, "remaining": max(0, SHORT_RUN_ALLOWANCE - len(log)),
                          "limit": SHORT_RUN_ALLOWANCE, "windowHours": SHORT_RUN_PERIOD // 3600})
            steps[-1] = replace(steps[-1], wallet_sets={"shortRunRefunds": log})
        final = plan_settlement(m, seconds, split, ran, refund_short())
        if final.refund > 0:
            steps.append(wallet.plan_credit(w2, final.refund, "refund", {"rentalId": rental_id}))
        invoice.clear()
        if final.overage > 0:
            invoice.append(invoices.overage_invoice(r, final.overage, end))
            steps.append(invoices.plan_open(invoice[0]))
        return steps

    def extras(w: wallet.Wallet, steps: Sequence[wallet.Step]) -> list[TransactItem]:
        final = plan_settlement(meters.of(w, r), seconds, steps[0].info["split"], ran, refund_short())
        changes: RentalChanges = {
            "status": to_status, "stopped_at": now, "stop_reason": reason, "billed_seconds": seconds,
            "charged_cents": final.charged, "refunded_cents": final.refund, "reserve_cents": 0,
            "overage_cents": final.overage, "metered_until": end,
            "overage_invoice_id": invoice[0].id if invoice else None,
            "short_run_refund": short[0] if short else None,
        }
        if error:
            changes["error"] = error[:500]
        items = [store.update_item(user_id, rental_id, changes, ("running",), r.version)]
        return items + (invoices.open_items(invoice[0]) if invoice else [])

    def effects(w: wallet.Wallet, steps: Sequence[wallet.Step]) -> list[wallet.Effect]:
        # The overage invoice's Stripe copy is made by the timer function, never inside a stop.
        return [("invoice_mirror", {"invoiceId": invoice[0].id})] if invoice else []

    result = wallet.apply(user_id, f"settle:{rental_id}",
                          {"op": "settle", "rental": rental_id, "seconds": seconds}, planner, extras,
                          effects=effects)
    if result.replayed:
        raise Settled()
    found = store.get(user_id, rental_id)
    assert found is not None
    return found


def stop(user_id: str, rental_id: str, reason: StopReason = "user") -> dict[str, Any]:
    """`POST /v1/rentals/{id}/stop` and every server-initiated stop.

    Exactly one of several concurrent stops wins (the others answer 409
    `already_stopped`); a stop whose rental another actor touched meanwhile
    (a health check, a metering tick) re-reads it and tries again.
    """
    already = ApiError("already_stopped", "This rental is already in a terminal state")
    for _ in range(5):
        r = views.get_owned(user_id, rental_id)
        if r.status in ("stopping", "stopped", "failed"):
            raise already
        try:
            if r.status == "provisioning":
                changes: RentalChanges = {"status": "stopping", "stopped_at": clock.now(), "stop_reason": reason,
                                          "reserve_cents": 0}
                result = wallet.release(
                    user_id, r.reserve_cents, f"stop:{rental_id}",
                    extras=lambda w, steps, changes=changes, r=r: [  # type: ignore[misc]
                        store.update_item(user_id, rental_id, changes, ("provisioning",), r.version)])
                if result.replayed:
                    raise already
                r = views.get_owned(user_id, rental_id)
            else:
                r = settle(r, reason)
        except (Settled, wallet.IdempotencyMismatch):
            raise already from None
        except wallet.BusinessConditionFailed:
            continue  # the rental moved on under us: look again
        count("Stops")
        instances.terminate_quietly(r)
        timers.arm(user_id, clock.now() + FOLLOW_UP, rental_id)  # stopping → stopped without waiting a minute
        answer: dict[str, Any] = {"id": r.id, "status": "stopping", "finalChargedCents": views.metered_cents(r),
                                  "refundedCents": r.refunded_cents}
        if r.short_run_refund:  # extension: it ran under a minute; was it refunded, how many are left
            answer["shortRunRefund"] = dict(r.short_run_refund)
        return answer
    raise ApiError("internal_error", "The rental kept changing; please retry the stop")


def enforce_limit(r: Rental) -> Rental:
    """Stop a running rental whose own limit (`autoStopAfterHours`, `maxTotalCents`) is due,
    billed up to the limit's moment, not to when we got round to it."""
    deadline = limit_deadline(r)
    if deadline is None or clock.now() < deadline[0]:
        return r
    try:
        found = settle(r, deadline[1], until=deadline[0])
    except (Settled, wallet.BusinessConditionFailed, wallet.IdempotencyMismatch):
        return store.get(r.user_id, r.id) or r
    count("LimitStops")
    instances.terminate_quietly(found)
    timers.arm(r.user_id, clock.now() + FOLLOW_UP, r.id)
    return found


def fail(r: Rental, error: str) -> Rental:
    """provisioning → failed: never billed, the reserve goes back to available."""
    user_id, rental_id = r.user_id, r.id
    changes: RentalChanges = {"status": "failed", "error": error[:500], "reserve_cents": 0, "stopped_at": clock.now()}
    try:
        wallet.release(user_id, r.reserve_cents, f"fail:{rental_id}",
                       extras=lambda w, steps: [store.update_item(user_id, rental_id, changes, ("provisioning",),
                                                                  r.version)])
    except (wallet.BusinessConditionFailed, wallet.IdempotencyMismatch):
        pass  # someone else moved it on first
    count("LaunchFailures")
    found = store.get(user_id, rental_id)
    assert found is not None
    return found
