"""Sign-in records in the identity table: the one-time code of an address (`EMAIL#<email>` /
`OTP`) and the wrong-guess counters that limit guessing it (per address and per source)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
from gpurent.store.identity import ConditionFailed, table, transact


def put_code(email: str, record: dict[str, Any], not_requested_since: float) -> None:
    """Store a new code unless one was requested after `not_requested_since`."""
    try:
        client().put_item(
            TableName=table(),
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
    r = client().get_item(TableName=table(), Key=key(f"EMAIL#{email}", "OTP"), ConsistentRead=True)
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
    request: dict[str, Any] = {table(): {"Keys": keys, "ConsistentRead": True}}
    for _ in range(5):
        r = client().batch_get_item(RequestItems=request)
        for raw in r.get("Responses", {}).get(table(), []):
            item = from_item(raw) or {}
            found[str(item["pk"])] = item
        request = r.get("UnprocessedKeys") or {}
        if not request:
            break
    else:
        raise RuntimeError("batch read kept coming back unprocessed")
    return found.get(f"EMAIL#{email}"), {pk: found.get(pk) for pk in counter_pks}


def get_guess_item(pk: str) -> dict[str, Any] | None:
    r = client().get_item(TableName=table(), Key=key(pk, GUESS_SK), ConsistentRead=True)
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
        "TableName": table(),
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
        "TableName": table(),
        "Key": key(f"EMAIL#{email}", "OTP"),
        "UpdateExpression": "ADD attempts :one",
        "ConditionExpression": "codeHash = :h AND attempts = :seen",
        "ExpressionAttributeValues": to_values({":one": 1, ":h": code_hash, ":seen": attempts_seen}),
    }}]
    items += [{"Update": _guess_update(c, hour, limit, ttl)} for c, limit in counters]
    try:
        transact(items)
    except ClientError as exc:
        if error_code(exc) == "TransactionCanceledException":
            raise ConditionFailed() from exc
        raise
    return attempts_seen + 1


def consume_code(email: str, code_hash: str, hour: int, counter_pks: list[str]) -> bool:
    """Delete the code if it is still this one, and give the guess it cost back to every
    counter, together; True when we consumed it."""
    items: list[dict[str, Any]] = [{"Delete": {
        "TableName": table(),
        "Key": key(f"EMAIL#{email}", "OTP"),
        "ConditionExpression": "codeHash = :h",
        "ExpressionAttributeValues": to_values({":h": code_hash}),
    }}]
    items += [{"Update": {
        "TableName": table(),
        "Key": key(pk, GUESS_SK),
        "UpdateExpression": "ADD #cur :minus",
        "ConditionExpression": "attribute_exists(pk)",
        "ExpressionAttributeNames": {"#cur": f"h{hour}"},
        "ExpressionAttributeValues": to_values({":minus": -1}),
    }} for pk in counter_pks]
    try:
        transact(items)
    except ClientError as exc:
        if "ConditionalCheckFailed" in cancellation_codes(exc):
            return False
        raise
    return True
