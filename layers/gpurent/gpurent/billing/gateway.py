"""The Stripe port: the only module that imports `stripe`.

Everything Stripe-shaped stays here; the billing domain sees small frozen
dataclasses and a handful of exceptions:

- `StripeUnavailable`: the network failed, Stripe answered 5xx, 429 or 409 (another
  request with the same idempotency key is in progress), or the secret key could
  not be read. Retrying later may succeed; everything else is a refusal.
- `CardDeclined(code, decline_code, message, payment_intent_id)`: the card was
  refused; `AuthenticationRequired` (a subclass) when the bank wants the
  cardholder to authenticate (3-D Secure), which an off-session charge cannot do.
- `InvoiceNotVoidable`: Stripe refused to void an invoice (it is not open).
- `IdempotencyKeyReused`: the idempotency key was used with other parameters.
- `InvalidSignature`: a webhook payload failed verification.
- `StripeError`: any other refusal (a bad request, a missing object, a bad key);
  the base class of all of the above except `InvalidSignature`.

`stripe` is imported lazily (it costs ~40 ms of cold start), so importing
this module costs nothing.

Settings (`gpurent.config.StripeSettings`, read from the environment):
- `STRIPE_SECRET_KEY`, or `STRIPE_SECRET_KEY_PARAM` naming an SSM SecureString;
- `STRIPE_WEBHOOK_SECRET`, or `STRIPE_WEBHOOK_SECRET_PARAM`;
- `STRIPE_PUBLISHABLE_KEY`;
- `STRIPE_API_BASE` (local stack and tests only; default Stripe's own).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from gpurent import config

if TYPE_CHECKING:
    import stripe
    from stripe.params.checkout import SessionCreateParams, SessionCreateParamsPaymentIntentData

DEFAULT_API_BASE = "https://api.stripe.com"
CURRENCY = "usd"
TOPUP_PRODUCT_NAME = "gpurent wallet top-up"
INVOICE_DAYS_UNTIL_DUE = 7
WEBHOOK_TOLERANCE_SECONDS = 300
# Requests to Stripe: connect / read timeouts (seconds) and the library's own
# retries of network failures and 5xx/429 (it reuses the idempotency key).
CONNECT_TIMEOUT = 3.05
READ_TIMEOUT = 10.0
MAX_NETWORK_RETRIES = 1

T = TypeVar("T")


# ------------------------------------------------------------------- errors


class StripeError(Exception):
    """Stripe refused a request (or could not be reached: see the subclasses)."""

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status


class StripeUnavailable(StripeError):
    """Network failure, timeout, Stripe 5xx / 429, or the secret key is unreadable: try again later."""


class CardDeclined(StripeError):
    """The card was declined. `code` is Stripe's error code (`card_declined`,
    `expired_card`, …), `decline_code` the issuer's reason when Stripe gives one."""

    def __init__(self, code: str, decline_code: str | None, message: str,
                 payment_intent_id: str | None) -> None:
        super().__init__(message, code=code, http_status=402)
        self.decline_code = decline_code
        self.payment_intent_id = payment_intent_id

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(code={self.code!r}, decline_code={self.decline_code!r}, "
                f"message={self.message!r}, payment_intent_id={self.payment_intent_id!r})")


class AuthenticationRequired(CardDeclined):
    """The bank requires the cardholder to authenticate (3-D Secure); an off-session
    charge cannot, so the PaymentIntent ends in `requires_action` or `requires_payment_method`."""


class InvoiceNotVoidable(StripeError):
    """Stripe refused to void the invoice (only open or uncollectible invoices can be voided)."""


class IdempotencyKeyReused(StripeError):
    """Stripe refused a request whose idempotency key was first used with other parameters."""


class InvalidSignature(Exception):
    """A webhook payload is unsigned, wrongly signed, stale, or not a JSON event."""


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str


@dataclass(frozen=True)
class Payment:
    payment_intent_id: str
    status: str
    charge_id: str | None
    receipt_url: str | None


@dataclass(frozen=True)
class SetupIntent:
    id: str
    client_secret: str


@dataclass(frozen=True)
class Card:
    pm_id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    customer_id: str | None = None  # the customer it is attached to, if any


@dataclass(frozen=True)
class InvoiceMirror:
    id: str
    status: str
    hosted_invoice_url: str | None
    invoice_pdf: str | None
    receipt_url: str | None = None


# ----------------------------------------------------------------- settings

_lock = threading.Lock()
_client_cache: stripe.StripeClient | None = None
_client_key: str | None = None  # the secret key _client_cache was built with


def _configured(name: str) -> tuple[str, str | None]:
    """(the value given, the SSM parameter named) of `STRIPE_SECRET_KEY` / `STRIPE_WEBHOOK_SECRET`."""
    s = config.settings().stripe
    given, param = ((s.secret_key, s.secret_key_param) if name == "STRIPE_SECRET_KEY"
                    else (s.webhook_secret, s.webhook_secret_param))
    return (given.get_secret_value() if given else ""), param


def _setting(name: str) -> str:
    """`name` as the settings give it, or from SSM when they name a parameter for it (cached a few
    minutes by `gpurent.store.secrets`, so a rotated key is picked up without a cold start)."""
    value, param = _configured(name)
    if not param:
        return value
    from gpurent.store.secrets import get_secret

    try:
        return get_secret(param)
    except Exception as exc:  # botocore's errors: throttling, access denied, missing parameter
        raise StripeUnavailable(f"cannot read {name} from SSM: {type(exc).__name__}") from exc


def enabled() -> bool:
    """A Stripe secret key is configured (directly or as an SSM parameter name)."""
    return config.settings().stripe.enabled


def publishable_key() -> str:
    return config.settings().stripe.publishable_key


def webhook_secret() -> str:
    return _setting("STRIPE_WEBHOOK_SECRET")


def reset() -> None:
    """Drop the cached client, secrets and settings (tests switch keys and endpoints)."""
    global _client_cache
    with _lock:
        _client_cache = None
    config.reset()


def _client() -> stripe.StripeClient:
    global _client_cache, _client_key
    key = _setting("STRIPE_SECRET_KEY")
    client = _client_cache
    if client is not None and _client_key == key:
        return client
    if not key:
        raise StripeError("Stripe is not configured (no STRIPE_SECRET_KEY)", code="billing_disabled")
    import stripe

    base = config.settings().stripe.api_base or DEFAULT_API_BASE
    client = stripe.StripeClient(
        key,
        base_addresses={"api": base},
        max_network_retries=MAX_NETWORK_RETRIES,
        http_client=stripe.RequestsClient(timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)),
    )
    with _lock:
        if _client_cache is None or _client_key != key:  # a rotated key gets a client of its own
            _client_cache, _client_key = client, key
        return _client_cache


# ----------------------------------------------------------- error mapping


def _card_error(body: Mapping[str, Any] | None, fallback_message: str) -> CardDeclined:
    """A CardDeclined from Stripe's error body (`{"error": {...}}`)."""
    err = body.get("error") if isinstance(body, Mapping) else None
    err = err if isinstance(err, Mapping) else {}
    code = str(err.get("code") or "card_declined")
    decline_code = err.get("decline_code")
    decline_code = str(decline_code) if decline_code else None
    message = str(err.get("message") or fallback_message or "Your card was declined.")
    pi = err.get("payment_intent")
    pi_id: str | None = None
    pi_status: str | None = None
    if isinstance(pi, Mapping):
        pi_id = str(pi["id"]) if pi.get("id") else None
        pi_status = str(pi.get("status") or "") or None
    elif isinstance(pi, str) and pi:
        pi_id = pi
    auth = "authentication_required" in (code, decline_code) or pi_status == "requires_action"
    cls = AuthenticationRequired if auth else CardDeclined
    return cls(code, decline_code, message, pi_id)


def _translate(exc: Exception) -> Exception:
    import stripe

    if not isinstance(exc, stripe.StripeError):
        return exc
    status = exc.http_status
    message = exc.user_message or str(exc) or type(exc).__name__
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        return StripeUnavailable(message, code=exc.code, http_status=status)
    if isinstance(exc, stripe.CardError):
        body = exc.json_body
        return _card_error(body if isinstance(body, Mapping) else None, message)
    if isinstance(exc, stripe.IdempotencyError) and status == 400:
        # the key was used for another request (the client reused its Idempotency-Key); a 409
        # (another request with this key is in progress) is "unreachable for now", below
        return IdempotencyKeyReused(message, code=exc.code, http_status=status)
    if status is None or status >= 500 or status in (409, 429):
        return StripeUnavailable(message, code=exc.code, http_status=status)
    return StripeError(message, code=exc.code, http_status=status)


def _call(fn: Callable[[], T]) -> T:
    """Run one Stripe call, translating the library's exceptions into ours."""
    try:
        return fn()
    except Exception as exc:
        translated = _translate(exc)
        if translated is exc:
            raise
        raise translated from exc


def _as_dict(obj: Any) -> dict[str, Any]:
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    return dict(obj)


def _id_of(value: Any) -> str | None:
    """An expandable field: an ID string, an expanded object, or null."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        v = value.get("id")
        return str(v) if v else None
    return None


# ---------------------------------------------------------------- customers


def create_customer(user_id: str, email: str, idempotency_key: str) -> str:
    """A Stripe Customer for the user (`metadata.user_id`); its `cus_` id."""
    c = _call(lambda: _client().v1.customers.create(
        {"email": email, "metadata": {"user_id": user_id}},
        {"idempotency_key": idempotency_key},
    ))
    return str(c.id)


# ----------------------------------------------------------------- checkout


def create_checkout_session(*, customer_id: str | None, user_id: str, amount_cents: int, success_url: str,
                            cancel_url: str, save_card: bool, idempotency_key: str) -> CheckoutSession:
    """A hosted Checkout Session (mode payment) for a wallet top-up of `amount_cents` USD.

    `user_id` is on the session's metadata and on its PaymentIntent's metadata
    (`payment_intent_data.metadata`); `save_card` asks Stripe to keep the card
    for off-session use (`setup_future_usage=off_session`)."""
    pi_data: SessionCreateParamsPaymentIntentData = {"metadata": {"user_id": user_id}}
    if save_card:
        pi_data["setup_future_usage"] = "off_session"
    params: SessionCreateParams = {
        "mode": "payment",
        "line_items": [{
            "quantity": 1,
            "price_data": {
                "currency": CURRENCY,
                "unit_amount": amount_cents,
                "product_data": {"name": TOPUP_PRODUCT_NAME},
            },
        }],
        "success_url": success_url,
        "cancel_url": cancel_url,
        "client_reference_id": user_id,
        "metadata": {"user_id": user_id},
        "payment_intent_data": pi_data,
    }
    if customer_id:
        params["customer"] = customer_id
    s = _call(lambda: _client().v1.checkout.sessions.create(
        params,
        {"idempotency_key": idempotency_key},
    ))
    return CheckoutSession(id=str(s.id), url=str(s.url or ""))


# ---------------------------------------------------------------- payments


def payment_from_intent(pi: Mapping[str, Any]) -> Payment:
    """A Payment from a PaymentIntent object; raises when the intent did not go through.

    `requires_action` (the bank wants 3-D Secure) → AuthenticationRequired;
    `requires_payment_method` / `canceled` (declined) → CardDeclined (or
    AuthenticationRequired when the last error says so)."""
    pi_id = str(pi.get("id") or "")
    status = str(pi.get("status") or "")
    if status == "requires_action":
        raise AuthenticationRequired("authentication_required", "authentication_required",
                                     "The card requires authentication.", pi_id or None)
    if status in ("requires_payment_method", "canceled", "requires_confirmation"):
        err = pi.get("last_payment_error")
        err = err if isinstance(err, Mapping) else {}
        raise _card_error({"error": {**err, "payment_intent": {"id": pi_id, "status": status}}},
                          "The payment did not go through.")
    charge = pi.get("latest_charge")
    receipt = charge.get("receipt_url") if isinstance(charge, Mapping) else None
    return Payment(payment_intent_id=pi_id, status=status, charge_id=_id_of(charge),
                   receipt_url=str(receipt) if receipt else None)


def charge_saved_card(*, customer_id: str, payment_method_id: str, amount_cents: int,
                      metadata: dict[str, str], idempotency_key: str) -> Payment:
    """Charge the saved card off-session (one confirmed PaymentIntent).

    Returns the Payment when the intent `succeeded` (or is `processing`);
    raises CardDeclined / AuthenticationRequired otherwise, StripeUnavailable
    when the outcome is unknown (retry with the same idempotency key)."""
    pi = _call(lambda: _client().v1.payment_intents.create(
        {
            "amount": amount_cents,
            "currency": CURRENCY,
            "customer": customer_id,
            "payment_method": payment_method_id,
            "off_session": True,
            "confirm": True,
            "metadata": dict(metadata),
            "expand": ["latest_charge"],
        },
        {"idempotency_key": idempotency_key},
    ))
    return payment_from_intent(_as_dict(pi))


def find_payment_intent(*, customer_id: str, metadata: Mapping[str, str], created_after: float) -> Payment | None:
    """The customer's PaymentIntent whose metadata holds all of `metadata`, created at or after
    `created_after`, as a Payment (raising CardDeclined / AuthenticationRequired when it did not
    go through, like `charge_saved_card`), or None when there is none.

    For resuming a charge whose idempotency key Stripe may have forgotten (keys live 24 hours):
    look before creating, so the resumed attempt cannot become a second payment."""
    client = _client()
    params: dict[str, Any] = {"customer": customer_id, "created": {"gte": int(created_after)}, "limit": 100}
    for _ in range(100):  # at most 10,000 intents: far more than a customer's top-ups in a day
        page = _as_dict(_call(lambda: client.v1.payment_intents.list(params)))  # type: ignore[arg-type]
        data = page.get("data") or []
        for raw in data:
            pi = _as_dict(raw)
            meta = pi.get("metadata") or {}
            if all(str(meta.get(k)) == v for k, v in metadata.items()):
                return payment_from_intent(pi)
        if not page.get("has_more") or not data:
            return None
        params["starting_after"] = str(_as_dict(data[-1])["id"])
    return None


@dataclass(frozen=True)
class PaymentIntent:
    """A PaymentIntent as the webhook side needs it (whatever its status)."""

    id: str
    status: str
    amount: int
    charge_id: str | None
    payment_method_id: str | None
    saves_card: bool  # setup_future_usage was asked: the card is now on the customer
    metadata: dict[str, str]


def get_payment_intent(pi_id: str) -> PaymentIntent:
    pi = _as_dict(_call(lambda: _client().v1.payment_intents.retrieve(pi_id)))
    meta = pi.get("metadata")
    return PaymentIntent(
        id=str(pi.get("id") or pi_id),
        status=str(pi.get("status") or ""),
        amount=int(pi.get("amount_received") or pi.get("amount") or 0),
        charge_id=_id_of(pi.get("latest_charge")),
        payment_method_id=_id_of(pi.get("payment_method")),
        saves_card=bool(pi.get("setup_future_usage")),
        metadata={str(k): str(v) for k, v in meta.items()} if isinstance(meta, Mapping) else {},
    )


def payment_intent_of_charge(charge_id: str) -> str | None:
    """The PaymentIntent a charge belongs to (None for a charge made without one)."""
    ch = _as_dict(_call(lambda: _client().v1.charges.retrieve(charge_id)))
    return _id_of(ch.get("payment_intent"))


# -------------------------------------------------------------------- cards


def create_setup_intent(*, customer_id: str, user_id: str) -> SetupIntent:
    """A SetupIntent to save a card for off-session use; the client confirms it with Stripe.js."""
    si = _call(lambda: _client().v1.setup_intents.create({
        "customer": customer_id,
        "usage": "off_session",
        "metadata": {"user_id": user_id},
    }))
    return SetupIntent(id=str(si.id), client_secret=str(si.client_secret or ""))


def card_from_payment_method(pm: Mapping[str, Any]) -> Card:
    card = pm.get("card")
    card = card if isinstance(card, Mapping) else {}
    return Card(
        pm_id=str(pm.get("id") or ""),
        brand=str(card.get("brand") or "unknown"),
        last4=str(card.get("last4") or ""),
        exp_month=int(card.get("exp_month") or 0),
        exp_year=int(card.get("exp_year") or 0),
        customer_id=_id_of(pm.get("customer")),
    )


def get_card(payment_method_id: str) -> Card:
    pm = _call(lambda: _client().v1.payment_methods.retrieve(payment_method_id))
    return card_from_payment_method(_as_dict(pm))


def set_default_payment_method(customer_id: str, pm_id: str) -> None:
    """Make `pm_id` the customer's default for invoices and off-session charges."""
    _call(lambda: _client().v1.customers.update(
        customer_id, {"invoice_settings": {"default_payment_method": pm_id}}))


def detach_payment_method(pm_id: str) -> None:
    """Detach the card from its customer. Already detached or unknown is not an error."""
    import stripe

    try:
        _call(lambda: _client().v1.payment_methods.detach(pm_id))
    except StripeError as exc:
        if isinstance(exc.__cause__, stripe.InvalidRequestError) and exc.http_status in (400, 404):
            return
        raise


# ----------------------------------------------------------------- invoices


def invoice_from_object(inv: Mapping[str, Any], receipt_url: str | None = None) -> InvoiceMirror:
    hosted = inv.get("hosted_invoice_url")
    pdf = inv.get("invoice_pdf")
    return InvoiceMirror(
        id=str(inv.get("id") or ""),
        status=str(inv.get("status") or "draft"),
        hosted_invoice_url=str(hosted) if hosted else None,
        invoice_pdf=str(pdf) if pdf else None,
        receipt_url=receipt_url,
    )


def paid_payment_intent_id(inv: Mapping[str, Any]) -> str | None:
    """The PaymentIntent that paid the invoice, from its (expanded) `payments` list."""
    payments = inv.get("payments")
    data = payments.get("data") if isinstance(payments, Mapping) else None
    for p in data if isinstance(data, list) else []:
        if not isinstance(p, Mapping) or p.get("status") != "paid":
            continue
        payment = p.get("payment")
        if isinstance(payment, Mapping):
            pi = _id_of(payment.get("payment_intent"))
            if pi:
                return pi
    return None


def create_invoice(*, customer_id: str, amount_cents: int, description: str, metadata: dict[str, str],
                   idempotency_key: str) -> InvoiceMirror:
    """A one-off Stripe Invoice for `amount_cents` USD (send_invoice, due in 7 days), finalized.

    Draft invoice, then its invoice item, then finalize; each step has its own
    idempotency key derived from `idempotency_key`, so a retry resumes."""
    client = _client()
    draft = _call(lambda: client.v1.invoices.create(
        {
            "customer": customer_id,
            "collection_method": "send_invoice",
            "days_until_due": INVOICE_DAYS_UNTIL_DUE,
            "currency": CURRENCY,
            "description": description,
            "metadata": dict(metadata),
            "pending_invoice_items_behavior": "exclude",
        },
        {"idempotency_key": f"{idempotency_key}:invoice"},
    ))
    invoice_id = str(draft.id)
    _call(lambda: client.v1.invoice_items.create(
        {
            "customer": customer_id,
            "invoice": invoice_id,
            "amount": amount_cents,
            "currency": CURRENCY,
            "description": description,
            "metadata": dict(metadata),
        },
        {"idempotency_key": f"{idempotency_key}:item"},
    ))
    final = _call(lambda: client.v1.invoices.finalize_invoice(
        invoice_id, None, {"idempotency_key": f"{idempotency_key}:finalize"}))
    return invoice_from_object(_as_dict(final))


def get_invoice(invoice_id: str) -> InvoiceMirror:
    """The invoice as Stripe has it now; `receipt_url` (of the paying charge) when paid, else None."""
    client = _client()
    inv = _as_dict(_call(lambda: client.v1.invoices.retrieve(invoice_id, {"expand": ["payments"]})))
    receipt: str | None = None
    if inv.get("status") == "paid":
        pi_id = paid_payment_intent_id(inv)
        if pi_id:
            pi = _as_dict(_call(lambda: client.v1.payment_intents.retrieve(pi_id, {"expand": ["latest_charge"]})))
            charge = pi.get("latest_charge")
            if isinstance(charge, Mapping) and charge.get("receipt_url"):
                receipt = str(charge["receipt_url"])
    return invoice_from_object(inv, receipt)


def void_invoice(invoice_id: str) -> InvoiceMirror:
    """Void an open invoice. InvoiceNotVoidable when Stripe refuses (it is paid, void, or a draft)."""
    import stripe

    try:
        inv = _call(lambda: _client().v1.invoices.void_invoice(invoice_id))
    except StripeError as exc:
        cause = exc.__cause__
        if isinstance(cause, stripe.InvalidRequestError) and exc.http_status == 400:
            raise InvoiceNotVoidable(exc.message, code=exc.code, http_status=exc.http_status) from cause
        raise
    return invoice_from_object(_as_dict(inv))


# ----------------------------------------------------------------- webhooks


def verify_event(payload: bytes, sig_header: str | None) -> dict[str, Any]:
    """The event of a webhook delivery, as a plain dict, after checking its
    `Stripe-Signature` against the webhook secret (tolerance 300 s)."""
    secret = webhook_secret()
    if not secret:
        raise InvalidSignature("webhook secret not configured")
    if not sig_header:
        raise InvalidSignature("missing Stripe-Signature header")
    import stripe

    try:
        payload.decode("utf-8")  # Stripe signs UTF-8 JSON; anything else is not a Stripe delivery
        stripe.WebhookSignature.verify_header(payload, sig_header, secret, WEBHOOK_TOLERANCE_SECONDS)
    except UnicodeDecodeError as exc:
        raise InvalidSignature("payload is not UTF-8") from exc
    except stripe.SignatureVerificationError as exc:
        raise InvalidSignature(str(exc) or "bad signature") from exc
    try:
        event = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidSignature("payload is not JSON") from exc
    if not isinstance(event, dict) or not isinstance(event.get("type"), str) or not isinstance(
            event.get("data"), dict) or not isinstance(event["data"].get("object"), dict):
        raise InvalidSignature("payload is not a Stripe event")
    return event


if TYPE_CHECKING:  # this module is the adapter of `billing.ports.StripeGateway`: mypy checks it fits
    from gpurent.billing import gateway as _this
    from gpurent.billing import ports

    _port: ports.StripeGateway = _this
