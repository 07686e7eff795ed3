"""A fake of `ports.OutboxStore` (`store/outbox.py`): effects in the fake money store's table,
so an effect written in a money transaction commits with it or not at all."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from gpurent import ids
from gpurent.store import outbox as real
from tests.fakes.money import FakeMoneyStore
from tests.fakes.writes import FakeWrite
from tests.fakes.writes import item as as_item


class FakeOutboxStore:
    def __init__(self, money: FakeMoneyStore) -> None:
        self.money = money  # its `items` are the money table

    def _record(self, user_id: str, kind: str, payload: dict[str, Any], now: float, seq: int) -> dict[str, Any]:
        ulid = ids.ulid_at(now)
        return {"pk": real.shard(user_id), "sk": f"{user_id}#{ulid[:10]}{seq:02d}{ulid[10:]}", "userId": user_id,
                "kind": kind, "payload": copy.deepcopy(payload), "createdAt": now, "attempts": 0}

    def put_item(self, user_id: str, kind: str, payload: dict[str, Any], now: float, seq: int = 0) -> dict[str, Any]:
        record = self._record(user_id, kind, payload, now, seq)
        key = (record["pk"], record["sk"])

        def apply() -> None:
            self.money.items[key] = record

        return as_item(FakeWrite(f"outbox {key}", lambda: key not in self.money.items, apply))

    def shards(self) -> int:
        return real.shards()

    def put(self, user_id: str, kind: str, payload: dict[str, Any], now: float) -> None:
        self.money.transact([self.put_item(user_id, kind, payload, now)])

    def _effects(self, pk: str, prefix: str = "") -> list[dict[str, Any]]:
        return [copy.deepcopy(v) for (p, s), v in sorted(self.money.items.items()) if p == pk and s.startswith(prefix)]

    def for_user(self, user_id: str) -> list[dict[str, Any]]:
        return self._effects(real.shard(user_id), f"{user_id}#")

    def in_shard(self, n: int) -> list[dict[str, Any]]:
        return self._effects(f"OUTBOX#{n}")

    def lease(self, item: dict[str, Any], now: float, seconds: float) -> bool:
        stored = self.money.items.get((str(item["pk"]), str(item["sk"])))
        if stored is None or (stored.get("leaseUntil") is not None and float(stored["leaseUntil"]) > now):
            return False
        stored["leaseUntil"] = now + seconds
        stored["attempts"] = int(stored.get("attempts", 0)) + 1
        return True

    def done(self, item: dict[str, Any]) -> None:
        self.money.items.pop((str(item["pk"]), str(item["sk"])), None)


if TYPE_CHECKING:  # mypy checks the fake fits its port
    from gpurent import ports

    _port: ports.OutboxStore = FakeOutboxStore(FakeMoneyStore())
