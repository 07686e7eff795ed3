"""The wallet: available / reserved cents, moved only by money operations.

A money operation is planned here as plain arithmetic on the wallet as read
(`plan_*` functions, which tests call directly) and written by
`gpurent.store.money` as ONE transaction: the wallet update guarded by its
version, the ledger rows, a marker named by the operation's idempotency key
(none for a metering tick, which its rentals' versions make exactly-once: see
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gpurent import clock, ids, retry, timers
from gpurent.errors import ApiError, ConflictRetryExhausted
from gpurent.ledger import CREDIT_TYPES, LEDGER_TYPES
from gpurent.store import money as store
from gpurent.store import outbox as outbox_store
from gpurent.telemetry import logger

# Auto-topup as a state of the wallet item (`spec/decisions.md` "Auto-topup"): every debit,
# every metering sweep and every timer asks the same question, so no transition can be missed.
AUTO_TOPUP_COOLDOWN = 300  # seconds between attempts, counted from the attempt
AUTO_TOPUP_RESUME_AFTER = 60  # an attempt with no recorded outcome after this long is resumed
AUTO_TOPUP_WINDOW = 120  # a claimed attempt holds off an exhaustion stop at most this long
OFF, SATISFIED, PENDING, COOLING, DUE = "off", "satisfied", "pending", "cooling", "due"


@dataclass(frozen=True)
class Wallet:
    user_id: str
    available: int = 0
    reserved: int = 0
    version: int = 0
    last_ledger_ulid: str | None = None
    updated_at: float | None = None
    open_invoices_cents: int = 0
    open_invoice_count: int = 0
    # Set only while auto-topup is on (billing keeps it here so the check after a
    # debit needs no extra read).
    auto_topup_threshold: int | None = None
    auto_topup_attempt_at: float | None = None  # when the last attempt was claimed
    auto_topup_pending: bool = False  # claimed, outcome not yet recorded
    # When the user's recent under-a-minute runs were refunded (the allowance: `rentals`).
    short_run_refunds: tuple[float, ...] = ()

    @property
    def total(self) -> int:
        return self.available + self.reserved

    @classmethod
    def from_record(cls, user_id: str, record: dict[str, Any] | None) -> Wallet:
        if record is None:
            return cls(user_id)
        return cls(
            user_id=user_id,
            available=int(record.get("availableCents", 0)),
            reserved=int(record.get("reservedCents", 0)),
            version=int(record.get("version", 0)),
            last_ledger_ulid=record.get("lastLedgerUlid"),
            updated_at=record.get("updatedAt"),
            open_invoices_cents=int(record.get("openInvoicesCents", 0)),
            open_invoice_count=int(record.get("openInvoiceCount", 0)),
            auto_topup_threshold=(int(record["autoTopupThresholdCents"])
                                  if record.get("autoTopupThresholdCents") is not None else None),
            auto_topup_attempt_at=(float(record["autoTopupAttemptAt"])
                                   if record.get("autoTopupAttemptAt") is not None else None),
            auto_topup_pending=bool(record.get("autoTopupAttempt"))
            and record.get("autoTopupAttemptDone") != record.get("autoTopupAttempt"),
            short_run_refunds=tuple(float(t) for t in record.get("shortRunRefunds") or ()),
        )

    def auto_topup_state(self, now: float) -> str:
        """Where the wallet stands with auto-topup at `now`:

        - PENDING: an attempt was claimed and its outcome is not recorded (whatever the
          settings now: the card may have been charged, so it must be finished);
        - OFF: auto-topup is off (or has no card);
        - SATISFIED: available is at or above the threshold;
        - COOLING: below, but the last attempt was less than the cooldown ago;
        - DUE: below the threshold, not cooling down, no attempt pending: fire.
        """
        if self.auto_topup_pending:
            return PENDING
        if self.auto_topup_threshold is None:
            return OFF
        if self.available >= self.auto_topup_threshold:
            return SATISFIED
        if self.auto_topup_attempt_at is not None and now - self.auto_topup_attempt_at < AUTO_TOPUP_COOLDOWN:
            return COOLING
        return DUE

    def auto_topup_needs_timer(self, now: float) -> bool:
        """DUE, or PENDING for longer than an attempt should take (its invocation died)."""
        state = self.auto_topup_state(now)
        if state == DUE:
            return True
        return state == PENDING and now - (self.auto_topup_attempt_at or 0.0) >= AUTO_TOPUP_RESUME_AFTER

    def attempt_in_window(self, now: float) -> bool:
        """A claimed attempt that may still succeed within its bounded window."""
        return self.auto_topup_pending and now - (self.auto_topup_attempt_at or 0.0) < AUTO_TOPUP_WINDOW


@dataclass(frozen=True)
class Entry:
    """A ledger row to append: signed cents and its references."""

    type: str
    amount: int
    refs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One movement of a wallet: deltas of available and reserved, and ledger entries.

    The entries must account for the change of the total exactly:
    Σ entry.amount == available_delta + reserved_delta.
    """

    available_delta: int
    reserved_delta: int
    entries: tuple[Entry, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    # Open invoices the step adds (+) or settles (−): (cents, count). Not money in the
    # wallet, but the balance's `openInvoices*` counters live on the wallet item, so they
    # change in the same transaction as the invoice row.
    open_invoices: tuple[int, int] = (0, 0)
    # Other wallet fields the step sets in the same transaction (not money: e.g. the log of
    # refunded short runs), planned on the wallet as read, so they race like the money does.
    wallet_sets: dict[str, Any] = field(default_factory=dict)


class InsufficientBalance(ApiError):
    def __init__(self, message: str = "Available balance is below the 1-hour reserve") -> None:
        super().__init__("insufficient_balance", message)


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


# ---------------------------------------------------------------- pure planning

def plan_credit(w: Wallet, amount: int, entry_type: str, refs: dict[str, Any] | None = None) -> Step:
    if amount <= 0:
        raise ValueError("a credit is a positive amount")
    if entry_type not in CREDIT_TYPES:
        raise ValueError(f"{entry_type} is not a credit type")
    return Step(amount, 0, (Entry(entry_type, amount, dict(refs or {})),))


def plan_debit(w: Wallet, amount: int, entry_type: str = "adjustment", refs: dict[str, Any] | None = None) -> Step:
    """Take money out of available (a negative adjustment); never below zero."""
    if amount <= 0:
        raise ValueError("a debit is a positive amount")
    if w.available < amount:
        raise InsufficientBalance(f"Available balance ({w.available} cents) is below the debit ({amount} cents)")
    return Step(-amount, 0, (Entry(entry_type, -amount, dict(refs or {})),))


def plan_reserve(w: Wallet, amount: int) -> Step:
    """available → a rental's reserve; the total does not change, so no ledger row."""
    if amount <= 0:
        raise ValueError("a reserve is a positive amount")
    if w.available < amount:
        raise InsufficientBalance()
    return Step(-amount, amount, (), {"reserve": amount})


def plan_release(w: Wallet, reserve_held: int) -> Step:
    """A rental's whole reserve → available."""
    if reserve_held < 0 or reserve_held > w.reserved:
        raise ValueError("a release cannot exceed what is reserved")
    return Step(reserve_held, -reserve_held, (), {"released": reserve_held})


@dataclass(frozen=True)
class ChargeSplit:
    charged: int  # what the ledger row takes (≤ charge)
    from_reserve: int
    from_available: int
    overage: int  # what could not be paid: becomes an overage invoice
    topup: int  # available → reserve, back towards the target
    reserve_after: int


def split_charge(available: int, reserve_held: int, charge: int, reserve_target: int) -> ChargeSplit:
    """How a rental's charge is paid (`spec/decisions.md` "Money", rolling reserve).

    The charge comes out of the rental's reserve; what the reserve cannot pay
    comes out of available; what neither can pay is overage. Then the reserve
    is topped back up to `reserve_target` out of what is left of available.
    """
    if min(available, reserve_held, charge, reserve_target) < 0:
        raise ValueError("amounts are non-negative")
    from_reserve = min(charge, reserve_held)
    from_available = min(charge - from_reserve, available)
    overage = charge - from_reserve - from_available
    left_reserve = reserve_held - from_reserve
    topup = max(0, min(reserve_target - left_reserve, available - from_available))
    return ChargeSplit(charge - overage, from_reserve, from_available, overage, topup, left_reserve + topup)


def plan_charge(w: Wallet, reserve_held: int, charge: int, reserve_target: int, refs: dict[str, Any]) -> Step:
    s = split_charge(w.available, reserve_held, charge, reserve_target)
    entries = (Entry("rental_charge", -s.charged, refs),) if s.charged else ()
    return Step(
        -s.from_available - s.topup,
        -s.from_reserve + s.topup,
        entries,
        {"split": s},
    )


# ---------------------------------------------------------------- applying

@dataclass(frozen=True)
class Result:
    """What a money operation answers (the same on a replay of its key)."""

    entries: list[dict[str, Any]]
    available: int
    reserved: int
    steps: list[dict[str, Any]]
    replayed: bool = False
    wallet: Wallet | None = None  # the wallet right after the operation (None on a replay)

    @property
    def total(self) -> int:
        return self.available + self.reserved


Planner = Callable[[Wallet], Sequence[Step]]
Extras = Callable[[Wallet, Sequence[Step]], list[store.TransactItem]]
Effect = tuple[str, dict[str, Any]]  # (kind, payload): see `gpurent.outbox`
Effects = Callable[[Wallet, Sequence[Step]], list[Effect]]


def total_after(w: Wallet, steps: Sequence[Step]) -> int:
    """The wallet total once `steps` are applied to `w`."""
    return w.total + sum(s.available_delta + s.reserved_delta for s in steps)


def fingerprint(description: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in info.items():
        out[k] = v.__dict__ if hasattr(v, "__dict__") else v
    return out


def apply(
    user_id: str,
    op_key: str,
    description: dict[str, Any],
    planner: Planner,
    extras: Extras | None = None,
    before_write: Callable[[], None] | None = None,
    marker: bool = True,
    check_auto_topup: bool = True,
    effects: Effects | None = None,
) -> Result:
    """Plan against a fresh read and write it as one transaction, exactly once per `op_key`.

    `marker=False`: the operation writes no marker, for operations that are exactly-once
    without one and whose key is never replayed (a metering tick: its key is random, and
    each rental it charges is written under a condition on the rental's version, so the
    same charge can never commit twice; `docs/decisions.md` "Metering writes"). The
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
    `before_write` is a test seam (fault injection between read and write).
    """
    fp = fingerprint(description)
    backoff = retry.policy()
    pause = 0.0
    fresh: dict[str, Any] | None = None  # the wallet as the writer that beat us left it
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
            if store.get_op(op_key) is not None:
                return _replay(op_key, fp)
            raise
        after = replace(wallet, available=available, reserved=reserved, version=wallet.version + 1,
                        last_ledger_ulid=last, updated_at=now)
        result = Result(rows, available, reserved, [_jsonable(s.info) for s in steps], wallet=after)
        state: dict[str, Any] = {
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
            items.append(store.op_put(op_key, {
                "userId": user_id,
                "fingerprint": fp,
                "createdAt": now,
                "result": {"entries": rows, "available": available, "reserved": reserved, "steps": result.steps},
            }))
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
                fresh = exc.items[0]  # DynamoDB returned the wallet that won: plan on it, no re-read
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
) -> tuple[list[dict[str, Any]], int, int, str | None]:
    """The ledger rows of `steps` applied to `wallet`, and the wallet after them."""
    available, reserved = wallet.available, wallet.reserved
    rows: list[dict[str, Any]] = []
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
            rows.append(
                {
                    "id": f"led_{last}",
                    "type": e.type,
                    "amountCents": e.amount,
                    "balanceAfterCents": running,
                    "createdAt": now,
                    "opKey": op_key,
                    **{k: v for k, v in e.refs.items() if v is not None},
                }
            )
    if available < 0 or reserved < 0:
        raise ValueError("a plan may never take a wallet below zero")
    return rows, available, reserved, last


def _replay(op_key: str, fp: str) -> Result:
    marker = store.get_op(op_key)
    if marker is None:
        raise AssertionError("an operation marker vanished")
    if marker.get("fingerprint") != fp:
        raise IdempotencyMismatch()
    r = marker["result"]
    return Result(list(r["entries"]), int(r["available"]), int(r["reserved"]), list(r.get("steps", [])), True)


def get(user_id: str) -> Wallet:
    return Wallet.from_record(user_id, store.get_wallet(user_id))


# ---------------------------------------------------------------- the operations

def credit(user_id: str, amount: int, entry_type: str, op_key: str, refs: dict[str, Any] | None = None,
           extras: Extras | None = None, effects: Effects | None = None) -> Result:
    desc = {"op": "credit", "amount": amount, "type": entry_type, "refs": refs or {}}
    return apply(user_id, op_key, desc, lambda w: [plan_credit(w, amount, entry_type, refs)], extras,
                 effects=effects)


def debit(user_id: str, amount: int, op_key: str, refs: dict[str, Any] | None = None,
          extras: Extras | None = None, effects: Effects | None = None) -> Result:
    desc = {"op": "debit", "amount": amount, "refs": refs or {}}
    return apply(user_id, op_key, desc, lambda w: [plan_debit(w, amount, "adjustment", refs)], extras,
                 effects=effects)


def adjust(user_id: str, amount: int, op_key: str, refs: dict[str, Any], extras: Extras | None = None,
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
           refs: dict[str, Any], extras: Extras | None = None) -> Result:
    desc = {"op": "charge", "reserve": reserve_held, "amount": amount, "target": reserve_target, "refs": refs}
    return apply(user_id, op_key, desc, lambda w: [plan_charge(w, reserve_held, amount, reserve_target, refs)],
                 extras)


def with_step_info(step: Step, **info: Any) -> Step:
    return replace(step, info={**step.info, **info})
