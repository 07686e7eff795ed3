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

Requests: one at a time in moto's backend (a lock), as DynamoDB applies each request
atomically; moto alone let two conditional writes both pass, and a query walking the table
fail beside a write that added an item.

moto is pinned (pyproject.toml); a moto without the patched method fails `install()` loudly
rather than running slower or differently in silence.

Transactions: moto's `transact_write_items` deep-copies every table it touches before it
starts, to restore it if the transaction is cancelled. The money table grows with the
ledger, so that copy made each transaction slower than the last (a two-hour metering test
spent most of its time in `copy.deepcopy`). `install()` makes the backup per item instead:
a copy of each item the transaction names, put back (or removed, if it did not exist) when
the transaction is cancelled. What a transaction can change is exactly those items, so the
table after a cancel is the table before it, as with moto's own backup.

Loaders: moto gives every `mock_aws()` a new boto3 default session (so no credentials leak
between tests), and each new botocore session reads the service models, the endpoint rules
and the list of services from disk again: ~0.3 s of every test's `aws` fixture, most of an
integration test. `install()` makes every botocore session of the process share one loader,
whose cache keeps what it has read; moto's own model look-ups share another. The files are
the same for every session, and botocore treats what it loaded as read-only (the clients of
one session share it the same way).
"""

from __future__ import annotations

import copy
import json
import os
import threading
from datetime import datetime
from typing import Any, cast

FAST_OPERATIONS = frozenset({
    "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan",
    "TransactWriteItems", "TransactGetItems", "BatchGetItem", "BatchWriteItem",
})
CONTENT_TYPE = "application/x-amz-json-1.0"

_installed = False
_check = False
answered_fast = 0  # how many answers took the fast path (the unit test reads it)
moto_project: Any = None  # moto's own `Item.project`, which the unit test compares against


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
            status, _headers, slow_body = serialized(self, context)
            slow = cast(str, slow_body)  # DynamoDB's JSON protocol: moto serializes its answers to text
            if status != 200 or json.loads(slow) != json.loads(body):
                raise AssertionError(
                    f"moto fast path differs from its serializer on {context.operation_model.name}:"
                    f"\nfast: {body}\nslow: {slow}")
        return 200, {"Content-Type": CONTENT_TYPE}, body

    ActionResult.execute_result = execute_result  # type: ignore[method-assign]
    _share_loaders()
    _install_request_lock()
    _install_item_backups()
    _install_projection()
    _install_expression_caches()
    _installed = True


def _share_loaders() -> None:
    import functools

    import botocore.session
    import moto.core.utils

    botocore.session.create_loader = functools.cache(botocore.session.create_loader)
    # moto.core.utils's own binding of the name (imported from .loaders, not re-exported): what its look-ups call
    moto.core.utils.create_loader = functools.cache(moto.core.utils.create_loader)  # type: ignore[attr-defined]


def _install_request_lock() -> None:
    """One DynamoDB request at a time in moto's backend, as DynamoDB applies each request
    atomically. moto's is a plain dict of dicts: a query (which walks every item of the table)
    beside a write that adds an item failed with "dictionary changed size during iteration"
    (the catalog refresh reads one provider's listings while it writes another's), and two
    conditional writes at once could both pass their condition."""
    from moto.dynamodb.responses import DynamoHandler

    lock = threading.RLock()
    call_action = DynamoHandler.call_action

    def one_at_a_time(self: Any) -> Any:
        with lock:
            return call_action(self)

    DynamoHandler.call_action = one_at_a_time  # type: ignore[method-assign]


def _install_expression_caches() -> None:
    """Each expression string is parsed once a process. moto parses an update expression at
    every call, twice (once to check its placeholders, once to apply it), and lexes every
    condition expression again (its lexer compiles a dozen patterns a token). The strings are
    the product's few constants. What is shared is never changed: the update expression's
    tree is only read (moto's validator deep-copies it before it substitutes anything), and
    the condition expression's tokens are immutable (named tuples of strings and empty
    child lists that the parser reads and replaces, never fills); each parse gets its own
    deque of them, which it consumes."""
    from collections import deque

    from moto.dynamodb.comparisons import ConditionExpressionParser

    # moto's expressions.py opens with a file-wide `# type: ignore`: mypy sees none of its names
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]

    make = UpdateExpressionParser.make.__func__
    trees: dict[str, Any] = {}

    def cached_make(cls: Any, expression_str: str) -> Any:
        tree = trees.get(expression_str)
        if tree is None:
            tree = trees[expression_str] = make(cls, expression_str)
        return tree

    lex = ConditionExpressionParser._lex_condition_expression
    tokens: dict[str, tuple[Any, ...]] = {}

    def cached_lex(self: Any) -> Any:
        got = tokens.get(self.condition_expression)
        if got is None:
            got = tokens[self.condition_expression] = tuple(lex(self))
        return deque(got)

    UpdateExpressionParser.make = classmethod(cached_make)
    ConditionExpressionParser._lex_condition_expression = cached_lex  # type: ignore[method-assign]
    _install_static_checks_once(trees)


def _install_static_checks_once(trees: dict[str, Any]) -> None:
    """moto validates an update expression at every call with ten walks of its tree. The
    first three (at most one SET, REMOVE and ADD clause; no two actions on one path; no key
    attribute updated) read only the tree, the attribute names and the table's keys, and
    return the tree as it was: a combination that passed once passes again, so those walks
    are skipped for it (a transaction's update was a third of its time in moto). Only a
    tree from the parse cache is remembered (its id is then stable: the cache keeps it)."""
    from moto.dynamodb.parsing.validators import (
        ActionCountValidator,
        OverlappingPathsValidator,
        UpdateExpressionValidator,
        UpdateHashRangeKeyValidator,
    )

    static = (ActionCountValidator, OverlappingPathsValidator, UpdateHashRangeKeyValidator)
    cached = {id(tree) for tree in trees.values()}
    passed: set[tuple[int, tuple[tuple[str, str], ...], tuple[str, ...]]] = set()
    real_init = UpdateExpressionValidator.__init__

    def __init__(self: Any, expression: Any, expression_attribute_names: Any, expression_attribute_values: Any,
                 item: Any, table: Any) -> None:
        real_init(self, expression, expression_attribute_names, expression_attribute_values, item, table)
        if id(expression) not in cached and any(t is expression for t in trees.values()):
            cached.add(id(expression))
        self.fast_key = ((id(expression), tuple(sorted((expression_attribute_names or {}).items())),
                          tuple(table.table_key_attrs)) if id(expression) in cached else None)

    def validate(self: Any) -> Any:
        known = self.fast_key is not None and self.fast_key in passed
        n = self.node_to_validate
        for processor in self.processors:
            if not (known and isinstance(processor, static)):
                n = processor.traverse(n)
        if self.fast_key is not None:
            passed.add(self.fast_key)
        return n

    UpdateExpressionValidator.__init__ = __init__  # type: ignore[method-assign]
    UpdateExpressionValidator.validate = validate  # type: ignore[method-assign]


def _install_projection() -> None:
    from botocore.utils import merge_dicts
    from moto.dynamodb.models import dynamo_type
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.utilities import find_nested_key

    def project(self: Any, projection_expressions: list[list[str]]) -> Any:
        plain = self.to_regular_json()
        result: dict[str, Any] = {}
        for expr in projection_expressions:
            # A copy: merging must never write into `plain`, which the next path reads.
            merge_dicts(result, copy.deepcopy(find_nested_key(expr, plain)))
        return Item(hash_key=self.hash_key, range_key=self.range_key,
                    attrs=cast(dict[str, Any], dynamo_type.serializer.serialize(result)["M"]))

    global moto_project
    moto_project = Item.project
    Item.project = project  # type: ignore[method-assign]


class _NoTableCopy:
    """Stands in for the `copy` module inside moto's DynamoDB backend: a table is not copied
    (the transaction's items are, by `_install_item_backups`); everything else is."""

    table_class: Any = None  # moto's Table, set by `_install_item_backups`

    @classmethod
    def deepcopy(cls, value: Any, memo: dict[int, Any] | None = None) -> Any:
        return value if isinstance(value, cls.table_class) else copy.deepcopy(value, memo)


def _install_item_backups() -> None:
    import moto.dynamodb.models as models
    from moto.dynamodb.models.dynamo_type import DynamoType

    backend_class = models.DynamoDBBackend
    original = backend_class.transact_write_items
    if getattr(models, "copy", None) is not copy:
        raise RuntimeError("moto.dynamodb.models no longer uses copy.deepcopy for its transaction backup: "
                           "update tests/moto_fast.py")

    def item_backups(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[Any, Any, Any, Any]]:
        """(table, hash key, range key, a copy of the item or None) for every item named."""
        backups = []
        for entry in transact_items:
            for op in entry.values():
                table = backend.tables.get(op.get("TableName"))
                if table is None:
                    continue
                key = op.get("Key") or op.get("Item") or {}
                try:
                    hash_value = DynamoType(key[table.hash_key_attr])
                    range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
                except (KeyError, TypeError, AttributeError):
                    continue  # no key: moto refuses the operation before it writes anything
                current = table.get_item(hash_value, range_value)
                backups.append((table, hash_value, range_value, copy.deepcopy(current)))
        return backups

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        backups = item_backups(self, transact_items)
        try:
            original(self, transact_items)
        except BaseException:
            for table, hash_value, range_value, item in reversed(backups):
                if item is None:
                    table.delete_item(hash_value, range_value)
                elif range_value is not None:
                    table.items[hash_value][range_value] = item
                else:
                    table.items[hash_value] = item
            raise

    from moto.dynamodb.models.table import Table

    _NoTableCopy.table_class = Table
    # moto.dynamodb.models's own `copy` (a module it imports, not re-exported), replaced for its look-ups by a
    # class standing in for that module
    models.copy = _NoTableCopy  # type: ignore[attr-defined, assignment]
    backend_class.transact_write_items = transact_write_items  # type: ignore[method-assign]
