"""Fixtures of the crash-point enumeration: the provider simulators (one set per module),
the port hooks, and the table the run prints at the end (`pytest_terminal_summary`,
so it shows with or without `-s`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gpurent import clock as clock_mod
from infra.simulators import Simulators, start_simulators
from tests.crashpoints import RESULTS, table
from tests.crashpoints.harness import install_ports
from tests.crashpoints.world import prompt_stripe_events

BOOT_SECONDS = 5.0


@pytest.fixture(scope="module")
def simulators() -> Iterator[Simulators]:
    """The three simulators on loopback; they read the time from `gpurent.clock` (the test's ManualClock)."""
    s = start_simulators(now=clock_mod.now, boot_seconds=BOOT_SECONDS)
    yield s
    s.shutdown()


@pytest.fixture
def ports(monkeypatch: pytest.MonkeyPatch) -> None:
    install_ports(monkeypatch)
    prompt_stripe_events(monkeypatch)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    terminalreporter.section("crash points")
    for line in table().splitlines():
        terminalreporter.write_line(line)
