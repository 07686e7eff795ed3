"""The IAM tier's own pieces: how a botocore call becomes the authorizations AWS makes, and
how a role's statements (as SAM expands them) decide one."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.iam import calls
from tests.iam.policy import Request, Stack, deployed, wildcard

REGION = "us-east-1"
TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/"


# ---------------------------------------------------------------- calls → authorizations

def test_a_transaction_is_one_authorization_per_item_on_its_table() -> None:
    items = [
        {"Put": {"TableName": "t-ledger", "Item": {}}},
        {"Update": {"TableName": "t-money", "Key": {}, "UpdateExpression": "SET a = :a"}},
        {"ConditionCheck": {"TableName": "t-identity", "Key": {}, "ConditionExpression": "attribute_exists(pk)"}},
        {"Delete": {"TableName": "t-money", "Key": {}}},
    ]
    got = calls.requests_of("dynamodb", "TransactWriteItems", {"TransactItems": items}, REGION)
    assert got == [Request("dynamodb:PutItem", TABLE + "t-ledger"), Request("dynamodb:UpdateItem", TABLE + "t-money"),
                   Request("dynamodb:ConditionCheckItem", TABLE + "t-identity"),
                   Request("dynamodb:DeleteItem", TABLE + "t-money")]


def test_a_query_of_an_index_is_authorized_on_the_index() -> None:
    got = calls.requests_of("dynamodb", "Query", {"TableName": "t-money", "IndexName": "ActiveIndex"}, REGION)
    assert got == [Request("dynamodb:Query", TABLE + "t-money/index/ActiveIndex")]
    got = calls.requests_of("dynamodb", "Query", {"TableName": "t-money"}, REGION)
    assert got == [Request("dynamodb:Query", TABLE + "t-money")]


def test_batches_and_transactional_reads() -> None:
    got = calls.requests_of("dynamodb", "BatchWriteItem", {"RequestItems": {"a": [], "b": []}}, REGION)
    assert got == [Request("dynamodb:BatchWriteItem", TABLE + "a"), Request("dynamodb:BatchWriteItem", TABLE + "b")]
    got = calls.requests_of("dynamodb", "TransactGetItems",
                            {"TransactItems": [{"Get": {"TableName": "a", "Key": {}}}]}, REGION)
    assert got == [Request("dynamodb:GetItem", TABLE + "a")]


def test_email_is_authorized_on_the_sending_domain_with_the_from_address() -> None:
    got = calls.requests_of("ses", "SendEmail", {"Source": "gpurent <no-reply@mail.example.com>"}, REGION)
    assert got == [Request("ses:SendEmail", "arn:aws:ses:us-east-1:123456789012:identity/mail.example.com",
                           (("ses:FromAddress", "no-reply@mail.example.com"),))]


def test_parameters_secrets_and_queues() -> None:
    assert calls.requests_of("ssm", "GetParameter", {"Name": "/gpurent/vast-api-key"}, REGION) == [
        Request("ssm:GetParameter", "arn:aws:ssm:us-east-1:123456789012:parameter/gpurent/vast-api-key")]
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:CursorKey-AbCdEf"
    assert calls.requests_of("secretsmanager", "GetSecretValue", {"SecretId": arn}, REGION) == [
        Request("secretsmanager:GetSecretValue", arn)]
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/gpurent-TimerQueue-X"
    assert calls.requests_of("sqs", "SendMessage", {"QueueUrl": url, "MessageBody": "{}"}, REGION) == [
        Request("sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:gpurent-TimerQueue-X")]


def test_a_call_the_tier_does_not_know_is_refused_not_waved_through() -> None:
    with pytest.raises(calls.Unknown):
        calls.requests_of("dynamodb", "ExecuteStatement", {"Statement": "UPDATE …"}, REGION)
    with pytest.raises(calls.Unknown):
        calls.requests_of("s3", "GetObject", {}, REGION)


# ---------------------------------------------------------------- deciding

def stack(statements: list[dict[str, Any]], table_policy: list[dict[str, Any]] | None = None) -> Stack:
    ledger: dict[str, Any] = {"Type": "AWS::DynamoDB::Table", "Properties": {}}
    if table_policy:
        ledger["Properties"]["ResourcePolicy"] = {"PolicyDocument": {"Statement": table_policy}}
    return Stack({
        "Parameters": {"MailFrom": {"Type": "String", "Default": "no-reply@example.com"}},
        "Resources": {
            "Fn": {"Type": "AWS::Lambda::Function", "Properties": {
                "Role": {"Fn::GetAtt": ["FnRole", "Arn"]},
                "Environment": {"Variables": {"LEDGER_TABLE": {"Ref": "LedgerTable"},
                                              "MAIL_FROM": {"Ref": "MailFrom"}}}}},
            "FnRole": {"Type": "AWS::IAM::Role", "Properties": {
                "Policies": [{"PolicyName": "p", "PolicyDocument": {"Statement": statements}}]}},
            "LedgerTable": ledger,
        }})


ENV = {"LEDGER_TABLE": "t-ledger", "AWS_REGION": REGION}
PUT = Request("dynamodb:PutItem", TABLE + "t-ledger")
UPDATE = Request("dynamodb:UpdateItem", TABLE + "t-ledger")


def test_an_explicit_deny_wins_over_any_allow() -> None:
    s = stack([{"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"},
               {"Effect": "Deny", "Action": ["dynamodb:UpdateItem"],
                "Resource": {"Fn::GetAtt": ["LedgerTable", "Arn"]}}])
    assert s.decide("Fn", PUT, ENV).allowed
    d = s.decide("Fn", UPDATE, ENV)
    assert not d.allowed and "explicit Deny" in d.reason


def test_nothing_is_allowed_unless_a_statement_allows_it() -> None:
    s = stack([{"Effect": "Allow", "Action": "dynamodb:PutItem", "Resource": {"Fn::Sub": "${LedgerTable.Arn}"}}])
    assert s.decide("Fn", PUT, ENV).allowed
    assert not s.decide("Fn", UPDATE, ENV).allowed
    # The physical name comes from the function's environment: another table is another resource.
    assert not s.decide("Fn", Request("dynamodb:PutItem", TABLE + "other-ledger"), ENV).allowed
    # An index is a resource of its own.
    assert not s.decide("Fn", Request("dynamodb:PutItem", TABLE + "t-ledger/index/I"), ENV).allowed


def test_a_table_resource_policy_denies_every_principal() -> None:
    s = stack([{"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}],
              table_policy=[{"Effect": "Deny", "Principal": "*", "Action": ["dynamodb:UpdateItem"], "Resource": "*"}])
    assert s.decide("Fn", PUT, ENV).allowed
    d = s.decide("Fn", UPDATE, ENV)
    assert not d.allowed and "LedgerTable/ResourcePolicy" in d.reason
    # It governs its own table only.
    assert s.decide("Fn", Request("dynamodb:UpdateItem", TABLE + "t-money"), ENV).allowed


def test_conditions_on_the_from_address() -> None:
    s = stack([{"Effect": "Allow", "Action": "ses:SendEmail", "Resource": "arn:aws:ses:*:*:identity/example.com",
                "Condition": {"StringEquals": {"ses:FromAddress": {"Ref": "MailFrom"}}}}])
    arn = "arn:aws:ses:us-east-1:123456789012:identity/example.com"
    env = {**ENV, "MAIL_FROM": "no-reply@example.com"}
    assert s.decide("Fn", Request("ses:SendEmail", arn, (("ses:FromAddress", "no-reply@example.com"),)), env).allowed
    assert not s.decide("Fn", Request("ses:SendEmail", arn, (("ses:FromAddress", "ceo@example.com"),)), env).allowed
    assert not s.decide("Fn", Request("ses:SendEmail", arn), env).allowed  # no key, no match


def test_an_item_operation_carries_its_partition_key_for_a_leading_keys_condition() -> None:
    got = calls.requests_of("dynamodb", "DeleteItem",
                            {"TableName": "t-ledger", "Key": {"pk": {"S": "OUTBOX#3"}, "sk": {"S": "u#1"}}}, REGION)
    assert got == [Request("dynamodb:DeleteItem", TABLE + "t-ledger", (("dynamodb:LeadingKeys", "OUTBOX#3"),))]
    items = [{"Put": {"TableName": "t-money", "Item": {"pk": {"S": "USER#u"}, "sk": {"S": "WALLET"}}}}]
    (put,) = calls.requests_of("dynamodb", "TransactWriteItems", {"TransactItems": items}, REGION)
    assert put.key("dynamodb:LeadingKeys") == "USER#u"
    s = stack([{"Effect": "Allow", "Action": "dynamodb:DeleteItem", "Resource": {"Fn::GetAtt": ["LedgerTable", "Arn"]},
                "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["OUTBOX#*"]}}}])
    assert s.decide("Fn", got[0], ENV).allowed
    wallet = Request("dynamodb:DeleteItem", TABLE + "t-ledger", (("dynamodb:LeadingKeys", "USER#u"),))
    assert not s.decide("Fn", wallet, ENV).allowed  # only outbox items may be deleted


def test_wildcards_are_iams() -> None:
    assert wildcard("sqs:SendMessage*", "sqs:SendMessage")
    stripe = "arn:aws:ssm:*:*:parameter/gpurent/stripe-*"
    assert wildcard(stripe, "arn:aws:ssm:us-east-1:1:parameter/gpurent/stripe-key")
    assert not wildcard(stripe, "arn:aws:ssm:us-east-1:1:parameter/gpurent/vast")
    assert wildcard("table/?-money", "table/t-money") and not wildcard("table/?-money", "table/tt-money")


def test_removing_one_grant_leaves_the_rest() -> None:
    s = stack([{"Effect": "Allow", "Action": ["dynamodb:PutItem", "dynamodb:UpdateItem"],
                "Resource": [{"Fn::GetAtt": ["LedgerTable", "Arn"]}, "arn:aws:dynamodb:*:*:table/other"]}])
    cut = s.without("Fn", "FnRole/p#0", "dynamodb:PutItem", {"Fn::GetAtt": ["LedgerTable", "Arn"]})
    assert not cut.decide("Fn", PUT, ENV).allowed
    assert cut.decide("Fn", UPDATE, ENV).allowed
    assert cut.decide("Fn", Request("dynamodb:PutItem", TABLE + "other"), ENV).allowed
    assert s.decide("Fn", PUT, ENV).allowed  # the original is untouched


# ---------------------------------------------------------------- the template, as SAM expands it

def test_every_function_has_a_role_the_tier_can_read() -> None:
    st = deployed()
    assert len(st.functions()) >= 11
    for fn in st.functions():
        assert st.role_statements(fn), fn



def test_workers_expanding_one_template_at_once_run_one_transform(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a fresh clone every pytest worker asks for the same expansion at once. Once, a worker's
    clean-up removed the input file another worker's transform had not read yet (a CI failure).
    Now one transform runs, under a lock, on an input file of its own, and the others wait and
    read its result. Here SAM's transform is a stand-in that reads its input only after a pause,
    and four threads (each its own lock, as processes are) ask at once."""
    import subprocess
    import threading
    import time
    import uuid
    from pathlib import Path

    from tests.iam import policy

    marker = f"race-{uuid.uuid4().hex}"  # a template no run has expanded: nothing cached
    transforms: list[str] = []

    def transform(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        transforms.append(argv[-1])
        time.sleep(0.3)  # the others ask meanwhile
        text = Path(argv[-1]).read_text()  # gone if another worker's clean-up took it
        return subprocess.CompletedProcess(argv, 0, stdout=json.dumps({"Description": text.split()[-1]}))

    monkeypatch.setattr(policy, "_sam_python", lambda: "python")
    monkeypatch.setattr(subprocess, "run", transform)  # the one `policy.expand` calls
    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: results.append(policy.expand(f"Description: {marker}\n")))
               for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [{"Description": marker}] * 4
        assert len(transforms) == 1  # one ran; the others read its result
    finally:
        cache = Path(policy.__file__).resolve().parents[2] / ".pytest_cache" / "iam"
        for f in cache.glob("*.json"):
            if marker in f.read_text():
                f.unlink()
                f.with_suffix(".lock").unlink(missing_ok=True)
