"""What IAM authorizes for one botocore call: the actions and resource ARNs AWS checks.

- DynamoDB: the operation on its table's ARN; a `Query`/`Scan` of an index on the
  index's ARN (`table/T/index/I`); `TransactWriteItems` is one authorization per item
  (`PutItem`, `UpdateItem`, `DeleteItem`, `ConditionCheckItem` on that item's table),
  `TransactGetItems` one `GetItem` per item; `BatchWriteItem`/`BatchGetItem` the batch
  action on each table named. An item operation carries the `dynamodb:LeadingKeys`
  condition key (the item's partition key: `pk` in every table of this stack).
- SES `SendEmail`/`SendRawEmail`: on the sending identity (the domain of the `Source`
  address: a deployment verifies its domain), with the `ses:FromAddress` condition key.
- SSM `GetParameter(s)`: on `parameter/<name>`; Secrets Manager `GetSecretValue`: on the
  secret's ARN; SQS `SendMessage(Batch)`: `sqs:SendMessage` on the queue's ARN.

A call of any other service or operation raises `Unknown`: the tier must be taught it
rather than wave it through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.iam.policy import ACCOUNT, PARTITION, Request


class Unknown(Exception):
    """A call the tier does not know how to authorize."""


_TRANSACT_WRITE = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                   "ConditionCheck": "ConditionCheckItem"}
_TABLE_OPS = {"GetItem", "PutItem", "UpdateItem", "DeleteItem", "DescribeTable", "DescribeTimeToLive"}


def _table_arn(region: str, table: str) -> str:
    if table.startswith("arn:"):
        return table
    return f"arn:{PARTITION}:dynamodb:{region}:{ACCOUNT}:table/{table}"


def _leading_key(body: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The `dynamodb:LeadingKeys` condition key of an item operation (its `Key` or `Item`)."""
    pk = (body.get("Key") or body.get("Item") or {}).get("pk")
    return (("dynamodb:LeadingKeys", str(pk["S"])),) if isinstance(pk, Mapping) and "S" in pk else ()


def dynamodb(operation: str, params: Mapping[str, Any], region: str) -> list[Request]:
    if operation in _TABLE_OPS:
        return [Request(f"dynamodb:{operation}", _table_arn(region, params["TableName"]), _leading_key(params))]
    if operation in ("Query", "Scan"):
        arn = _table_arn(region, params["TableName"])
        if params.get("IndexName"):
            arn += f"/index/{params['IndexName']}"
        return [Request(f"dynamodb:{operation}", arn)]
    if operation == "TransactWriteItems":
        out = []
        for item in params["TransactItems"]:
            (kind, body), = item.items()
            out.append(Request(f"dynamodb:{_TRANSACT_WRITE[kind]}", _table_arn(region, body["TableName"]),
                               _leading_key(body)))
        return out
    if operation == "TransactGetItems":
        return [Request("dynamodb:GetItem", _table_arn(region, i["Get"]["TableName"])) for i in params["TransactItems"]]
    if operation in ("BatchWriteItem", "BatchGetItem"):
        return [Request(f"dynamodb:{operation}", _table_arn(region, t)) for t in params["RequestItems"]]
    raise Unknown(f"dynamodb {operation}")


def _address(value: str) -> str:
    """`Name <a@b>` or `a@b` → `a@b`."""
    value = value.strip()
    if value.endswith(">") and "<" in value:
        value = value[value.rindex("<") + 1:-1]
    return value


def ses(operation: str, params: Mapping[str, Any], region: str) -> list[Request]:
    if operation not in ("SendEmail", "SendRawEmail"):
        raise Unknown(f"ses {operation}")
    source = _address(str(params.get("Source", "")))
    domain = source.rsplit("@", 1)[-1]
    arn = f"arn:{PARTITION}:ses:{region}:{ACCOUNT}:identity/{domain}"
    return [Request(f"ses:{operation}", arn, (("ses:FromAddress", source),))]


def ssm(operation: str, params: Mapping[str, Any], region: str) -> list[Request]:
    def arn(name: str) -> str:
        if name.startswith("arn:"):
            return name
        return f"arn:{PARTITION}:ssm:{region}:{ACCOUNT}:parameter/{name.lstrip('/')}"

    if operation == "GetParameter":
        return [Request("ssm:GetParameter", arn(params["Name"]))]
    if operation == "GetParameters":
        return [Request("ssm:GetParameters", arn(n)) for n in params["Names"]]
    if operation == "GetParametersByPath":
        return [Request("ssm:GetParametersByPath", arn(params["Path"]))]
    raise Unknown(f"ssm {operation}")


def secretsmanager(operation: str, params: Mapping[str, Any], region: str) -> list[Request]:
    if operation != "GetSecretValue":
        raise Unknown(f"secretsmanager {operation}")
    secret = str(params["SecretId"])
    arn = secret if secret.startswith("arn:") else f"arn:{PARTITION}:secretsmanager:{region}:{ACCOUNT}:secret:{secret}"
    return [Request("secretsmanager:GetSecretValue", arn)]


def sqs(operation: str, params: Mapping[str, Any], region: str) -> list[Request]:
    if operation not in ("SendMessage", "SendMessageBatch"):
        raise Unknown(f"sqs {operation}")
    name = str(params["QueueUrl"]).rstrip("/").rsplit("/", 1)[1]
    return [Request("sqs:SendMessage", f"arn:{PARTITION}:sqs:{region}:{ACCOUNT}:{name}")]


_SERVICES = {"dynamodb": dynamodb, "ses": ses, "email": ses, "ssm": ssm, "secretsmanager": secretsmanager,
             "sqs": sqs}


def requests_of(service: str, operation: str, params: Mapping[str, Any], region: str) -> list[Request]:
    """The authorizations AWS makes for `operation` of `service` (botocore's service name)."""
    expand = _SERVICES.get(service)
    if expand is None:
        raise Unknown(f"service {service} ({operation})")
    return expand(operation, params, region)
