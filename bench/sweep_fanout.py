"""The fanned-out metering sweep against DynamoDB Local: N running rentals over U wallets
(default: one rental per wallet, the common case), one tick with every shard's worker
running at once (threads standing in for the Lambda workers, each charging
`--concurrency` wallets at once), then a model of 100,000 rentals on AWS. Prints
figures; asserts nothing about time.

    .venv/bin/python bench/sweep_fanout.py                        # 10,000 rentals, 1 per wallet
    .venv/bin/python bench/sweep_fanout.py --rentals 2000 --wallets 200
    .venv/bin/python bench/sweep_fanout.py --quick                # 400 rentals (a minute)

Requests are counted by operation from botocore's hooks (DynamoDB Local reports no
consumed capacity; `bench/sweep.py` prices the writes). The seeding (clones of one rental
launched through the real code, as `bench/sweep.py` does) is not counted.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT)]
if TYPE_CHECKING:  # mypy reads bench/ as the package `bench`
    from bench import sweep as base
else:
    import sweep as base  # bench/sweep.py: its environment, template rental and seeding

from gpurent import clock, config, timers  # noqa: E402
from gpurent import sweep as fanout  # noqa: E402
from gpurent.records import active_shards  # noqa: E402
from gpurent.store import dynamo  # noqa: E402
from infra.local import dynamodb_local, template  # noqa: E402

OPS = {"TransactWriteItems", "PutItem", "UpdateItem", "GetItem", "Query", "DeleteItem", "BatchGetItem"}
# The model's assumptions (in-region DynamoDB latencies per request; a worker's CPU).
AWS_MS = {"TransactWriteItems": 12.0, "UpdateItem": 6.0, "PutItem": 6.0, "GetItem": 4.0, "Query": 25.0,
          "BatchGetItem": 15.0}
LAMBDA_VCPU = 1024 / 1769  # MeteringSweepFunction's 1,024 MB share of a vCPU
TIMEOUT_S = 50.0


class Counted:
    """Requests by operation (botocore's hooks on the store's client; thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()

    def after(self, model: Any, **_: Any) -> None:
        with self.lock:
            self.calls[model.name] += 1

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()


def tick(manual: clock.ManualClock, counted: Counted) -> tuple[fanout.Report, float, float]:
    """One minute: every shard's part at once, as the queue would start their workers."""
    manual.advance(60)
    timers.clear()
    counted.reset()
    parts = [fanout.Part(n, manual.now()) for n in range(active_shards())]
    began, cpu = time.perf_counter(), time.process_time()
    with base.quiet(), ThreadPoolExecutor(active_shards()) as pool:
        reports = list(pool.map(fanout.run_part, parts))
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    total = fanout.Report()
    for r in reports:
        total.add(r)
    return total, wall, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rentals", type=int, default=10_000)
    p.add_argument("--wallets", type=int, default=0, help="default: one per rental")
    p.add_argument("--concurrency", type=int, default=16, help="wallets a worker charges at once")
    p.add_argument("--ticks", type=int, default=2)
    p.add_argument("--model", type=int, default=100_000, help="rentals (1 per wallet) in the AWS model")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    n = 400 if a.quick else a.rentals
    u = a.wallets or n
    db = dynamodb_local.start(memory_mb=1024)
    try:
        os.environ.update({"DYNAMODB_ENDPOINT": db.endpoint, "SWEEP_CONCURRENCY": str(a.concurrency)})
        names = template.default_table_names("bench")
        os.environ.update({template.TABLE_ENV[k]: v for k, v in names.items()})
        config.reset()
        dynamo.reset_client()
        template.create_tables(dynamo.client(), names)
        manual = clock.ManualClock()
        clock.set_clock(manual)
        with base.quiet():
            tpl = base.template_rental(manual)
        t = time.perf_counter()
        with base.quiet():
            base.seed(tpl, n, u)
        print(f"DynamoDB Local: {n:,} running rentals over {u:,} wallets seeded in {time.perf_counter() - t:.0f} s; "
              f"{active_shards()} workers at once, each {a.concurrency} wallets at once")
        counted = Counted()
        events = dynamo.client().meta.events
        events.register("after-call.dynamodb.*", counted.after)
        for i in range(a.ticks):
            report, wall, cpu = tick(manual, counted)
            calls = dict(sorted(counted.calls.items()))
            requests = sum(calls.values())
            print(f"\ntick {i + 1}: {report.rentals:,} rentals in {report.wallets:,} wallets metered, "
                  f"{report.charged_cents:,} cents, conflicts {report.conflicts}, failed {report.failed}, "
                  f"hand-offs {report.handed_off}")
            print(f"  wall {wall:.1f} s (every worker at once, on this machine's cores: DynamoDB Local's JVM "
                  f"and our threads share them); our process CPU {cpu:.1f} s = "
                  f"{cpu / max(1, report.wallets) * 1000:.2f} ms per wallet")
            print(f"  requests {requests:,} ({', '.join(f'{k} {v:,}' for k, v in calls.items())}) = "
                  f"{requests / max(1, report.wallets):.2f} per wallet")
        per_wallet = {op: c / max(1, report.wallets) for op, c in counted.calls.items()}
        cpu_ms = cpu / max(1, report.wallets) * 1000
        per_shard = a.model / active_shards()
        slices = math.ceil(per_shard / fanout.WALLETS_PER_WORKER)
        wallets_per_worker = per_shard / slices
        io_s = sum(per_wallet[op] * AWS_MS.get(op, 10.0) for op in per_wallet) / 1000 * wallets_per_worker
        cpu_s = cpu_ms / 1000 * wallets_per_worker / LAMBDA_VCPU
        worker_s = max(io_s / a.concurrency, cpu_s)
        print(f"\nModel: {a.model:,} rentals at 1 per wallet on AWS: {active_shards()} shards of {per_shard:,.0f} "
              f"wallets, each split into {slices} parts of ≤ {fanout.WALLETS_PER_WORKER:,} "
              f"({active_shards() * slices} workers at once), {a.concurrency} wallets at once per worker: I/O "
              f"{io_s:,.0f} s / {a.concurrency} = {io_s / a.concurrency:.1f} s, CPU {cpu_s:.1f} s "
              f"(measured {cpu_ms:.2f} ms per wallet here, on {LAMBDA_VCPU:.2f} vCPU) → a worker needs "
              f"~{worker_s:.0f} s of its {TIMEOUT_S:.0f} s (past {TIMEOUT_S - fanout.HAND_OFF_MARGIN_SECONDS:.0f} s "
              f"it hands the rest on). Plus the coordinator (8 SQS sends) and the queue's start of the workers "
              f"(~1 s). Assumed latencies: " + ", ".join(f"{k} {v:g} ms" for k, v in AWS_MS.items())
              + "; each part's worker reads its whole shard once (one paged Query).")
    finally:
        dynamo.reset_client()
        db.stop()


if __name__ == "__main__":
    main()
