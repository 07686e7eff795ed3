"""The outbox: side effects owed after a money transaction (an email, a Stripe invoice
mirror), written *in* that transaction so they exist exactly when the money moved.

Item: pk `OUTBOX#<shard>` (the user's shard of 8), sk `<user>#<ulid>` (so one
user's effects come back in the order they were written with one query, and a
shard lists every user's pending effects for the safety net). Fields: `userId`,
`kind`, `payload`, `createdAt`, and while a drainer works on it `leaseUntil`
and `attempts`. An effect is deleted once done.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from gpurent import ids
from gpurent.config import settings
from gpurent.store.dynamo import ClientError, client, from_item, is_conditional_failure, key, to_values
from gpurent.store.money import TransactItem, money_put


def shards() -> int:
    """How many partitions pending effects are spread over (the setting `outbox_shards`)."""
    return settings().outbox_shards


def _table() -> str:
    return settings().money_table


def shard(user_id: str) -> str:
    return f"OUTBOX#{int(hashlib.sha256(user_id.encode()).hexdigest(), 16) % shards()}"


def put_item(user_id: str, kind: str, payload: dict[str, Any], now: float, seq: int = 0) -> TransactItem:
    """A new effect, as an item of the money transaction that owes it. Effects of one
    transaction keep their order (`seq`)."""
    ulid = ids.ulid_at(now)
    return money_put({"pk": shard(user_id), "sk": f"{user_id}#{ulid[:10]}{seq:02d}{ulid[10:]}", "userId": user_id,
                      "kind": kind, "payload": payload, "createdAt": now, "attempts": 0})


def put(user_id: str, kind: str, payload: dict[str, Any], now: float) -> None:
    """A new effect on its own (owed by something that is not a money transaction)."""
    item = put_item(user_id, kind, payload, now)["Put"]
    client().put_item(TableName=item["TableName"], Item=item["Item"], ConditionExpression=item["ConditionExpression"])


def _query(kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        r = client().query(**kwargs)
        out.extend(i for i in (from_item(x) for x in r.get("Items", [])) if i is not None)
        if "LastEvaluatedKey" not in r:
            return out
        kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]


def for_user(user_id: str) -> list[dict[str, Any]]:
    """The user's pending effects, oldest first (one query)."""
    return _query({"TableName": _table(), "ConsistentRead": True,
                   "KeyConditionExpression": "pk = :pk AND begins_with(sk, :u)",
                   "ExpressionAttributeValues": to_values({":pk": shard(user_id), ":u": f"{user_id}#"})})


def in_shard(n: int) -> list[dict[str, Any]]:
    """Every pending effect of one shard (the safety net's look, once a minute)."""
    return _query({"TableName": _table(), "KeyConditionExpression": "pk = :pk",
                   "ExpressionAttributeValues": to_values({":pk": f"OUTBOX#{n}"})})


def lease(item: dict[str, Any], now: float, seconds: float) -> bool:
    """Take the effect for `seconds` (so two drainers do not both send it); False if another
    drainer holds it or it is gone. Counts the attempt."""
    try:
        client().update_item(
            TableName=_table(), Key=key(str(item["pk"]), str(item["sk"])),
            UpdateExpression="SET leaseUntil = :until, attempts = if_not_exists(attempts, :zero) + :one",
            ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(leaseUntil) OR leaseUntil <= :now)",
            ExpressionAttributeValues=to_values({":until": now + seconds, ":now": now, ":zero": 0, ":one": 1}))
    except ClientError as exc:
        if is_conditional_failure(exc):
            return False
        raise
    return True


def done(item: dict[str, Any]) -> None:
    client().delete_item(TableName=_table(), Key=key(str(item["pk"]), str(item["sk"])))


if TYPE_CHECKING:  # this module is the adapter of `ports.OutboxStore`: mypy checks it fits
    from gpurent import ports
    from gpurent.store import outbox as _this

    _port: ports.OutboxStore = _this
