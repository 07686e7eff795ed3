"""A faster answer path for moto's DynamoDB data-plane calls (tests only).

moto 5.2 answers every DynamoDB call through a serializer driven by botocore's output
model: it walks the operation's output shape for every attribute of every item. That walk
was ~3 ms a call and about a third of a crash point's time (profiled on `stop (user)`).
For the data-plane operations the answer moto builds is already the wire JSON (every
attribute value is `{"S": ...}`, `{"N": "..."}`, lists and maps of those), so `json.dumps`
of its keys the output shape names is what the serializer produces, except where it holds bytes (binary attributes,
base64 on the wire), datetimes or nulls (the serializer omits them): those answers still
go through the serializer.

`check_both()` makes every fast answer also go through the serializer and compares the
parsed bodies, which is how `tests/unit/test_moto_fast.py` proves the two agree; set
`GPURENT_MOTO_FAST=check` to run a whole tier that way, or `GPURENT_MOTO_FAST=off` to turn
the fast path off.

moto is pinned (pyproject.toml); a moto without the patched method fails `install()` loudly
rather than running slower or differently in silence.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

FAST_OPERATIONS = frozenset({
    "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan",
    "TransactWriteItems", "TransactGetItems", "BatchGetItem", "BatchWriteItem",
})
CONTENT_TYPE = "application/x-amz-json-1.0"

_installed = False
_check = False
answered_fast = 0  # how many answers took the fast path (the unit test reads it)


def _plain(value: Any) -> bool:
    """True when `value` is JSON as it stands: no bytes, datetimes or nulls anywhere."""
    if isinstance(value, dict):
        return all(_plain(v) for v in value.values())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, str | int | float | bool) and not isinstance(value, datetime)


def check_both(on: bool = True) -> None:
    global _check
    _check = on


def install() -> None:
    """Patch moto's result class once per process (idempotent); only DynamoDB answers change."""
    global _installed, _check
    mode = os.environ.get("GPURENT_MOTO_FAST", "on")
    if _installed or mode == "off":
        return
    _check = mode == "check"
    from moto.core.responses import ActionResult

    serialized = ActionResult.execute_result

    def execute_result(self: Any, context: Any) -> Any:
        global answered_fast
        if (context.service_model.service_name != "dynamodb"
                or context.operation_model.name not in FAST_OPERATIONS
                or not isinstance(self.result, dict) or not _plain(self.result)):
            return serialized(self, context)
        answered_fast += 1
        members = context.operation_model.output_shape.members
        body = json.dumps({k: v for k, v in self.result.items() if k in members})
        if _check:
            status, _headers, slow = serialized(self, context)
            if status != 200 or json.loads(slow) != json.loads(body):
                raise AssertionError(
                    f"moto fast path differs from its serializer on {context.operation_model.name}:"
                    f"\nfast: {body}\nslow: {slow}")
        return 200, {"Content-Type": CONTENT_TYPE}, body

    ActionResult.execute_result = execute_result  # type: ignore[method-assign]
    _installed = True
