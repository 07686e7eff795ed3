"""The ledger as users read it: newest first, paged, reconcilable.

Rows are written only by `gpurent.wallet` (inside its transactions) and are
never updated or deleted by any code path.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from gpurent import clock, cursor, ids
from gpurent.errors import ApiError
from gpurent.records import LedgerRow
from gpurent.store import money as store

# The ledger entry types: the one definition (`wallet`, the API contract, the CLI derive theirs).
# The last three: a top-up refunded or disputed at Stripe, and a dispute won (`billing.reversals`).
LedgerType = Literal["stripe_topup", "auto_topup", "rental_charge", "refund", "adjustment",
                     "topup_refund", "dispute", "dispute_won"]
LEDGER_TYPES: tuple[LedgerType, ...] = get_args(LedgerType)
CreditType = Literal["stripe_topup", "auto_topup", "refund", "adjustment", "dispute_won"]  # the types that add money
CREDIT_TYPES: tuple[CreditType, ...] = get_args(CreditType)


def entry_public(row: LedgerRow) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "amountCents": int(row["amountCents"]),
        "balanceAfterCents": int(row["balanceAfterCents"]),
        "createdAt": clock.iso(row["createdAt"]),
        "rentalId": row.get("rentalId"),
        "stripeChargeId": row.get("stripeChargeId"),
        "invoiceId": row.get("invoiceId"),
        "description": row.get("description"),
    }


def page(user_id: str, raw_cursor: str | None, page_size: int, entry_type: str | None) -> dict[str, Any]:
    if entry_type is not None and entry_type not in LEDGER_TYPES:
        raise ApiError("validation_failed", f"type must be one of {', '.join(LEDGER_TYPES)}",
                       {"type": f"must be one of {', '.join(LEDGER_TYPES)}"})
    after = None
    if raw_cursor:
        data = cursor.decode("ledger", user_id, raw_cursor)
        after = data.get("after")
        if not ids.is_id(after, "led"):
            raise ApiError("validation_failed", "cursor is not valid", {"cursor": "not a cursor this list issued"})
    from gpurent.wallet import get as get_wallet  # the wallet imports this module's types

    rows, resume = store.query_ledger(user_id, after, page_size, entry_type)
    wallet = get_wallet(user_id)
    # A filtered page may hold fewer rows than asked (its reads are bounded): the cursor resumes
    # where the reads stopped, so a client pages on until `nextCursor` is null.
    next_cursor = cursor.encode("ledger", user_id, {"after": resume}) if resume else None
    return {"entries": [entry_public(r) for r in rows], "balanceCents": wallet.total, "nextCursor": next_cursor}


def balance(user_id: str) -> dict[str, Any]:
    from gpurent.wallet import get as get_wallet

    w = get_wallet(user_id)
    return {
        "availableCents": w.available,
        "reservedCents": w.reserved,
        "totalCents": w.total,
        "openInvoicesCents": w.open_invoices_cents,
        "openInvoiceCount": w.open_invoice_count,
        "updatedAt": clock.iso(w.updated_at) if w.updated_at is not None else None,
    }
