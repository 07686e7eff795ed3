"""The local scheduler on the test clock: every job at its own moment, one after the other in
the same order every run (the crash-point harness needs that), and each reconcile hand-off
delivered to the worker function once, in the order it was handed off.

(Running the jobs of a moment at once, as EventBridge starts them, was tried for `make dev`'s
test clock: an hour with 10 pods took 4.1 s instead of 3.1 s, alternating the two, the
threads queueing on the GIL.)"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from gpurent import reconciler
from gpurent.clock import ManualClock
from infra.local.scheduler import Job, LocalScheduler

T0 = 1_780_000_000.0


def scheduler(names: tuple[str, ...], seen: list[tuple[str, float, str]]) -> tuple[LocalScheduler, ManualClock]:
    """A scheduler whose jobs (every 60 s, first due at T0 + 60) note what ran, when (the test
    clock) and where (the thread)."""
    clock = ManualClock(T0)
    sched = LocalScheduler(clock, only=())

    def job(name: str) -> Any:
        def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
            seen.append((name, clock.now(), threading.current_thread().name))
            return {}
        return run

    sched.jobs = [Job(name, job(name), 60.0, T0 + 60) for name in names]
    return sched, clock


@pytest.fixture(autouse=True)
def _no_handoffs_left() -> Any:
    reconciler.pending()
    yield
    reconciler.pending()


def test_the_jobs_due_at_one_moment_run_in_order_in_the_callers_thread_each_at_its_moment() -> None:
    seen: list[tuple[str, float, str]] = []
    sched, clock = scheduler(("MeteringSweepFunction", "ReconcileFunction"), seen)
    sched.advance(150)
    assert clock.now() == T0 + 150
    assert [(name, at) for name, at, _ in seen] == [
        ("MeteringSweepFunction", T0 + 60), ("ReconcileFunction", T0 + 60),
        ("MeteringSweepFunction", T0 + 120), ("ReconcileFunction", T0 + 120)]
    assert {thread for _, _, thread in seen} == {threading.current_thread().name}


def test_a_minutes_hand_offs_are_each_delivered_once_in_order() -> None:
    """The reconcile queue's stand-in: each hand-off a job made goes to the worker function once,
    including the hand-offs of a worker, until none is left."""
    seen: list[tuple[str, float, str]] = []
    delivered: list[str] = []
    sched, _ = scheduler(("ReconcileFunction",), seen)

    def dispatch(event: dict[str, Any], context: Any) -> dict[str, Any]:
        for p in ("vast", "runpod", "lambda"):
            reconciler.send({"provider": p})
        return {}

    sched.jobs[0].fn = dispatch

    def worker(event: dict[str, Any], context: Any) -> dict[str, Any]:
        import json

        provider = json.loads(event["Records"][0]["body"])["provider"]
        delivered.append(provider)
        if provider == "vast":
            reconciler.send({"provider": "vast-again"})  # a worker's own hand-off
        return {"batchItemFailures": []}

    sched.reconcile_fn = worker
    sched.advance(60)
    assert delivered == ["vast", "runpod", "lambda", "vast-again"]
    assert sched.stats["ReconcileWorkerFunction"][0] == 4 and reconciler.pending() == []
