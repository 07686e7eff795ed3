"""Stripe's webhook (`spec/api.md` §5): verified first, each event processed once.

1. The signature is verified with the `stripe` library before anything else
   (400 `invalid_signature`, nothing written).
2. An event already processed (its `STRIPE_EVENT#<id>` marker exists) answers
   `{received: true, duplicate: true}`. The same read fetches, for an event of a
   payment, the payment's credit marker: the second event of a credited payment
   only records itself (no credit transaction its marker could only cancel).
3. The effect is written in one transaction with the event's marker; every
   credit is also keyed by its payment (`deposit_<pi>`, `invoice_paid_<in>`),
   so a redelivery, an out-of-order event or the other event of the same
   payment can never post twice.
4. Unknown event types answer 200; a failure inside processing raises, so the
   function answers 500 and Stripe retries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gpurent import clock
from gpurent.billing import cards, gateway, invoices, reversals, topups
from gpurent.errors import ApiError
from gpurent.records import WalletItem
from gpurent.store import billing as store
from gpurent.store import identity
from gpurent.store import invoices as invoice_store
from gpurent.telemetry import count, logger

Event = dict[str, Any]


def _dated_ahead(signature: str | None) -> bool:
    """Stripe's library refuses a signature older than the tolerance, not one dated ahead of us; such
    a delivery would stay valid for longer than the tolerance, so it is refused too."""
    for part in (signature or "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit():
            return int(value) > time.time() + gateway.WEBHOOK_TOLERANCE_SECONDS
    return False


def handle(payload: bytes, signature: str | None) -> dict[str, Any]:
    try:
        if _dated_ahead(signature):
            raise gateway.InvalidSignature("signature dated in the future")
        event = gateway.verify_event(payload, signature)
    except gateway.InvalidSignature:
        count("WebhookInvalidSignature")
        raise ApiError("invalid_signature", "Stripe signature missing or invalid; event not processed") from None
    event_id, event_type = str(event.get("id") or ""), str(event.get("type") or "")
    if not event_id:
        raise ApiError("invalid_signature", "Not a Stripe event")
    obj = (event.get("data") or {}).get("object") or {}
    payment = _payment_of(event_type, obj)
    processed, credited_to = store.event_seen(event_id, topups.credit_key(payment) if payment else None)
    if processed:
        return {"received": True, "duplicate": True}
    if event_type in PAYMENT_HANDLERS:
        duplicate = PAYMENT_HANDLERS[event_type](event_id, event_type, obj, credited_to)
    elif (handler := HANDLERS.get(event_type)) is not None:
        duplicate = handler(event_id, event_type, obj)
    else:
        return {"received": True}
    count("WebhookEvents")
    logger.info("stripe event", extra={"eventType": event_type, "duplicate": duplicate})
    return {"received": True, "duplicate": True} if duplicate else {"received": True}


def _payment_of(event_type: str, obj: dict[str, Any]) -> str | None:
    """The PaymentIntent an event of a payment would credit (None for any other event)."""
    if event_type == "payment_intent.succeeded":
        found = obj.get("id")
    elif event_type == "checkout.session.completed":
        found = obj.get("payment_intent")
    else:
        return None
    return found if isinstance(found, str) and found else None


def _marker(event_id: str, event_type: str) -> Any:
    return store.event_marker(event_id, event_type, clock.now())


def _mark(event_id: str, event_type: str, items: list[Any] | None = None) -> bool:
    """Write the marker (with `items`, in one transaction); False when it was there already."""
    from gpurent.store.money import TransactionCancelled, transact

    try:
        transact([_marker(event_id, event_type), *(items or [])])
    except TransactionCancelled as exc:
        if exc.codes[0] == "ConditionalCheckFailed":
            return False
        raise
    return True


class Marker:
    """This event's marker: `item()` to write it inside a transaction, or called with other
    items to write it (with them) on its own; False when it was there already."""

    def __init__(self, event_id: str, event_type: str) -> None:
        self.event_id, self.event_type = event_id, event_type

    def item(self) -> Any:
        return _marker(self.event_id, self.event_type)

    def __call__(self, items: list[Any]) -> bool:
        return _mark(self.event_id, self.event_type, items)


def _with_marker(fn: Callable[[Marker, dict[str, Any]], bool]) -> Callable[[str, str, dict[str, Any]], bool]:
    return lambda event_id, event_type, obj: fn(Marker(event_id, event_type), obj)


def _user_exists(user_id: str) -> bool:
    return bool(user_id) and identity.get_user(user_id) is not None


def _deposit(event_id: str, event_type: str, user_id: str, pi: gateway.PaymentIntent, entry_type: str) -> bool:
    result = topups.deposit(user_id, pi.id, pi.amount, entry_type, pi.charge_id,
                            extras=[_marker(event_id, event_type)])
    if result.replayed:
        _mark(event_id, event_type)  # the other path credited it; remember this event too
    return result.replayed


def _save_card(user_id: str, customer: str | None, pm_id: str, created: int, event_id: str,
               event_type: str) -> bool:
    """Record the SetupIntent's card, unless a card from a newer SetupIntent (or Checkout) is
    on file already: an older event arriving late never replaces a newer card."""
    from gpurent.store.money import TransactionCancelled

    if store.newer_card_recorded(store.wallet_item(user_id), created):
        return not _mark(event_id, event_type)
    card = gateway.get_card(pm_id)
    if customer:
        gateway.set_default_payment_method(customer, pm_id)
    sets: dict[str, Any] = {"card": cards.card_fields(card)}
    if customer:
        sets["stripeCustomerId"] = customer
    try:
        return not _mark(event_id, event_type, [store.card_item(user_id, sets, created)])
    except TransactionCancelled as exc:
        if exc.codes[1] == "ConditionalCheckFailed":  # a newer card was recorded meanwhile
            return not _mark(event_id, event_type)
        raise


def checkout_completed(event_id: str, event_type: str, session: dict[str, Any], credited_to: str | None) -> bool:
    user_id = str((session.get("metadata") or {}).get("user_id") or session.get("client_reference_id") or "")
    pi_id = session.get("payment_intent")
    if session.get("payment_status") != "paid" or not pi_id or not _user_exists(user_id):
        logger.warning("checkout session not credited", extra={"eventId": event_id})
        return not _mark(event_id, event_type)
    pi = gateway.get_payment_intent(str(pi_id))
    amount = int(session.get("amount_total") or pi.amount)
    pi = gateway.PaymentIntent(pi.id, pi.status, amount, pi.charge_id, pi.payment_method_id, pi.saves_card,
                               pi.metadata)
    # The card the payer chose to save is recorded first (an idempotent write), the credit and this
    # event's marker after it, in one transaction: a crash anywhere before the marker leaves the
    # event unprocessed, and Stripe's redelivery does it all again. (The card lives on the wallet
    # item, which the credit's transaction already writes: one transaction cannot hold both.)
    customer = session.get("customer")
    item: WalletItem | None = None  # the wallet item, when read for the card: the credit plans on it
    if pi.payment_method_id and customer:
        card = gateway.get_card(pi.payment_method_id)
        created = int(session.get("created") or 0)
        if pi.saves_card or card.customer_id == customer:  # the payer kept "save card" ticked
            item = store.wallet_item(user_id)
            if not store.newer_card_recorded(item, created):
                gateway.set_default_payment_method(str(customer), pi.payment_method_id)
                store.update_settings(user_id, {"card": cards.card_fields(card), "cardSourceCreated": created},
                                      condition="attribute_not_exists(cardSourceCreated) OR cardSourceCreated <= :c",
                                      cond_values={":c": created})
    if credited_to == user_id:
        # The payment's other event credited it first (seen in the event's first read): the
        # credit's transaction could only be cancelled by its marker, so it is not sent.
        return not _mark(event_id, event_type)
    result = topups.deposit(user_id, pi.id, pi.amount, "stripe_topup", pi.charge_id,
                            extras=[_marker(event_id, event_type)], known=item)
    if result.replayed:
        return not _mark(event_id, event_type)  # the payment's other event credited it first
    return False


def payment_succeeded(event_id: str, event_type: str, obj: dict[str, Any], credited_to: str | None) -> bool:
    meta = obj.get("metadata") or {}
    user_id = str(meta.get("user_id") or "")
    if user_id and credited_to == user_id:
        # Credited already (by the saved-card request, the auto-topup or the Checkout event), as
        # the event's first read showed: remember this event, without the user read, the Stripe
        # read and the credit's transaction that its marker could only cancel.
        _mark(event_id, event_type)
        return True
    if not _user_exists(user_id):
        return not _mark(event_id, event_type)  # an invoice's payment (invoice.paid settles it) or not ours
    pi = gateway.get_payment_intent(str(obj["id"]))
    entry_type = "auto_topup" if meta.get("kind") == "auto_topup" else "stripe_topup"
    return _deposit(event_id, event_type, user_id, pi, entry_type)


def setup_succeeded(event_id: str, event_type: str, obj: dict[str, Any]) -> bool:
    user_id = str((obj.get("metadata") or {}).get("user_id") or "")
    pm_id = obj.get("payment_method")
    pm_id = pm_id.get("id") if isinstance(pm_id, dict) else pm_id
    if not pm_id or not _user_exists(user_id):
        return not _mark(event_id, event_type)
    customer = obj.get("customer")
    return _save_card(user_id, str(customer) if customer else None, str(pm_id), int(obj.get("created") or 0),
                      event_id, event_type)


def _local_invoice(obj: dict[str, Any]) -> tuple[str, str] | None:
    invoice_id = str((obj.get("metadata") or {}).get("invoice_id") or "")
    user_id = invoice_store.owner_of(invoice_id) if invoice_id else None
    return (user_id, invoice_id) if user_id else None


def _invoice_closed(to_status: invoices.Closed) -> Callable[[str, str, dict[str, Any]], bool]:
    def run(event_id: str, event_type: str, obj: dict[str, Any]) -> bool:
        found = _local_invoice(obj)
        if found is None:
            return not _mark(event_id, event_type)
        user_id, invoice_id = found
        receipt = None
        if to_status == "paid":
            try:
                receipt = gateway.get_invoice(str(obj["id"])).receipt_url
            except gateway.StripeError:
                receipt = None  # the receipt link is a nicety; the payment is what counts
        _, changed = invoices.close(user_id, invoice_id, to_status, receipt_url=receipt,
                                    extras=[_marker(event_id, event_type)])
        if not changed:
            _mark(event_id, event_type)
        return not changed

    return run


# The events of a payment: each is also told whom the payment was credited to already, if anyone
# (`handle` reads the payment's credit marker with the event's own).
PAYMENT_HANDLERS: dict[str, Callable[[str, str, dict[str, Any], str | None], bool]] = {
    "checkout.session.completed": checkout_completed,
    "payment_intent.succeeded": payment_succeeded,
}

HANDLERS: dict[str, Callable[[str, str, dict[str, Any]], bool]] = {
    "setup_intent.succeeded": setup_succeeded,
    "invoice.paid": _invoice_closed("paid"),
    "invoice.payment_succeeded": _invoice_closed("paid"),
    "invoice.voided": _invoice_closed("void"),
    "invoice.marked_uncollectible": _invoice_closed("uncollectible"),
    "charge.refunded": _with_marker(reversals.charge_refunded),
    "charge.dispute.created": _with_marker(reversals.dispute_created),
    "charge.dispute.closed": _with_marker(reversals.dispute_closed),
}
