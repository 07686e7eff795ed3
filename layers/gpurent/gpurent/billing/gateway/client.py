"""The Stripe client: its settings, the one client per secret key, the exceptions billing
sees and the mapping of the library's errors onto them (`call`, through which every Stripe
request of the gateway goes)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from gpurent import config

if TYPE_CHECKING:
    import stripe

DEFAULT_API_BASE = "https://api.stripe.com"
CURRENCY = "usd"
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


def stripe_client() -> stripe.StripeClient:
    """The client for the configured secret key (built once per key)."""
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


def card_error(body: Mapping[str, Any] | None, fallback_message: str) -> CardDeclined:
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
        return card_error(body if isinstance(body, Mapping) else None, message)
    if isinstance(exc, stripe.IdempotencyError) and status == 400:
        # the key was used for another request (the client reused its Idempotency-Key); a 409
        # (another request with this key is in progress) is "unreachable for now", below
        return IdempotencyKeyReused(message, code=exc.code, http_status=status)
    if status is None or status >= 500 or status in (409, 429):
        return StripeUnavailable(message, code=exc.code, http_status=status)
    return StripeError(message, code=exc.code, http_status=status)


def call(fn: Callable[[], T]) -> T:
    """Run one Stripe call, translating the library's exceptions into ours."""
    try:
        return fn()
    except Exception as exc:
        translated = _translate(exc)
        if translated is exc:
            raise
        raise translated from exc


def as_dict(obj: Any) -> dict[str, Any]:
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    return dict(obj)


def id_of(value: Any) -> str | None:
    """An expandable field: an ID string, an expanded object, or null."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        v = value.get("id")
        return str(v) if v else None
    return None
