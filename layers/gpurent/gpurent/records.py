"""The typed records of the money paths: a rental, its changes, an operation marker, an
invoice. `store/` converts them to and from DynamoDB items (the items keep their
camelCase attribute names); the domain sees only these.

Units: money is integer cents (`…_cents`), times are epoch seconds (float), durations
whole seconds. A field that is `None` is absent from the item.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NotRequired, TypedDict, get_args

if TYPE_CHECKING:  # only a type here: the wallet's import of this module stays light (cold start)
    from gpurent.listing import Listing

RentalStatus = Literal["provisioning", "running", "stopping", "stopped", "failed"]
STATUSES: tuple[RentalStatus, ...] = get_args(RentalStatus)
LIVE: tuple[RentalStatus, ...] = ("provisioning", "running", "stopping")

def active_shards() -> int:
    """How many partitions of the sparse `ActiveIndex` live rentals are spread over (the
    setting `active_shards`: 8 deployed). A rental's shard is chosen by its user, so one
    user's live rentals share a shard and the metering sweep hands out one shard per worker.
    Changing the count moves rentals between shards: see docs/metering.md first."""
    from gpurent.config import settings  # here, not at the top: this module stays light (cold start)

    return settings().active_shards


def active_shard(user_id: str) -> int:
    return int(hashlib.sha256(user_id.encode()).hexdigest(), 16) % active_shards()
StopReason = Literal["user", "insufficient_balance", "auto_stop", "max_total", "provider_failure"]


class LaunchAnswer(TypedDict):
    """The first answer of `POST /v1/rentals`, kept on the launch's operation marker so a replay
    answers the same (rentals launched before that carry it on their own item)."""

    id: str
    status: str
    host: str | None
    port: int | None
    pricePerHourCents: int
    startedAt: str
    warnings: list[str]
    quotedPricePerHourCents: NotRequired[int]  # absent from answers stored before it existed


class ShortRunRefund(TypedDict):
    """A settled run under a minute: was it refunded (the user's allowance, `rentals.settlement`),
    how many refunded short runs are left in the rolling window, and the rule's numbers."""

    refunded: bool
    remaining: int
    limit: int
    windowHours: int


@dataclass(frozen=True)
class Rental:
    """One rental as stored: `store.rentals` reads and writes it, whole or by `RentalChanges`."""

    id: str  # "rent_…": also the instance's label at the provider
    user_id: str
    status: RentalStatus
    family_id: str
    gpu_count: int
    template_id: str
    price_per_hour_cents: int  # locked at launch
    listing_id: str  # the listing of the current (or last) allocation attempt
    provider: str
    region: str
    region_code: str
    model: str
    # That listing, as it was when tried: what the launch allocates from. Dropped from the item
    # once the rental runs (None), so the item every metering tick rewrites stays under 1 KB.
    offer: Listing | None
    created_at: float
    version: int = 1  # +1 on every write; writes that saw another version fail
    name: str | None = None
    region_filter: str | None = None  # the launch's `region` (a code or a group)
    idempotency_key: str | None = None
    ssh_key_count: int = 0  # keys on file at launch (0: a warning in the answer)
    # money
    reserve_cents: int = 0  # this rental's part of the wallet's reserved
    charged_cents: int = 0  # taken from the wallet so far (rental_charge rows)
    overage_cents: int = 0  # metered beyond the money: owed (the overage invoice)
    refunded_cents: int = 0  # given back at settlement
    billed_seconds: int = 0
    metered_until: float | None = None  # the moment the charge so far runs to
    overage_invoice_id: str | None = None
    short_run_refund: ShortRunRefund | None = None  # set at settlement when it ran under a minute
    # limits
    auto_stop_after_hours: float | None = None  # from running_at
    max_total_cents: int | None = None
    # allocation
    attempts: tuple[str, ...] = ()  # listing ids tried and refused
    allocating_until: float = 0.0  # a launch owns the allocation until then
    allocation_uncertain: bool = False  # an allocate timed out: the instance may exist (found by label)
    instance_id: str | None = None
    launch_answer: LaunchAnswer | None = None  # rentals launched before it moved to the launch's marker
    # life
    host: str | None = None
    port: int | None = None
    running_at: float | None = None  # billing starts
    last_checked_at: float | None = None  # a provisioning rental last asked its provider
    last_healthy_at: float | None = None  # a running rental last seen running
    unhealthy_since: float | None = None  # degraded: the first bad health check since then
    bad_checks: int = 0  # consecutive bad health checks (0: healthy)
    provider_cost_cents_per_hour: int | None = None  # what the provider bills for the instance
    max_price_per_hour_cents: int | None = None  # the launch's price tolerance (None: the quote)
    quoted_price_per_hour_cents: int | None = None  # the price quoted at launch, when placed elsewhere
    stopped_at: float | None = None
    stop_reason: str | None = None
    error: str | None = None
    terminated_at: float | None = None

    @property
    def is_live(self) -> bool:
        return self.status in LIVE


@dataclass(frozen=True)
class LiveRental:
    """What the reconciler reads of each live rental of one provider (the `ProviderIndex`
    projection): enough to tell, against the provider's list, whether the rental needs any
    work at all. A rental that does is read whole (`Rental`) before it is touched."""

    id: str
    user_id: str
    status: RentalStatus
    provider: str
    created_at: float
    instance_id: str | None = None
    allocating_until: float = 0.0
    allocation_uncertain: bool = False
    running_at: float | None = None
    last_healthy_at: float | None = None
    unhealthy_since: float | None = None
    bad_checks: int = 0
    auto_stop_after_hours: float | None = None
    max_total_cents: int | None = None
    price_per_hour_cents: int = 0


@dataclass(frozen=True)
class PassRecord:
    """What the last complete reconcile pass of a provider confirmed (`reconciler`): its list,
    fetched from `listed_at` on, showed running every running rental it read (those that became
    running before `cover_from`) unless the pass wrote that rental's health itself."""

    provider: str
    listed_at: float
    cover_from: float


class RentalChanges(TypedDict, total=False):
    """Fields a write sets; `None` removes the attribute. `store.rentals` maps the names."""

    status: RentalStatus
    listing_id: str
    provider: str
    region: str
    region_code: str
    model: str
    offer: Listing | None
    reserve_cents: int
    charged_cents: int
    overage_cents: int
    refunded_cents: int
    billed_seconds: int
    metered_until: float
    overage_invoice_id: str | None
    short_run_refund: ShortRunRefund | None
    attempts: tuple[str, ...]
    allocating_until: float
    allocation_uncertain: bool | None
    instance_id: str
    host: str | None
    port: int | None
    running_at: float
    last_checked_at: float
    last_healthy_at: float
    unhealthy_since: float | None
    bad_checks: int
    provider_cost_cents_per_hour: int
    price_per_hour_cents: int
    quoted_price_per_hour_cents: int
    stopped_at: float
    stop_reason: str
    error: str
    terminated_at: float


class LedgerRefs(TypedDict, total=False):
    """What a ledger row refers to, each optional (a `None` is left off the row): the rental
    charged or refunded, the Stripe charge and payment of a top-up or its reversal, the invoice
    paid, the admin of an adjustment, and the words the user reads (`ledger.entry_public`)."""

    rentalId: str | None
    stripeChargeId: str | None
    paymentIntentId: str | None
    invoiceId: str | None
    adminId: str | None
    description: str | None


class LedgerRow(LedgerRefs):
    """A ledger row as `wallet` writes it (the ledger table's item without its keys), and as an
    operation's answer and its marker hold it. Never updated once written."""

    id: str  # "led_<ulid>": also the row's sort key
    type: str  # a `ledger.LedgerType`
    amountCents: int  # signed
    balanceAfterCents: int  # the wallet total after this row
    createdAt: float
    opKey: str  # the operation that wrote it


class SplitRecord(TypedDict):
    """How a rental's charge was paid (`wallet_plan.ChargeSplit`) as an operation stores it."""

    charged: int
    from_reserve: int
    from_available: int
    overage: int
    topup: int
    reserve_after: int


class StepRecord(TypedDict, total=False):
    """One step of a money operation as its answer and marker keep it (`wallet_plan.StepInfo`,
    a charge's split as a plain record): what the callers read back on a replay."""

    reserve: int  # moved from available to a rental's reserve
    released: int  # a rental's reserve moved back to available
    split: SplitRecord
    rentalId: str
    invoiceId: str


@dataclass(frozen=True)
class OpResult:
    """What a money operation answered (its replay answers the same)."""

    entries: list[LedgerRow]  # the ledger rows it wrote
    available: int
    reserved: int
    steps: list[StepRecord]  # each step's info (e.g. `rentalId`, a charge's split)


@dataclass(frozen=True)
class OpMarker:
    """The marker a money operation leaves under its idempotency key."""

    op_key: str
    user_id: str
    fingerprint: str  # of the operation's description: a replay with other parameters is refused
    created_at: float
    result: OpResult
    ttl: int | None = None  # epoch seconds after which DynamoDB may delete it
    launch_answer: LaunchAnswer | None = None  # a launch's first answer (`rentals.launching`)


class CardOnFile(TypedDict):
    """The saved card on the wallet item (`billing.cards.card_fields`)."""

    pmId: str  # Stripe's PaymentMethod
    brand: str
    last4: str
    expMonth: int
    expYear: int
    savedAt: NotRequired[float]


class AutoTopupRule(TypedDict, total=False):
    """The user's auto-topup settings on the wallet item (`billing.autotopup`)."""

    enabled: bool
    thresholdCents: int
    topupAmountCents: int
    disabledReason: str | None  # why it was switched off (a declined card, the card removed)
    disabledAt: float


class MeterItem(TypedDict):
    """A running rental's meter as its wallet's item keeps it (`WalletItem.meters`), from the
    rental's first metering tick until its settlement. The wallet item is rewritten by every
    tick, so the names are short: `r` its reserve (cents), `c` charged (cents), `o` overage
    (cents), `b` billed seconds, `u` metered until (docs/decisions.md "Metering writes")."""

    r: int
    c: int
    o: int
    b: int
    u: float


class WalletItem(TypedDict, total=False):
    """The wallet item (pk `USER#<user>`, sk `WALLET`) as `store.money.wallet_from_item` reads
    it: the money, the open-invoice counters and the auto-topup state, which `wallet` writes
    and `wallet_plan.Wallet` reads, and billing's settings (customer, card, auto-topup rule and
    its attempts), which `store.billing` writes apart from the money (never its `version`)."""

    userId: str
    createdAt: float
    updatedAt: float
    version: int  # +1 on every money operation; 0 (absent): no money has moved yet
    availableCents: int
    reservedCents: int
    lastLedgerUlid: str  # the newest ledger row's ulid (the next one sorts after it)
    openInvoicesCents: int
    openInvoiceCount: int
    shortRunRefunds: list[float]  # when recent under-a-minute runs were refunded
    meters: dict[str, MeterItem]  # rental id → its meter, while it runs (`gpurent.rentals.meters`)
    autoTopupThresholdCents: int  # set only while auto-topup is on
    autoTopupAttempt: str  # the last claimed attempt
    autoTopupAttemptAt: float
    autoTopupAttemptDone: str  # the last attempt whose outcome is recorded
    autoTopupAttemptAmountCents: int  # what the claimed attempt charges
    autoTopupAttemptPmId: str  # and with which card
    stripeCustomerId: str
    card: CardOnFile
    cardSourceCreated: int  # Stripe's `created` of the SetupIntent / Session that saved the card
    autoTopup: AutoTopupRule


InvoiceStatus = Literal["draft", "open", "paid", "void", "uncollectible"]
InvoiceReason = Literal["topup_failed", "overage", "manual"]


@dataclass(frozen=True)
class InvoiceLine:
    id: str  # "li_…"
    description: str
    amount_cents: int
    rental_id: str | None = None
    period_start: float | None = None
    period_end: float | None = None


@dataclass(frozen=True)
class Invoice:
    """Money owed that the wallet could not cover (`billing.invoices`)."""

    id: str  # "inv_…"
    user_id: str
    status: InvoiceStatus
    reason: InvoiceReason
    amount_cents: int
    created_at: float
    currency: str = "USD"
    rental_id: str | None = None
    due_at: float | None = None
    paid_at: float | None = None
    voided_at: float | None = None
    uncollectible_at: float | None = None
    stripe_invoice_id: str | None = None
    hosted_invoice_url: str | None = None
    invoice_pdf_url: str | None = None
    receipt_url: str | None = None
    line_items: tuple[InvoiceLine, ...] = field(default_factory=tuple)
    credits_wallet: bool = False  # paying it credits the wallet (a `topup_failed` invoice always does)
    version: int = 1
