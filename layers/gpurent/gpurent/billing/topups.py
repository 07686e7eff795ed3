"""Top-ups: Checkout, a saved-card charge, and the one way every Stripe payment
becomes wallet money (`deposit`).

Every Stripe payment is credited under the key `deposit_<payment intent>`,
whoever sees it first (the saved-card request itself, the auto-topup, the
`checkout.session.completed` or `payment_intent.succeeded` webhook), so it is
credited exactly once (`spec/decisions.md` "Webhook").
"""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING, Any

from gpurent import clock, ids, rate_limits, wallet
from gpurent.billing import cards, gateway
from gpurent.config import settings
from gpurent.errors import ApiError
from gpurent.money import dollars
from gpurent.records import LedgerRefs, WalletItem
from gpurent.store import billing as store
from gpurent.store.money import TransactItem
from gpurent.telemetry import logger

if TYPE_CHECKING:
    from gpurent.bodies import Checkout  # the request body (`POST /v1/billing/checkout`)

MIN_TOPUP, MAX_TOPUP = 100, 500_000
CHECKOUTS_PER_HOUR = 10
# Stripe keeps an idempotency key for 24 hours: a charge resumed later than this (an hour of
# margin) looks its PaymentIntent up by our metadata before it may create one.
STRIPE_KEY_LIFETIME = 23 * 3600


def charge_once(*, customer_id: str, payment_method_id: str, amount_cents: int, metadata: dict[str, str],
                idempotency_key: str, first_tried_at: float) -> gateway.Payment:
    """Charge the saved card for an intent first tried at `first_tried_at`, at most once.

    Within Stripe's idempotency window the key itself replays the first answer; past it the
    PaymentIntent is looked up by `metadata` (which names the intent) and reused if found."""
    if clock.now() - first_tried_at >= STRIPE_KEY_LIFETIME:
        found = gateway.find_payment_intent(customer_id=customer_id, metadata=metadata,
                                            created_after=first_tried_at - 3600)
        if found is not None:
            return found
    return gateway.charge_saved_card(customer_id=customer_id, payment_method_id=payment_method_id,
                                     amount_cents=amount_cents, metadata=metadata,
                                     idempotency_key=idempotency_key)


def credit_key(payment_intent_id: str) -> str:
    """The operation key a Stripe payment is credited under, whichever path credits it."""
    return f"deposit_{payment_intent_id}"


def deposit(user_id: str, payment_intent_id: str, amount: int, entry_type: str, charge_id: str | None,
            extras: list[TransactItem] | None = None, known: WalletItem | None = None) -> wallet.Result:
    """Credit one Stripe payment, exactly once. A replay (any path, any event) answers `replayed`.

    The fingerprint names only the payment, its amount and type, so the first
    path's references (its charge id) stand and later paths replay cleanly.
    `known`: the wallet item the caller read (for the card or customer on it), so the
    credit does not read it again (`wallet.apply`).
    """
    refs: LedgerRefs = {"stripeChargeId": charge_id, "paymentIntentId": payment_intent_id}
    desc = {"op": "deposit", "pi": payment_intent_id, "amount": amount, "type": entry_type}
    what = "Auto-topup" if entry_type == "auto_topup" else "Top-up"

    def email(w: wallet.Wallet, steps: Any) -> list[wallet.Effect]:
        return [("email", {"subject": f"{what} of {dollars(amount)} received",
                           "body": f"{dollars(amount)} was added to your gpurent wallet.\n\n"
                                   f"Your balance is now {dollars(wallet.total_after(w, steps))}."})]

    return wallet.apply(user_id, credit_key(payment_intent_id), desc,
                        lambda w: [wallet.plan_credit(w, amount, entry_type, refs)],
                        (lambda w, steps: list(extras)) if extras else None, effects=email, known=known)


def _success_url() -> str:
    return settings().stripe_success_url or f"{settings().public_url}/app/billing?session=success"


def _cancel_url() -> str:
    return settings().stripe_cancel_url or f"{settings().public_url}/app/billing?session=cancel"


def checkout(user_id: str, body: Checkout, idempotency_key: str | None) -> dict[str, Any]:
    if not MIN_TOPUP <= body.amountCents <= MAX_TOPUP:
        raise ApiError("invalid_amount", "amountCents must be between 100 and 500000 ($1 - $5,000)",
                       {"amountCents": "must be between 100 and 500000"})
    cards.require_enabled()
    rate_limits.enforce_rate_limit(f"CHECKOUT#{user_id}", CHECKOUTS_PER_HOUR, CHECKOUTS_PER_HOUR)
    item = store.wallet_item(user_id)  # read once: the customer and the card on file are both on it
    try:
        customer = cards.ensure_customer(user_id, item)
    except gateway.StripeUnavailable:
        raise _stripe_unreachable() from None
    card = cards.card_of(item)
    key = idempotency_key or None
    if card is not None and not body.useCheckout:
        return _charge_saved_card(user_id, customer, str(card["pmId"]), body.amountCents, key, item)
    try:
        session = gateway.create_checkout_session(
            customer_id=customer, user_id=user_id, amount_cents=body.amountCents,
            success_url=_success_url(), cancel_url=_cancel_url(), save_card=True,
            idempotency_key=f"checkout:{user_id}:{key}" if key else f"checkout:{user_id}:{_nonce()}",
        )
    except gateway.IdempotencyKeyReused:
        raise wallet.IdempotencyMismatch() from None
    except gateway.StripeUnavailable:
        raise _stripe_unreachable() from None
    return {"checkoutUrl": session.url, "sessionId": session.id}


def _stripe_unreachable() -> ApiError:
    return ApiError("service_unavailable", "Stripe could not be reached; nothing was charged. Retry in a few seconds",
                    headers={"Retry-After": "5"})


def _nonce() -> str:
    return uuid.uuid4().hex


def _slot(idempotency_key: str | None) -> str:
    if idempotency_key is None:
        return "open"
    return "key:" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]


def _charge_saved_card(user_id: str, customer: str, pm_id: str, amount: int, key: str | None,
                       known: WalletItem | None) -> dict[str, Any]:
    """Charge the card on file through a durable intent (`store.billing` "top-up intents").

    The intent is written before Stripe is called and names the PaymentIntent's Stripe
    idempotency key, so whatever happens to this request, its retry — with the same
    Idempotency-Key, or without one while the intent is unfinished — resumes the same
    payment instead of making a second one. The intent's outcome is recorded in the credit's
    own transaction. `known` is the wallet item the request read; the credit plans on it
    unless another intent's credit ran first in this request.
    """
    slot = _slot(key)
    for _ in range(3):
        intent = store.get_intent(user_id, slot)
        if intent is not None and intent["status"] == "pending":
            if int(intent["amountCents"]) == amount:
                return _run_intent(user_id, customer, slot, intent, known)
            if key is not None:
                raise wallet.IdempotencyMismatch()
            # An unfinished unkeyed top-up of another amount: finish it first, then this one.
            try:
                _run_intent(user_id, customer, slot, intent, known)
            except ApiError as exc:
                if exc.code == "service_unavailable":
                    raise
            known = None  # that credit moved the wallet on
            continue
        if intent is not None and key is not None:  # a finished keyed intent: the same answer again
            if int(intent["amountCents"]) != amount:
                raise wallet.IdempotencyMismatch()
            return _answer(intent)
        now = clock.now()
        record = {"intentId": f"tpi_{ids.ulid_at(now)}", "userId": user_id, "amountCents": amount, "pmId": pm_id,
                  "status": "pending", "createdAt": now}
        if store.put_intent(user_id, slot, record, intent["intentId"] if intent is not None else None):
            return _run_intent(user_id, customer, slot, record, known)
    raise ApiError("service_unavailable", "Another top-up is being processed; retry in a moment",
                   headers={"Retry-After": "1"})


def _answer(intent: dict[str, Any]) -> dict[str, Any]:
    if intent["status"] == "declined":
        raise ApiError("card_declined", str(intent.get("message") or "Card declined"),
                       dict(intent.get("details") or {}))
    return {"checkoutUrl": None, "sessionId": None, "paymentIntentId": intent.get("paymentIntentId"),
            "status": intent["status"]}


def _run_intent(user_id: str, customer: str, slot: str, intent: dict[str, Any],
                known: WalletItem | None = None) -> dict[str, Any]:
    """Charge (or, on a retry, replay at Stripe) the intent's payment and record its outcome."""
    intent_id, amount = str(intent["intentId"]), int(intent["amountCents"])
    try:
        payment = charge_once(
            customer_id=customer, payment_method_id=str(intent["pmId"]), amount_cents=amount,
            metadata={"user_id": user_id, "kind": "saved_card", "intent": intent_id},
            idempotency_key=f"topup:{user_id}:{intent_id}", first_tried_at=float(intent["createdAt"]),
        )
    except gateway.CardDeclined as exc:
        details = {"code": exc.code, "declineCode": exc.decline_code, "paymentIntentId": exc.payment_intent_id}
        hint = " Complete the payment through Checkout (useCheckout: true)." if isinstance(
            exc, gateway.AuthenticationRequired) else ""
        message = f"Card declined: {exc.message}{hint}"
        kept = {k: v for k, v in details.items() if v}
        store.set_intent_outcome(user_id, slot, intent_id, {"status": "declined", "message": message,
                                                            "details": kept})
        raise ApiError("card_declined", message, kept) from None
    except gateway.StripeUnavailable:
        # The outcome is unknown: the intent stays pending, and the retry resumes it (the same payment).
        raise ApiError("service_unavailable", "Stripe could not be reached; retry in a few seconds (the retry "
                       "completes this same payment, never a second one)", headers={"Retry-After": "5"}) from None
    except gateway.StripeError as exc:
        message = f"Payment refused: {exc.message}"
        details = {"code": exc.code} if exc.code else {}
        store.set_intent_outcome(user_id, slot, intent_id, {"status": "declined", "message": message,
                                                            "details": details})
        raise ApiError("card_declined", message, details) from None
    outcome = {"status": payment.status, "paymentIntentId": payment.payment_intent_id}
    if payment.status == "succeeded":
        result = deposit(user_id, payment.payment_intent_id, amount, "stripe_topup", payment.charge_id,
                         extras=[store.intent_outcome(user_id, slot, intent_id, outcome)], known=known)
        if not result.replayed:
            return _answer({**intent, **outcome})
    # `processing` (the payment_intent.succeeded webhook credits it under the same key), or the
    # credit was made first by the webhook: record the outcome on its own. The money has moved
    # (or will, by the webhook): a failure here must not fail the request.
    try:
        store.set_intent_outcome(user_id, slot, intent_id, outcome)
    except Exception:
        logger.exception("recording a top-up intent's outcome failed; a retry resumes it harmlessly")
    return _answer({**intent, **outcome})
