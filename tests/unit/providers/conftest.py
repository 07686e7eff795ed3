"""Fixtures for the provider adapter tests: recorded-shape JSON and a sleep that records."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def fx() -> Callable[[str], Any]:
    """``fx("vast/create_ok.json")`` → the decoded fixture."""
    return load_fixture


class Sleeps:
    """An injectable sleep that waits for nothing and remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()
