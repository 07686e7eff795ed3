"""Helpers for asserting what the store holds."""

from __future__ import annotations

from typing import Any

from gpurent.config import settings
from gpurent.store import dynamo


def scan(table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        r = dynamo.client().scan(**kwargs)
        items.extend(dynamo.from_item(i) for i in r.get("Items", []))  # type: ignore[misc]
        if "LastEvaluatedKey" not in r:
            return items
        kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every item of every table, except request-rate counters (they count the request itself)."""
    s = settings()
    out = {}
    for table in (s.identity_table, s.money_table, s.ledger_table, s.catalog_table):
        items = [i for i in scan(table) if not str(i.get("pk", "")).startswith("RATE#")]
        out[table] = sorted(items, key=lambda i: (str(i["pk"]), str(i["sk"])))
    return out


def envelope(reply: Any, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status, (reply.status, reply.body)
    body = reply.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) <= {"error", "message", "details"}
    return dict(body)


def reconcile_through_health_grace(clock: Any) -> None:
    """Reconcile as often, and over as long, as it takes a pod that stays bad to be declared
    failed (a running pod is degraded, not failed, until `HEALTH_BAD_CHECKS` bad checks
    spanning `HEALTH_GRACE_SECONDS`)."""
    from gpurent import rentals
    from gpurent.rentals import lifecycle

    step = lifecycle.HEALTH_GRACE_SECONDS / (lifecycle.HEALTH_BAD_CHECKS - 1)
    for i in range(lifecycle.HEALTH_BAD_CHECKS):
        if i:
            clock.advance(step)
        rentals.reconcile()
