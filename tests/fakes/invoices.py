"""A fake of `store/invoices.py` for the money paths (issue, read, the Stripe mirror fields):
invoice rows live in the fake money store's table, written in its transactions."""

from __future__ import annotations

import copy
from typing import Any

from tests.fakes.money import FakeMoneyStore


class FakeInvoiceStore:
    def __init__(self, money: FakeMoneyStore) -> None:
        self.money = money

    def put_items(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        user_id, invoice_id = record["userId"], record["id"]
        return [self.money.money_put({"pk": f"USER#{user_id}", "sk": f"INVOICE#{invoice_id}", "version": 1, **record}),
                self.money.money_put({"pk": f"INVOICE#{invoice_id}", "sk": "OWNER", "userId": user_id})]

    def get(self, user_id: str, invoice_id: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.money.items.get((f"USER#{user_id}", f"INVOICE#{invoice_id}")))

    def set_fields(self, user_id: str, invoice_id: str, sets: dict[str, Any],
                   only_if_missing: str | None = None) -> bool:
        row = self.money.items.get((f"USER#{user_id}", f"INVOICE#{invoice_id}"))
        if row is None or (only_if_missing and row.get(only_if_missing) is not None):
            return False
        row.update(copy.deepcopy(sets))
        row["version"] = int(row.get("version", 1)) + 1
        return True

    def of_user(self, user_id: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(v) for (pk, sk), v in self.money.items.items()
                if pk == f"USER#{user_id}" and sk.startswith("INVOICE#")]
