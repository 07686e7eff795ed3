"""The Stripe port's adapter: the only package that imports `stripe`.

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
this package costs nothing.

Billing calls the port through this package (`gateway.charge_saved_card(...)`), whose names
are the port's members (`billing.ports.StripeGateway`, checked by mypy at the end) and its
types; a test swaps a member here for a fake. Each lives in the module of its part of Stripe:

- `client`: the settings, the client, the exceptions, and `call` (the one function every
  Stripe request goes through: it maps the library's errors onto ours);
- `customers`: customers and saved cards (SetupIntent, card, default card, removal);
- `payments`: top-ups (Checkout Session, off-session charge, PaymentIntents);
- `invoice_mirror`: the Stripe Invoice that mirrors one of our invoices;
- `signatures`: webhook deliveries.

Settings (`gpurent.config.StripeSettings`, read from the environment):
- `STRIPE_SECRET_KEY`, or `STRIPE_SECRET_KEY_PARAM` naming an SSM SecureString;
- `STRIPE_WEBHOOK_SECRET`, or `STRIPE_WEBHOOK_SECRET_PARAM`;
- `STRIPE_PUBLISHABLE_KEY`;
- `STRIPE_API_BASE` (local stack and tests only; default Stripe's own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpurent.billing.gateway.client import (
    MAX_NETWORK_RETRIES,
    AuthenticationRequired,
    CardDeclined,
    IdempotencyKeyReused,
    InvalidSignature,
    InvoiceNotVoidable,
    StripeError,
    StripeUnavailable,
    enabled,
    publishable_key,
    reset,
    webhook_secret,
)
from gpurent.billing.gateway.customers import (
    Card,
    SetupIntent,
    card_from_payment_method,
    create_customer,
    create_setup_intent,
    detach_payment_method,
    get_card,
    set_default_payment_method,
)
from gpurent.billing.gateway.invoice_mirror import (
    InvoiceMirror,
    create_invoice,
    get_invoice,
    invoice_from_object,
    paid_payment_intent_id,
    void_invoice,
)
from gpurent.billing.gateway.payments import (
    CheckoutSession,
    Payment,
    PaymentIntent,
    charge_saved_card,
    create_checkout_session,
    find_payment_intent,
    get_payment_intent,
    payment_from_intent,
    payment_intent_of_charge,
)
from gpurent.billing.gateway.signatures import WEBHOOK_TOLERANCE_SECONDS, verify_event

__all__ = [
    "MAX_NETWORK_RETRIES",
    "WEBHOOK_TOLERANCE_SECONDS",
    "AuthenticationRequired",
    "Card",
    "CardDeclined",
    "CheckoutSession",
    "IdempotencyKeyReused",
    "InvalidSignature",
    "InvoiceMirror",
    "InvoiceNotVoidable",
    "Payment",
    "PaymentIntent",
    "SetupIntent",
    "StripeError",
    "StripeUnavailable",
    "card_from_payment_method",
    "charge_saved_card",
    "create_checkout_session",
    "create_customer",
    "create_invoice",
    "create_setup_intent",
    "detach_payment_method",
    "enabled",
    "find_payment_intent",
    "get_card",
    "get_invoice",
    "get_payment_intent",
    "invoice_from_object",
    "paid_payment_intent_id",
    "payment_from_intent",
    "payment_intent_of_charge",
    "publishable_key",
    "reset",
    "set_default_payment_method",
    "verify_event",
    "void_invoice",
    "webhook_secret",
]

if TYPE_CHECKING:  # this package is the adapter of `billing.ports.StripeGateway`: mypy checks it fits
    from gpurent.billing import gateway as _this
    from gpurent.billing import ports

    _port: ports.StripeGateway = _this
