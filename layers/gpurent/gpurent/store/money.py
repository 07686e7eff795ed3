"""Money records: wallets, operation markers and business rows in the money
table; ledger rows in the (append-only) ledger table.

Nothing here decides anything: `gpurent.wallet` plans a money operation and
this module writes it as one `TransactWriteItems`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from gpurent.config import settings
from gpurent.records import LaunchAnswer, LedgerRow, OpMarker, OpResult, StepRecord, WalletItem
from gpurent.store.dynamo import (
    ClientError,
    batch_get,
    cancellation_codes,
    client,
    error_code,
    from_item,
    is_conditional_failure,
    key,
    to_item,
    to_values,
)

TransactItem = dict[str, Any]


class TransactionCancelled(Exception):
    """The transaction was not applied; `codes[i]` is item i's reason (`None` when it was fine)."""

    def __init__(self, codes: list[str], items: list[dict[str, Any] | None]) -> None:
        super().__init__(f"transaction cancelled: {codes}")
        self.codes = codes
        self.items = items


class TransactionConflict(Exception):
    """Another transaction touched the same items at the same time; nothing was applied."""


def _money() -> str:
    return settings().money_table


def _ledger() -> str:
    return settings().ledger_table


def get_wallet(user_id: str) -> WalletItem | None:
    r = client().get_item(TableName=_money(), Key=key(f"USER#{user_id}", "WALLET"), ConsistentRead=True)
    return wallet_from_item(from_item(r.get("Item")))


def get_wallets(user_ids: Sequence[str]) -> dict[str, WalletItem]:
    """The wallet items of these users by user id (a user without one is left out), strongly
    consistent, 100 a request (`dynamo.batch_get`): the metering sweep reads its wallets this
    way, not one `GetItem` each."""
    items = batch_get(_money(), [key(f"USER#{u}", "WALLET") for u in dict.fromkeys(user_ids)])
    return {str(item["pk"]).removeprefix("USER#"): w for item in items if (w := wallet_from_item(item)) is not None}


_WALLET_FIELDS = WalletItem.__required_keys__ | WalletItem.__optional_keys__


def wallet_from_item(item: Mapping[str, Any] | None) -> WalletItem | None:
    """The wallet item (as read, or as a cancelled transaction returned it) → a WalletItem (the
    table's keys left off)."""
    if item is None:
        return None
    return cast(WalletItem, {k: v for k, v in item.items() if k in _WALLET_FIELDS})


def get_op(op_key: str) -> dict[str, Any] | None:
    r = client().get_item(TableName=_money(), Key=key(f"OP#{op_key}", "OP"), ConsistentRead=True)
    return from_item(r.get("Item"))


def wallet_update(user_id: str, state: WalletItem, expected_version: int) -> TransactItem:
    """Set the wallet to `state` if it is still at `expected_version` (0: not yet created)."""
    names = {f"#{k}": k for k in state}
    values: dict[str, object] = {f":{k}": v for k, v in state.items()}
    sets = ", ".join(f"#{k} = :{k}" for k in state)
    if expected_version == 0:
        # No money has moved yet (billing settings may already live on the item).
        condition = "attribute_not_exists(#version)"
        names["#version"] = "version"
    else:
        condition = "#version = :expected"
        values[":expected"] = expected_version
        names["#version"] = "version"
    return {
        "Update": {
            "TableName": _money(),
            "Key": key(f"USER#{user_id}", "WALLET"),
            "UpdateExpression": f"SET {sets}",
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": to_values(values),
        }
    }


def op_put(marker: OpMarker) -> TransactItem:
    """Write `marker` unless its key already has one (then the operation happened)."""
    return {
        "Put": {
            "TableName": _money(),
            "Item": to_item(op_marker_item(marker)),
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }


# Ledger rows of every type but the common `rental_charge` carry `typeKey` = `USER#<user>#<type>`,
# which puts them in the sparse `LedgerTypeIndex` (typeKey, sk): a page of a rare type is one query
# of its own, whatever the number of charges around it. `rental_charge` rows stay out of the
# index (they are most of the ledger: indexing them would double its write cost) and are paged
# from the table with a bounded read budget.
UNINDEXED_TYPES = ("rental_charge",)
TYPE_INDEX = "LedgerTypeIndex"
SCAN_BUDGET = 4  # queries per page of `?type=rental_charge`
SCAN_PAGE = 200  # rows each of those queries reads


def ledger_put(user_id: str, row: LedgerRow) -> TransactItem:
    item: dict[str, object] = {"pk": f"USER#{user_id}", "sk": row["id"], **row}
    if row["type"] not in UNINDEXED_TYPES:
        item["typeKey"] = f"USER#{user_id}#{row['type']}"
    return {
        "Put": {
            "TableName": _ledger(),
            "Item": to_item(item),
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }


def money_put(item: dict[str, Any], condition: str | None = "attribute_not_exists(pk)") -> TransactItem:
    put: dict[str, Any] = {"TableName": _money(), "Item": to_item(item)}
    if condition:
        put["ConditionExpression"] = condition
    return {"Put": put}


def money_update(
    pk: str, sk: str, update: str, condition: str | None, names: dict[str, str], values: dict[str, Any]
) -> TransactItem:
    out: dict[str, Any] = {
        "TableName": _money(),
        "Key": key(pk, sk),
        "UpdateExpression": update,
    }
    if names:
        out["ExpressionAttributeNames"] = names
    if values:
        out["ExpressionAttributeValues"] = to_values(values)
    if condition:
        out["ConditionExpression"] = condition
    return {"Update": out}


def transact(items: list[TransactItem], token: str | None = None) -> None:
    """Apply all items or none. Raises TransactionCancelled / TransactionConflict."""
    if not 0 < len(items) <= 100:
        raise ValueError(f"a transaction holds 1..100 items, not {len(items)}")
    kwargs: dict[str, Any] = {"TransactItems": items}
    if token:
        kwargs["ClientRequestToken"] = token[:36]
    for item in items:
        for op in item.values():
            if "ConditionExpression" in op:
                op.setdefault("ReturnValuesOnConditionCheckFailure", "ALL_OLD")
    try:
        client().transact_write_items(**kwargs)
    except ClientError as exc:
        code = error_code(exc)
        if code == "TransactionCanceledException":
            codes = cancellation_codes(exc)
            if "TransactionConflict" in codes and "ConditionalCheckFailed" not in codes:
                raise TransactionConflict() from exc
            reasons = exc.response.get("CancellationReasons") or []
            olds = [from_item(r.get("Item")) if r.get("Item") else None for r in reasons]
            raise TransactionCancelled(codes, olds) from exc
        if code in ("TransactionInProgressException", "TransactionConflictException"):
            raise TransactionConflict() from exc
        raise


def query_ledger(
    user_id: str, start_after: str | None, limit: int, entry_type: str | None
) -> tuple[list[LedgerRow], str | None]:
    """Up to `limit` ledger rows, newest first, strictly older than `start_after`, and the id to
    resume after (None: no older rows). A bounded number of reads whatever the filter:

    - no type: one query (two at a page's edge);
    - a rare type: its own slice of `LedgerTypeIndex`, one query;
    - `rental_charge`: the table filtered, at most `SCAN_BUDGET` queries of `SCAN_PAGE` rows; a
      page may then hold fewer than `limit` rows (even none) and resume where the reads stopped.
    """
    if entry_type is not None and entry_type not in UNINDEXED_TYPES:
        return _query_type_index(user_id, start_after, limit, entry_type)
    values: dict[str, Any] = {":pk": f"USER#{user_id}"}
    kwargs: dict[str, Any] = {"TableName": _ledger(), "ScanIndexForward": False, "ConsistentRead": True,
                              "KeyConditionExpression": "pk = :pk"}
    if start_after:
        kwargs["KeyConditionExpression"] = "pk = :pk AND sk < :after"
        values[":after"] = start_after
    if entry_type:
        kwargs["FilterExpression"] = "#type = :type"
        kwargs["ExpressionAttributeNames"] = {"#type": "type"}
        values[":type"] = entry_type
    kwargs["ExpressionAttributeValues"] = to_values(values)
    rows: list[LedgerRow] = []
    for _ in range(SCAN_BUDGET if entry_type else 2):
        # One row more than asked tells whether another page exists.
        kwargs["Limit"] = SCAN_PAGE if entry_type else limit + 1 - len(rows)
        r = client().query(**kwargs)
        for raw in r.get("Items", []):
            item = from_item(raw)
            if item is None:
                continue
            if len(rows) == limit:
                return rows, rows[-1]["id"]  # a row beyond the page: more exist
            rows.append(ledger_row_from_item(item))
        if "LastEvaluatedKey" not in r:
            return rows, None
        kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]
        if len(rows) == limit and not entry_type:
            return rows, rows[-1]["id"]
    # The budget is spent: resume after the last row read, matching or not.
    return rows, str(from_item(kwargs["ExclusiveStartKey"])["sk"])  # type: ignore[index]


def _query_type_index(user_id: str, start_after: str | None, limit: int,
                      entry_type: str) -> tuple[list[LedgerRow], str | None]:
    values: dict[str, Any] = {":tk": f"USER#{user_id}#{entry_type}"}
    cond = "typeKey = :tk"
    if start_after:
        cond += " AND sk < :after"
        values[":after"] = start_after
    r = client().query(TableName=_ledger(), IndexName=TYPE_INDEX, KeyConditionExpression=cond,
                       ExpressionAttributeValues=to_values(values), ScanIndexForward=False, Limit=limit + 1)
    rows = [ledger_row_from_item(i) for i in (from_item(x) for x in r.get("Items", [])) if i is not None]
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1]["id"]
    return rows, None


def all_ledger(user_id: str) -> list[LedgerRow]:
    """Every ledger row of a user, oldest first (tests, audits and reconciliation)."""
    rows: list[LedgerRow] = []
    kwargs: dict[str, Any] = {
        "TableName": _ledger(),
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": to_values({":pk": f"USER#{user_id}"}),
        "ConsistentRead": True,
    }
    while True:
        r = client().query(**kwargs)
        rows.extend(ledger_row_from_item(i) for i in (from_item(x) for x in r.get("Items", [])) if i is not None)
        if "LastEvaluatedKey" not in r:
            return rows
        kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]


def ledger_row_from_item(item: Mapping[str, Any]) -> LedgerRow:
    """A ledger item → the row as the wallet wrote it (the table's keys and `typeKey` left off)."""
    return cast(LedgerRow, {k: v for k, v in item.items() if k not in ("pk", "sk", "typeKey")})


# ---------------------------------------------------------------- typed operation markers

def op_marker_item(marker: OpMarker) -> dict[str, Any]:
    """An OpMarker → its item (`ttl` and `launchAnswer` only once set)."""
    r = marker.result
    item: dict[str, Any] = {
        "pk": f"OP#{marker.op_key}", "sk": "OP", "userId": marker.user_id, "fingerprint": marker.fingerprint,
        "createdAt": marker.created_at,
        "result": {"entries": r.entries, "available": r.available, "reserved": r.reserved, "steps": r.steps},
    }
    if marker.ttl is not None:
        item["ttl"] = marker.ttl
    if marker.launch_answer is not None:
        item["launchAnswer"] = dict(marker.launch_answer)
    return item


def op_marker_from_item(op_key: str, item: Mapping[str, Any]) -> OpMarker:
    """An operation marker item (`op_marker_item`) → OpMarker."""
    r = item.get("result") or {}
    ttl = item.get("ttl")
    answer = item.get("launchAnswer")
    return OpMarker(
        op_key=op_key, user_id=str(item.get("userId", "")), fingerprint=str(item.get("fingerprint", "")),
        created_at=float(item.get("createdAt", 0)),
        result=OpResult(entries=cast(list[LedgerRow], list(r.get("entries", []))),
                        available=int(r.get("available", 0)), reserved=int(r.get("reserved", 0)),
                        steps=cast(list[StepRecord], list(r.get("steps", [])))),
        ttl=int(ttl) if ttl is not None else None,
        launch_answer=cast(LaunchAnswer, dict(answer)) if answer else None,
    )


def set_launch_answer(op_key: str, answer: LaunchAnswer) -> bool:
    """Keep a launch's first answer on its operation marker (a replay of the launch answers
    it). False when the marker already holds one (the first stays) or does not exist."""
    try:
        client().update_item(
            TableName=_money(), Key=key(f"OP#{op_key}", "OP"), UpdateExpression="SET launchAnswer = :a",
            ConditionExpression="attribute_exists(pk) AND attribute_not_exists(launchAnswer)",
            ExpressionAttributeValues=to_values({":a": dict(answer)}),
        )
    except ClientError as exc:
        if is_conditional_failure(exc):
            return False
        raise
    return True


def get_op_marker(op_key: str) -> OpMarker | None:
    """The marker a money operation left under `op_key`, typed (None: it never happened)."""
    item = get_op(op_key)
    return op_marker_from_item(op_key, item) if item is not None else None


def query_audit(month: str, start_after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Up to `limit` admin audit rows of one month (`YYYY-MM`), newest first, strictly older
    than `start_after` (an audit id). Returns (rows, more)."""
    values: dict[str, Any] = {":pk": f"AUDIT#{month}"}
    condition = "pk = :pk"
    if start_after:
        condition += " AND sk < :after"
        values[":after"] = start_after
    r = client().query(TableName=_money(), KeyConditionExpression=condition, ScanIndexForward=False,
                       ExpressionAttributeValues=to_values(values), Limit=limit + 1)
    rows = [i for i in (from_item(x) for x in r.get("Items", [])) if i is not None]
    return rows[:limit], len(rows) > limit


if TYPE_CHECKING:  # this module is the adapter of `ports.MoneyStore`: mypy checks it fits
    from gpurent import ports
    from gpurent.store import money as _this

    _port: ports.MoneyStore = _this
