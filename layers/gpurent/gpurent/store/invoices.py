"""Invoice records in the money table (pk `USER#<user>`, sk `INVOICE#<inv_id>`),
plus an owner item `INVOICE#<inv_id>` / `OWNER` so a webhook or an admin that
knows only the invoice id finds it.

An invoice row changes only inside a money transaction (`gpurent.wallet.apply`)
when its status changes, because the wallet's `openInvoices*` counters move
with it; the Stripe mirror fields are set by a plain conditional update.
"""

from __future__ import annotations

from typing import Any, cast

from gpurent.config import settings
from gpurent.records import Invoice, InvoiceLine, InvoiceReason, InvoiceStatus
from gpurent.store.dynamo import ClientError, client, from_item, is_conditional_failure, key, to_values
from gpurent.store.money import TransactItem, money_put, money_update


def _table() -> str:
    return settings().money_table


def put_items(record: dict[str, Any]) -> list[TransactItem]:
    """The invoice row and its owner item, both new."""
    user_id, invoice_id = record["userId"], record["id"]
    return [
        money_put({"pk": f"USER#{user_id}", "sk": f"INVOICE#{invoice_id}", "version": 1, **record}),
        money_put({"pk": f"INVOICE#{invoice_id}", "sk": "OWNER", "userId": user_id}),
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


def update_item(user_id: str, invoice_id: str, sets: dict[str, Any], expected_status: tuple[str, ...],
                expected_version: int) -> TransactItem:
    """A status change as an item of a money transaction, guarded by status and version."""
    update, names, values = _sets(sets)
    names["#status"] = "status"
    values[":ver"] = expected_version
    values.update({f":s{i}": s for i, s in enumerate(expected_status)})
    cond = "#version = :ver AND #status IN (" + ", ".join(f":s{i}" for i in range(len(expected_status))) + ")"
    return money_update(f"USER#{user_id}", f"INVOICE#{invoice_id}", update, cond, names, values)


def set_fields(user_id: str, invoice_id: str, sets: dict[str, Any], only_if_missing: str | None = None) -> bool:
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


def get(user_id: str, invoice_id: str) -> dict[str, Any] | None:
    r = client().get_item(TableName=_table(), Key=key(f"USER#{user_id}", f"INVOICE#{invoice_id}"),
                          ConsistentRead=True)
    return from_item(r.get("Item"))


def owner_of(invoice_id: str) -> str | None:
    r = client().get_item(TableName=_table(), Key=key(f"INVOICE#{invoice_id}", "OWNER"), ConsistentRead=True)
    item = from_item(r.get("Item"))
    return str(item["userId"]) if item else None


def list_for_user(user_id: str, before: str | None, limit: int,
                  statuses: tuple[str, ...]) -> tuple[list[dict[str, Any]], bool]:
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
    rows: list[dict[str, Any]] = []
    while True:
        kwargs["Limit"] = limit + 1
        r = client().query(**kwargs)
        for raw in r.get("Items", []):
            item = from_item(raw)
            if item is not None and item.get("id") != before:
                rows.append(item)
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


def invoice_from_item(item: dict[str, Any]) -> Invoice:
    """An invoice item (or `billing.invoices.new_record`'s record) → Invoice."""
    g = item.get
    return Invoice(
        id=str(item["id"]), user_id=str(item["userId"]), status=cast(InvoiceStatus, item["status"]),
        reason=cast(InvoiceReason, item["reason"]), amount_cents=int(item["amountCents"]),
        created_at=float(item["createdAt"]), currency=str(g("currency") or "USD"), rental_id=_opt_str(g("rentalId")),
        due_at=_opt_float(g("dueAt")), paid_at=_opt_float(g("paidAt")), voided_at=_opt_float(g("voidedAt")),
        stripe_invoice_id=_opt_str(g("stripeInvoiceId")), hosted_invoice_url=_opt_str(g("hostedInvoiceUrl")),
        invoice_pdf_url=_opt_str(g("invoicePdfUrl")), receipt_url=_opt_str(g("receiptUrl")),
        line_items=tuple(
            InvoiceLine(id=str(li["id"]), description=str(li["description"]), amount_cents=int(li["amountCents"]),
                        rental_id=_opt_str(li.get("rentalId")), period_start=_opt_float(li.get("periodStart")),
                        period_end=_opt_float(li.get("periodEnd")))
            for li in g("lineItems") or ()
        ),
        version=int(g("version", 1)),
    )


def invoice_item(inv: Invoice) -> dict[str, Any]:
    """An Invoice as its item's attributes (what `put_items` writes, `version` aside)."""
    return {
        "id": inv.id, "userId": inv.user_id, "status": inv.status, "reason": inv.reason,
        "amountCents": inv.amount_cents, "currency": inv.currency, "rentalId": inv.rental_id,
        "stripeInvoiceId": inv.stripe_invoice_id, "hostedInvoiceUrl": inv.hosted_invoice_url,
        "invoicePdfUrl": inv.invoice_pdf_url, "receiptUrl": inv.receipt_url, "createdAt": inv.created_at,
        "dueAt": inv.due_at, "paidAt": inv.paid_at, "voidedAt": inv.voided_at,
        "lineItems": [{"id": li.id, "description": li.description, "amountCents": li.amount_cents,
                       "rentalId": li.rental_id, "periodStart": li.period_start, "periodEnd": li.period_end}
                      for li in inv.line_items],
    }


def get_invoice(user_id: str, invoice_id: str) -> Invoice | None:
    """The invoice, typed."""
    item = get(user_id, invoice_id)
    return invoice_from_item(item) if item is not None else None
