"""One write of a fake transaction: its condition, its effect and the item it would replace.

The fake stores build their transaction items as `{"Fake": FakeWrite(...)}`, so writes of
different fakes (a wallet, a marker, a rental row) commit together or not at all, like the
real `TransactWriteItems`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class FakeWrite:
    label: str
    check: Callable[[], bool]  # the write's condition, against the state now
    apply: Callable[[], None]
    old: Callable[[], dict[str, Any] | None] = lambda: None  # ReturnValuesOnConditionCheckFailure


def item(write: FakeWrite) -> dict[str, Any]:
    return {"Fake": write}
