"""Invoice records in the money table (pk `USER#<user>`, sk `INVOICE#<inv_id>`),
plus an owner item `INVOICE#<inv_id>` / `OWNER` so a webhook or an admin that
knows only the invoice id finds it.

An invoice row changes only inside a money transaction (`gpurent.wallet.apply`)
when its status changes, because the wallet's `openInvoices*` counters move
with it; the Stripe mirror fields are set by a plain conditional update. The domain sees
`records.Invoice`; only this module knows its item's attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from gpurent.config import settings
from gpurent.records import Invoice, InvoiceLine, InvoiceReason, InvoiceStatus
from gpurent.store.dynamo import ClientError, client, from_item, is_conditional_failure, key, to_values
from gpurent.store.money import TransactItem, money_put, money_update


def _table() -> str:
    return settings().money_table


def put_items(inv: Invoice) -> list[TransactItem]:
    """The invoice row and its owner item, both new."""
    return [
        money_put({"pk": f"USER#{inv.user_id}", "sk": f"INVOICE#{inv.id}", **invoice_item(inv), "version": 1}),
        money_put({"pk": f"INVOICE#{inv.id}", "sk": "OWNER", "userId": inv.user_id}),
    ]


def _sets(sets: dict[str, Any]) -> tuple[str, dict[str, str], dict[str, Any]]:
    names = {"#version": "version"}
    values: dict[str, Any] = {":one": 1}
    parts = []
    for i, (k, v) in enumerate(sets.items()):
        names[f"#f{i}"] = k
        values[f":v{i}"] = v
        parts.append(f"#f{i} = :v{i}")
    parts.append("#version = #version + :one")
    return "SET " + ", ".join(parts), names, values


# When an invoice was closed, by the status it was closed to.
CLOSED_AT = {"paid": "paidAt", "void": "voidedAt", "uncollectible": "uncollectibleAt"}


def close_item(inv: Invoice, to_status: InvoiceStatus, at: float, receipt_url: str | None = None) -> TransactItem:
    """Closing an open (or draft) invoice as an item of a money transaction: its status and when,
    guarded by its status and version (`inv` is the invoice as read)."""
    sets: dict[str, Any] = {"status": to_status, CLOSED_AT[to_status]: at}
    if receipt_url:
        sets["receiptUrl"] = receipt_url
    update, names, values = _sets(sets)
    names["#status"] = "status"
    values.update({":ver": inv.version, ":s0": "open", ":s1": "draft"})
    cond = "#version = :ver AND #status IN (:s0, :s1)"
    return money_update(f"USER#{inv.user_id}", f"INVOICE#{inv.id}", update, cond, names, values)


def _set_fields(user_id: str, invoice_id: str, sets: dict[str, Any], only_if_missing: str | None = None) -> bool:
    """Set fields that carry no money (the Stripe mirror); False when the condition failed."""
    update, names, values = _sets(sets)
    cond = "attribute_exists(pk)"
    if only_if_missing:
        names["#missing"] = only_if_missing
        cond += " AND (attribute_not_exists(#missing) OR #missing = :null)"
        values[":null"] = None
    try:
        client().update_item(TableName=_table(), Key=key(f"USER#{user_id}", f"INVOICE#{invoice_id}"),
                             UpdateExpression=update, ConditionExpression=cond,
                             ExpressionAttributeNames=names, ExpressionAttributeValues=to_values(values))
    except ClientError as exc:
        if is_conditional_failure(exc):
            return False
        raise
    return True


def set_mirror(user_id: str, invoice_id: str, stripe_invoice_id: str, hosted_invoice_url: str | None,
               invoice_pdf_url: str | None) -> bool:
    """Record the invoice's Stripe copy, unless one is recorded already (False then)."""
    return _set_fields(user_id, invoice_id, {"stripeInvoiceId": stripe_invoice_id,
                                             "hostedInvoiceUrl": hosted_invoice_url,
                                             "invoicePdfUrl": invoice_pdf_url}, only_if_missing="stripeInvoiceId")


def set_hosted_url(user_id: str, invoice_id: str, url: str) -> bool:
    """Record the Stripe pay page's current address."""
    return _set_fields(user_id, invoice_id, {"hostedInvoiceUrl": url})


def get(user_id: str, invoice_id: str) -> Invoice | None:
    r = client().get_item(TableName=_table(), Key=key(f"USER#{user_id}", f"INVOICE#{invoice_id}"),
                          ConsistentRead=True)
    item = from_item(r.get("Item"))
    return invoice_from_item(item) if item is not None else None


def owner_of(invoice_id: str) -> str | None:
    r = client().get_item(TableName=_table(), Key=key(f"INVOICE#{invoice_id}", "OWNER"), ConsistentRead=True)
    item = from_item(r.get("Item"))
    return str(item["userId"]) if item else None


def list_for_user(user_id: str, before: str | None, limit: int,
                  statuses: tuple[str, ...]) -> tuple[list[Invoice], bool]:
    """Newest first, only the given statuses; `before` is the last invoice id of the previous page."""
    upper = f"INVOICE#{before}" if before else "INVOICE$"
    values: dict[str, Any] = {":pk": f"USER#{user_id}", ":lo": "INVOICE#", ":hi": upper}
    values.update({f":s{i}": s for i, s in enumerate(statuses)})
    kwargs: dict[str, Any] = {
        "TableName": _table(),
        "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
        "FilterExpression": "#status IN (" + ", ".join(f":s{i}" for i in range(len(statuses))) + ")",
        "ExpressionAttributeNames": {"#status": "status"},
        "ExpressionAttributeValues": to_values(values),
        "ScanIndexForward": False,
    }
    rows: list[Invoice] = []
    while True:
        kwargs["Limit"] = limit + 1
        r = client().query(**kwargs)
        for raw in r.get("Items", []):
            item = from_item(raw)
            if item is not None and item.get("id") != before:
                rows.append(invoice_from_item(item))
        if len(rows) > limit:
            return rows[:limit], True
        if "LastEvaluatedKey" not in r:
            return rows, False
        kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]


# ---------------------------------------------------------------- typed invoices

def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def invoice_from_item(item: Mapping[str, Any]) -> Invoice:
    """An invoice item (as `dynamo.from_item` gives it) → Invoice."""
    g = item.get
    return Invoice(
        id=str(item["id"]), user_id=str(item["userId"]), status=cast(InvoiceStatus, item["status"]),
        reason=cast(InvoiceReason, item["reason"]), amount_cents=int(item["amountCents"]),
        created_at=float(item["createdAt"]), currency=str(g("currency") or "USD"), rental_id=_opt_str(g("rentalId")),
        due_at=_opt_float(g("dueAt")), paid_at=_opt_float(g("paidAt")), voided_at=_opt_float(g("voidedAt")),
        uncollectible_at=_opt_float(g("uncollectibleAt")),
        stripe_invoice_id=_opt_str(g("stripeInvoiceId")), hosted_invoice_url=_opt_str(g("hostedInvoiceUrl")),
        invoice_pdf_url=_opt_str(g("invoicePdfUrl")), receipt_url=_opt_str(g("receiptUrl")),
        line_items=tuple(
            InvoiceLine(id=str(li["id"]), description=str(li["description"]), amount_cents=int(li["amountCents"]),
                        rental_id=_opt_str(li.get("rentalId")), period_start=_opt_float(li.get("periodStart")),
                        period_end=_opt_float(li.get("periodEnd")))
            for li in g("lineItems") or ()
        ),
        credits_wallet=bool(g("creditsWallet")), version=int(g("version", 1)),
    )


def invoice_item(inv: Invoice) -> dict[str, Any]:
    """An Invoice as its item's attributes (what `put_items` writes, `version` aside; None
    values are left out when written, so a flag is stored only while it is set)."""
    return {
        "id": inv.id, "userId": inv.user_id, "status": inv.status, "reason": inv.reason,
        "amountCents": inv.amount_cents, "currency": inv.currency, "rentalId": inv.rental_id,
        "stripeInvoiceId": inv.stripe_invoice_id, "hostedInvoiceUrl": inv.hosted_invoice_url,
        "invoicePdfUrl": inv.invoice_pdf_url, "receiptUrl": inv.receipt_url, "createdAt": inv.created_at,
        "dueAt": inv.due_at, "paidAt": inv.paid_at, "voidedAt": inv.voided_at,
        "uncollectibleAt": inv.uncollectible_at, "creditsWallet": True if inv.credits_wallet else None,
        "lineItems": [{"id": li.id, "description": li.description, "amountCents": li.amount_cents,
                       "rentalId": li.rental_id, "periodStart": li.period_start, "periodEnd": li.period_end}
                      for li in inv.line_items],
    }

