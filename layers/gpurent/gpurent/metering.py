"""Metering: running time turned into ledger rows, and stops on time.

**The sweep** (every minute, fanned out over the index shards by
`gpurent.sweep`) charges every running rental up to now, one transaction per
wallet: its running rentals (read from the sparse
`ActiveIndex`, never a Scan) are charged in one `TransactWriteItems` (chunked
under the 100-item limit): per rental, `round_half_up(billedSeconds × rate /
3600)` minus what it was already charged, taken from its reserve, the reserve
topped back up to one hour out of available (`spec/decisions.md` "Money").
Each rental's `meteredUntil` / `chargedCents` move only inside that
transaction, under a condition on the rental's version, so a sweep killed
halfway, two sweeps overlapping or a retried invocation never charge twice
nor skip.

**Exhausted wallet.** A wallet that cannot pay (available 0 and a reserve
that could not cover its charge) is exhausted: all of its running rentals are
stopped with reason `insufficient_balance`; usage beyond the money becomes an
overage invoice at settlement (`rentals.settle`).

**On time, not once a minute.** After charging a wallet, its next deadline
is computed: the earliest `autoStopAfterHours` / `maxTotalCents` moment of
its rentals, and the second its money runs out (predicted by running the
same charging plan forward, `predict_exhaustion`). A deadline before the
next sweep arms a timer (`gpurent.timers`) for that second; the timer meters
the wallet again then (`on_timer`), which stops what is due and arms the next
one. `docs/metering.md` explains the mechanism.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gpurent import clock, notify, rentals, timers, wallet
from gpurent.money import charge_for_seconds, dollars, whole_seconds
from gpurent.records import Rental
from gpurent.store import identity
from gpurent.store import rentals as store
from gpurent.store.money import TransactItem
from gpurent.telemetry import count, logger

CHUNK = 45  # rentals per transaction: 2 items each (row update + ledger row) + wallet + marker
# A tick's marker (its key is random, never retried later) only has to outlive the tick: without
# a TTL, a thousand wallets would leave ~1.4 million markers a day behind.
METER_MARKER_TTL = 86400


def billable_seconds(r: Rental, now: float) -> int:
    """Seconds run so far, never past the rental's own limits."""
    if r.running_at is None:
        raise ValueError("only a running rental is billed")
    end = now
    deadline = rentals.limit_deadline(r)
    if deadline is not None:
        end = min(end, deadline[0])
    return whole_seconds(end - r.running_at)


def _delta(r: Rental, now: float) -> tuple[int, int]:
    """(billed seconds, charge not yet taken) of a running rental at `now`."""
    seconds = billable_seconds(r, now)
    total = charge_for_seconds(seconds, r.price_per_hour_cents)
    return seconds, max(0, total - rentals.metered_cents(r))


def plan_charges(w: wallet.Wallet, batch: Sequence[Rental], now: float) -> list[wallet.Step]:
    """One charge step per rental, in order, each against the wallet the previous left."""
    steps = []
    cur = w
    for r in batch:
        _, delta = _delta(r, now)
        rate = r.price_per_hour_cents
        step = wallet.plan_charge(cur, r.reserve_cents, delta, rate, {"rentalId": r.id})
        steps.append(wallet.with_step_info(step, rentalId=r.id))
        cur = wallet.Wallet(w.user_id, cur.available + step.available_delta, cur.reserved + step.reserved_delta)
    return steps


def is_exhausted(available_after: int, splits: Sequence[Any]) -> bool:
    """Available is 0 and some rental's reserve could not pay (or was emptied by) its charge."""
    def get(s: Any, k: str) -> int:
        return int(s[k] if isinstance(s, dict) else getattr(s, k))

    return available_after == 0 and any(get(s, "overage") > 0 or get(s, "reserve_after") == 0 for s in splits)


def exhausted_at(available: int, running: Sequence[Rental], t: float) -> bool:
    """Would a charge of every running rental up to `t` exhaust the wallet?"""
    w = wallet.Wallet("", available, 0)  # the plan reads available and each rental's own reserve
    steps = plan_charges(w, running, t)
    after = available + sum(s.available_delta for s in steps)
    return is_exhausted(after, [s.info["split"] for s in steps])


def predict_exhaustion(available: int, running: Sequence[Rental], now: float,
                       horizon: float) -> float | None:
    """The first whole second after `now` (up to `now + horizon`) at which the money runs out, or None.

    Runs the charging plan itself forward, so the prediction and the charge can
    never disagree about the rules; charges only grow with time, so a binary
    search finds the moment.
    """
    if not running or not exhausted_at(available, running, now + horizon):
        return None
    lo, hi = 0, int(horizon)  # exhausted at hi, and (below) not at lo
    if exhausted_at(available, running, now):
        return now
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if exhausted_at(available, running, now + mid):
            hi = mid
        else:
            lo = mid
    return now + hi


@dataclass
class Charged:
    """What charging a wallet's rentals left: the wallet's available and each rental as now stored."""

    available: int | None = None
    rentals: list[Rental] = field(default_factory=list)
    charged: int = 0
    exhausted: bool = False
    conflicts: int = 0


def charge_wallet(user_id: str, batch: list[Rental], now: float) -> tuple[wallet.Result, list[Rental]]:
    """Charge these running rentals of one wallet up to `now` in one transaction.

    Returns the money result and the rentals as they are after it.
    """
    after: list[Rental] = []

    def extras(w: wallet.Wallet, steps: Sequence[wallet.Step]) -> list[TransactItem]:
        items = []
        after.clear()
        for r, step in zip(batch, steps, strict=True):
            split = step.info["split"]
            seconds, _ = _delta(r, now)
            charged, overage = r.charged_cents + split.charged, r.overage_cents + split.overage
            items.append(store.update_item(r.user_id, r.id, {
                "charged_cents": charged, "reserve_cents": split.reserve_after, "billed_seconds": seconds,
                "metered_until": now, "overage_cents": overage,
            }, ("running",), r.version))
            after.append(replace(r, charged_cents=charged, reserve_cents=split.reserve_after, billed_seconds=seconds,
                                 metered_until=now, overage_cents=overage, version=r.version + 1))
        return items

    result = wallet.apply(user_id, f"meter:{user_id}:{uuid.uuid4().hex}", {"op": "meter"},
                          lambda w: plan_charges(w, batch, now), extras, marker_ttl=METER_MARKER_TTL)
    return result, after


def _charge_all(user_id: str, running: list[Rental], now: float) -> Charged:
    out = Charged()
    for start in range(0, len(running), CHUNK):
        batch = running[start:start + CHUNK]
        try:
            result, after = charge_wallet(user_id, batch, now)
        except wallet.BusinessConditionFailed:
            # A rental moved on (stopped, or another sweep charged it): re-read and retry once.
            out.conflicts += 1
            fresh = [x for x in (store.get(user_id, r.id) for r in batch) if x and x.status == "running"]
            if not fresh:
                continue
            try:
                result, after = charge_wallet(user_id, fresh, now)
            except wallet.BusinessConditionFailed:
                continue
        splits = [s["split"] for s in result.steps]  # dicts: ChargeSplit as the operation stored it
        out.available = result.available
        out.rentals.extend(after)
        out.charged += sum(int(s["charged"]) for s in splits)
        out.exhausted = out.exhausted or is_exhausted(result.available, splits)
    return out


def meter_wallet(user_id: str, running: list[Rental], now: float) -> Charged:
    """Charge a wallet's running rentals to `now`, stop what is due, arm the next deadline."""
    running = [r for r in running if r.running_at is not None]
    if not running:
        return Charged()
    out = _charge_all(user_id, running, now)
    if out.exhausted:
        stop_all(user_id)
        return out
    live = []
    for r in out.rentals:
        deadline = rentals.limit_deadline(r)
        if deadline is not None and deadline[0] <= now:
            rentals.enforce_limit(r)
        else:
            live.append(r)
    if out.available is not None:
        arm_next(user_id, out.available, live, now)
    return out


def arm_next(user_id: str, available: int, running: list[Rental], now: float) -> float | None:
    """Arm a timer for the wallet's next deadline if it falls before the next sweep."""
    candidates = []
    for r in running:
        deadline = rentals.limit_deadline(r)
        if deadline is not None and deadline[0] <= now + timers.WINDOW:
            candidates.append(deadline[0])
    exhaustion = predict_exhaustion(available, running, now, timers.WINDOW)
    if exhaustion is not None:
        candidates.append(exhaustion)
    if not candidates:
        return None
    due = min(candidates)
    timers.arm(user_id, due)
    return due


def on_timer(user_id: str) -> dict[str, int]:
    """A timer came due: meter this wallet now (which stops what is due and arms the next)."""
    now = clock.now()
    out = meter_wallet(user_id, store.live_for_user(user_id, "running"), now)
    return {"rentals": len(out.rentals), "chargedCents": out.charged, "exhausted": int(out.exhausted)}


def stop_all(user_id: str) -> None:
    """The wallet ran dry: stop every running rental of the user (server-initiated), then a courtesy email."""
    stopped = []
    for r in store.live_for_user(user_id, "running"):
        try:
            stopped.append(rentals.stop(user_id, r.id, reason="insufficient_balance"))
        except Exception:
            logger.exception("empty-wallet stop failed; the next sweep retries", extra={"rentalId": r.id})
    if stopped:
        count("WalletsExhausted")
        user = identity.get_user(user_id)
        if user is not None:
            lines = "\n".join(f"- {s['id']}: charged {dollars(s['finalChargedCents'])}" for s in stopped)
            notify.send(user["email"], "Your gpurent pods were stopped: the wallet is empty",
                        f"Your wallet ran out of money, so we stopped your running pods:\n{lines}\n\n"
                        "Any usage beyond your balance is on an overage invoice (see Billing → Invoices).\n"
                        "Top up to launch again.")
