"""Request rate-limit counters in the identity table: one item per bucket and hour, a number per
minute."""

from __future__ import annotations

from dataclasses import dataclass

from gpurent.store.dynamo import (
    ClientError,
    client,
    from_item,
    is_conditional_failure,
    key,
    to_values,
)
from gpurent.store.identity import table


@dataclass(frozen=True)
class Hit:
    allowed: bool
    minute_count: int
    hour_count: int


def hit_rate_limit(bucket: str, now: float, per_minute: int, per_hour: int) -> Hit:
    """Count one request in `bucket`, unless a window is full: one conditional write.

    One item per bucket per hour holds the hour's count and one counter per
    minute, so both windows are checked and counted atomically.
    """
    hour_start = int(now) // 3600 * 3600
    minute_attr = f"m{(int(now) - hour_start) // 60}"
    try:
        r = client().update_item(
            TableName=table(),
            Key=key(f"RATE#{bucket}", f"H#{hour_start}"),
            UpdateExpression="ADD hc :one, #m :one SET #ttl = :ttl",
            ConditionExpression="(attribute_not_exists(hc) OR hc < :hl) AND (attribute_not_exists(#m) OR #m < :ml)",
            ExpressionAttributeNames={"#m": minute_attr, "#ttl": "ttl"},
            ExpressionAttributeValues=to_values(
                {":one": 1, ":hl": per_hour, ":ml": per_minute, ":ttl": hour_start + 7200}
            ),
            ReturnValues="UPDATED_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as exc:
        if is_conditional_failure(exc):
            old = from_item(exc.response.get("Item")) or {}  # type: ignore[arg-type]
            return Hit(False, int(old.get(minute_attr, 0)), int(old.get("hc", 0)))
        raise
    new = from_item(r["Attributes"]) or {}
    return Hit(True, int(new.get(minute_attr, 0)), int(new.get("hc", 0)))


def unhit_rate_limit(bucket: str, now: float) -> None:
    """Give back a request `hit_rate_limit` counted (another window refused it)."""
    hour_start = int(now) // 3600 * 3600
    client().update_item(
        TableName=table(),
        Key=key(f"RATE#{bucket}", f"H#{hour_start}"),
        UpdateExpression="ADD hc :minus, #m :minus",
        ConditionExpression="attribute_exists(pk)",
        ExpressionAttributeNames={"#m": f"m{(int(now) - hour_start) // 60}"},
        ExpressionAttributeValues=to_values({":minus": -1}),
    )
