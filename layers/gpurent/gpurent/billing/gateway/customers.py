"""Stripe customers and their saved cards: the customer of a user, the SetupIntent that saves
a card, the card's brand and expiry, the default card, removing a card."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpurent.billing.gateway import client
from gpurent.billing.gateway.client import StripeError


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


# ---------------------------------------------------------------- customers


def create_customer(user_id: str, email: str, idempotency_key: str) -> str:
    """A Stripe Customer for the user (`metadata.user_id`); its `cus_` id."""
    c = client.call(lambda: client.stripe_client().v1.customers.create(
        {"email": email, "metadata": {"user_id": user_id}},
        {"idempotency_key": idempotency_key},
    ))
    return str(c.id)


# -------------------------------------------------------------------- cards


def create_setup_intent(*, customer_id: str, user_id: str) -> SetupIntent:
    """A SetupIntent to save a card for off-session use; the client confirms it with Stripe.js."""
    si = client.call(lambda: client.stripe_client().v1.setup_intents.create({
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
        customer_id=client.id_of(pm.get("customer")),
    )


def get_card(payment_method_id: str) -> Card:
    pm = client.call(lambda: client.stripe_client().v1.payment_methods.retrieve(payment_method_id))
    return card_from_payment_method(client.as_dict(pm))


def set_default_payment_method(customer_id: str, pm_id: str) -> None:
    """Make `pm_id` the customer's default for invoices and off-session charges."""
    client.call(lambda: client.stripe_client().v1.customers.update(
        customer_id, {"invoice_settings": {"default_payment_method": pm_id}}))


def detach_payment_method(pm_id: str) -> None:
    """Detach the card from its customer. Already detached or unknown is not an error."""
    import stripe

    try:
        client.call(lambda: client.stripe_client().v1.payment_methods.detach(pm_id))
    except StripeError as exc:
        if isinstance(exc.__cause__, stripe.InvalidRequestError) and exc.http_status in (400, 404):
            return
        raise
