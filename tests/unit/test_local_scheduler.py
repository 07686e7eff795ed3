"""The local scheduler on the test clock: every job at its own moment; with `at_once` (make dev)
the jobs due at the same moment, and the reconcile hand-offs of a minute, run at the same time
as EventBridge and SQS would start them; without it (the crash-point harness) one after the
other, in the same order every run."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from gpurent import reconciler
from gpurent.clock import ManualClock
from infra.local.scheduler import Job, LocalScheduler

T0 = 1_780_000_000.0


def scheduler(at_once: bool, names: tuple[str, ...], meet: threading.Barrier | None,
              seen: list[tuple[str, float, str]]) -> tuple[LocalScheduler, ManualClock]:
    """A scheduler whose jobs (every 60 s, first due at T0 + 60) note what ran, when (the test
    clock) and where (the thread), and, given `meet`, wait there for each other."""
    clock = ManualClock(T0)
    sched = LocalScheduler(clock, only=(), at_once=at_once)

    def job(name: str) -> Any:
        def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
            seen.append((name, clock.now(), threading.current_thread().name))
            if meet is not None:
                meet.wait()  # only passes once every job of the moment is running
            return {}
        return run

    sched.jobs = [Job(name, job(name), 60.0, T0 + 60) for name in names]
    return sched, clock


@pytest.fixture(autouse=True)
def _no_handoffs_left() -> Any:
    reconciler.pending()
    yield
    reconciler.pending()


def test_jobs_due_at_the_same_moment_run_at_once_each_at_its_moment() -> None:
    seen: list[tuple[str, float, str]] = []
    meet = threading.Barrier(2, timeout=10)  # in order, the first job would wait here alone: broken
    sched, clock = scheduler(True, ("MeteringSweepFunction", "ReconcileFunction"), meet, seen)
    try:
        sched.advance(150)
    finally:
        sched.stop()
    assert clock.now() == T0 + 150
    assert sorted((name, at) for name, at, _ in seen) == [
        ("MeteringSweepFunction", T0 + 60), ("MeteringSweepFunction", T0 + 120),
        ("ReconcileFunction", T0 + 60), ("ReconcileFunction", T0 + 120)]
    assert all(thread.startswith("local-job") for _, _, thread in seen)
    assert not meet.broken
    assert sched.stats["MeteringSweepFunction"][0] == sched.stats["ReconcileFunction"][0] == 2


def test_without_at_once_the_jobs_run_in_order_in_the_callers_thread() -> None:
    seen: list[tuple[str, float, str]] = []
    sched, _ = scheduler(False, ("MeteringSweepFunction", "ReconcileFunction"), None, seen)
    sched.advance(150)
    assert [(name, at) for name, at, _ in seen] == [
        ("MeteringSweepFunction", T0 + 60), ("ReconcileFunction", T0 + 60),
        ("MeteringSweepFunction", T0 + 120), ("ReconcileFunction", T0 + 120)]
    assert {thread for _, _, thread in seen} == {threading.current_thread().name}


@pytest.mark.parametrize("at_once", [True, False])
def test_a_minutes_hand_offs_are_each_delivered_once_at_once_or_in_order(at_once: bool) -> None:
    """The reconcile queue's stand-in: each hand-off a job made goes to the worker function once;
    with `at_once` the workers of a minute run at the same time."""
    seen: list[tuple[str, float, str]] = []
    delivered: list[str] = []
    meet = threading.Barrier(3, timeout=10) if at_once else None
    sched, _ = scheduler(at_once, ("ReconcileFunction",), None, seen)

    def dispatch(event: dict[str, Any], context: Any) -> dict[str, Any]:
        for p in ("vast", "runpod", "lambda"):
            reconciler.send({"provider": p})
        return {}

    sched.jobs[0].fn = dispatch

    def worker(event: dict[str, Any], context: Any) -> dict[str, Any]:
        import json

        delivered.append(json.loads(event["Records"][0]["body"])["provider"])
        if meet is not None:
            meet.wait()
        return {"batchItemFailures": []}

    sched.reconcile_fn = worker
    try:
        sched.advance(60)
    finally:
        sched.stop()
    assert sorted(delivered) == ["lambda", "runpod", "vast"]
    if not at_once:
        assert delivered == ["vast", "runpod", "lambda"]  # in the order they were handed off
    assert sched.stats["ReconcileWorkerFunction"][0] == 3 and reconciler.pending() == []
