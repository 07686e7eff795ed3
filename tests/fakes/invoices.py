"""A fake of `store/invoices.py` for the money paths (issue, read, the Stripe mirror fields):
invoice rows live in the fake money store's table, written in its transactions, converted to
and from `records.Invoice` by the real store's codec."""

from __future__ import annotations

import copy
from typing import Any

from gpurent.records import Invoice
from gpurent.store.invoices import invoice_from_item, invoice_item
from tests.fakes.money import FakeMoneyStore


class FakeInvoiceStore:
    def __init__(self, money: FakeMoneyStore) -> None:
        self.money = money

    def put_items(self, inv: Invoice) -> list[dict[str, Any]]:
        row = {k: v for k, v in invoice_item(inv).items() if v is not None}  # as DynamoDB keeps it: no nulls
        return [self.money.money_put({"pk": f"USER#{inv.user_id}", "sk": f"INVOICE#{inv.id}", **row, "version": 1}),
                self.money.money_put({"pk": f"INVOICE#{inv.id}", "sk": "OWNER", "userId": inv.user_id})]

    def get(self, user_id: str, invoice_id: str) -> Invoice | None:
        row = self.money.items.get((f"USER#{user_id}", f"INVOICE#{invoice_id}"))
        return invoice_from_item(copy.deepcopy(row)) if row is not None else None

    def _set_fields(self, user_id: str, invoice_id: str, sets: dict[str, Any],
                    only_if_missing: str | None = None) -> bool:
        row = self.money.items.get((f"USER#{user_id}", f"INVOICE#{invoice_id}"))
        if row is None or (only_if_missing and row.get(only_if_missing) is not None):
            return False
        row.update(copy.deepcopy(sets))
        row["version"] = int(row.get("version", 1)) + 1
        return True

    def set_mirror(self, user_id: str, invoice_id: str, stripe_invoice_id: str, hosted_invoice_url: str | None,
                   invoice_pdf_url: str | None) -> bool:
        return self._set_fields(user_id, invoice_id, {"stripeInvoiceId": stripe_invoice_id,
                                                      "hostedInvoiceUrl": hosted_invoice_url,
                                                      "invoicePdfUrl": invoice_pdf_url}, "stripeInvoiceId")

    def set_hosted_url(self, user_id: str, invoice_id: str, url: str) -> bool:
        return self._set_fields(user_id, invoice_id, {"hostedInvoiceUrl": url})

    def of_user(self, user_id: str) -> list[Invoice]:
        return [invoice_from_item(copy.deepcopy(v)) for (pk, sk), v in self.money.items.items()
                if pk == f"USER#{user_id}" and sk.startswith("INVOICE#")]
