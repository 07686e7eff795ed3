"""Top-up payments through Stripe: the Checkout Session of a card top-up, the off-session
charge of a saved card, and reading back PaymentIntents (the webhook's and a resumed charge's)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpurent.billing.gateway import client
from gpurent.billing.gateway.client import CURRENCY, AuthenticationRequired

if TYPE_CHECKING:
    from stripe.params.checkout import SessionCreateParams, SessionCreateParamsPaymentIntentData

TOPUP_PRODUCT_NAME = "gpurent wallet top-up"


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
class PaymentIntent:
    """A PaymentIntent as the webhook side needs it (whatever its status)."""

    id: str
    status: str
    amount: int
    charge_id: str | None
    payment_method_id: str | None
    saves_card: bool  # setup_future_usage was asked: the card is now on the customer
    metadata: dict[str, str]


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
    s = client.call(lambda: client.stripe_client().v1.checkout.sessions.create(
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
        raise client.card_error({"error": {**err, "payment_intent": {"id": pi_id, "status": status}}},
                                "The payment did not go through.")
    charge = pi.get("latest_charge")
    receipt = charge.get("receipt_url") if isinstance(charge, Mapping) else None
    return Payment(payment_intent_id=pi_id, status=status, charge_id=client.id_of(charge),
                   receipt_url=str(receipt) if receipt else None)


def charge_saved_card(*, customer_id: str, payment_method_id: str, amount_cents: int,
                      metadata: dict[str, str], idempotency_key: str) -> Payment:
    """Charge the saved card off-session (one confirmed PaymentIntent).

    Returns the Payment when the intent `succeeded` (or is `processing`);
    raises CardDeclined / AuthenticationRequired otherwise, StripeUnavailable
    when the outcome is unknown (retry with the same idempotency key)."""
    pi = client.call(lambda: client.stripe_client().v1.payment_intents.create(
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
    return payment_from_intent(client.as_dict(pi))


def find_payment_intent(*, customer_id: str, metadata: Mapping[str, str], created_after: float) -> Payment | None:
    """The customer's PaymentIntent whose metadata holds all of `metadata`, created at or after
    `created_after`, as a Payment (raising CardDeclined / AuthenticationRequired when it did not
    go through, like `charge_saved_card`), or None when there is none.

    For resuming a charge whose idempotency key Stripe may have forgotten (keys live 24 hours):
    look before creating, so the resumed attempt cannot become a second payment."""
    api = client.stripe_client()
    params: dict[str, Any] = {"customer": customer_id, "created": {"gte": int(created_after)}, "limit": 100}
    for _ in range(100):  # at most 10,000 intents: far more than a customer's top-ups in a day
        page = client.as_dict(client.call(lambda: api.v1.payment_intents.list(params)))  # type: ignore[arg-type]
        data = page.get("data") or []
        for raw in data:
            pi = client.as_dict(raw)
            meta = pi.get("metadata") or {}
            if all(str(meta.get(k)) == v for k, v in metadata.items()):
                return payment_from_intent(pi)
        if not page.get("has_more") or not data:
            return None
        params["starting_after"] = str(client.as_dict(data[-1])["id"])
    return None


def get_payment_intent(pi_id: str) -> PaymentIntent:
    pi = client.as_dict(client.call(lambda: client.stripe_client().v1.payment_intents.retrieve(pi_id)))
    meta = pi.get("metadata")
    return PaymentIntent(
        id=str(pi.get("id") or pi_id),
        status=str(pi.get("status") or ""),
        amount=int(pi.get("amount_received") or pi.get("amount") or 0),
        charge_id=client.id_of(pi.get("latest_charge")),
        payment_method_id=client.id_of(pi.get("payment_method")),
        saves_card=bool(pi.get("setup_future_usage")),
        metadata={str(k): str(v) for k, v in meta.items()} if isinstance(meta, Mapping) else {},
    )


def payment_intent_of_charge(charge_id: str) -> str | None:
    """The PaymentIntent a charge belongs to (None for a charge made without one)."""
    ch = client.as_dict(client.call(lambda: client.stripe_client().v1.charges.retrieve(charge_id)))
    return client.id_of(ch.get("payment_intent"))
