"""The identity table (pk, sk, `ttl`): users and their email look-ups, and what the other
identity stores share (the table, their exceptions, deleting listed credentials).

The table's other records each have their own module: `sign_in_codes` (one-time codes and
guess counters), `sessions`, `tokens` (API tokens), `ssh_keys` and `rate_limits`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gpurent.config import settings
from gpurent.store.dynamo import (
    ClientError,
    cancellation_codes,
    client,
    from_item,
    key,
    to_item,
    to_values,
)


def table() -> str:
    """The identity table's name."""
    return settings().identity_table


class AlreadyExists(Exception):
    pass


class NotFound(Exception):
    pass


class ConditionFailed(Exception):
    def __init__(self, old: dict[str, Any] | None = None) -> None:
        super().__init__("condition failed")
        self.old = old


# ---------------------------------------------------------------- users

def get_user(user_id: str) -> dict[str, Any] | None:
    r = client().get_item(TableName=table(), Key=key(f"USER#{user_id}", "PROFILE"))
    return from_item(r.get("Item"))


def get_user_id_by_email(email: str, consistent: bool = False) -> str | None:
    r = client().get_item(TableName=table(), Key=key(f"EMAIL#{email}", "USER"), ConsistentRead=consistent)
    item = from_item(r.get("Item"))
    return None if item is None else str(item["userId"])


def create_user(user_id: str, email: str, created_at: float) -> None:
    """Create the user and its email look-up together; AlreadyExists if the email is taken."""
    try:
        client().transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": table(),
                        "Item": to_item({"pk": f"EMAIL#{email}", "sk": "USER", "userId": user_id}),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": table(),
                        "Item": to_item(
                            {
                                "pk": f"USER#{user_id}",
                                "sk": "PROFILE",
                                "id": user_id,
                                "email": email,
                                "createdAt": int(created_at),
                            }
                        ),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )
    except ClientError as exc:
        if "ConditionalCheckFailed" in cancellation_codes(exc):
            raise AlreadyExists(email) from exc
        raise


# ---------------------------------------------------------------- listed credentials

def delete_listed(user_id: str, items: list[dict[str, Any]], kind: str) -> None:
    """Delete listed sessions or tokens (`kind`: "SESSION" or "TOKEN"), each with its hash
    item, in batches; idempotent, so a retry after a fault finishes the job."""
    keys: list[dict[str, Any]] = []
    for item in items:
        keys.append(key(f"USER#{user_id}", f"{kind}#{item['id']}"))
        keys.append(key(f"{kind}#{item['hash']}", kind))
    for start in range(0, len(keys), 24):  # 25 at most per batch; keep each pair together
        request: dict[str, Any] = {table(): [{"DeleteRequest": {"Key": k}} for k in keys[start:start + 24]]}
        for attempt in range(8):
            r = client().batch_write_item(RequestItems=request)
            request = r.get("UnprocessedItems") or {}
            if not request:
                break
            time.sleep(min(0.05 * 2**attempt, 1.0))
        else:
            raise RuntimeError("batch delete kept coming back unprocessed")


# ---------------------------------------------------------------- helpers

def transact(items: list[dict[str, Any]]) -> None:
    """One DynamoDB transaction of `items` (TransactWriteItems entries)."""
    client().transact_write_items(TransactItems=items)  # type: ignore[arg-type]


def delete_with_lookup(user_id: str, sk: str, lookup: Callable[[dict[str, Any]], tuple[str, str]],
                       name: str) -> None:
    """Delete the user's item `sk` and its look-up item (`lookup(item)`: its pk and sk) in one
    transaction, conditional on the item still existing; NotFound(name) when it does not (an SSH
    key and its fingerprint marker, a token and its hash item)."""
    r = client().get_item(TableName=table(), Key=key(f"USER#{user_id}", sk), ConsistentRead=True)
    item = from_item(r.get("Item"))
    if item is None:
        raise NotFound(name)
    try:
        client().transact_write_items(
            TransactItems=[
                {"Delete": {"TableName": table(), "Key": key(f"USER#{user_id}", sk),
                            "ConditionExpression": "attribute_exists(pk)"}},
                {"Delete": {"TableName": table(), "Key": key(*lookup(item))}},
            ]
        )
    except ClientError as exc:
        if "ConditionalCheckFailed" in cancellation_codes(exc):
            raise NotFound(name) from exc
        raise


def query_prefix(pk: str, prefix: str) -> list[dict[str, Any]]:
    """Every item of partition `pk` whose sort key starts with `prefix` (all pages)."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": table(),
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
        "ExpressionAttributeValues": to_values({":pk": pk, ":p": prefix}),
    }
    while True:
        r = client().query(**kwargs)
        items.extend(i for i in (from_item(x) for x in r.get("Items", [])) if i is not None)
        if "LastEvaluatedKey" not in r:
            return items
        kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]
