"""Invoices: money owed that the wallet could not cover (`spec/api.md` §3.5.7).

An invoice (`records.Invoice`) is a local record first (this module), mirrored to a Stripe
Invoice when Stripe is configured. It is created `open`: the debt is real
whether or not Stripe answered, so it counts in the balance's `openInvoices*`
at once (`docs/decisions.md` "Invoices"). Every status change of an invoice
moves the wallet's counters in the same transaction.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from gpurent import clock, ids, wallet
from gpurent.errors import ApiError
from gpurent.money import dollars
from gpurent.records import Invoice, InvoiceLine, InvoiceReason, Rental
from gpurent.store import invoices as store
from gpurent.store.money import TransactItem
from gpurent.telemetry import logger

REASONS = ("topup_failed", "overage", "manual")
STATUSES = ("draft", "open", "paid", "void", "uncollectible")
LISTED = ("open", "paid", "void", "uncollectible")  # the default list hides drafts
DUE_AFTER = 7 * 86400
Closed = Literal["paid", "void", "uncollectible"]  # what `close` moves an open invoice to


def new_invoice(user_id: str, reason: InvoiceReason, amount_cents: int, description: str, *,
                rental_id: str | None = None, period: tuple[float, float] | None = None,
                credits_wallet: bool = False) -> Invoice:
    """A new open invoice of one line, due in 7 days (not written: `issue` writes it)."""
    if reason not in REASONS:
        raise ValueError(f"unknown invoice reason {reason}")
    if amount_cents <= 0:
        raise ValueError("an invoice is for a positive amount")
    now = clock.now()
    start, end = period if period else (None, None)
    line = InvoiceLine(id=ids.new_id("li"), description=description, amount_cents=amount_cents, rental_id=rental_id,
                       period_start=start, period_end=end)
    return Invoice(id=ids.new_id("inv"), user_id=user_id, status="open", reason=reason, amount_cents=amount_cents,
                   created_at=now, rental_id=rental_id, due_at=now + DUE_AFTER, line_items=(line,),
                   credits_wallet=credits_wallet)


def plan_open(inv: Invoice) -> wallet.Step:
    """The wallet side of issuing an open invoice: the counters, no money."""
    return wallet.Step(0, 0, (), {"invoiceId": inv.id}, (inv.amount_cents, 1))


def open_items(inv: Invoice) -> list[TransactItem]:
    return store.put_items(inv)


def overage_invoice(rental: Rental, overage_cents: int, until: float) -> Invoice:
    """The usage of a rental beyond the wallet's money (threshold $0: every cent)."""
    return new_invoice(
        rental.user_id, "overage", overage_cents,
        f"Usage beyond the wallet balance: {rental.name or rental.id} "
        f"({dollars(rental.price_per_hour_cents)}/h)",
        rental_id=rental.id, period=(rental.running_at or until, until),
    )


def _iso(value: float | None) -> str | None:
    return clock.iso(value) if value is not None else None


def public(inv: Invoice) -> dict[str, Any]:
    """The invoice as the API answers it."""
    return {
        "id": inv.id,
        "status": inv.status,
        "reason": inv.reason,
        "amountCents": inv.amount_cents,
        "currency": inv.currency,
        "rentalId": inv.rental_id,
        "stripeInvoiceId": inv.stripe_invoice_id,
        "hostedInvoiceUrl": inv.hosted_invoice_url,
        "invoicePdfUrl": inv.invoice_pdf_url,
        "receiptUrl": inv.receipt_url,
        "createdAt": clock.iso(inv.created_at),
        "dueAt": _iso(inv.due_at),
        "paidAt": _iso(inv.paid_at),
        "voidedAt": _iso(inv.voided_at),
        "lineItems": [
            {
                "id": li.id,
                "description": li.description,
                "amountCents": li.amount_cents,
                "rentalId": li.rental_id,
                "periodStart": _iso(li.period_start),
                "periodEnd": _iso(li.period_end),
            }
            for li in inv.line_items
        ],
    }


# ---------------------------------------------------------------- issuing and mirroring

def issue(inv: Invoice, op_key: str, extras: list[TransactItem] | None = None,
          effects: list[wallet.Effect] | None = None) -> Invoice:
    """Write an open invoice and count it on the wallet, once per `op_key`; `effects` (its
    Stripe mirror, an email) are owed in the same transaction (`gpurent.outbox`). Returns the
    invoice of `op_key`: `inv`, or on a replay the one the first attempt wrote."""
    desc = {"op": "invoice", "reason": inv.reason, "amount": inv.amount_cents}
    result = wallet.apply(inv.user_id, op_key, desc, lambda w: [plan_open(inv)],
                          lambda w, steps: open_items(inv) + list(extras or []),
                          effects=(lambda w, steps: list(effects)) if effects else None)
    if result.replayed:
        found = store.get(inv.user_id, str(result.steps[0]["invoiceId"]))
        if found is not None:
            return found
    return inv


def mirror_quietly(inv: Invoice) -> Invoice | None:
    """Mirror the invoice to Stripe (hosted page, PDF); on failure leave it for `pay-url` to retry."""
    try:
        return mirror(inv)
    except Exception:
        logger.exception("mirroring an invoice to Stripe failed; pay-url retries", extra={"invoiceId": inv.id})
        return None


def mirror(inv: Invoice) -> Invoice:
    """The invoice with its Stripe copy (made now unless it has one, or Stripe is off)."""
    from gpurent.billing import cards, gateway

    if inv.stripe_invoice_id or not gateway.enabled():
        return inv
    customer = cards.ensure_customer(inv.user_id)
    m = gateway.create_invoice(
        customer_id=customer, amount_cents=inv.amount_cents, description=inv.line_items[0].description,
        metadata={"invoice_id": inv.id, "user_id": inv.user_id, "reason": inv.reason},
        idempotency_key=f"invoice:{inv.id}",
    )
    store.set_mirror(inv.user_id, inv.id, m.id, m.hosted_invoice_url, m.invoice_pdf)
    return replace(inv, stripe_invoice_id=m.id, hosted_invoice_url=m.hosted_invoice_url, invoice_pdf_url=m.invoice_pdf)


# ---------------------------------------------------------------- reading

def get_owned(user_id: str, invoice_id: str) -> Invoice:
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
    next_cursor = cursor.encode("invoices", user_id, {"before": rows[-1].id}) if more and rows else None
    return {"data": [public(r) for r in rows], "nextCursor": next_cursor}


def pay_url(user_id: str, invoice_id: str) -> dict[str, Any]:
    """A freshly resolved Stripe pay page for an open invoice (null when it could not be mirrored)."""
    from gpurent.billing import gateway

    inv = get_owned(user_id, invoice_id)
    if inv.status != "open":
        return {"url": None}
    if not inv.stripe_invoice_id:
        mirrored = mirror_quietly(inv)
        return {"url": mirrored.hosted_invoice_url if mirrored else None}
    try:
        m = gateway.get_invoice(inv.stripe_invoice_id)
    except gateway.StripeError:
        return {"url": inv.hosted_invoice_url}
    if m.hosted_invoice_url and m.hosted_invoice_url != inv.hosted_invoice_url:
        store.set_hosted_url(user_id, invoice_id, m.hosted_invoice_url)
    return {"url": m.hosted_invoice_url}


# ---------------------------------------------------------------- status changes

def close(user_id: str, invoice_id: str, to_status: Closed, *,
          receipt_url: str | None = None, extras: list[TransactItem] | None = None) -> tuple[Invoice, bool]:
    """open (or draft) → paid / void / uncollectible, once; the wallet's counters move with it.

    Paying a `topup_failed` invoice (or a manual one marked so) credits the
    wallet (`stripe_topup`, key `invoice_paid_<id>`); paying an overage clears
    the debt only. Returns (invoice, changed).
    """
    inv = get_owned(user_id, invoice_id)
    if inv.status not in ("open", "draft"):
        return inv, False
    amount = inv.amount_cents
    credits = to_status == "paid" and (inv.reason == "topup_failed" or inv.credits_wallet)
    was_open = inv.status == "open"
    now = clock.now()

    def planner(w: wallet.Wallet) -> list[wallet.Step]:
        steps = [wallet.Step(0, 0, (), {"invoiceId": invoice_id}, (-amount, -1) if was_open else (0, 0))]
        if credits:
            steps.append(wallet.plan_credit(w, amount, "stripe_topup",
                                            {"invoiceId": invoice_id, "description": "Invoice paid"}))
        return steps

    def items(w: wallet.Wallet, steps: Any) -> list[TransactItem]:
        return [store.close_item(inv, to_status, now, receipt_url), *(extras or [])]

    op = "invoice_paid" if to_status == "paid" else f"invoice_{to_status}"
    try:
        result = wallet.apply(user_id, f"{op}_{invoice_id}", {"op": op, "invoice": invoice_id, "amount": amount},
                              planner, items)
    except wallet.BusinessConditionFailed:
        return get_owned(user_id, invoice_id), False  # another actor closed it first
    return get_owned(user_id, invoice_id), not result.replayed
