"""Invoices: money owed that the wallet could not cover (`spec/api.md` §3.5.7).

An invoice is a local record first (this module), mirrored to a Stripe
Invoice when Stripe is configured. It is created `open`: the debt is real
whether or not Stripe answered, so it counts in the balance's `openInvoices*`
at once (`docs/decisions.md` "Invoices"). Every status change of an invoice
moves the wallet's counters in the same transaction.
"""

from __future__ import annotations

from typing import Any

from gpurent import clock, ids, wallet
from gpurent.errors import ApiError
from gpurent.money import dollars
from gpurent.records import Rental
from gpurent.store import invoices as store
from gpurent.store.money import TransactItem
from gpurent.telemetry import logger

REASONS = ("topup_failed", "overage", "manual")
STATUSES = ("draft", "open", "paid", "void", "uncollectible")
LISTED = ("open", "paid", "void", "uncollectible")  # the default list hides drafts
DUE_AFTER = 7 * 86400


def new_record(user_id: str, reason: str, amount_cents: int, description: str, *,
               rental_id: str | None = None, period: tuple[float, float] | None = None) -> dict[str, Any]:
    if reason not in REASONS:
        raise ValueError(f"unknown invoice reason {reason}")
    if amount_cents <= 0:
        raise ValueError("an invoice is for a positive amount")
    now = clock.now()
    start, end = period if period else (None, None)
    return {
        "id": ids.new_id("inv"),
        "userId": user_id,
        "status": "open",
        "reason": reason,
        "amountCents": amount_cents,
        "currency": "USD",
        "rentalId": rental_id,
        "stripeInvoiceId": None,
        "hostedInvoiceUrl": None,
        "invoicePdfUrl": None,
        "receiptUrl": None,
        "createdAt": now,
        "dueAt": now + DUE_AFTER,
        "paidAt": None,
        "voidedAt": None,
        "lineItems": [{
            "id": ids.new_id("li"),
            "description": description,
            "amountCents": amount_cents,
            "rentalId": rental_id,
            "periodStart": start,
            "periodEnd": end,
        }],
    }


def plan_open(record: dict[str, Any]) -> wallet.Step:
    """The wallet side of issuing an open invoice: the counters, no money."""
    return wallet.Step(0, 0, (), {"invoiceId": record["id"]}, (int(record["amountCents"]), 1))


def open_items(record: dict[str, Any]) -> list[TransactItem]:
    return store.put_items(record)


def overage_record(rental: Rental, overage_cents: int, until: float) -> dict[str, Any]:
    """The usage of a rental beyond the wallet's money (threshold $0: every cent)."""
    return new_record(
        rental.user_id, "overage", overage_cents,
        f"Usage beyond the wallet balance: {rental.name or rental.id} "
        f"({dollars(rental.price_per_hour_cents)}/h)",
        rental_id=rental.id, period=(rental.running_at or until, until),
    )


def _iso(value: Any) -> str | None:
    return clock.iso(float(value)) if value is not None else None


def public(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "status": record["status"],
        "reason": record["reason"],
        "amountCents": int(record["amountCents"]),
        "currency": record.get("currency", "USD"),
        "rentalId": record.get("rentalId"),
        "stripeInvoiceId": record.get("stripeInvoiceId"),
        "hostedInvoiceUrl": record.get("hostedInvoiceUrl"),
        "invoicePdfUrl": record.get("invoicePdfUrl"),
        "receiptUrl": record.get("receiptUrl"),
        "createdAt": _iso(record["createdAt"]),
        "dueAt": _iso(record.get("dueAt")),
        "paidAt": _iso(record.get("paidAt")),
        "voidedAt": _iso(record.get("voidedAt")),
        "lineItems": [
            {
                "id": li["id"],
                "description": li["description"],
                "amountCents": int(li["amountCents"]),
                "rentalId": li.get("rentalId"),
                "periodStart": _iso(li.get("periodStart")),
                "periodEnd": _iso(li.get("periodEnd")),
            }
            for li in record.get("lineItems", [])
        ],
    }


# ---------------------------------------------------------------- issuing and mirroring

def issue(record: dict[str, Any], op_key: str, extras: list[TransactItem] | None = None,
          effects: list[wallet.Effect] | None = None) -> dict[str, Any]:
    """Write an open invoice and count it on the wallet, once per `op_key`; `effects` (its
    Stripe mirror, an email) are owed in the same transaction (`gpurent.outbox`)."""
    desc = {"op": "invoice", "reason": record["reason"], "amount": record["amountCents"]}
    result = wallet.apply(record["userId"], op_key, desc, lambda w: [plan_open(record)],
                          lambda w, steps: open_items(record) + list(extras or []),
                          effects=(lambda w, steps: list(effects)) if effects else None)
    if result.replayed:
        found = store.get(record["userId"], str(result.steps[0]["invoiceId"]))
        if found is not None:
            record.clear()
            record.update(found)
    return record


def mirror_quietly(record: dict[str, Any]) -> dict[str, Any] | None:
    """Mirror the invoice to Stripe (hosted page, PDF); on failure leave it for `pay-url` to retry."""
    try:
        return mirror(record)
    except Exception:
        logger.exception("mirroring an invoice to Stripe failed; pay-url retries", extra={"invoiceId": record["id"]})
        return None


def mirror(record: dict[str, Any]) -> dict[str, Any] | None:
    from gpurent.billing import cards, gateway

    if record.get("stripeInvoiceId") or not gateway.enabled():
        return record
    customer = cards.ensure_customer(str(record["userId"]))
    m = gateway.create_invoice(
        customer_id=customer, amount_cents=int(record["amountCents"]),
        description=str(record["lineItems"][0]["description"]),
        metadata={"invoice_id": str(record["id"]), "user_id": str(record["userId"]), "reason": str(record["reason"])},
        idempotency_key=f"invoice:{record['id']}",
    )
    fields = {"stripeInvoiceId": m.id, "hostedInvoiceUrl": m.hosted_invoice_url, "invoicePdfUrl": m.invoice_pdf}
    store.set_fields(str(record["userId"]), str(record["id"]), fields, only_if_missing="stripeInvoiceId")
    record.update(fields)
    return record


# ---------------------------------------------------------------- reading

def get_owned(user_id: str, invoice_id: str) -> dict[str, Any]:
    if not ids.is_id(invoice_id, "inv"):
        raise ApiError("invoice_not_found", "No invoice with that id")
    found = store.get(user_id, invoice_id)
    if found is None:
        raise ApiError("invoice_not_found", "No invoice with that id")
    return found


def list_page(user_id: str, status: str | None, limit: int, raw_cursor: str | None) -> dict[str, Any]:
    from gpurent import cursor

    if status is not None and status not in LISTED:
        raise ApiError("validation_failed", f"status must be one of {', '.join(LISTED)}",
                       {"status": f"must be one of {', '.join(LISTED)}"})
    before = None
    if raw_cursor:
        before = cursor.decode("invoices", user_id, raw_cursor).get("before")
        if not ids.is_id(before, "inv"):
            raise ApiError("validation_failed", "cursor is not valid", {"cursor": "not a cursor this list issued"})
    rows, more = store.list_for_user(user_id, before, limit, (status,) if status else LISTED)
    next_cursor = cursor.encode("invoices", user_id, {"before": rows[-1]["id"]}) if more and rows else None
    return {"data": [public(r) for r in rows], "nextCursor": next_cursor}


def pay_url(user_id: str, invoice_id: str) -> dict[str, Any]:
    """A freshly resolved Stripe pay page for an open invoice (null when it could not be mirrored)."""
    from gpurent.billing import gateway

    record = get_owned(user_id, invoice_id)
    if record["status"] != "open":
        return {"url": None}
    if not record.get("stripeInvoiceId"):
        mirrored = mirror_quietly(record)
        return {"url": mirrored.get("hostedInvoiceUrl") if mirrored else None}
    try:
        m = gateway.get_invoice(str(record["stripeInvoiceId"]))
    except gateway.StripeError:
        return {"url": record.get("hostedInvoiceUrl")}
    if m.hosted_invoice_url and m.hosted_invoice_url != record.get("hostedInvoiceUrl"):
        store.set_fields(user_id, invoice_id, {"hostedInvoiceUrl": m.hosted_invoice_url})
    return {"url": m.hosted_invoice_url}


# ---------------------------------------------------------------- status changes

CLOSED_BY = {"paid": "paidAt", "void": "voidedAt", "uncollectible": "uncollectibleAt"}


def close(user_id: str, invoice_id: str, to_status: str, *, receipt_url: str | None = None,
          extras: list[TransactItem] | None = None) -> tuple[dict[str, Any], bool]:
    """open (or draft) → paid / void / uncollectible, once; the wallet's counters move with it.

    Paying a `topup_failed` invoice (or a manual one marked so) credits the
    wallet (`stripe_topup`, key `invoice_paid_<id>`); paying an overage clears
    the debt only. Returns (invoice, changed).
    """
    record = get_owned(user_id, invoice_id)
    if record["status"] not in ("open", "draft"):
        return record, False
    amount = int(record["amountCents"])
    credits = to_status == "paid" and (record["reason"] == "topup_failed" or bool(record.get("creditsWallet")))
    was_open = record["status"] == "open"
    now = clock.now()
    sets: dict[str, Any] = {"status": to_status, CLOSED_BY[to_status]: now}
    if receipt_url:
        sets["receiptUrl"] = receipt_url

    def planner(w: wallet.Wallet) -> list[wallet.Step]:
        steps = [wallet.Step(0, 0, (), {"invoiceId": invoice_id}, (-amount, -1) if was_open else (0, 0))]
        if credits:
            steps.append(wallet.plan_credit(w, amount, "stripe_topup",
                                            {"invoiceId": invoice_id, "description": "Invoice paid"}))
        return steps

    def items(w: wallet.Wallet, steps: Any) -> list[TransactItem]:
        update = store.update_item(user_id, invoice_id, sets, ("open", "draft"), int(record["version"]))
        return [update, *(extras or [])]

    op = "invoice_paid" if to_status == "paid" else f"invoice_{to_status}"
    try:
        result = wallet.apply(user_id, f"{op}_{invoice_id}", {"op": op, "invoice": invoice_id, "amount": amount},
                              planner, items)
    except wallet.BusinessConditionFailed:
        return get_owned(user_id, invoice_id), False  # another actor closed it first
    return get_owned(user_id, invoice_id), not result.replayed
