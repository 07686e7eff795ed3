"""Catalog records: one item per listing under its provider's partition
(`P#<provider>`, sk = listing id) and one status item per provider."""

from __future__ import annotations

import time
from typing import Any

from gpurent.config import settings
from gpurent.store.dynamo import client, from_item, key, to_item, to_values


def _table() -> str:
    return settings().catalog_table


def provider_listings(provider: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": _table(),
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": to_values({":pk": f"P#{provider}"}),
    }
    while True:
        r = client().query(**kwargs)
        items.extend(i for i in (from_item(x) for x in r.get("Items", [])) if i is not None)
        if "LastEvaluatedKey" not in r:
            return items
        kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]


def _batch(requests: list[dict[str, Any]]) -> int:
    """BatchWriteItem in chunks of 25, re-sending unprocessed items with backoff. Returns request count."""
    calls = 0
    for start in range(0, len(requests), 25):
        pending: dict[str, Any] = {_table(): requests[start:start + 25]}
        attempt = 0
        while pending:
            calls += 1
            r = client().batch_write_item(RequestItems=pending)
            pending = r.get("UnprocessedItems") or {}
            if pending:
                attempt += 1
                if attempt > 8:
                    raise RuntimeError("catalog batch write kept coming back unprocessed")
                time.sleep(min(1.0, 0.05 * 2**attempt))
    return calls


def write_listings(provider: str, puts: list[dict[str, Any]], deletes: list[str]) -> int:
    requests: list[dict[str, Any]] = [
        {"PutRequest": {"Item": to_item({"pk": f"P#{provider}", "sk": item["id"], **item})}} for item in puts
    ]
    requests += [{"DeleteRequest": {"Key": key(f"P#{provider}", lid)}} for lid in deletes]
    return _batch(requests)


def get_statuses() -> dict[str, dict[str, Any]]:
    r = client().query(
        TableName=_table(),
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues=to_values({":pk": "STATUS"}),
        ConsistentRead=True,
    )
    out: dict[str, dict[str, Any]] = {}
    for raw in r.get("Items", []):
        item = from_item(raw)
        if item is not None:
            out[str(item["sk"])] = item
    return out


def put_status(provider: str, record: dict[str, Any]) -> None:
    client().put_item(TableName=_table(), Item=to_item({"pk": "STATUS", "sk": provider, **record}))
