"""Shared helpers for wallet tests: rental reserve rows and the invariants of
`spec/decisions.md` (1-4 and 8) checked against what the store holds."""

from __future__ import annotations

from typing import Any

from gpurent import ledger, wallet
from gpurent.config import settings
from gpurent.store import dynamo
from gpurent.store import money as store


def rental_put(user_id: str, rental_id: str) -> wallet.Extras:
    """Business row of a reserve: the rental holding it (created in the same transaction)."""

    def extras(w: wallet.Wallet, steps: Any) -> list[store.TransactItem]:
        amount = steps[0].info["reserve"]
        return [store.money_put({"pk": f"USER#{user_id}", "sk": f"RENTAL#{rental_id}", "reserveCents": amount})]

    return extras


def rental_reserve_update(user_id: str, rental_id: str, expected: int, release: bool = False) -> wallet.Extras:
    def extras(w: wallet.Wallet, steps: Any) -> list[store.TransactItem]:
        new = 0 if release else steps[0].info["split"].reserve_after
        return [store.money_update(f"USER#{user_id}", f"RENTAL#{rental_id}", "SET reserveCents = :new",
                                   "reserveCents = :old", {}, {":new": new, ":old": expected})]

    return extras


def rental_reserves(user_id: str) -> dict[str, int]:
    r = dynamo.client().query(
        TableName=settings().money_table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :r)",
        ExpressionAttributeValues=dynamo.to_values({":pk": f"USER#{user_id}", ":r": "RENTAL#"}),
        ConsistentRead=True,
    )
    items = [i for i in (dynamo.from_item(x) for x in r["Items"]) if i]
    meters = wallet.get(user_id).meters  # a running rental's meter, once ticked, is on the wallet
    ticked = {f"RENTAL#{rid}" for rid in meters}
    running = {i["sk"] for i in items if i.get("status") == "running"}
    assert ticked <= running, ("a meter on the wallet of a rental that is not running", ticked - running)
    return {i["sk"]: (meters[i["sk"].removeprefix("RENTAL#")]["r"] if i["sk"] in ticked else int(i["reserveCents"]))
            for i in items}


def check_invariants(user_id: str) -> wallet.Wallet:
    w = wallet.get(user_id)
    rows = store.all_ledger(user_id)  # oldest first
    # 1. Σ ledger == total; 8. by type: credits - charges ± adjustments == total
    assert sum(int(r["amountCents"]) for r in rows) == w.total, (rows, w)
    by_type: dict[str, int] = {}
    for r in rows:
        by_type[r["type"]] = by_type.get(r["type"], 0) + int(r["amountCents"])
    assert all(v >= 0 for k, v in by_type.items() if k in ledger.CREDIT_TYPES and k != "adjustment")
    assert by_type.get("rental_charge", 0) <= 0
    # 2. balanceAfterCents chains, in id order
    previous = 0
    for r in rows:
        assert int(r["balanceAfterCents"]) == previous + int(r["amountCents"]), rows
        previous = int(r["balanceAfterCents"])
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    # 3. never below zero
    assert w.available >= 0 and w.reserved >= 0
    # 4. reserved == Σ reserves held by the user's rentals (a running rental's on the wallet's meter)
    assert w.reserved == sum(rental_reserves(user_id).values()), (w, rental_reserves(user_id))
    return w
