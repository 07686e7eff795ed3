"""The Stripe customer of a user and the card on file (`spec/api.md` §3.5.4–3.5.5).

The server never sees card numbers: a card arrives through a SetupIntent
confirmed by Stripe.js (or a Checkout payment that saved it) and is recorded
when Stripe's webhook says so. Only display fields and the PaymentMethod id
are kept, on the wallet item.
"""

from __future__ import annotations

from typing import Any

from gpurent import clock
from gpurent.billing import gateway
from gpurent.errors import ApiError
from gpurent.records import AutoTopupRule, CardOnFile, WalletItem
from gpurent.store import billing as store
from gpurent.store import identity


def require_enabled() -> None:
    if not gateway.enabled():
        raise ApiError("billing_disabled", "Stripe is not configured on this deployment")


def ensure_customer(user_id: str, item: WalletItem | None = None) -> str:
    """The user's Stripe customer, created once (a Stripe idempotency key guards the race).
    `item`: the wallet item when the caller has just read it (not read again)."""
    current = (store.wallet_item(user_id) if item is None else item).get("stripeCustomerId")
    if current:
        return str(current)
    user = identity.get_user(user_id)
    if user is None:
        raise ApiError("unauthorized")
    customer = gateway.create_customer(user_id, str(user["email"]), idempotency_key=f"customer:{user_id}")
    return store.set_customer_once(user_id, customer)


def card_of(item: WalletItem) -> CardOnFile | None:
    card = item.get("card")
    return card if isinstance(card, dict) and card.get("pmId") else None


def card_public(user_id: str) -> dict[str, Any]:
    card = card_of(store.wallet_item(user_id))
    if card is None:
        return {"brand": None, "last4": None, "expMonth": None, "expYear": None, "pmId": None}
    return {"brand": card["brand"], "last4": card["last4"], "expMonth": int(card["expMonth"]),
            "expYear": int(card["expYear"]), "pmId": card["pmId"]}


def setup_intent(user_id: str) -> dict[str, Any]:
    require_enabled()
    customer = ensure_customer(user_id)
    si = gateway.create_setup_intent(customer_id=customer, user_id=user_id)
    return {"clientSecret": si.client_secret, "publishableKey": gateway.publishable_key()}


def card_fields(card: gateway.Card) -> CardOnFile:
    return {"pmId": card.pm_id, "brand": card.brand, "last4": card.last4, "expMonth": card.exp_month,
            "expYear": card.exp_year, "savedAt": clock.now()}


def delete_card(user_id: str) -> dict[str, Any]:
    """Detach at Stripe, forget it here, switch auto-topup off (it needs a card)."""
    item = store.wallet_item(user_id)
    card = card_of(item)
    if card is not None and gateway.enabled():
        gateway.detach_payment_method(str(card["pmId"]))
    auto = (item.get("autoTopup") or AutoTopupRule()).copy()
    sets: dict[str, Any] = {}
    if auto.get("enabled"):
        auto.update({"enabled": False, "disabledReason": "card_removed", "disabledAt": clock.now()})
        sets["autoTopup"] = auto
    store.update_settings(user_id, sets, remove=("card", "autoTopupThresholdCents"))
    return {"ok": True}
