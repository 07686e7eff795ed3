"""A fake of `ports.MoneyStore` (`store/money.py`): wallets, markers, business rows and the
ledger in dicts; `transact` checks every condition, then applies all or raises like DynamoDB."""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from gpurent.records import LaunchAnswer, LedgerRow, OpMarker, WalletItem
from gpurent.store import money as real
from tests.fakes.writes import FakeWrite
from tests.fakes.writes import item as as_item

Key = tuple[str, str]


class FakeMoneyStore:
    TransactionCancelled = real.TransactionCancelled
    TransactionConflict = real.TransactionConflict

    def __init__(self) -> None:
        self.items: dict[Key, dict[str, Any]] = {}  # the money table: wallets, markers, business rows
        self.ledger: dict[str, list[LedgerRow]] = defaultdict(list)
        self.transactions = 0  # transact calls, applied or not
        self.conflicts = 0  # the next `conflicts` calls raise TransactionConflict (another writer)
        self.before_transact: list[Callable[[], None]] = []  # run once each, before the next transact

    # ---------------------------------------------------------------- reads

    def get_wallet(self, user_id: str) -> WalletItem | None:
        return real.wallet_from_item(copy.deepcopy(self.items.get((f"USER#{user_id}", "WALLET"))))

    def get_wallets(self, user_ids: Sequence[str]) -> dict[str, WalletItem]:
        return {u: w for u in dict.fromkeys(user_ids) if (w := self.get_wallet(u)) is not None}

    wallet_from_item = staticmethod(real.wallet_from_item)

    def get_op(self, op_key: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.items.get((f"OP#{op_key}", "OP")))

    def get_op_marker(self, op_key: str) -> OpMarker | None:
        found = self.get_op(op_key)
        return real.op_marker_from_item(op_key, found) if found is not None else None

    def set_launch_answer(self, op_key: str, answer: LaunchAnswer) -> bool:
        marker = self.items.get((f"OP#{op_key}", "OP"))
        if marker is None or "launchAnswer" in marker:
            return False
        marker["launchAnswer"] = copy.deepcopy(dict(answer))
        return True

    def query_ledger(self, user_id: str, start_after: str | None, limit: int,
                     entry_type: str | None) -> tuple[list[LedgerRow], str | None]:
        rows = sorted(self.ledger[user_id], key=lambda r: r["id"], reverse=True)
        rows = [r for r in rows if (start_after is None or r["id"] < start_after)
                and (entry_type is None or r["type"] == entry_type)]
        page = copy.deepcopy(rows[:limit])
        return page, (page[-1]["id"] if len(rows) > limit else None)

    def all_ledger(self, user_id: str) -> list[LedgerRow]:
        return copy.deepcopy(sorted(self.ledger[user_id], key=lambda r: r["id"]))

    # ---------------------------------------------------------------- writes (items of a transaction)

    def wallet_update(self, user_id: str, state: WalletItem, expected_version: int) -> dict[str, Any]:
        key = (f"USER#{user_id}", "WALLET")

        def check() -> bool:
            version = (self.items.get(key) or {}).get("version")
            return version is None if expected_version == 0 else version == expected_version

        def apply() -> None:
            self.items[key] = {**(self.items.get(key) or {"pk": key[0], "sk": key[1]}), **copy.deepcopy(state)}

        return as_item(FakeWrite(f"wallet {user_id}", check, apply, lambda: self.items.get(key)))

    def op_put(self, marker: OpMarker) -> dict[str, Any]:
        return self.money_put(real.op_marker_item(marker))

    def ledger_put(self, user_id: str, row: LedgerRow) -> dict[str, Any]:
        def apply() -> None:
            self.ledger[user_id].append(copy.deepcopy(row))

        return as_item(FakeWrite(f"ledger {row['id']}",
                              lambda: all(r["id"] != row["id"] for r in self.ledger[user_id]), apply))

    def money_put(self, item: dict[str, Any], condition: str | None = "attribute_not_exists(pk)") -> dict[str, Any]:
        key = (str(item["pk"]), str(item["sk"]))

        def apply() -> None:
            self.items[key] = copy.deepcopy(item)

        return as_item(FakeWrite(f"put {key}", lambda: condition is None or key not in self.items, apply,
                              lambda: self.items.get(key)))

    def transact(self, items: list[dict[str, Any]], token: str | None = None) -> None:
        if not 0 < len(items) <= 100:
            raise ValueError(f"a transaction holds 1..100 items, not {len(items)}")
        self.transactions += 1
        while self.before_transact:
            self.before_transact.pop(0)()
        if self.conflicts:
            self.conflicts -= 1
            raise self.TransactionConflict()
        writes: list[FakeWrite] = []
        for it in items:
            assert set(it) == {"Fake"}, f"a real DynamoDB item reached the fake store: {list(it)}"
            writes.append(it["Fake"])
        ok = [w.check() for w in writes]
        if not all(ok):
            raise self.TransactionCancelled(["None" if fine else "ConditionalCheckFailed" for fine in ok],
                                            [None if fine else copy.deepcopy(w.old()) for w, fine in zip(writes, ok,
                                                                                                       strict=True)])
        for w in writes:
            w.apply()

    # ---------------------------------------------------------------- test helpers

    def wallet(self, user_id: str) -> tuple[int, int]:
        """(available, reserved) as stored."""
        w = self.items.get((f"USER#{user_id}", "WALLET")) or {}
        return int(w.get("availableCents", 0)), int(w.get("reservedCents", 0))


if TYPE_CHECKING:  # mypy checks the fake fits its port
    from gpurent import ports

    _port: ports.MoneyStore = FakeMoneyStore()
