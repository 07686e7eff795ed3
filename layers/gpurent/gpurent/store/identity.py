"""Identity records: users, email look-ups, one-time codes, sessions, API tokens,
SSH keys and rate-limit counters, all in the identity table (pk, sk, `ttl`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gpurent.config import settings
from gpurent.store.dynamo import (
    ClientError,
    cancellation_codes,
    client,
    error_code,
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


# ---------------------------------------------------------------- sign-in guess counters
#
# One item per counter (`GUESS#EMAIL#<email>` or `GUESS#IP#<address or /64>`, sk `DAY`)
# holding one number per hour that saw a guess (`h<hour start>`). The window is the
# current hour and the 23 before it; older hours are removed by the next write.

GUESS_SK = "DAY"


@dataclass(frozen=True)
class GuessCounter:
    """One counter as read: `seen` maps each past hour of the window to its count."""

    pk: str
    seen: dict[int, int]
    current: int
    stale: tuple[int, ...]


def _slots(item: dict[str, Any] | None) -> dict[int, int]:
    return {int(k[1:]): int(v) for k, v in (item or {}).items() if k.startswith("h") and k[1:].isdigit()}


def guess_counter(pk: str, item: dict[str, Any] | None, hour: int, window_hours: int) -> GuessCounter:
    slots = _slots(item)
    oldest = hour - (window_hours - 1) * 3600
    seen = {h: n for h, n in slots.items() if oldest <= h < hour}
    stale = tuple(sorted(h for h in slots if h < oldest))
    return GuessCounter(pk, seen, slots.get(hour, 0), stale)


def read_sign_in(email: str, counter_pks: list[str]) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any] | None]]:
    """The live code of `email` and the guess counters, in one consistent batch read."""
    keys = [key(f"EMAIL#{email}", "OTP"), *(key(pk, GUESS_SK) for pk in counter_pks)]
    found: dict[str, dict[str, Any]] = {}
    request: dict[str, Any] = {_table(): {"Keys": keys, "ConsistentRead": True}}
    for _ in range(5):
        r = client().batch_get_item(RequestItems=request)
        for raw in r.get("Responses", {}).get(_table(), []):
            item = from_item(raw) or {}
            found[str(item["pk"])] = item
        request = r.get("UnprocessedKeys") or {}
        if not request:
            break
    else:
        raise RuntimeError("batch read kept coming back unprocessed")
    return found.get(f"EMAIL#{email}"), {pk: found.get(pk) for pk in counter_pks}


def get_guess_item(pk: str) -> dict[str, Any] | None:
    r = client().get_item(TableName=_table(), Key=key(pk, GUESS_SK), ConsistentRead=True)
    return from_item(r.get("Item"))


def _guess_update(counter: GuessCounter, hour: int, limit: int, ttl: int) -> dict[str, Any]:
    """Count one guess in this hour unless the window is full, and unless the past hours
    changed since they were read (then the caller reads again)."""
    names = {"#cur": f"h{hour}", "#ttl": "ttl"}
    values: dict[str, Any] = {":one": 1, ":max": limit - sum(counter.seen.values()), ":ttl": ttl}
    conditions = ["(attribute_not_exists(#cur) OR #cur < :max)"]
    for i, (h, n) in enumerate(sorted(counter.seen.items())):
        names[f"#s{i}"] = f"h{h}"
        values[f":s{i}"] = n
        conditions.append(f"#s{i} = :s{i}")
    if hour - 3600 not in counter.seen:  # a request still in the previous hour may be writing it
        names["#prev"] = f"h{hour - 3600}"
        conditions.append("attribute_not_exists(#prev)")
    update = "ADD #cur :one SET #ttl = :ttl"
    if counter.stale:
        for i, h in enumerate(counter.stale):
            names[f"#x{i}"] = f"h{h}"
        update += " REMOVE " + ", ".join(f"#x{i}" for i in range(len(counter.stale)))
    return {
        "TableName": _table(),
        "Key": key(counter.pk, GUESS_SK),
        "UpdateExpression": update,
        "ConditionExpression": " AND ".join(conditions),
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": to_values(values),
    }


def reserve_guess(email: str, code_hash: str, attempts_seen: int, hour: int,
                  counters: list[tuple[GuessCounter, int]], ttl: int) -> int:
    """Count one guess on the code and on every counter (each with its limit), all or
    nothing, before the guess is checked; returns the code's attempts including this one.

    ConditionFailed: the code changed, a window is full, or a counter moved since it was
    read; nothing was written and the caller reads again.
    """
    items: list[dict[str, Any]] = [{"Update": {
        "TableName": _table(),
        "Key": key(f"EMAIL#{email}", "OTP"),
        "UpdateExpression": "ADD attempts :one",
        "ConditionExpression": "codeHash = :h AND attempts = :seen",
        "ExpressionAttributeValues": to_values({":one": 1, ":h": code_hash, ":seen": attempts_seen}),
    }}]
    items += [{"Update": _guess_update(c, hour, limit, ttl)} for c, limit in counters]
    try:
        _transact(items)
    except ClientError as exc:
        if error_code(exc) == "TransactionCanceledException":
            raise ConditionFailed() from exc
        raise
    return attempts_seen + 1


def consume_code(email: str, code_hash: str, hour: int, counter_pks: list[str]) -> bool:
    """Delete the code if it is still this one, and give the guess it cost back to every
    counter, together; True when we consumed it."""
    items: list[dict[str, Any]] = [{"Delete": {
        "TableName": _table(),
        "Key": key(f"EMAIL#{email}", "OTP"),
        "ConditionExpression": "codeHash = :h",
        "ExpressionAttributeValues": to_values({":h": code_hash}),
    }}]
    items += [{"Update": {
        "TableName": _table(),
        "Key": key(pk, GUESS_SK),
        "UpdateExpression": "ADD #cur :minus",
        "ConditionExpression": "attribute_exists(pk)",
        "ExpressionAttributeNames": {"#cur": f"h{hour}"},
        "ExpressionAttributeValues": to_values({":minus": -1}),
    }} for pk in counter_pks]
    try:
        _transact(items)
    except ClientError as exc:
        if "ConditionalCheckFailed" in cancellation_codes(exc):
            return False
        raise
    return True


# ---------------------------------------------------------------- sessions
#
# A session is two items written and deleted together: `SESSION#<sha256(sid)>` (what a
# request authenticates against) and `USER#<id>` / `SESSION#<ses_…>` (what the person
# lists, one Query). Sessions written before the index existed are adopted at first use.

def put_session(sid_hash: str, user_id: str, created_at: float, expires_at: float, session_id: str,
                client_summary: str | None = None, ip_prefix: str | None = None) -> None:
    _transact([_session_put(sid_hash, user_id, int(created_at), int(created_at), int(expires_at), session_id),
               _index_put(sid_hash, user_id, int(created_at), int(created_at), int(expires_at), session_id,
                          client_summary, ip_prefix)])


def _session_put(sid_hash: str, user_id: str, created_at: int, slid_at: int, expires_at: int,
                 session_id: str) -> dict[str, Any]:
    return {"Put": {
        "TableName": _table(),
        "Item": to_item({"pk": f"SESSION#{sid_hash}", "sk": "SESSION", "userId": user_id, "sessionId": session_id,
                         "createdAt": created_at, "slidAt": slid_at, "expiresAt": expires_at,
                         "ttl": expires_at + 86400}),
        "ConditionExpression": "attribute_not_exists(pk)",
    }}


def _index_put(sid_hash: str, user_id: str, created_at: int, last_used_at: int, expires_at: int, session_id: str,
               client_summary: str | None, ip_prefix: str | None) -> dict[str, Any]:
    return {"Put": {
        "TableName": _table(),
        "Item": to_item({"pk": f"USER#{user_id}", "sk": f"SESSION#{session_id}", "id": session_id, "hash": sid_hash,
                         "createdAt": created_at, "lastUsedAt": last_used_at, "expiresAt": expires_at,
                         "ttl": expires_at + 86400, "client": client_summary, "ipPrefix": ip_prefix}),
        "ConditionExpression": "attribute_not_exists(pk)",
    }}


def get_session(sid_hash: str) -> dict[str, Any] | None:
    r = client().get_item(TableName=_table(), Key=key(f"SESSION#{sid_hash}", "SESSION"))
    return from_item(r.get("Item"))


class SessionsRevoked(Exception):
    """A session from before the index meets a user who has since signed out everywhere."""


def adopt_session(sid_hash: str, session: dict[str, Any], session_id: str) -> bool:
    """Give a session written before the index its id and index item, unless its user has
    signed out everywhere since (SessionsRevoked: the caller ends it). False when another
    request adopted (or ended) it first."""
    user_id = str(session["userId"])
    try:
        _transact([
            {"Update": {
                "TableName": _table(),
                "Key": key(f"SESSION#{sid_hash}", "SESSION"),
                "UpdateExpression": "SET sessionId = :id",
                "ConditionExpression": "attribute_exists(pk) AND attribute_not_exists(sessionId)",
                "ExpressionAttributeValues": to_values({":id": session_id}),
            }},
            _index_put(sid_hash, user_id, int(session["createdAt"]), int(session["slidAt"]),
                       int(session["expiresAt"]), session_id, None, None),
            {"ConditionCheck": {
                "TableName": _table(),
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
        _transact([
            {"Update": {
                "TableName": _table(),
                "Key": key(f"SESSION#{sid_hash}", "SESSION"),
                "UpdateExpression": "SET slidAt = :now, expiresAt = :exp, #ttl = :ttl",
                "ConditionExpression": "attribute_exists(pk) AND slidAt = :prev",
                "ExpressionAttributeNames": {"#ttl": "ttl"},
                "ExpressionAttributeValues": to_values(
                    {":now": int(now), ":exp": exp, ":ttl": exp + 86400, ":prev": previous_slid_at}),
            }},
            {"Update": {
                "TableName": _table(),
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
        client().delete_item(TableName=_table(), Key=key(f"SESSION#{sid_hash}", "SESSION"))
        return
    _transact([{"Delete": {"TableName": _table(), "Key": key(f"SESSION#{sid_hash}", "SESSION")}},
               {"Delete": {"TableName": _table(), "Key": key(f"USER#{user_id}", f"SESSION#{session_id}")}}])


def list_sessions(user_id: str) -> list[dict[str, Any]]:
    return _query_prefix(f"USER#{user_id}", "SESSION#")


def end_session(user_id: str, session_id: str) -> dict[str, Any]:
    """End one of this user's sessions by its id; NotFound for an id the user does not have."""
    r = client().get_item(TableName=_table(), Key=key(f"USER#{user_id}", f"SESSION#{session_id}"),
                          ConsistentRead=True)
    item = from_item(r.get("Item"))
    if item is None:
        raise NotFound(session_id)
    try:
        _transact([{"Delete": {"TableName": _table(), "Key": key(f"USER#{user_id}", f"SESSION#{session_id}"),
                               "ConditionExpression": "attribute_exists(pk)"}},
                   {"Delete": {"TableName": _table(), "Key": key(f"SESSION#{item['hash']}", "SESSION")}}])
    except ClientError as exc:
        if "ConditionalCheckFailed" in cancellation_codes(exc):
            raise NotFound(session_id) from exc
        raise
    return item


def mark_sessions_revoked(user_id: str, now: float) -> None:
    """Sessions from before the index (never listed, never adopted) die with this mark."""
    client().update_item(
        TableName=_table(),
        Key=key(f"USER#{user_id}", "PROFILE"),
        UpdateExpression="SET sessionsRevokedAt = :now",
        ConditionExpression="attribute_exists(pk)",
        ExpressionAttributeValues=to_values({":now": int(now)}),
    )


def delete_listed(user_id: str, items: list[dict[str, Any]], kind: str) -> None:
    """Delete listed sessions or tokens (`kind`: "SESSION" or "TOKEN"), each with its hash
    item, in batches; idempotent, so a retry after a fault finishes the job."""
    keys: list[dict[str, Any]] = []
    for item in items:
        keys.append(key(f"USER#{user_id}", f"{kind}#{item['id']}"))
        keys.append(key(f"{kind}#{item['hash']}", kind))
    for start in range(0, len(keys), 24):  # 25 at most per batch; keep each pair together
        request: dict[str, Any] = {_table(): [{"DeleteRequest": {"Key": k}} for k in keys[start:start + 24]]}
        for attempt in range(8):
            r = client().batch_write_item(RequestItems=request)
            request = r.get("UnprocessedItems") or {}
            if not request:
                break
            time.sleep(min(0.05 * 2**attempt, 1.0))
        else:
            raise RuntimeError("batch delete kept coming back unprocessed")


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


def touch_token(token_hash: str, user_id: str, token_id: str, previous: int | None, now: float) -> bool:
    """Record a token's use (on both items); only one of several concurrent requests does it."""
    seen = "attribute_not_exists(lastUsedAt)" if previous is None else "lastUsedAt = :prev"
    values: dict[str, Any] = {":now": int(now)}
    if previous is not None:
        values[":prev"] = previous
    try:
        _transact([
            {"Update": {
                "TableName": _table(),
                "Key": key(f"TOKEN#{token_hash}", "TOKEN"),
                "UpdateExpression": "SET lastUsedAt = :now",
                "ConditionExpression": f"attribute_exists(pk) AND {seen}",
                "ExpressionAttributeValues": to_values(values),
            }},
            {"Update": {
                "TableName": _table(),
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


def unhit_rate_limit(bucket: str, now: float) -> None:
    """Give back a request `hit_rate_limit` counted (another window refused it)."""
    hour_start = int(now) // 3600 * 3600
    client().update_item(
        TableName=_table(),
        Key=key(f"RATE#{bucket}", f"H#{hour_start}"),
        UpdateExpression="ADD hc :minus, #m :minus",
        ConditionExpression="attribute_exists(pk)",
        ExpressionAttributeNames={"#m": f"m{(int(now) - hour_start) // 60}"},
        ExpressionAttributeValues=to_values({":minus": -1}),
    )


# ---------------------------------------------------------------- helpers

def _transact(items: list[dict[str, Any]]) -> None:
    client().transact_write_items(TransactItems=items)  # type: ignore[arg-type]


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
