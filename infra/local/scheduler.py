"""The local stand-in for EventBridge schedules and the SQS queues (timers, the reconciler's
hand-offs), on the test clock.

Scheduled functions of template.yaml run at their rate (or every
LOCAL_SCHEDULE_SECONDS of real time); timers (`gpurent.timers`, kept in
process when no queue is configured) are delivered to the function the
template's SQS event source names, at their second. Both are driven by one
clock, so `advance(seconds)` moves the test clock forward and runs, in order,
every piece of work that falls due on the way: each sweep, each timed stop,
each reconcile, at the moment it would have run.

Two bounds keep a long jump (the clock endpoint allows 31 days) quick:
the catalog refresh, which takes a snapshot of the providers *now* rather
than catching up on history, runs once at the end of a jump (if it fell due); and a job that
would fall due more than MAX_RUNS_PER_JUMP times in one jump runs that many
times, evenly spread (metering is exact whatever the tick length, and timers
are always delivered at their own second).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gpurent import reconciler, timers
from infra.local import template
from infra.local.events import schedule_event, sqs_event
from infra.local.functions import load_handler

MAX_RUNS_PER_JUMP = 240
LOG_SIZE = 10_000
PROGRESS_EVERY = 2.0  # seconds of real time between progress lines of a long jump
SNAPSHOT_JOBS = ("CatalogRefreshFunction",)  # no history to catch up on: once per jump
RECONCILE_QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:local-reconcile"


class MovableClock(Protocol):
    def now(self) -> float: ...

    def advance(self, seconds: float) -> None: ...


@dataclass
class Job:
    name: str
    fn: Callable[..., Any]
    every: float
    next_due: float
    base_every: float = 0.0

    def __post_init__(self) -> None:
        self.base_every = self.base_every or self.every


def _interval(expression: str) -> float:
    """Seconds between runs of `rate(N unit)`; cron schedules run every minute locally."""
    import re

    m = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression.strip())
    if not m:
        return 60.0
    unit = {"minute": 60, "hour": 3600, "day": 86400}[m.group(2).rstrip("s")]
    return float(int(m.group(1)) * unit)


class LocalScheduler:
    def __init__(self, clock: MovableClock, every_override: float | None = None,
                 only: tuple[str, ...] | None = None) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        now = clock.now()
        self.jobs = [
            Job(name, load_handler(code_uri), every_override or _interval(expr), now)
            for name, code_uri, expr in template.schedules()
            if only is None or name in only
        ]
        consumers = template.queue_consumers()
        self.timer_fn = load_handler(consumers["TimerQueue"])
        self.reconcile_fn = load_handler(consumers["ReconcileQueue"])
        # (clock time, what ran), the latest LOG_SIZE: tests read the order; bounded so a
        # stack left running for days does not grow.
        self.log: deque[tuple[float, str]] = deque(maxlen=LOG_SIZE)
        self.stats: dict[str, list[float]] = {}  # what → [runs, seconds of real time, database CPU seconds]
        self.database_pids: list[int] = []  # DynamoDB Local's processes, to charge each job its CPU
        self._stop = threading.Event()

    # -------------------------------------------------------------- running one thing

    def _database_cpu(self) -> float:
        from infra.local.process import cpu_seconds

        return sum(cpu_seconds(p) for p in self.database_pids)

    def _count(self, what: str, began: float, cpu_began: float) -> None:
        entry = self.stats.setdefault(what, [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += time.perf_counter() - began
        entry[2] += self._database_cpu() - cpu_began

    def _run_job(self, job: Job) -> None:
        self.log.append((self.clock.now(), job.name))
        began, cpu_began = time.perf_counter(), self._database_cpu()
        try:
            job.fn(schedule_event(f"arn:aws:events:us-east-1:123456789012:rule/local-{job.name}"), None)
        except Exception as exc:  # a failing job must not kill the stack
            print(f"[schedule] {job.name} failed: {exc!r}", file=sys.stderr, flush=True)
        self._count(job.name, began, cpu_began)
        self._run_handoffs()

    def _run_handoffs(self) -> None:
        """What the reconcile queue would deliver: each hand-off a job made (in process: no
        queue), to its worker function, one message at a time as the queue's mapping does,
        including the hand-offs a worker makes in turn."""
        while True:
            bodies = reconciler.pending()
            if not bodies:
                return
            for body in bodies:
                began, cpu_began = time.perf_counter(), self._database_cpu()
                try:
                    self.reconcile_fn(sqs_event([body], RECONCILE_QUEUE_ARN), None)
                except Exception as exc:  # the queue would drop it; the next pass does its work
                    print(f"[reconcile] a hand-off failed: {exc!r}", file=sys.stderr, flush=True)
                self._count("ReconcileWorkerFunction", began, cpu_began)

    def _run_timers(self, now: float) -> int:
        due = timers.due(now)
        if not due:
            return 0
        self.log.append((self.clock.now(), f"timers:{len(due)}"))
        began, cpu_began = time.perf_counter(), self._database_cpu()
        try:
            result = self.timer_fn(sqs_event([t.body() for t in due]), None)
            for failure in result.get("batchItemFailures", []):
                print(f"[timers] a timer failed: {failure}", file=sys.stderr, flush=True)
        except Exception as exc:
            print(f"[timers] failed: {exc!r}", file=sys.stderr, flush=True)
        self._count("timers", began, cpu_began)
        return len(due)

    # -------------------------------------------------------------- real time

    def run_due(self) -> None:
        """Run whatever is due by the clock now (the background thread calls this)."""
        with self.lock:
            now = self.clock.now()
            self._run_timers(now)
            for job in self.jobs:
                if job.next_due <= now:
                    self._run_job(job)
                    job.next_due = max(job.next_due + job.every, now + 1.0)

    def start(self, poll: float = 0.25) -> Callable[[], None]:
        def loop() -> None:
            while not self._stop.wait(poll):
                self.run_due()

        threading.Thread(target=loop, name="local-scheduler", daemon=True).start()
        return self._stop.set

    # -------------------------------------------------------------- the test clock

    def advance(self, seconds: float, progress: Callable[[str], None] | None = None) -> None:
        """Move the clock exactly `seconds` forward, running everything that falls due on the
        way, in order, each at its own moment. (Real time keeps flowing meanwhile; only our
        own moves count towards `seconds`.) `progress` hears how far a long jump got, every
        PROGRESS_EVERY seconds of real time, and how long it took."""
        with self.lock:
            moved = 0.0
            began = last_said = time.perf_counter()
            runs_before = sum(int(s[0]) for s in self.stats.values())

            def move_to(t: float) -> None:
                nonlocal moved
                dt = min(t - self.clock.now(), seconds - moved)
                if dt > 0:
                    self.clock.advance(dt)
                    moved += dt

            periodic = [j for j in self.jobs if j.name not in SNAPSHOT_JOBS]
            target = self.clock.now() + seconds
            for job in periodic:
                runs = int((target - job.next_due) // job.every) + 1 if job.next_due <= target else 0
                if runs > MAX_RUNS_PER_JUMP:
                    job.every = (target - job.next_due) / MAX_RUNS_PER_JUMP
            try:
                while True:
                    horizon = self.clock.now() + (seconds - moved)
                    timer_due = timers.next_due()
                    nxt = min(periodic, key=lambda j: j.next_due, default=None)
                    job_due = nxt.next_due if nxt is not None else None
                    candidates = [t for t in (timer_due, job_due) if t is not None and t <= horizon]
                    if not candidates:
                        break
                    moment = min(candidates)
                    move_to(moment)
                    if progress is not None and time.perf_counter() - last_said >= PROGRESS_EVERY:
                        last_said = time.perf_counter()
                        progress(f"advancing the clock: {moved:,.0f} of {seconds:,.0f} s "
                                 f"({moved / seconds:.0%}) in {last_said - began:.1f} s")
                    if timer_due is not None and timer_due == moment:
                        self._run_timers(self.clock.now())
                    else:
                        assert nxt is not None
                        self._run_job(nxt)
                        nxt.next_due += nxt.every
            finally:
                for job in periodic:
                    job.every = job.base_every
            if seconds - moved > 0:
                self.clock.advance(seconds - moved)
            for job in self.jobs:
                if job.name in SNAPSHOT_JOBS and job.next_due <= self.clock.now():
                    self._run_job(job)
                    job.next_due = self.clock.now() + job.every
            took = time.perf_counter() - began
            if progress is not None and (took >= PROGRESS_EVERY or seconds >= 3600):
                runs = sum(int(s[0]) for s in self.stats.values()) - runs_before
                progress(f"advanced the clock {seconds:,.0f} s in {took:.1f} s ({runs} scheduled runs)")

    def stop(self) -> None:
        self._stop.set()

