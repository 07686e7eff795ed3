"""Metering: running time turned into ledger rows, and stops on time.

**The sweep** (every minute, fanned out over the index shards by
`gpurent.sweep`) charges every running rental up to now, one transaction per
wallet: its running rentals (read from the sparse
`ActiveIndex`, never a Scan) are charged in one `TransactWriteItems` (chunked
under the 100-item limit): per rental, `round_half_up(billedSeconds × rate /
3600)` minus what it was already charged, taken from its reserve, the reserve
topped back up to one hour out of available (`spec/decisions.md` "Money").
Each rental's meter (`meteredUntil`, `chargedCents`, its reserve) moves only inside
that transaction: kept on the wallet's item from its first tick on
(`gpurent.rentals.meters`), so the wallet's version makes the tick exactly-once (the
first tick also writes the rental under a condition on its version). A sweep killed
halfway, two sweeps overlapping or a retried invocation never charge twice nor skip.

**Exhausted wallet.** A wallet that cannot pay (available 0 and a reserve
that could not cover its charge) is exhausted: all of its running rentals are
stopped with reason `insufficient_balance`; usage beyond the money becomes an
overage invoice at settlement (`rentals.settle`) — unless an auto-topup could
still save it: an attempt claimed less than `AUTO_TOPUP_WINDOW` ago (or one
due now, which the pass claims) holds the stop; the wallet is metered again
right after the attempt's outcome, and at the latest when its window closes.

**Auto-topup is a state.** Every pass (sweep or timer) asks the wallet it
just charged whether an auto-topup is due (below the threshold, not cooling
down, nothing pending) or stuck, and arms the auto-topup timer if so, whether
or not this tick took anything from available.

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

from gpurent import clock, outbox, rentals, timers, wallet
from gpurent.config import settings
from gpurent.money import charge_for_seconds, whole_seconds
from gpurent.records import Rental, WalletItem
from gpurent.rentals import meters
from gpurent.store import rentals as store
from gpurent.store.money import TransactItem
from gpurent.telemetry import count, logger

CHUNK = 45  # rentals per transaction: at most 2 items each (a first tick's row update + ledger row) + the wallet


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


def charged(r: Rental, split: wallet.ChargeSplit, now: float) -> Rental:
    """The rental's meter after a charge of it up to `now` paid as `split`.

    Never backwards: a pass that is behind another (it planned on a meter a later pass had
    already moved) keeps what is stored; its charge for those seconds is 0 (`_delta`)."""
    seconds, _ = _delta(r, now)
    return replace(r, charged_cents=r.charged_cents + split.charged, reserve_cents=split.reserve_after,
                   billed_seconds=max(seconds, r.billed_seconds), metered_until=max(now, r.metered_until or now),
                   overage_cents=r.overage_cents + split.overage)


def plan_charges(w: wallet.Wallet, batch: Sequence[Rental], now: float) -> list[wallet.Step]:
    """One charge step per rental, in order, each against the wallet the previous left; each
    step puts the rental's meter after it on the wallet (`rentals.meters`), while the wallet
    has room and the setting `meters_on_wallet` is on; with it off, a meter on the wallet goes
    back to its rental (`charge_wallet` writes the rental whenever its meter is not on the
    wallet after the step)."""
    steps = []
    cur = w
    on = settings().meters_on_wallet
    room = meters.MAX_ON_WALLET - len(w.meters) if on else 0  # beyond it a meter stays on its rental
    for stored in batch:
        r = meters.of(w, stored)
        _, delta = _delta(r, now)
        rate = r.price_per_hour_cents
        step = wallet.with_step_info(wallet.plan_charge(cur, r.reserve_cents, delta, rate, {"rentalId": r.id}),
                                     rentalId=r.id)
        was = meters.on_wallet(w, stored)
        keep = was and on
        if not keep and not was and room > 0:
            keep, room = True, room - 1
        if keep:
            step = replace(step, meters={r.id: meters.item(charged(r, step.info["split"], now))})
        elif was:
            step = replace(step, meters={r.id: None})  # the setting is off: back to its rental
        steps.append(step)
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
    wallet_after: wallet.Wallet | None = None  # the wallet after the last charge (its auto-topup state)


def charge_wallet(user_id: str, batch: list[Rental], now: float,
                  known: WalletItem | None = None) -> tuple[wallet.Result, list[Rental]]:
    """Charge these running rentals of one wallet up to `now` in one transaction.

    `known`: the wallet item as the sweep read it with others (`wallet.apply`: planned on, not
    read again; a stale one only re-plans). Returns the money result and the rentals as they
    are after it.
    """
    after: list[Rental] = []

    def extras(w: wallet.Wallet, steps: Sequence[wallet.Step]) -> list[TransactItem]:
        items = []
        after.clear()
        for stored, step in zip(batch, steps, strict=True):
            r = charged(meters.of(w, stored), step.info["split"], now)
            if not meters.on_wallet(w, stored) or step.meters.get(r.id) is None:
                # Its meter was on the rental (its first tick, or a wallet without room) or goes
                # back to it (the setting is off): the rental is written, under a condition on its
                # version and status. With the meter on the rental that condition is what makes
                # the tick exactly-once, and what refuses a rental settled meanwhile (whose
                # settlement left no meter on the wallet to tell); once the meter is on the
                # wallet, its ticks write the wallet only.
                until = r.metered_until or now
                items.append(store.update_item(r.user_id, r.id, {
                    "charged_cents": r.charged_cents, "reserve_cents": r.reserve_cents,
                    "billed_seconds": r.billed_seconds, "metered_until": until, "overage_cents": r.overage_cents,
                }, ("running",), stored.version, not_metered_past=until))
                r = replace(r, version=stored.version + 1)
            after.append(r)
        return items

    result = wallet.apply(user_id, f"meter:{user_id}:{uuid.uuid4().hex}", {"op": "meter"},
                          lambda w: plan_charges(w, batch, now), extras, marker=False, check_auto_topup=False,
                          known=known)
    return result, after


def _charge_all(user_id: str, running: list[Rental], now: float, known: WalletItem | None = None) -> Charged:
    out = Charged()
    for start in range(0, len(running), CHUNK):
        batch = running[start:start + CHUNK]
        try:
            # Only the first chunk plans on the wallet as read: the chunks after it follow a
            # charge of this pass.
            result, after = charge_wallet(user_id, batch, now, known if start == 0 else None)
        except wallet.BusinessConditionFailed:
            # A rental moved on (stopped, or another sweep charged it): re-read and retry once.
            out.conflicts += 1
            fresh = [x for x in (store.get(user_id, r.id) for r in batch) if x and x.status == "running"]
            if not fresh:
                continue
            # Whoever moved it on may have metered it later than this pass's `now`: charge up to
            # the later of the two, never back to ours (a meter on the wallet is never behind
            # `now`: `charged` keeps the later one).
            now = max([now, *(x.metered_until or now for x in fresh)])
            try:
                result, after = charge_wallet(user_id, fresh, now)
            except wallet.BusinessConditionFailed:
                continue
        splits = [s["split"] for s in result.steps]  # dicts: ChargeSplit as the operation stored it
        out.available = result.available
        out.wallet_after = result.wallet
        out.rentals.extend(after)
        out.charged += sum(int(s["charged"]) for s in splits)
        out.exhausted = out.exhausted or is_exhausted(result.available, splits)
    return out


def meter_wallet(user_id: str, running: list[Rental], now: float, known: WalletItem | None = None) -> Charged:
    """Charge a wallet's running rentals to `now`, stop what is due, arm the next deadline.
    `known`: the wallet item, when the caller read it already (the sweep, 100 at a time)."""
    running = [r for r in running if r.running_at is not None]
    if not running:
        return Charged()
    out = _charge_all(user_id, running, now, known)
    held_until = None
    if out.wallet_after is not None:
        ask_auto_topup(out.wallet_after, now)
    if out.exhausted:
        held_until = hold_for_auto_topup(user_id, out.wallet_after, now)
        if held_until is None:
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
        arm_next(user_id, out.available, live, now, held_until)
    return out


def ask_auto_topup(w: wallet.Wallet, now: float) -> None:
    """The auto-topup question, asked of the wallet as this pass left it: due (or stuck) → its timer."""
    if w.auto_topup_needs_timer(now):
        timers.arm(w.user_id, now, kind=timers.AUTO_TOPUP)


def hold_for_auto_topup(user_id: str, w: wallet.Wallet | None, now: float) -> float | None:
    """An exhausted wallet whose auto-topup could still save it is not stopped yet.

    An attempt claimed less than `AUTO_TOPUP_WINDOW` ago holds the stop; one that is due
    now is claimed here (one conditional write; the card is charged by its timer) and
    holds it from now. Returns the moment the hold ends (the wallet is metered again
    then, and right after the attempt's outcome), or None: stop now.
    """
    if w is None:
        return None
    if not w.attempt_in_window(now):
        if w.auto_topup_state(now) != wallet.DUE:
            return None
        from gpurent.billing import autotopup
        from gpurent.store import billing as billing_store

        if autotopup.claim(user_id, billing_store.wallet_item(user_id), now) is None:
            return None
        timers.arm(user_id, now, kind=timers.AUTO_TOPUP)
        started = now
    else:
        started = float(w.auto_topup_attempt_at or now)
    count("ExhaustionHeldForAutoTopup")
    return started + wallet.AUTO_TOPUP_WINDOW


def arm_next(user_id: str, available: int, running: list[Rental], now: float,
             held_until: float | None = None) -> float | None:
    """Arm a timer for the wallet's next deadline if it falls before the next sweep.

    `held_until`: the wallet is exhausted but an auto-topup attempt holds the stop until
    then; that moment replaces the predicted exhaustion (which is now)."""
    candidates = []
    for r in running:
        deadline = rentals.limit_deadline(r)
        if deadline is not None and deadline[0] <= now + timers.WINDOW:
            candidates.append(deadline[0])
    exhaustion = held_until if held_until is not None else predict_exhaustion(available, running, now,
                                                                               timers.WINDOW)
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
    """The wallet ran dry: stop every running rental of the user (server-initiated). The courtesy
    email is owed first (an outbox effect, sent by the timer function with the list of what was
    stopped), so a crash between the stops cannot lose it."""
    running = store.live_for_user(user_id, "running")
    if not running:
        return
    outbox.add(user_id, "exhausted_email", {"since": clock.now()})
    stopped = 0
    for r in running:
        try:
            rentals.stop(user_id, r.id, reason="insufficient_balance")
            stopped += 1
        except Exception:
            logger.exception("empty-wallet stop failed; the next sweep retries", extra={"rentalId": r.id})
    if stopped:
        count("WalletsExhausted")
