"""Top-ups: Checkout, a saved-card charge, and the one way every Stripe payment
becomes wallet money (`deposit`).

Every Stripe payment is credited under the key `deposit_<payment intent>`,
whoever sees it first (the saved-card request itself, the auto-topup, the
`checkout.session.completed` or `payment_intent.succeeded` webhook), so it is
credited exactly once (`spec/decisions.md` "Webhook").
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict

from gpurent import auth, notify, wallet
from gpurent.billing import cards, gateway
from gpurent.config import settings
from gpurent.errors import ApiError
from gpurent.money import dollars
from gpurent.store import billing as store
from gpurent.store import identity
from gpurent.store.money import TransactItem

MIN_TOPUP, MAX_TOPUP = 100, 500_000
CHECKOUTS_PER_HOUR = 10


class Checkout(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    amountCents: int
    useCheckout: bool = False


def deposit(user_id: str, payment_intent_id: str, amount: int, entry_type: str, charge_id: str | None,
            extras: list[TransactItem] | None = None) -> wallet.Result:
    """Credit one Stripe payment, exactly once. A replay (any path, any event) answers `replayed`.

    The fingerprint names only the payment, its amount and type, so the first
    path's references (its charge id) stand and later paths replay cleanly.
    """
    refs = {"stripeChargeId": charge_id, "paymentIntentId": payment_intent_id}
    desc = {"op": "deposit", "pi": payment_intent_id, "amount": amount, "type": entry_type}
    result = wallet.apply(user_id, f"deposit_{payment_intent_id}", desc,
                          lambda w: [wallet.plan_credit(w, amount, entry_type, refs)],
                          (lambda w, steps: list(extras)) if extras else None)
    if not result.replayed:
        user = identity.get_user(user_id)
        if user is not None:
            what = "Auto-topup" if entry_type == "auto_topup" else "Top-up"
            notify.send(str(user["email"]), f"{what} of {dollars(amount)} received",
                        f"{dollars(amount)} was added to your gpurent wallet.\n\n"
                        f"Your balance is now {dollars(result.total)}.")
    return result


def _success_url() -> str:
    return settings().stripe_success_url or f"{settings().public_url}/app/billing?session=success"


def _cancel_url() -> str:
    return settings().stripe_cancel_url or f"{settings().public_url}/app/billing?session=cancel"


def checkout(user_id: str, body: Checkout, idempotency_key: str | None) -> dict[str, Any]:
    if not MIN_TOPUP <= body.amountCents <= MAX_TOPUP:
        raise ApiError("invalid_amount", "amountCents must be between 100 and 500000 ($1 - $5,000)",
                       {"amountCents": "must be between 100 and 500000"})
    cards.require_enabled()
    auth.enforce_rate_limit(f"CHECKOUT#{user_id}", CHECKOUTS_PER_HOUR, CHECKOUTS_PER_HOUR)
    item = store.wallet_item(user_id)  # read once: the customer and the card on file are both on it
    customer = cards.ensure_customer(user_id, item)
    card = cards.card_of(item)
    key = idempotency_key or None
    if card is not None and not body.useCheckout:
        return _charge_saved_card(user_id, customer, str(card["pmId"]), body.amountCents, key)
    session = gateway.create_checkout_session(
        customer_id=customer, user_id=user_id, amount_cents=body.amountCents,
        success_url=_success_url(), cancel_url=_cancel_url(), save_card=True,
        idempotency_key=f"checkout:{user_id}:{key}" if key else f"checkout:{user_id}:{_nonce()}",
    )
    return {"checkoutUrl": session.url, "sessionId": session.id}


def _nonce() -> str:
    return uuid.uuid4().hex


def _charge_saved_card(user_id: str, customer: str, pm_id: str, amount: int, key: str | None) -> dict[str, Any]:
    try:
        payment = gateway.charge_saved_card(
            customer_id=customer, payment_method_id=pm_id, amount_cents=amount,
            metadata={"user_id": user_id, "kind": "saved_card"},
            idempotency_key=f"topup:{user_id}:{key}" if key else f"topup:{user_id}:{_nonce()}",
        )
    except gateway.CardDeclined as exc:
        details = {"code": exc.code, "declineCode": exc.decline_code, "paymentIntentId": exc.payment_intent_id}
        hint = " Complete the payment through Checkout (useCheckout: true)." if isinstance(
            exc, gateway.AuthenticationRequired) else ""
        raise ApiError("card_declined", f"Card declined: {exc.message}{hint}",
                       {k: v for k, v in details.items() if v}) from None
    if payment.status == "succeeded":
        deposit(user_id, payment.payment_intent_id, amount, "stripe_topup", payment.charge_id)
    # `processing` is credited by the payment_intent.succeeded webhook under the same key.
    return {"checkoutUrl": None, "sessionId": None, "paymentIntentId": payment.payment_intent_id,
            "status": payment.status}
