"""The wallet: available / reserved cents, moved only by money operations.

A money operation is planned as plain arithmetic on the wallet as read
(`plan_*` functions of `gpurent.wallet_plan`, re-exported here) and written by
`gpurent.store.money` as ONE transaction: the wallet update guarded by its
version, the ledger rows, a marker named by the operation's idempotency key
(none for a metering tick, which the wallet's version makes exactly-once: see
`apply`), and the business rows the caller passes in. So it happens whole or
not at all, exactly once per key:

- a retry of an operation that did commit finds its marker and answers what
  the first attempt answered;
- a concurrent writer changes the version: the transaction is cancelled and
  re-planned from a fresh read (the wallet DynamoDB returns with the failed
  condition), a bounded number of times (`gpurent.retry`: a person's request
  gives up sooner than background work), then fails loudly.

Ledger rows carry `balanceAfterCents` = the wallet *total* after the entry;
moving money between available and reserved is not a ledger entry.

The wallet depends on nothing above `gpurent.store` (and the timer queue):
whether an auto-topup is due is a *state* of the wallet item
(`Wallet.auto_topup_state`), and a debit that leaves the wallet in that state
only arms a timer (`timers.AUTO_TOPUP`); the timer function charges the card.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, cast

from gpurent import clock, ids, retry, timers
from gpurent.errors import ApiError, ConflictRetryExhausted
from gpurent.ledger import LEDGER_TYPES
from gpurent.records import LedgerRefs, LedgerRow, MeterItem, OpMarker, OpResult, StepRecord, WalletItem
from gpurent.store import money as store
from gpurent.store import outbox as outbox_store
from gpurent.telemetry import logger

# The wallet's values and pure planning live in `gpurent.wallet_plan`; they are part of the
# wallet's surface, so they are re-exported here (`wallet.Wallet`, `wallet.plan_credit`, ...).
from gpurent.wallet_plan import AUTO_TOPUP_COOLDOWN as AUTO_TOPUP_COOLDOWN
from gpurent.wallet_plan import AUTO_TOPUP_RESUME_AFTER as AUTO_TOPUP_RESUME_AFTER
from gpurent.wallet_plan import AUTO_TOPUP_WINDOW as AUTO_TOPUP_WINDOW
from gpurent.wallet_plan import COOLING as COOLING
from gpurent.wallet_plan import DUE as DUE
from gpurent.wallet_plan import OFF as OFF
from gpurent.wallet_plan import PENDING as PENDING
from gpurent.wallet_plan import SATISFIED as SATISFIED
from gpurent.wallet_plan import ChargeSplit as ChargeSplit
from gpurent.wallet_plan import Entry as Entry
from gpurent.wallet_plan import InsufficientBalance as InsufficientBalance
from gpurent.wallet_plan import Step as Step
from gpurent.wallet_plan import StepInfo as StepInfo
from gpurent.wallet_plan import Wallet as Wallet
from gpurent.wallet_plan import plan_charge as plan_charge
from gpurent.wallet_plan import plan_credit as plan_credit
from gpurent.wallet_plan import plan_debit as plan_debit
from gpurent.wallet_plan import plan_release as plan_release
from gpurent.wallet_plan import plan_reserve as plan_reserve
from gpurent.wallet_plan import split_charge as split_charge
from gpurent.wallet_plan import total_after as total_after
from gpurent.wallet_plan import with_step_info as with_step_info


class IdempotencyMismatch(ApiError):
    def __init__(self) -> None:
        super().__init__(
            "validation_failed",
            "This idempotency key was already used with different parameters",
            {"idempotencyKey": "already used with different parameters"},
        )


class BusinessConditionFailed(Exception):
    """A business row's condition failed (e.g. the rental moved on); nothing was applied."""

    def __init__(self, index: int, old: dict[str, Any] | None) -> None:
        super().__init__(f"business row {index} condition failed")
        self.index = index
        self.old = old


# ---------------------------------------------------------------- applying

@dataclass(frozen=True)
class Result:
    """What a money operation answers (the same on a replay of its key)."""

    entries: list[LedgerRow]
    available: int
    reserved: int
    steps: list[StepRecord]
    replayed: bool = False
    wallet: Wallet | None = None  # the wallet right after the operation (None on a replay)

    @property
    def total(self) -> int:
        return self.available + self.reserved


Planner = Callable[[Wallet], Sequence[Step]]
Extras = Callable[[Wallet, Sequence[Step]], list[store.TransactItem]]
Effect = tuple[str, dict[str, Any]]  # (kind, payload): see `gpurent.outbox`
Effects = Callable[[Wallet, Sequence[Step]], list[Effect]]


def fingerprint(description: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _step_record(info: StepInfo) -> StepRecord:
    """A step's info as the operation answers and stores it: a charge's split as a plain record."""
    return cast(StepRecord, {k: asdict(v) if isinstance(v, ChargeSplit) else v for k, v in info.items()})


def apply(
    user_id: str,
    op_key: str,
    description: Mapping[str, object],
    planner: Planner,
    extras: Extras | None = None,
    before_write: Callable[[], None] | None = None,
    marker: bool = True,
    check_auto_topup: bool = True,
    effects: Effects | None = None,
    known: WalletItem | None = None,
) -> Result:
    """Plan against a fresh read and write it as one transaction, exactly once per `op_key`.

    `marker=False`: the operation writes no marker, for operations that are exactly-once
    without one and whose key is never replayed (a metering tick: its key is random, and
    the meters it moves are on the wallet item, whose version the write is conditioned on
    (a rental's first tick also on the rental's version), so the same charge can never
    commit twice; `docs/decisions.md` "Metering writes"). The
    transaction then carries a client request token instead, so a request the SDK resends
    after a lost answer is not applied twice either (it could not be: the versions moved;
    the token only spares the re-plan). Such an operation is never answered as a replay.

    `description` names the operation and its parameters: a replay of the key
    with a different description is refused (IdempotencyMismatch).
    `check_auto_topup=False`: the caller asks the auto-topup question itself (the
    metering pass asks it once per wallet, whether or not available moved).
    `effects`: side effects the operation owes (emails, Stripe mirrors), written as
    outbox items in the same transaction and done by the timer function
    (`gpurent.outbox`): they exist exactly when the money moved, and nothing after the
    commit can fail the operation.
    `known`: the wallet item as the caller itself read it a moment ago (a top-up reads it for
    the card and customer on it): the first attempt plans on it instead of reading it again.
    A stale one costs nothing but a re-plan: the write is conditioned on the wallet's version,
    and a cancelled transaction returns the wallet that won (billing settings written since do
    not touch the version or the money fields).
    `before_write` is a test seam (fault injection between read and write).
    """
    fp = fingerprint(description)
    backoff = retry.policy()
    pause = 0.0
    fresh: WalletItem | None = known  # the wallet as the caller read it, or as the writer that beat us left it
    for attempt in range(backoff.attempts):
        started = time.monotonic()
        wallet = Wallet.from_record(user_id, fresh if fresh is not None else store.get_wallet(user_id))
        fresh = None
        now = clock.now()
        try:
            steps = list(planner(wallet))
            rows, available, reserved, last = _ledger_rows(wallet, steps, op_key, now)
        except (ApiError, ValueError):
            # A refusal (insufficient balance, a reserve that is no longer
            # there) may only be because this very operation already happened:
            # then its replay answers, not the refusal.
            if store.get_op_marker(op_key) is not None:
                return _replay(op_key, fp)
            raise
        meters = _meters_after(wallet, steps)
        after = replace(wallet, available=available, reserved=reserved, version=wallet.version + 1,
                        last_ledger_ulid=last, updated_at=now, meters=wallet.meters if meters is None else meters)
        result = Result(rows, available, reserved, [_step_record(s.info) for s in steps], wallet=after)
        state: WalletItem = {
            "availableCents": available,
            "reservedCents": reserved,
            "version": wallet.version + 1,
            "updatedAt": now,
        }
        if last is not None:
            state["lastLedgerUlid"] = last
        if wallet.version == 0:
            state.update({"userId": user_id, "createdAt": now, "openInvoicesCents": 0, "openInvoiceCount": 0})
        for step in steps:
            state.update(step.wallet_sets)
        if meters is not None:
            state["meters"] = meters
        invoice_cents = sum(s.open_invoices[0] for s in steps)
        invoice_count = sum(s.open_invoices[1] for s in steps)
        if invoice_cents or invoice_count:
            state["openInvoicesCents"] = wallet.open_invoices_cents + invoice_cents
            state["openInvoiceCount"] = wallet.open_invoice_count + invoice_count
            if state["openInvoicesCents"] < 0 or state["openInvoiceCount"] < 0:
                raise AssertionError("open invoice counters cannot go below zero")
        business = list(extras(wallet, steps)) if extras else []
        owed = list(effects(wallet, steps)) if effects else []
        items = [store.wallet_update(user_id, state, wallet.version)]
        if marker:
            items.append(store.op_put(OpMarker(op_key, user_id, fp, now,
                                               OpResult(rows, available, reserved, result.steps))))
        first_row = len(items)
        items += [store.ledger_put(user_id, r) for r in rows]
        items += business
        items += [outbox_store.put_item(user_id, kind, payload, now, seq) for seq, (kind, payload) in enumerate(owed)]
        if before_write is not None:
            before_write()
        try:
            if marker:
                store.transact(items)
            else:
                store.transact(items, _request_token(op_key, attempt))
        except store.TransactionConflict:
            pass
        except store.TransactionCancelled as exc:
            if marker and exc.codes[1] == "ConditionalCheckFailed":
                return _replay(op_key, fp)
            first_business = first_row + len(rows)
            for i, code in enumerate(exc.codes[first_business:], start=first_business):
                if code == "ConditionalCheckFailed":
                    raise BusinessConditionFailed(i - first_business, exc.items[i]) from None
            if exc.codes[0] != "ConditionalCheckFailed" and "TransactionConflict" not in exc.codes:
                raise
            if exc.codes[0] == "ConditionalCheckFailed":
                fresh = store.wallet_from_item(exc.items[0])  # DynamoDB returned the wallet that won: no re-read
        else:
            if owed:
                _kick_outbox(user_id)
            if check_auto_topup and available < wallet.available:
                after_debit(after)
            return result
        if attempt + 1 < backoff.attempts:
            pause = backoff.next_pause(pause, time.monotonic() - started)
            time.sleep(pause)
    raise ConflictRetryExhausted(f"wallet {user_id}: {backoff.attempts} attempts lost to concurrent writers")


def _meters_after(wallet: Wallet, steps: Sequence[Step]) -> dict[str, MeterItem] | None:
    """The running rentals' meters after the steps (None: the steps change none)."""
    changes = {rid: m for step in steps for rid, m in step.meters.items()}
    if not changes:
        return None
    merged = {**wallet.meters, **changes}
    return {rid: m for rid, m in merged.items() if m is not None}


def _request_token(op_key: str, attempt: int) -> str:
    """A transaction's client request token (at most 36 characters): one per attempt, since
    each attempt is planned afresh and DynamoDB refuses a token reused with other items."""
    return hashlib.sha256(f"{op_key}#{attempt}".encode()).hexdigest()[:36]


def _kick_outbox(user_id: str) -> None:
    """Have the timer function do the effects this operation owes, now (never raises: the
    sweep re-arms overdue outboxes)."""
    try:
        timers.arm(user_id, clock.now(), kind=timers.OUTBOX)
    except Exception:
        logger.exception("arming the outbox timer failed; the sweep re-arms it", extra={"userId": user_id})


def after_debit(after: Wallet) -> None:
    """Every debit of available is followed by the auto-topup check (`spec/decisions.md`):
    if the wallet is now in the DUE state (or an attempt is stuck), a timer is armed for
    now and the timer function charges the card. Stripe is never called from here.

    It never fails the operation that triggered it: the money moved already (and every
    metering sweep and timer asks the same question again).
    """
    if after.auto_topup_threshold is None and not after.auto_topup_pending:
        return
    now = clock.now()
    if not after.auto_topup_needs_timer(now):
        return
    try:
        timers.arm(after.user_id, now, kind=timers.AUTO_TOPUP)
    except Exception:
        logger.exception("arming the auto-topup timer failed; the next sweep or timer re-arms it",
                         extra={"userId": after.user_id})


def _ledger_rows(
    wallet: Wallet, steps: Sequence[Step], op_key: str, now: float
) -> tuple[list[LedgerRow], int, int, str | None]:
    """The ledger rows of `steps` applied to `wallet`, and the wallet after them."""
    available, reserved = wallet.available, wallet.reserved
    rows: list[LedgerRow] = []
    last = wallet.last_ledger_ulid
    for step in steps:
        if sum(e.amount for e in step.entries) != step.available_delta + step.reserved_delta:
            raise AssertionError("ledger entries must account for the change of the total")
        available += step.available_delta
        reserved += step.reserved_delta
        running = available + reserved - sum(e.amount for e in step.entries)
        for e in step.entries:
            if e.type not in LEDGER_TYPES:
                raise AssertionError(f"unknown ledger type {e.type}")
            running += e.amount
            last = ids.next_ulid_after(last, now)
            refs = cast(LedgerRefs, {k: v for k, v in e.refs.items() if v is not None})
            rows.append(
                {
                    "id": f"led_{last}",
                    "type": e.type,
                    "amountCents": e.amount,
                    "balanceAfterCents": running,
                    "createdAt": now,
                    "opKey": op_key,
                    **refs,
                }
            )
    if available < 0 or reserved < 0:
        raise ValueError("a plan may never take a wallet below zero")
    return rows, available, reserved, last


def _replay(op_key: str, fp: str) -> Result:
    marker = store.get_op_marker(op_key)
    if marker is None:
        raise AssertionError("an operation marker vanished")
    if marker.fingerprint != fp:
        raise IdempotencyMismatch()
    r = marker.result
    return Result(list(r.entries), r.available, r.reserved, list(r.steps), True)


def get(user_id: str) -> Wallet:
    return Wallet.from_record(user_id, store.get_wallet(user_id))


# ---------------------------------------------------------------- the operations

def credit(user_id: str, amount: int, entry_type: str, op_key: str, refs: LedgerRefs | None = None,
           extras: Extras | None = None, effects: Effects | None = None) -> Result:
    desc = {"op": "credit", "amount": amount, "type": entry_type, "refs": refs or {}}
    return apply(user_id, op_key, desc, lambda w: [plan_credit(w, amount, entry_type, refs)], extras,
                 effects=effects)


def debit(user_id: str, amount: int, op_key: str, refs: LedgerRefs | None = None,
          extras: Extras | None = None, effects: Effects | None = None) -> Result:
    desc = {"op": "debit", "amount": amount, "refs": refs or {}}
    return apply(user_id, op_key, desc, lambda w: [plan_debit(w, amount, "adjustment", refs)], extras,
                 effects=effects)


def adjust(user_id: str, amount: int, op_key: str, refs: LedgerRefs, extras: Extras | None = None,
           effects: Effects | None = None) -> Result:
    """An admin adjustment: positive credits, negative debits (never below zero)."""
    if amount == 0:
        raise ValueError("an adjustment is not zero")
    if amount > 0:
        return credit(user_id, amount, "adjustment", op_key, refs, extras, effects)
    return debit(user_id, -amount, op_key, refs, extras, effects)


def reserve(user_id: str, amount: int, op_key: str, extras: Extras | None = None) -> Result:
    return apply(user_id, op_key, {"op": "reserve", "amount": amount}, lambda w: [plan_reserve(w, amount)], extras)


def release(user_id: str, reserve_held: int, op_key: str, extras: Extras | None = None) -> Result:
    desc = {"op": "release", "amount": reserve_held}
    return apply(user_id, op_key, desc, lambda w: [plan_release(w, reserve_held)], extras)


def charge(user_id: str, reserve_held: int, amount: int, reserve_target: int, op_key: str,
           refs: LedgerRefs, extras: Extras | None = None) -> Result:
    desc = {"op": "charge", "reserve": reserve_held, "amount": amount, "target": reserve_target, "refs": refs}
    return apply(user_id, op_key, desc, lambda w: [plan_charge(w, reserve_held, amount, reserve_target, refs)],
                 extras)


