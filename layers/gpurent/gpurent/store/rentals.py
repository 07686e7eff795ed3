"""Rental records in the money table (pk `USER#<user>`, sk `RENTAL#<rent_id>`).

While a rental is live (provisioning, running, stopping) it carries
`activeKey`/`activeSort`, which put it in the sparse `ActiveIndex`: the
metering sweep and timers find live rentals there, never by a Scan.
`activeKey` is one of a few shards so no index partition is hot;
`activeSort` = `<status>#<user>#<rental>` groups a shard's rentals by status,
then by wallet. The index projects only its keys: it names the rentals, and
they are then read whole from the table (`get_many`, strongly consistent,
100 a request). A metering tick rewrites every running rental every minute;
an index holding any attribute the tick writes would be written with it (one
more write unit per rental per minute), and keys change only with the status.

The reconciler reads them by provider instead, from the sparse `ProviderIndex`
(key `provider`, `activeSort`: the same live rentals, no attribute of their own). It
projects only what the reconciler compares with a provider's list (`LIVE_PROJECTION`),
none of which a metering tick writes, so the sweep's per-minute updates never rewrite it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gpurent.config import settings
from gpurent.records import (
    LIVE,
    LiveRental,
    PassRecord,
    Rental,
    RentalChanges,
    RentalStatus,
    active_shard,
    active_shards,
)
from gpurent.store.dynamo import (
    ClientError,
    batch_get,
    client,
    from_item,
    is_conditional_failure,
    key,
    to_item,
    to_values,
)
from gpurent.store.money import TransactItem, money_put
from gpurent.store.rental_items import Item, changes_item, live_rental_from_item, rental_from_item, rental_item

ACTIVE_INDEX = "ActiveIndex"  # KEYS_ONLY (template.yaml; tests/unit/core checks it)
PROVIDER_INDEX = "ProviderIndex"
# The ProviderIndex's projected attributes besides the keys (template.yaml must list the same:
# tests/template checks it). None of them changes on a metering tick.
LIVE_PROJECTION = (
    "instanceId", "createdAt", "allocatingUntil", "allocationUncertain", "runningAt", "lastHealthyAt",
    "unhealthySince", "badChecks", "autoStopAfterHours", "maxTotalCents", "pricePerHourCents",
)


class StaleRental(Exception):
    """The rental was not in the state the caller expected; nothing was written."""

    def __init__(self, current: Rental | None) -> None:
        super().__init__("rental moved on")
        self.current = current


def _table() -> str:
    return settings().money_table


def shard(user_id: str) -> str:
    return f"A#{active_shard(user_id)}"


def active_fields(user_id: str, rental_id: str, status: str) -> Item:
    return {"activeKey": shard(user_id), "activeSort": f"{status}#{user_id}#{rental_id}"}


def rental_key(user_id: str, rental_id: str) -> Item:
    return key(f"USER#{user_id}", f"RENTAL#{rental_id}")


def _rental(item: Mapping[str, Any] | None) -> Rental | None:
    return rental_from_item(item) if item is not None else None


# ---------------------------------------------------------------- writes

def put_item(r: Rental) -> TransactItem:
    item = {"pk": f"USER#{r.user_id}", "sk": f"RENTAL#{r.id}", **rental_item(r)}
    if r.is_live:
        item.update(active_fields(r.user_id, r.id, r.status))
    return money_put(item)


def _update_args(
    user_id: str, rental_id: str, changes: RentalChanges, expected_status: tuple[RentalStatus, ...],
    expected_version: int | None, not_metered_past: float | None = None,
) -> Item:
    values: Item = {}
    names: dict[str, str] = {"#version": "version"}
    attrs = changes_item(changes)
    remove: tuple[str, ...] = ()
    new_status = changes.get("status")
    if new_status is not None:
        if new_status in LIVE:
            attrs.update(active_fields(user_id, rental_id, new_status))
        else:
            remove = ("activeKey", "activeSort")
    parts = []
    for i, (k, v) in enumerate(attrs.items()):
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
    removed = [r for r in dict.fromkeys(remove) if r not in attrs or attrs[r] is None]
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
    if not_metered_past is not None:
        names["#metered"] = "meteredUntil"
        conds.append("(attribute_not_exists(#metered) OR #metered <= :meteredMax)")
        values[":meteredMax"] = not_metered_past
    return {
        "TableName": _table(),
        "Key": rental_key(user_id, rental_id),
        "UpdateExpression": expr,
        "ConditionExpression": " AND ".join(conds),
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": to_values(values),
    }


def update_item(user_id: str, rental_id: str, changes: RentalChanges, expected_status: tuple[RentalStatus, ...],
                expected_version: int | None = None, not_metered_past: float | None = None) -> TransactItem:
    """The rental update as an item of a money transaction. `not_metered_past`: the write also
    requires the stored `meteredUntil` to be at most this (metering never moves it back)."""
    return {"Update": _update_args(user_id, rental_id, changes, expected_status, expected_version,
                                   not_metered_past)}


def update(user_id: str, rental_id: str, changes: RentalChanges, expected_status: tuple[RentalStatus, ...],
           expected_version: int | None = None) -> Rental:
    """A conditional update on its own; StaleRental when the rental moved on."""
    args = _update_args(user_id, rental_id, changes, expected_status, expected_version)
    try:
        r = client().update_item(**args, ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD")
    except ClientError as exc:
        if is_conditional_failure(exc):
            raise StaleRental(_rental(from_item(exc.response.get("Item")))) from exc  # type: ignore[arg-type]
        raise
    return rental_from_item(from_item(r["Attributes"]) or {})


def owner_item(rental_id: str, user_id: str) -> TransactItem:
    """`RENTAL#<id>` → its owner, so a provider label (our rental id) leads back to the rental."""
    return money_put({"pk": f"RENTAL#{rental_id}", "sk": "OWNER", "userId": user_id})


# ---------------------------------------------------------------- reads

def get(user_id: str, rental_id: str) -> Rental | None:
    r = client().get_item(TableName=_table(), Key=rental_key(user_id, rental_id), ConsistentRead=True)
    return _rental(from_item(r.get("Item")))


def list_for_user(
    user_id: str, before: str | None, limit: int, status: RentalStatus | None
) -> tuple[list[Rental], bool]:
    """Newest first; `before` is the last rental id of the previous page."""
    upper = f"RENTAL#{before}" if before else "RENTAL$"
    values: Item = {":pk": f"USER#{user_id}", ":lo": "RENTAL#", ":hi": upper}
    kwargs: Item = {
        "TableName": _table(),
        "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
        "ScanIndexForward": False,
    }
    if status:
        kwargs["FilterExpression"] = "#status = :status"
        kwargs["ExpressionAttributeNames"] = {"#status": "status"}
        values[":status"] = status
    kwargs["ExpressionAttributeValues"] = to_values(values)
    rows: list[Rental] = []
    while True:
        kwargs["Limit"] = limit + 1 if status else limit + 1 - len(rows)
        r = client().query(**kwargs)
        for raw in r.get("Items", []):
            item = from_item(raw)
            if item is not None and item.get("id") != before:
                rows.append(rental_from_item(item))
        if len(rows) > limit:
            return rows[:limit], True
        if "LastEvaluatedKey" not in r:
            return rows, False
        kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]


def get_many(keys: Sequence[tuple[str, str]]) -> list[Rental]:
    """The rentals named by (user, rental id), read whole and strongly consistent, in the order
    given; one absent from the table is left out (`dynamo.batch_get`: 100 keys a request)."""
    found: dict[tuple[str, str], Rental] = {}
    for item in batch_get(_table(), [rental_key(u, r) for u, r in dict.fromkeys(keys)]):
        r = rental_from_item(item)
        found[(r.user_id, r.id)] = r
    return [found[k] for k in dict.fromkeys(keys) if k in found]


def _live_keys(kwargs: Item) -> list[tuple[str, str]]:
    """(user, rental id) of each `ActiveIndex` entry the query names, every page."""
    out: list[tuple[str, str]] = []
    while True:
        r = client().query(**kwargs)
        for raw in r.get("Items", []):
            item = from_item(raw) or {}
            _, user_id, rental_id = str(item["activeSort"]).split("#", 2)
            out.append((user_id, rental_id))
        if "LastEvaluatedKey" not in r:
            return out
        kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]


def _still(rentals: list[Rental], status: RentalStatus | None) -> list[Rental]:
    """What the index named, as the table has it now: still live (and in `status`)."""
    return [r for r in rentals if r.is_live and (status is None or r.status == status)]


def live(status: RentalStatus | None = None) -> list[Rental]:
    """Live rentals from the sparse index (all statuses, or one), grouped by user."""
    out: list[Rental] = []
    for n in range(active_shards()):
        out.extend(live_in_shard(n, status))
    return out


def live_keys_in_shard(n: int, status: RentalStatus | None = None) -> list[tuple[str, str]]:
    """(user, rental id) of one `ActiveIndex` shard's live rentals (all statuses, or one),
    ordered by user: the index only (eventually consistent), no rental read."""
    values: Item = {":k": f"A#{n}"}
    kwargs: Item = {"TableName": _table(), "IndexName": ACTIVE_INDEX,
                    "KeyConditionExpression": "activeKey = :k"}
    if status:
        kwargs["KeyConditionExpression"] += " AND begins_with(activeSort, :p)"
        values[":p"] = f"{status}#"
    kwargs["ExpressionAttributeValues"] = to_values(values)
    return _live_keys(kwargs)


def live_in_shard(n: int, status: RentalStatus | None = None) -> list[Rental]:
    """One `ActiveIndex` shard's live rentals (all statuses, or one), ordered by user."""
    return sorted(_still(get_many(live_keys_in_shard(n, status)), status), key=lambda r: r.user_id)


def provider_live(provider: str) -> list[LiveRental]:
    """Every live rental placed on `provider`, from the `ProviderIndex` (eventually
    consistent: a write of the last second may not show yet), page by page."""
    kwargs: Item = {
        "TableName": _table(), "IndexName": PROVIDER_INDEX, "KeyConditionExpression": "#p = :p",
        "ExpressionAttributeNames": {"#p": "provider"}, "ExpressionAttributeValues": to_values({":p": provider}),
    }
    out: list[LiveRental] = []
    while True:
        r = client().query(**kwargs)
        out.extend(live_rental_from_item(i) for i in (from_item(x) for x in r.get("Items", [])) if i is not None)
        if "LastEvaluatedKey" not in r:
            return out
        kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]


def _pass_key(provider: str) -> Item:
    return key(f"RECONCILE#{provider}", "PASS")


def get_pass(provider: str) -> PassRecord | None:
    """The record of `provider`'s last complete reconcile pass (`reconciler`)."""
    r = client().get_item(TableName=_table(), Key=_pass_key(provider), ConsistentRead=True)
    item = from_item(r.get("Item"))
    if item is None:
        return None
    return PassRecord(provider, float(item["listedAt"]), float(item["coverFrom"]))


def put_pass(record: PassRecord) -> bool:
    """Record a pass; False when a later one is already recorded (records only move forward)."""
    try:
        client().put_item(
            TableName=_table(),
            Item=to_item({"pk": f"RECONCILE#{record.provider}", "sk": "PASS", "listedAt": record.listed_at,
                            "coverFrom": record.cover_from}),
            ConditionExpression="attribute_not_exists(pk) OR listedAt < :t",
            ExpressionAttributeValues=to_values({":t": record.listed_at}),
        )
    except ClientError as exc:
        if is_conditional_failure(exc):
            return False
        raise
    return True


def find_by_id(rental_id: str) -> Rental | None:
    r = client().get_item(TableName=_table(), Key=key(f"RENTAL#{rental_id}", "OWNER"), ConsistentRead=True)
    owner = from_item(r.get("Item"))
    if owner is None:
        return None
    return get(str(owner["userId"]), rental_id)


def live_for_user(user_id: str, status: RentalStatus) -> list[Rental]:
    """One user's live rentals in one status (one query of its index shard, then the rentals)."""
    keys = _live_keys({
        "TableName": _table(), "IndexName": ACTIVE_INDEX,
        "KeyConditionExpression": "activeKey = :k AND begins_with(activeSort, :p)",
        "ExpressionAttributeValues": to_values({":k": shard(user_id), ":p": f"{status}#{user_id}#"}),
    })
    return _still(get_many(keys), status)


if TYPE_CHECKING:  # this module is the adapter of `ports.RentalStore`: mypy checks it fits
    from gpurent import ports
    from gpurent.store import rentals as _this

    _port: ports.RentalStore = _this
