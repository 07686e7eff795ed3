"""The answers of the API as pydantic models: the response half of the OpenAPI
document (`infra/openapi.py`).

Routes name their answer's model (`Router.route(..., response="Rental")`), so
the Lambda functions never import this module: it describes what the domain
modules' answer builders (`rentals.public`, `ledger.entry_public`, …) return,
and the contract fuzz run (`tests/e2e/test_contract_fuzz.py`) checks every
answer of the local stack against it.

Conventions (spec/api.md §2): ids carry a type prefix, money is integer cents
(`…Cents`), times are ISO 8601 UTC with a `Z`; a field that is `null` when not
applicable is typed `X | None` and still always present.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gpurent.ledger import LedgerType
from gpurent.records import InvoiceReason, InvoiceStatus, RentalStatus, StopReason

Iso = Annotated[str, Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", description="ISO 8601, UTC")]
Cents = Annotated[int, Field(description="US cents")]
NonNegCents = Annotated[int, Field(ge=0, description="US cents")]


UserId = Annotated[str, Field(pattern="^usr_[0-9A-Za-z]+$")]
RentalId = Annotated[str, Field(pattern="^rent_[0-9A-Za-z]+$")]
KeyId = Annotated[str, Field(pattern="^key_[0-9A-Za-z]+$")]
TokenId = Annotated[str, Field(pattern="^tok_[0-9A-Za-z]+$")]
SessionId = Annotated[str, Field(pattern="^ses_[0-9A-Za-z]+$")]
LedgerId = Annotated[str, Field(pattern="^led_[0-9A-Za-z]+$")]
InvoiceId = Annotated[str, Field(pattern="^inv_[0-9A-Za-z]+$")]
LineItemId = Annotated[str, Field(pattern="^li_[0-9A-Za-z]+$")]
ListingId = Annotated[str, Field(pattern="^lst_[0-9A-Za-z]+$")]

GpuCount = Literal[1, 2, 4, 8]


class Answer(BaseModel):
    """Every answer is a closed object: a field not listed here is a contract change."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- generic

class Ok(Answer):
    ok: Literal[True]


class ErrorEnvelope(Answer):
    """Every 4xx/5xx JSON answer (spec/api.md §2.7); `error` is one of `errors.STATUS`."""

    error: str = Field(description="snake_case error code; the HTTP status follows from it")
    message: str = Field(min_length=1, description="Human-readable text")
    details: dict[str, Any] | None = Field(default=None, description="Per-field messages (validation_failed, …)")


# ---------------------------------------------------------------- auth

class RequestCodeAnswer(Answer):
    ok: Literal[True]
    created: bool = Field(description="A new account was created by this call")


class User(Answer):
    id: UserId
    email: str
    createdAt: Iso


class SessionAnswer(Answer):
    user: User
    expiresAt: Iso | None = Field(description="When this session (or API token) expires; null: a token that never "
                                              "expires")


class MeAnswer(SessionAnswer):
    isAdmin: bool = Field(description="Extension: the user is an admin (`ADMIN_EMAILS`); the dashboard shows its admin "
                                      "pages")


class AuthProviders(Answer):
    oauth: list[Literal["google", "github"]] = Field(
        description="Extension: the OAuth providers configured on this deployment (`GET /v1/auth/oauth/{provider}`)")


class Token(Answer):
    id: TokenId
    name: str = Field(min_length=1, max_length=64)
    hint: str = Field(description="First and last characters of the token")
    createdAt: Iso
    expiresAt: Iso | None
    lastUsedAt: Iso | None = Field(description="Last use, to the hour; null: never used")
    createdBySessionId: SessionId | None = Field(
        description="The session that created it; null for tokens created before this was recorded")


class NewTokenAnswer(Token):
    token: str = Field(pattern="^gpr_", description="The token itself: shown only in this answer")


class TokenList(Answer):
    tokens: list[Token]


class Session(Answer):
    id: SessionId
    current: bool = Field(description="The session making this request")
    createdAt: Iso
    lastUsedAt: Iso = Field(description="Last use, to the hour")
    expiresAt: Iso
    client: str | None = Field(description='What signed in, e.g. "Firefox on Linux" or "gpurent-cli"; null: '
                                           "unknown")
    ipPrefix: str | None = Field(description="The network it signed in from (/24 or /48), never the address")


class SessionList(Answer):
    sessions: list[Session]


class RevokeOthersAnswer(Answer):
    ok: Literal[True]
    sessionsEnded: int = Field(ge=0, description="Other live sessions ended")
    tokensRevoked: int = Field(ge=0, description="Live API tokens revoked (0 unless `tokens: true`)")


# ---------------------------------------------------------------- SSH keys

class SshKey(Answer):
    id: KeyId
    name: str = Field(min_length=1, max_length=64)
    fingerprint: str = Field(pattern="^SHA256:")
    algorithm: str = Field(description="The key type, e.g. ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256")
    createdAt: Iso


class SshKeyList(Answer):
    keys: list[SshKey]


# ---------------------------------------------------------------- catalog

class Listing(Answer):
    id: ListingId
    model: str = Field(description="Canonical model code, e.g. H100_SXM_80GB")
    family: str = Field(description="GPU family id, e.g. h100-80gb")
    vramGb: int = Field(ge=0)
    gpuCount: GpuCount
    pricePerHourCents: NonNegCents
    providerCode: str
    region: str = Field(description="Human label, e.g. US-East")
    regionCode: str = Field(description="ISO country code")
    interconnect: str | None


class ListingPage(Answer):
    listings: list[Listing]
    nextCursor: str | None


class CodeCount(Answer):
    code: str
    count: int = Field(ge=1)


class PriceRange(Answer):
    minCents: NonNegCents | None
    maxCents: NonNegCents | None


class Facets(Answer):
    models: list[CodeCount]
    regions: list[CodeCount]
    providers: list[CodeCount]
    priceRange: PriceRange


class Family(Answer):
    id: str
    model: str
    vramGb: int = Field(ge=0)
    displayName: str
    gpuCounts: list[GpuCount]
    listingCount: int = Field(ge=0)
    fromPricePerHourCents: NonNegCents | None = Field(description="Cheapest 1-GPU listing; null when none")


class FamilyList(Answer):
    families: list[Family]


class Template(Answer):
    id: Literal["ubuntu-24-04", "pytorch", "vllm", "ollama", "a1111", "text-gen-webui"]
    name: str
    description: str
    image: str
    ports: list[Annotated[int, Field(ge=1, le=65535)]]
    default: bool


class TemplateList(Answer):
    templates: list[Template]


class MatchedListing(Answer):
    id: ListingId
    providerCode: str
    region: str
    model: str


class PreviewAnswer(Answer):
    pricePerHourCents: NonNegCents
    estimatedProvisionSeconds: int = Field(ge=0)
    matchedListing: MatchedListing


# ---------------------------------------------------------------- rentals

class LaunchAnswer(Answer):
    id: RentalId
    status: RentalStatus
    host: str | None
    port: int | None
    pricePerHourCents: NonNegCents = Field(description="The rate obtained: charged and reserved (1 hour)")
    startedAt: Iso
    warnings: list[str] = Field(description="E.g. no SSH key on file; placed above the quote")
    quotedPricePerHourCents: NonNegCents | None = Field(
        default=None, description="The price quoted at launch; differs from pricePerHourCents only when failover "
        "placed the rental on a dearer listing within maxPricePerHourCents")


class RentalSummary(Answer):
    """A rental as listed (`GET /v1/rentals`)."""

    id: RentalId
    name: str | None
    status: RentalStatus
    familyId: str
    gpuCount: GpuCount
    pricePerHourCents: NonNegCents = Field(description="Locked at launch, for all GPUs")
    host: str | None
    port: int | None
    region: str
    startedAt: Iso
    stoppedAt: Iso | None
    totalChargedCents: NonNegCents
    templateId: str
    runningAt: Iso | None
    autoStopAfterHours: float | None
    maxTotalCents: int | None
    stopReason: StopReason | None


class Rental(RentalSummary):
    """A rental in full (`GET /v1/rentals/{id}`): adds `provider` and `error`."""

    provider: str
    error: str | None


class RentalPage(Answer):
    rentals: list[RentalSummary]
    nextCursor: str | None


class ShortRunRefund(Answer):
    """Extension: a pod that ran under a minute is refunded in full up to `limit` times per
    rolling `windowHours`; beyond that it is billed its seconds."""

    refunded: bool
    remaining: int = Field(ge=0, description="Refunded short runs left in the current window")
    limit: int = Field(ge=1)
    windowHours: int = Field(ge=1)


class StopAnswer(Answer):
    id: RentalId
    status: Literal["stopping"]
    finalChargedCents: NonNegCents
    refundedCents: NonNegCents
    shortRunRefund: ShortRunRefund | None = Field(
        default=None, description="Present only when the pod ran under a minute (extension)")


class Meter(Answer):
    rentalId: RentalId
    ratePerHour: float = Field(ge=0, description="Dollars per hour (the one non-cents money field)")
    secondsBilled: int = Field(ge=0)
    currentChargeCents: NonNegCents
    lastHeartbeatAt: Iso | None


# ---------------------------------------------------------------- billing

class Balance(Answer):
    availableCents: Cents
    reservedCents: NonNegCents
    totalCents: Cents
    openInvoicesCents: NonNegCents
    openInvoiceCount: int = Field(ge=0)
    updatedAt: Iso | None = Field(description="Last wallet movement; null if it never moved")


class LedgerEntry(Answer):
    id: LedgerId
    type: LedgerType
    amountCents: Cents = Field(description="Signed")
    balanceAfterCents: Cents = Field(description="Wallet total right after this entry")
    createdAt: Iso
    rentalId: str | None
    stripeChargeId: str | None
    invoiceId: str | None
    description: str | None


class LedgerPage(Answer):
    entries: list[LedgerEntry]
    balanceCents: Cents = Field(description="The wallet total now")
    nextCursor: str | None


class CheckoutAnswer(Answer):
    """Checkout: `checkoutUrl` + `sessionId`. A saved card charged directly: both null, plus the payment."""

    checkoutUrl: str | None
    sessionId: str | None
    paymentIntentId: str | None = None
    status: str | None = Field(default=None, description="The PaymentIntent's status (saved card only)")


class SetupIntentAnswer(Answer):
    clientSecret: str
    publishableKey: str


class Card(Answer):
    brand: str | None
    last4: str | None
    expMonth: int | None = Field(ge=1, le=12)
    expYear: int | None
    pmId: str | None


class AutoTopupAnswer(Answer):
    enabled: bool
    thresholdCents: int | None = Field(ge=100, le=100_000)
    topupAmountCents: int | None = Field(ge=1000, le=500_000)


class AutoTopupSettings(AutoTopupAnswer):
    disabledReason: str | None = Field(description="Why auto-topup switched itself off (card_removed, card_declined, "
                                                   "…)")
    lastAttemptAt: Iso | None


class LineItem(Answer):
    id: LineItemId
    description: str
    amountCents: NonNegCents
    rentalId: str | None
    periodStart: Iso | None
    periodEnd: Iso | None


class Invoice(Answer):
    id: InvoiceId
    status: InvoiceStatus
    reason: InvoiceReason
    amountCents: NonNegCents
    currency: Literal["USD"]
    rentalId: str | None
    stripeInvoiceId: str | None
    hostedInvoiceUrl: str | None
    invoicePdfUrl: str | None
    receiptUrl: str | None
    createdAt: Iso
    dueAt: Iso | None
    paidAt: Iso | None
    voidedAt: Iso | None
    lineItems: list[LineItem]


class InvoicePage(Answer):
    data: list[Invoice]
    nextCursor: str | None


class PayUrl(Answer):
    url: str | None = Field(description="Stripe's hosted pay page; null when the invoice is not open or not mirrored")


class StripeEvent(BaseModel):
    """A Stripe event as Stripe sends it (signed in `Stripe-Signature`)."""

    model_config = ConfigDict(extra="allow")
    id: str
    type: str
    data: dict[str, Any]


class WebhookAnswer(Answer):
    received: Literal[True]
    duplicate: bool | None = None


# ---------------------------------------------------------------- admin

class AdjustmentAnswer(Answer):
    entry: LedgerEntry
    userId: UserId
    availableCents: Cents
    reservedCents: NonNegCents
    totalCents: Cents


class AuditEntry(Answer):
    id: str = Field(pattern="^aud_[0-9A-Za-z]+$")
    action: Literal["adjustment", "invoice", "invoice_void"]
    createdAt: Iso
    adminId: UserId
    adminEmail: str | None = Field(description="null when that user no longer exists")
    userId: UserId
    userEmail: str | None
    amountCents: int | None = Field(description="Adjustments and manual invoices")
    reason: str | None = Field(description="Adjustments")
    invoiceId: str | None = Field(description="Manual invoices and voids")


class AuditPage(Answer):
    month: str = Field(pattern=r"^\d{4}-\d{2}$")
    entries: list[AuditEntry]
    nextCursor: str | None


class OpenApiDocument(BaseModel):
    """This document."""

    model_config = ConfigDict(extra="allow")
    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


# Models a route may name as `response=` / `body=` (by class name).
MODELS: dict[str, type[BaseModel]] = {
    name: obj for name, obj in globals().items()
    if isinstance(obj, type) and issubclass(obj, BaseModel) and obj not in (BaseModel, Answer)
}
