"""Identity records: users, email look-ups, one-time codes, sessions, API tokens,
SSH keys and rate-limit counters, all in the identity table (pk, sk, `ttl`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpurent.config import settings
from gpurent.store.dynamo import (
    ClientError,
    cancellation_codes,
    client,
    from_item,
    is_conditional_failure,
    key,
    to_item,
    to_values,
)


def _table() -> str:
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
    r = client().get_item(TableName=_table(), Key=key(f"USER#{user_id}", "PROFILE"))
    return from_item(r.get("Item"))


def get_user_id_by_email(email: str, consistent: bool = False) -> str | None:
    r = client().get_item(TableName=_table(), Key=key(f"EMAIL#{email}", "USER"), ConsistentRead=consistent)
    item = from_item(r.get("Item"))
    return None if item is None else str(item["userId"])


def create_user(user_id: str, email: str, created_at: float) -> None:
    """Create the user and its email look-up together; AlreadyExists if the email is taken."""
    try:
        client().transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": _table(),
                        "Item": to_item({"pk": f"EMAIL#{email}", "sk": "USER", "userId": user_id}),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": _table(),
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


# ---------------------------------------------------------------- one-time codes

def put_code(email: str, record: dict[str, Any], not_requested_since: float) -> None:
    """Store a new code unless one was requested after `not_requested_since`."""
    try:
        client().put_item(
            TableName=_table(),
            Item=to_item({"pk": f"EMAIL#{email}", "sk": "OTP", **record}),
            ConditionExpression="attribute_not_exists(pk) OR requestedAt <= :cutoff",
            ExpressionAttributeValues=to_values({":cutoff": not_requested_since}),
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as exc:
        if is_conditional_failure(exc):
            raise ConditionFailed(from_item(exc.response.get("Item"))) from exc  # type: ignore[arg-type]
        raise


def get_code(email: str) -> dict[str, Any] | None:
    r = client().get_item(TableName=_table(), Key=key(f"EMAIL#{email}", "OTP"), ConsistentRead=True)
    return from_item(r.get("Item"))


def count_failed_attempt(email: str, code_hash: str, max_attempts: int) -> int:
    """Add one wrong guess to this very code; returns the new count."""
    try:
        r = client().update_item(
            TableName=_table(),
            Key=key(f"EMAIL#{email}", "OTP"),
            UpdateExpression="ADD attempts :one",
            ConditionExpression="codeHash = :h AND attempts < :max",
            ExpressionAttributeValues=to_values({":one": 1, ":h": code_hash, ":max": max_attempts}),
            ReturnValues="UPDATED_NEW",
        )
    except ClientError as exc:
        if is_conditional_failure(exc):
            return max_attempts
        raise
    return int(from_item(r["Attributes"])["attempts"])  # type: ignore[index]


def consume_code(email: str, code_hash: str, max_attempts: int) -> bool:
    """Delete the code if it is still this one and not dead; True when we consumed it."""
    try:
        client().delete_item(
            TableName=_table(),
            Key=key(f"EMAIL#{email}", "OTP"),
            ConditionExpression="codeHash = :h AND attempts < :max",
            ExpressionAttributeValues=to_values({":h": code_hash, ":max": max_attempts}),
        )
    except ClientError as exc:
        if is_conditional_failure(exc):
            return False
        raise
    return True


# ---------------------------------------------------------------- sessions

def put_session(sid_hash: str, user_id: str, created_at: float, expires_at: float) -> None:
    client().put_item(
        TableName=_table(),
        Item=to_item(
            {
                "pk": f"SESSION#{sid_hash}",
                "sk": "SESSION",
                "userId": user_id,
                "createdAt": int(created_at),
                "slidAt": int(created_at),
                "expiresAt": int(expires_at),
                "ttl": int(expires_at) + 86400,
            }
        ),
        ConditionExpression="attribute_not_exists(pk)",
    )


def get_session(sid_hash: str) -> dict[str, Any] | None:
    r = client().get_item(TableName=_table(), Key=key(f"SESSION#{sid_hash}", "SESSION"))
    return from_item(r.get("Item"))


def slide_session(sid_hash: str, previous_slid_at: int, now: float, expires_at: float) -> bool:
    """Move the expiry forward; only one of several concurrent requests does it."""
    try:
        client().update_item(
            TableName=_table(),
            Key=key(f"SESSION#{sid_hash}", "SESSION"),
            UpdateExpression="SET slidAt = :now, expiresAt = :exp, #ttl = :ttl",
            ConditionExpression="attribute_exists(pk) AND slidAt = :prev",
            ExpressionAttributeNames={"#ttl": "ttl"},
            ExpressionAttributeValues=to_values(
                {":now": int(now), ":exp": int(expires_at), ":ttl": int(expires_at) + 86400, ":prev": previous_slid_at}
            ),
        )
    except ClientError as exc:
        if is_conditional_failure(exc):
            return False
        raise
    return True


def delete_session(sid_hash: str) -> None:
    client().delete_item(TableName=_table(), Key=key(f"SESSION#{sid_hash}", "SESSION"))


# ---------------------------------------------------------------- API tokens

def put_token(user_id: str, token_id: str, token_hash: str, record: dict[str, Any]) -> None:
    expires = record.get("expiresAt")
    ttl = int(expires) + 86400 if expires else None
    client().transact_write_items(
        TransactItems=[
            {
                "Put": {
                    "TableName": _table(),
                    "Item": to_item(
                        {"pk": f"TOKEN#{token_hash}", "sk": "TOKEN", "userId": user_id, "tokenId": token_id,
                         "expiresAt": expires, "ttl": ttl}
                    ),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Put": {
                    "TableName": _table(),
                    "Item": to_item({"pk": f"USER#{user_id}", "sk": f"TOKEN#{token_id}", "hash": token_hash,
                                     "ttl": ttl, **record}),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
    )


def get_token(token_hash: str) -> dict[str, Any] | None:
    r = client().get_item(TableName=_table(), Key=key(f"TOKEN#{token_hash}", "TOKEN"))
    return from_item(r.get("Item"))


def list_tokens(user_id: str) -> list[dict[str, Any]]:
    return _query_prefix(f"USER#{user_id}", "TOKEN#")


def delete_token(user_id: str, token_id: str) -> None:
    r = client().get_item(TableName=_table(), Key=key(f"USER#{user_id}", f"TOKEN#{token_id}"), ConsistentRead=True)
    item = from_item(r.get("Item"))
    if item is None:
        raise NotFound(token_id)
    try:
        client().transact_write_items(
            TransactItems=[
                {"Delete": {"TableName": _table(), "Key": key(f"USER#{user_id}", f"TOKEN#{token_id}"),
                            "ConditionExpression": "attribute_exists(pk)"}},
                {"Delete": {"TableName": _table(), "Key": key(f"TOKEN#{item['hash']}", "TOKEN")}},
            ]
        )
    except ClientError as exc:
        if "ConditionalCheckFailed" in cancellation_codes(exc):
            raise NotFound(token_id) from exc
        raise


# ---------------------------------------------------------------- SSH keys

def put_ssh_key(user_id: str, record: dict[str, Any]) -> None:
    """Store a key and its fingerprint marker together; AlreadyExists on a duplicate fingerprint."""
    try:
        client().transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": _table(),
                        "Item": to_item({"pk": f"USER#{user_id}", "sk": f"KEYFP#{record['fingerprint']}",
                                         "keyId": record["id"]}),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": _table(),
                        "Item": to_item({"pk": f"USER#{user_id}", "sk": f"KEY#{record['id']}", **record}),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )
    except ClientError as exc:
        if "ConditionalCheckFailed" in cancellation_codes(exc):
            raise AlreadyExists(record["fingerprint"]) from exc
        raise


def list_ssh_keys(user_id: str) -> list[dict[str, Any]]:
    return _query_prefix(f"USER#{user_id}", "KEY#")


def delete_ssh_key(user_id: str, key_id: str) -> None:
    r = client().get_item(TableName=_table(), Key=key(f"USER#{user_id}", f"KEY#{key_id}"), ConsistentRead=True)
    item = from_item(r.get("Item"))
    if item is None:
        raise NotFound(key_id)
    try:
        client().transact_write_items(
            TransactItems=[
                {"Delete": {"TableName": _table(), "Key": key(f"USER#{user_id}", f"KEY#{key_id}"),
                            "ConditionExpression": "attribute_exists(pk)"}},
                {"Delete": {"TableName": _table(), "Key": key(f"USER#{user_id}", f"KEYFP#{item['fingerprint']}")}},
            ]
        )
    except ClientError as exc:
        if "ConditionalCheckFailed" in cancellation_codes(exc):
            raise NotFound(key_id) from exc
        raise


# ---------------------------------------------------------------- rate limits

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
            TableName=_table(),
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


# ---------------------------------------------------------------- helpers

def _query_prefix(pk: str, prefix: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": _table(),
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
        "ExpressionAttributeValues": to_values({":pk": pk, ":p": prefix}),
    }
    while True:
        r = client().query(**kwargs)
        items.extend(i for i in (from_item(x) for x in r.get("Items", [])) if i is not None)
        if "LastEvaluatedKey" not in r:
            return items
        kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]
