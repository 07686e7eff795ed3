"""The wallet as a value and the pure planning of its money movements: what an operation
does to available and reserved and which ledger rows it writes, as plain arithmetic on the
wallet as read (no I/O; tests call these directly). `gpurent.wallet` writes a plan as one
transaction and re-exports these names, so callers keep saying `wallet.Wallet`,
`wallet.plan_credit`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypedDict, Unpack

from gpurent.errors import ApiError
from gpurent.ledger import CREDIT_TYPES
from gpurent.records import LedgerRefs, MeterItem, WalletItem

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
    # The meters of its running rentals that metering has ticked (`gpurent.rentals.meters`).
    meters: Mapping[str, MeterItem] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.available + self.reserved

    @classmethod
    def from_record(cls, user_id: str, record: WalletItem | None) -> Wallet:
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
            meters={str(k): {"r": int(m["r"]), "c": int(m["c"]), "o": int(m["o"]), "b": int(m["b"]),
                             "u": float(m["u"])} for k, m in (record.get("meters") or {}).items()},
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
    refs: LedgerRefs = field(default_factory=LedgerRefs)


class StepInfo(TypedDict, total=False):
    """What a step tells its caller beyond the money (the operation's answer keeps it, a
    charge's split as a `records.SplitRecord`: `records.StepRecord`)."""

    reserve: int  # plan_reserve: moved from available to a rental's reserve
    released: int  # plan_release: a rental's reserve moved back to available
    split: ChargeSplit  # plan_charge: how the charge was paid
    rentalId: str  # the rental the step is for (a launch's reserve, a metering charge)
    invoiceId: str  # the invoice it opens or settles (`billing.invoices`)


@dataclass(frozen=True)
class Step:
    """One movement of a wallet: deltas of available and reserved, and ledger entries.

    The entries must account for the change of the total exactly:
    Σ entry.amount == available_delta + reserved_delta.
    """

    available_delta: int
    reserved_delta: int
    entries: tuple[Entry, ...] = ()
    info: StepInfo = field(default_factory=StepInfo)
    # Open invoices the step adds (+) or settles (−): (cents, count). Not money in the
    # wallet, but the balance's `openInvoices*` counters live on the wallet item, so they
    # change in the same transaction as the invoice row.
    open_invoices: tuple[int, int] = (0, 0)
    # Other wallet fields the step sets in the same transaction (not money: e.g. the log of
    # refunded short runs), planned on the wallet as read, so they race like the money does.
    wallet_sets: WalletItem = field(default_factory=WalletItem)
    # Running rentals' meters the step sets on the wallet item (None: removes one), merged with
    # the meters the wallet had (`gpurent.rentals.meters`).
    meters: Mapping[str, MeterItem | None] = field(default_factory=dict)


class InsufficientBalance(ApiError):
    def __init__(self, message: str = "Available balance is below the 1-hour reserve") -> None:
        super().__init__("insufficient_balance", message)


# ---------------------------------------------------------------- pure planning

def plan_credit(w: Wallet, amount: int, entry_type: str, refs: LedgerRefs | None = None) -> Step:
    if amount <= 0:
        raise ValueError("a credit is a positive amount")
    if entry_type not in CREDIT_TYPES:
        raise ValueError(f"{entry_type} is not a credit type")
    return Step(amount, 0, (Entry(entry_type, amount, refs.copy() if refs else LedgerRefs()),))


def plan_debit(w: Wallet, amount: int, entry_type: str = "adjustment", refs: LedgerRefs | None = None) -> Step:
    """Take money out of available (a negative adjustment); never below zero."""
    if amount <= 0:
        raise ValueError("a debit is a positive amount")
    if w.available < amount:
        raise InsufficientBalance(f"Available balance ({w.available} cents) is below the debit ({amount} cents)")
    return Step(-amount, 0, (Entry(entry_type, -amount, refs.copy() if refs else LedgerRefs()),))


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


def plan_charge(w: Wallet, reserve_held: int, charge: int, reserve_target: int, refs: LedgerRefs) -> Step:
    s = split_charge(w.available, reserve_held, charge, reserve_target)
    entries = (Entry("rental_charge", -s.charged, refs),) if s.charged else ()
    return Step(
        -s.from_available - s.topup,
        -s.from_reserve + s.topup,
        entries,
        {"split": s},
    )


def total_after(w: Wallet, steps: Sequence[Step]) -> int:
    """The wallet total once `steps` are applied to `w`."""
    return w.total + sum(s.available_delta + s.reserved_delta for s in steps)


def with_step_info(step: Step, **info: Unpack[StepInfo]) -> Step:
    merged: StepInfo = {**step.info, **info}
    return replace(step, info=merged)
