"""API tokens in the identity table: created, looked up by hash, touched (`lastUsedAt`), listed
and revoked."""

from __future__ import annotations

from typing import Any

from gpurent.store.dynamo import (
    ClientError,
    client,
    error_code,
    from_item,
    key,
    to_item,
    to_values,
)
from gpurent.store.identity import delete_with_lookup, query_prefix, table, transact


def put_token(user_id: str, token_id: str, token_hash: str, record: dict[str, Any]) -> None:
    expires = record.get("expiresAt")
    ttl = int(expires) + 86400 if expires else None
    client().transact_write_items(
        TransactItems=[
            {
                "Put": {
                    "TableName": table(),
                    "Item": to_item(
                        {"pk": f"TOKEN#{token_hash}", "sk": "TOKEN", "userId": user_id, "tokenId": token_id,
                         "expiresAt": expires, "ttl": ttl}
                    ),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Put": {
                    "TableName": table(),
                    "Item": to_item({"pk": f"USER#{user_id}", "sk": f"TOKEN#{token_id}", "hash": token_hash,
                                     "ttl": ttl, **record}),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
    )


def get_token(token_hash: str) -> dict[str, Any] | None:
    r = client().get_item(TableName=table(), Key=key(f"TOKEN#{token_hash}", "TOKEN"))
    return from_item(r.get("Item"))


def touch_token(token_hash: str, user_id: str, token_id: str, previous: int | None, now: float) -> bool:
    """Record a token's use (on both items); only one of several concurrent requests does it."""
    seen = "attribute_not_exists(lastUsedAt)" if previous is None else "lastUsedAt = :prev"
    values: dict[str, Any] = {":now": int(now)}
    if previous is not None:
        values[":prev"] = previous
    try:
        transact([
            {"Update": {
                "TableName": table(),
                "Key": key(f"TOKEN#{token_hash}", "TOKEN"),
                "UpdateExpression": "SET lastUsedAt = :now",
                "ConditionExpression": f"attribute_exists(pk) AND {seen}",
                "ExpressionAttributeValues": to_values(values),
            }},
            {"Update": {
                "TableName": table(),
                "Key": key(f"USER#{user_id}", f"TOKEN#{token_id}"),
                "UpdateExpression": "SET lastUsedAt = :now",
                "ConditionExpression": "attribute_exists(pk)",
                "ExpressionAttributeValues": to_values({":now": int(now)}),
            }},
        ])
    except ClientError as exc:
        if error_code(exc) == "TransactionCanceledException":
            return False
        raise
    return True


def list_tokens(user_id: str) -> list[dict[str, Any]]:
    return query_prefix(f"USER#{user_id}", "TOKEN#")


def delete_token(user_id: str, token_id: str) -> None:
    """Revoke a token: its item and its hash look-up together; NotFound when it is not there."""
    delete_with_lookup(user_id, f"TOKEN#{token_id}", lambda item: (f"TOKEN#{item['hash']}", "TOKEN"), token_id)
