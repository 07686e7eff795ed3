"""Sessions in the identity table: created, looked up, slid, adopted (those from before the
per-user index), listed and ended."""

from __future__ import annotations

from typing import Any

from gpurent.store.dynamo import (
    ClientError,
    cancellation_codes,
    client,
    error_code,
    from_item,
    key,
    to_item,
    to_values,
)
from gpurent.store.identity import NotFound, query_prefix, table, transact

# A session is two items written and deleted together: `SESSION#<sha256(sid)>` (what a
# request authenticates against) and `USER#<id>` / `SESSION#<ses_…>` (what the person
# lists, one Query). Sessions written before the index existed are adopted at first use.


def put_session(sid_hash: str, user_id: str, created_at: float, expires_at: float, session_id: str,
                client_summary: str | None = None, ip_prefix: str | None = None) -> None:
    transact([_session_put(sid_hash, user_id, int(created_at), int(created_at), int(expires_at), session_id),
              _index_put(sid_hash, user_id, int(created_at), int(created_at), int(expires_at), session_id,
                         client_summary, ip_prefix)])


def _session_put(sid_hash: str, user_id: str, created_at: int, slid_at: int, expires_at: int,
                 session_id: str) -> dict[str, Any]:
    return {"Put": {
        "TableName": table(),
        "Item": to_item({"pk": f"SESSION#{sid_hash}", "sk": "SESSION", "userId": user_id, "sessionId": session_id,
                         "createdAt": created_at, "slidAt": slid_at, "expiresAt": expires_at,
                         "ttl": expires_at + 86400}),
        "ConditionExpression": "attribute_not_exists(pk)",
    }}


def _index_put(sid_hash: str, user_id: str, created_at: int, last_used_at: int, expires_at: int, session_id: str,
               client_summary: str | None, ip_prefix: str | None) -> dict[str, Any]:
    return {"Put": {
        "TableName": table(),
        "Item": to_item({"pk": f"USER#{user_id}", "sk": f"SESSION#{session_id}", "id": session_id, "hash": sid_hash,
                         "createdAt": created_at, "lastUsedAt": last_used_at, "expiresAt": expires_at,
                         "ttl": expires_at + 86400, "client": client_summary, "ipPrefix": ip_prefix}),
        "ConditionExpression": "attribute_not_exists(pk)",
    }}


def get_session(sid_hash: str) -> dict[str, Any] | None:
    r = client().get_item(TableName=table(), Key=key(f"SESSION#{sid_hash}", "SESSION"))
    return from_item(r.get("Item"))


class SessionsRevoked(Exception):
    """A session from before the index meets a user who has since signed out everywhere."""


def adopt_session(sid_hash: str, session: dict[str, Any], session_id: str) -> bool:
    """Give a session written before the index its id and index item, unless its user has
    signed out everywhere since (SessionsRevoked: the caller ends it). False when another
    request adopted (or ended) it first."""
    user_id = str(session["userId"])
    try:
        transact([
            {"Update": {
                "TableName": table(),
                "Key": key(f"SESSION#{sid_hash}", "SESSION"),
                "UpdateExpression": "SET sessionId = :id",
                "ConditionExpression": "attribute_exists(pk) AND attribute_not_exists(sessionId)",
                "ExpressionAttributeValues": to_values({":id": session_id}),
            }},
            _index_put(sid_hash, user_id, int(session["createdAt"]), int(session["slidAt"]),
                       int(session["expiresAt"]), session_id, None, None),
            {"ConditionCheck": {
                "TableName": table(),
                "Key": key(f"USER#{user_id}", "PROFILE"),
                "ConditionExpression": "attribute_not_exists(sessionsRevokedAt)",
            }},
        ])
    except ClientError as exc:
        codes = cancellation_codes(exc)
        if len(codes) == 3 and codes[2] == "ConditionalCheckFailed":
            raise SessionsRevoked(user_id) from exc
        if "ConditionalCheckFailed" in codes or "TransactionConflict" in codes:
            return False
        raise
    return True


def slide_session(sid_hash: str, previous_slid_at: int, now: float, expires_at: float,
                  user_id: str, session_id: str) -> bool:
    """Move the expiry forward (and the listed last use); only one of several concurrent
    requests does it."""
    exp = int(expires_at)
    try:
        transact([
            {"Update": {
                "TableName": table(),
                "Key": key(f"SESSION#{sid_hash}", "SESSION"),
                "UpdateExpression": "SET slidAt = :now, expiresAt = :exp, #ttl = :ttl",
                "ConditionExpression": "attribute_exists(pk) AND slidAt = :prev",
                "ExpressionAttributeNames": {"#ttl": "ttl"},
                "ExpressionAttributeValues": to_values(
                    {":now": int(now), ":exp": exp, ":ttl": exp + 86400, ":prev": previous_slid_at}),
            }},
            {"Update": {
                "TableName": table(),
                "Key": key(f"USER#{user_id}", f"SESSION#{session_id}"),
                "UpdateExpression": "SET lastUsedAt = :now, expiresAt = :exp, #ttl = :ttl",
                "ConditionExpression": "attribute_exists(pk)",
                "ExpressionAttributeNames": {"#ttl": "ttl"},
                "ExpressionAttributeValues": to_values({":now": int(now), ":exp": exp, ":ttl": exp + 86400}),
            }},
        ])
    except ClientError as exc:
        if error_code(exc) == "TransactionCanceledException":
            return False
        raise
    return True


def delete_session(sid_hash: str, user_id: str | None = None, session_id: str | None = None) -> None:
    """End a session: both of its items (the hash item alone for a session never adopted)."""
    if user_id is None or session_id is None:
        client().delete_item(TableName=table(), Key=key(f"SESSION#{sid_hash}", "SESSION"))
        return
    transact([{"Delete": {"TableName": table(), "Key": key(f"SESSION#{sid_hash}", "SESSION")}},
              {"Delete": {"TableName": table(), "Key": key(f"USER#{user_id}", f"SESSION#{session_id}")}}])


def list_sessions(user_id: str) -> list[dict[str, Any]]:
    return query_prefix(f"USER#{user_id}", "SESSION#")


def end_session(user_id: str, session_id: str) -> dict[str, Any]:
    """End one of this user's sessions by its id; NotFound for an id the user does not have."""
    r = client().get_item(TableName=table(), Key=key(f"USER#{user_id}", f"SESSION#{session_id}"),
                          ConsistentRead=True)
    item = from_item(r.get("Item"))
    if item is None:
        raise NotFound(session_id)
    try:
        transact([{"Delete": {"TableName": table(), "Key": key(f"USER#{user_id}", f"SESSION#{session_id}"),
                              "ConditionExpression": "attribute_exists(pk)"}},
                  {"Delete": {"TableName": table(), "Key": key(f"SESSION#{item['hash']}", "SESSION")}}])
    except ClientError as exc:
        if "ConditionalCheckFailed" in cancellation_codes(exc):
            raise NotFound(session_id) from exc
        raise
    return item


def mark_sessions_revoked(user_id: str, now: float) -> None:
    """Sessions from before the index (never listed, never adopted) die with this mark."""
    client().update_item(
        TableName=table(),
        Key=key(f"USER#{user_id}", "PROFILE"),
        UpdateExpression="SET sessionsRevokedAt = :now",
        ConditionExpression="attribute_exists(pk)",
        ExpressionAttributeValues=to_values({":now": int(now)}),
    )
