"""The tests' faster moto answers (tests/moto_fast.py) are what moto's own serializer answers:
every data-plane operation the store uses, with every attribute type, runs with both paths
compared on each call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests import moto_fast


@pytest.fixture
def ddb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from moto import mock_aws

    monkeypatch.delenv("GPURENT_MOTO_FAST", raising=False)
    moto_fast.install()
    moto_fast.check_both(True)
    with mock_aws():
        c = boto3.client("dynamodb", region_name="us-east-1")
        c.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                       KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                  {"AttributeName": "sk", "KeyType": "RANGE"}],
                       AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                             {"AttributeName": "sk", "AttributeType": "S"}])
        yield c
    moto_fast.check_both(False)


ITEM: dict[str, Any] = {
    "pk": {"S": "u#1"}, "sk": {"S": "wallet"}, "available": {"N": "1500"}, "ratio": {"N": "0.25"},
    "on": {"BOOL": True}, "none": {"NULL": True}, "tags": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2"]},
    "list": {"L": [{"S": "x"}, {"N": "3"}, {"M": {"k": {"S": "v"}}}]},
    "map": {"M": {"card": {"M": {"last4": {"S": "4242"}}}, "n": {"N": "-7"}}}}


def test_every_data_plane_answer_matches_the_serializer(ddb: Any) -> None:
    before = moto_fast.answered_fast
    ddb.put_item(TableName="t", Item=ITEM, ReturnValues="ALL_OLD")
    assert ddb.get_item(TableName="t", Key={"pk": ITEM["pk"], "sk": ITEM["sk"]}, ConsistentRead=True)["Item"] == ITEM
    updated = ddb.update_item(TableName="t", Key={"pk": ITEM["pk"], "sk": ITEM["sk"]},
                              UpdateExpression="SET available = available + :d", ReturnValues="ALL_NEW",
                              ExpressionAttributeValues={":d": {"N": "-500"}})
    assert updated["Attributes"]["available"] == {"N": "1000"}
    ddb.transact_write_items(TransactItems=[
        {"Put": {"TableName": "t", "Item": {"pk": {"S": "u#1"}, "sk": {"S": "ledger#1"}, "amount": {"N": "5"}}}},
        {"Update": {"TableName": "t", "Key": {"pk": ITEM["pk"], "sk": ITEM["sk"]},
                    "UpdateExpression": "SET available = available - :a", "ConditionExpression": "available >= :a",
                    "ExpressionAttributeValues": {":a": {"N": "5"}}}}])
    page = ddb.query(TableName="t", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "u#1"}},
                     Limit=1)
    assert page["Count"] == 1 and "LastEvaluatedKey" in page
    assert ddb.scan(TableName="t")["Count"] == 2
    got = ddb.batch_get_item(RequestItems={"t": {"Keys": [{"pk": ITEM["pk"], "sk": ITEM["sk"]}]}})
    assert got["Responses"]["t"][0]["available"] == {"N": "995"}
    assert ddb.transact_get_items(TransactItems=[{"Get": {"TableName": "t", "Key": {"pk": ITEM["pk"],
                                                                                    "sk": ITEM["sk"]}}}])["Responses"]
    ddb.batch_write_item(RequestItems={"t": [{"DeleteRequest": {"Key": {"pk": ITEM["pk"], "sk": {"S": "ledger#1"}}}}]})
    deleted = ddb.delete_item(TableName="t", Key={"pk": ITEM["pk"], "sk": ITEM["sk"]}, ReturnValues="ALL_OLD")
    assert deleted["Attributes"]["pk"] == ITEM["pk"]
    assert moto_fast.answered_fast - before >= 10  # every call above took the fast path, compared


def test_refusals_and_binary_values_keep_the_serializer(ddb: Any) -> None:
    ddb.put_item(TableName="t", Item={"pk": {"S": "b"}, "sk": {"S": "1"}, "blob": {"B": b"\x00\x01"}})
    before = moto_fast.answered_fast
    assert ddb.get_item(TableName="t", Key={"pk": {"S": "b"}, "sk": {"S": "1"}})["Item"]["blob"] == {"B": b"\x00\x01"}
    assert moto_fast.answered_fast == before  # bytes are base64 on the wire: the serializer's job
    with pytest.raises(ClientError) as refused:
        ddb.put_item(TableName="t", Item={"pk": {"S": "b"}, "sk": {"S": "1"}},
                     ConditionExpression="attribute_not_exists(pk)")
    assert refused.value.response["Error"]["Code"] == "ConditionalCheckFailedException"


def _table(name: str = "t") -> Any:
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    return dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].tables[name]


def _key(sk: str) -> dict[str, Any]:
    return {"pk": {"S": "w"}, "sk": {"S": sk}}


def _all(ddb: Any) -> list[dict[str, Any]]:
    return sorted(ddb.scan(TableName="t", ConsistentRead=True)["Items"], key=lambda i: i["sk"]["S"])


def _seed(ddb: Any) -> None:
    for sk, n in (("wallet", "100"), ("hold", "7"), ("other", "1")):
        ddb.put_item(TableName="t", Item={**_key(sk), "n": {"N": n}, "m": {"M": {"k": {"L": [{"S": sk}]}}}})


def test_a_cancelled_transaction_puts_back_each_item_it_touched_without_copying_the_table(ddb: Any) -> None:
    _seed(ddb)
    before, table = _all(ddb), _table()
    with pytest.raises(ClientError) as cancelled:
        ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": "t", "Item": {**_key("ledger#1"), "n": {"N": "5"}}}},
            {"Update": {"TableName": "t", "Key": _key("wallet"),
                        "UpdateExpression": "SET n = n - :a, m.k[0] = :s", "ExpressionAttributeValues": {
                            ":a": {"N": "5"}, ":s": {"S": "changed"}}}},
            {"Delete": {"TableName": "t", "Key": _key("hold")}},
            {"ConditionCheck": {"TableName": "t", "Key": _key("other"), "ConditionExpression": "n > :z",
                                "ExpressionAttributeValues": {":z": {"N": "9"}}}}])
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert _all(ddb) == before  # the put is gone, the update and the delete undone
    assert _table() is table  # moto's own backup would have swapped in a deep copy of the table


def test_a_refused_operation_mid_transaction_undoes_the_writes_before_it(ddb: Any) -> None:
    _seed(ddb)
    before = _all(ddb)
    with pytest.raises(ClientError):
        ddb.transact_write_items(TransactItems=[
            {"Update": {"TableName": "t", "Key": _key("wallet"), "UpdateExpression": "SET n = :z",
                        "ExpressionAttributeValues": {":z": {"N": "0"}}}},
            {"Put": {"TableName": "t", "Item": {"pk": {"S": "w"}, "n": {"N": "1"}}}}])  # no sort key
    assert _all(ddb) == before


def test_a_transaction_that_holds_writes_every_item(ddb: Any) -> None:
    _seed(ddb)
    ddb.transact_write_items(TransactItems=[
        {"Put": {"TableName": "t", "Item": {**_key("ledger#1"), "n": {"N": "5"}}}},
        {"Update": {"TableName": "t", "Key": _key("wallet"), "UpdateExpression": "SET n = n - :a",
                    "ExpressionAttributeValues": {":a": {"N": "5"}}}},
        {"Delete": {"TableName": "t", "Key": _key("hold")}}])
    assert [(i["sk"]["S"], i["n"]["N"]) for i in _all(ddb)] == [("ledger#1", "5"), ("other", "1"), ("wallet", "95")]


def _sets_sorted(value: Any) -> Any:
    """The wire JSON with each set's members in order: a set has none (moto's own projection
    lists a string set's members in the order of a Python set, which varies between runs)."""
    if isinstance(value, dict):
        return {k: sorted(v) if k in ("SS", "NS", "BS") else _sets_sorted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sets_sorted(v) for v in value]
    return value


def test_a_projection_is_what_moto_itself_projects(ddb: Any) -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    item = Item(DynamoType(ITEM["pk"]), DynamoType(ITEM["sk"]), ITEM)
    paths = [["pk"], ["map", "card", "last4"], ["list[2]", "k"], ["map"], ["map", "n"], ["list[1]"], ["missing"],
             ["tags"], ["none"]]
    for chosen in (paths, paths[:1], paths[1:3], list(reversed(paths))):
        assert _sets_sorted(item.project(chosen).to_json()) == \
            _sets_sorted(moto_fast.moto_project(item, chosen).to_json()), chosen
    assert item.to_json()["Attributes"] == ITEM  # projecting never changes the item
    got = ddb.put_item(TableName="t", Item=ITEM) and ddb.get_item(
        TableName="t", Key={"pk": ITEM["pk"], "sk": ITEM["sk"]}, ProjectionExpression="#m.card, available, ns",
        ExpressionAttributeNames={"#m": "map"})["Item"]
    assert got == {"map": {"M": {"card": ITEM["map"]["M"]["card"]}}, "available": ITEM["available"], "ns": ITEM["ns"]}


def test_an_update_that_passed_its_static_checks_once_is_still_refused_where_they_differ(ddb: Any) -> None:
    """The checks that read only the expression, its names and the table's keys run once per
    combination: the same expression with names that now point at a key, or at one path
    twice, is still refused; the combination that passed still applies its values."""
    _seed(ddb)

    def update(names: dict[str, str], value: str = "1") -> None:
        ddb.update_item(TableName="t", Key=_key("wallet"), UpdateExpression="SET #a = :v, #b = :v",
                        ExpressionAttributeNames=names, ExpressionAttributeValues={":v": {"N": value}})

    for value in ("3", "4"):  # passes, then passes again from memory with a new value
        update({"#a": "n", "#b": "x"}, value)
        got = ddb.get_item(TableName="t", Key=_key("wallet"), ConsistentRead=True)["Item"]
        assert (got["n"]["N"], got["x"]["N"]) == (value, value)
    with pytest.raises(ClientError, match="key"):
        update({"#a": "n", "#b": "sk"})  # a key attribute
    with pytest.raises(ClientError, match=r"[Tt]wo document paths"):
        update({"#a": "n", "#b": "n"})  # one path twice
    with pytest.raises(ClientError, match="key"):
        update({"#a": "n", "#b": "sk"})  # refused again: a refusal is never remembered
