"""Rental records in the money table (pk `USER#<user>`, sk `RENTAL#<rent_id>`).

While a rental is live (provisioning, running, stopping) it carries
`activeKey`/`activeSort`, which put it in the sparse `ActiveIndex`: the
reconciler and the metering sweep read live rentals from there, never by a
Scan. `activeKey` is one of a few shards so no index partition is hot;
`activeSort` = `<status>#<user>#<rental>` groups a shard's rentals by status,
then by wallet.
"""

from __future__ import annotations

import hashlib
from typing import Any

from gpurent.config import settings
from gpurent.store.dynamo import ClientError, client, from_item, is_conditional_failure, key, to_values
from gpurent.store.money import TransactItem, money_put

ACTIVE_SHARDS = 8
LIVE = ("provisioning", "running", "stopping")


class StaleRental(Exception):
    """The rental was not in the state the caller expected; nothing was written."""

    def __init__(self, current: dict[str, Any] | None) -> None:
        super().__init__("rental moved on")
        self.current = current


def _table() -> str:
    return settings().money_table


def shard(user_id: str) -> str:
    return f"A#{int(hashlib.sha256(user_id.encode()).hexdigest(), 16) % ACTIVE_SHARDS}"


def active_fields(user_id: str, rental_id: str, status: str) -> dict[str, Any]:
    return {"activeKey": shard(user_id), "activeSort": f"{status}#{user_id}#{rental_id}"}


def rental_key(user_id: str, rental_id: str) -> dict[str, Any]:
    return key(f"USER#{user_id}", f"RENTAL#{rental_id}")


def put_item(record: dict[str, Any]) -> TransactItem:
    item = {"pk": f"USER#{record['userId']}", "sk": f"RENTAL#{record['id']}", **record}
    if record["status"] in LIVE:
        item.update(active_fields(record["userId"], record["id"], record["status"]))
    return money_put(item)


def _update_args(
    user_id: str, rental_id: str, sets: dict[str, Any], expected_status: tuple[str, ...],
    expected_version: int | None, remove: tuple[str, ...] = (),
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    names: dict[str, str] = {"#version": "version"}
    fields = dict(sets)
    new_status = fields.get("status")
    if new_status is not None:
        if new_status in LIVE:
            fields.update(active_fields(user_id, rental_id, new_status))
        else:
            remove = (*remove, "activeKey", "activeSort")
    parts = []
    for i, (k, v) in enumerate(fields.items()):
        if v is None:
            remove = (*remove, k)
            continue
        names[f"#f{i}"] = k
        values[f":v{i}"] = v
        parts.append(f"#f{i} = :v{i}")
    parts.append("#version = if_not_exists(#version, :zero) + :one")
    values[":zero"] = 0
    values[":one"] = 1
    expr = "SET " + ", ".join(parts)
    removed = [r for r in dict.fromkeys(remove) if r not in fields or fields[r] is None]
    if removed:
        for j, r in enumerate(removed):
            names[f"#r{j}"] = r
        expr += " REMOVE " + ", ".join(f"#r{j}" for j in range(len(removed)))
    conds = ["attribute_exists(pk)"]
    if expected_status:
        names["#status"] = "status"
        conds.append("#status IN (" + ", ".join(f":s{i}" for i in range(len(expected_status))) + ")")
        values.update({f":s{i}": s for i, s in enumerate(expected_status)})
    if expected_version is not None:
        conds.append("#version = :ver")
        values[":ver"] = expected_version
    return {
        "TableName": _table(),
        "Key": rental_key(user_id, rental_id),
        "UpdateExpression": expr,
        "ConditionExpression": " AND ".join(conds),
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": to_values(values),
    }


def update_item(user_id: str, rental_id: str, sets: dict[str, Any], expected_status: tuple[str, ...],
                expected_version: int | None = None, remove: tuple[str, ...] = ()) -> TransactItem:
    """The rental update as an item of a money transaction."""
    return {"Update": _update_args(user_id, rental_id, sets, expected_status, expected_version, remove)}


def update(user_id: str, rental_id: str, sets: dict[str, Any], expected_status: tuple[str, ...],
           expected_version: int | None = None, remove: tuple[str, ...] = ()) -> dict[str, Any]:
    """A conditional update on its own; StaleRental when the rental moved on."""
    args = _update_args(user_id, rental_id, sets, expected_status, expected_version, remove)
    try:
        r = client().update_item(**args, ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD")
    except ClientError as exc:
        if is_conditional_failure(exc):
            raise StaleRental(from_item(exc.response.get("Item"))) from exc  # type: ignore[arg-type]
        raise
    return from_item(r["Attributes"]) or {}


def get(user_id: str, rental_id: str) -> dict[str, Any] | None:
    r = client().get_item(TableName=_table(), Key=rental_key(user_id, rental_id), ConsistentRead=True)
    return from_item(r.get("Item"))


def list_for_user(
    user_id: str, before: str | None, limit: int, status: str | None
) -> tuple[list[dict[str, Any]], bool]:
    """Newest first; `before` is the last rental id of the previous page."""
    upper = f"RENTAL#{before}" if before else "RENTAL$"
    values: dict[str, Any] = {":pk": f"USER#{user_id}", ":lo": "RENTAL#", ":hi": upper}
    kwargs: dict[str, Any] = {
        "TableName": _table(),
        "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
        "ScanIndexForward": False,
    }
    if status:
        kwargs["FilterExpression"] = "#status = :status"
        kwargs["ExpressionAttributeNames"] = {"#status": "status"}
        values[":status"] = status
    kwargs["ExpressionAttributeValues"] = to_values(values)
    rows: list[dict[str, Any]] = []
    while True:
        kwargs["Limit"] = limit + 1 if status else limit + 1 - len(rows)
        r = client().query(**kwargs)
        for raw in r.get("Items", []):
            item = from_item(raw)
            if item is not None and item.get("id") != before:
                rows.append(item)
        if len(rows) > limit:
            return rows[:limit], True
        if "LastEvaluatedKey" not in r:
            return rows, False
        kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]


def live(status: str | None = None) -> list[dict[str, Any]]:
    """Live rentals from the sparse index (all statuses, or one), grouped by user."""
    out: list[dict[str, Any]] = []
    for n in range(ACTIVE_SHARDS):
        values: dict[str, Any] = {":k": f"A#{n}"}
        kwargs: dict[str, Any] = {"TableName": _table(), "IndexName": "ActiveIndex",
                                  "KeyConditionExpression": "activeKey = :k"}
        if status:
            kwargs["KeyConditionExpression"] += " AND begins_with(activeSort, :p)"
            values[":p"] = f"{status}#"
        kwargs["ExpressionAttributeValues"] = to_values(values)
        while True:
            r = client().query(**kwargs)
            out.extend(i for i in (from_item(x) for x in r.get("Items", [])) if i is not None)
            if "LastEvaluatedKey" not in r:
                break
            kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]
    return out


def put_plain(record: dict[str, Any]) -> TransactItem:
    return money_put(record)


def owner_item(rental_id: str, user_id: str) -> TransactItem:
    """`RENTAL#<id>` → its owner, so a provider label (our rental id) leads back to the rental."""
    return money_put({"pk": f"RENTAL#{rental_id}", "sk": "OWNER", "userId": user_id})


def find_by_id(rental_id: str) -> dict[str, Any] | None:
    r = client().get_item(TableName=_table(), Key=key(f"RENTAL#{rental_id}", "OWNER"), ConsistentRead=True)
    owner = from_item(r.get("Item"))
    if owner is None:
        return None
    return get(str(owner["userId"]), rental_id)


def live_for_user(user_id: str, status: str) -> list[dict[str, Any]]:
    """One user's live rentals in one status (one query of its index shard)."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": _table(), "IndexName": "ActiveIndex",
        "KeyConditionExpression": "activeKey = :k AND begins_with(activeSort, :p)",
        "ExpressionAttributeValues": to_values({":k": shard(user_id), ":p": f"{status}#{user_id}#"}),
    }
    while True:
        r = client().query(**kwargs)
        items.extend(i for i in (from_item(x) for x in r.get("Items", [])) if i is not None)
        if "LastEvaluatedKey" not in r:
            return items
        kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]
