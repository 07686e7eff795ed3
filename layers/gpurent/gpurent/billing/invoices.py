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
from gpurent.money import dollars
from gpurent.store import invoices as store
from gpurent.store.money import TransactItem

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


def overage_record(rental: dict[str, Any], overage_cents: int, until: float) -> dict[str, Any]:
    """The usage of a rental beyond the wallet's money (threshold $0: every cent)."""
    return new_record(
        rental["userId"], "overage", overage_cents,
        f"Usage beyond the wallet balance: {rental.get('name') or rental['id']} "
        f"({dollars(int(rental['pricePerHourCents']))}/h)",
        rental_id=str(rental["id"]), period=(float(rental.get("runningAt") or until), until),
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
