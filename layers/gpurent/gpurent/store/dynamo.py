"""The DynamoDB client, created once per process, and item (de)serialisation."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError

from gpurent.config import settings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
else:
    DynamoDBClient = Any

_lock = threading.Lock()
_client: DynamoDBClient | None = None
_ser = TypeSerializer()
_de = TypeDeserializer()

AV = dict[str, Any]


def client() -> DynamoDBClient:
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                s = settings()
                _client = boto3.client(
                    "dynamodb",
                    region_name=s.region,
                    endpoint_url=s.dynamodb_endpoint,
                    config=Config(
                        retries={"max_attempts": 4, "mode": "standard"},
                        connect_timeout=3,
                        read_timeout=10,
                        max_pool_connections=50,
                    ),
                )
    return _client


def reset_client() -> None:
    """Drop the cached client (tests switch endpoints and mocks)."""
    global _client
    with _lock:
        _client = None


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        # Inside a map, null is a value (a stored answer keeps `"host": null`).
        return {k: _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    if isinstance(value, set):
        return {_from_dynamo(v) for v in value}
    return value


def to_item(values: Mapping[str, Any]) -> AV:
    """A plain dict → DynamoDB attribute values (None values are left out)."""
    return {k: _ser.serialize(_to_dynamo(v)) for k, v in values.items() if v is not None}


def to_values(values: Mapping[str, Any]) -> AV:
    """Expression attribute values (keys like `:x`); None is not allowed here."""
    return {k: _ser.serialize(_to_dynamo(v)) for k, v in values.items()}


def from_item(item: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {k: _from_dynamo(_de.deserialize(v)) for k, v in item.items()}


def key(pk: str, sk: str) -> AV:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


BATCH_GET = 100  # keys per BatchGetItem (DynamoDB's limit)
BATCH_GET_ATTEMPTS = 8  # rounds of asking again for keys DynamoDB left unprocessed (throttling)


def batch_get(table: str, keys: Sequence[AV], projection: str | None = None) -> list[dict[str, Any]]:
    """The items of `table` named by `keys` (only the `projection` attributes, if given),
    strongly consistent and decoded, in no particular order (an absent one is left out):
    `BatchGetItem`, 100 keys a request; keys DynamoDB leaves unprocessed (throttling) are asked
    again after a short pause."""
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), BATCH_GET):
        pending = list(keys[start:start + BATCH_GET])
        for attempt in range(BATCH_GET_ATTEMPTS):
            if not pending:
                break
            if attempt:
                time.sleep(min(1.0, 0.05 * 2 ** attempt))
            request: Any = {"Keys": pending, "ConsistentRead": True}
            if projection is not None:
                request["ProjectionExpression"] = projection
            answer = client().batch_get_item(RequestItems={table: request})
            found.extend(item for raw in answer.get("Responses", {}).get(table, [])
                         if (item := from_item(raw)) is not None)
            left = answer.get("UnprocessedKeys") or {}
            pending = list(left[table]["Keys"]) if table in left else []
        if pending:
            raise RuntimeError(f"{len(pending)} keys of {table} unprocessed after {BATCH_GET_ATTEMPTS} batch reads")
    return found


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_conditional_failure(exc: ClientError) -> bool:
    return error_code(exc) == "ConditionalCheckFailedException"


def cancellation_codes(exc: ClientError) -> list[str]:
    """Per-item reasons of a cancelled transaction (`None` where the item was fine)."""
    reasons = exc.response.get("CancellationReasons") or []
    return [str(r.get("Code", "None")) for r in reasons]


__all__ = [
    "AV",
    "ClientError",
    "cancellation_codes",
    "client",
    "error_code",
    "from_item",
    "is_conditional_failure",
    "key",
    "reset_client",
    "to_item",
    "to_values",
]
