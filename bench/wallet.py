"""How many DynamoDB requests each money operation and billing endpoint makes,
and its median latency, against moto in-process. Prints figures; asserts nothing.

    .venv/bin/python bench/wallet.py
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "gpurent")]
os.environ.update({"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1",
                   "STAGE": "test", "MAIL_MODE": "console", "POWERTOOLS_LOG_LEVEL": "ERROR",
                   "ADMIN_EMAILS": "admin@bench.test"})

from moto import mock_aws  # noqa: E402

from gpurent import clock, config, notify, wallet  # noqa: E402
from gpurent.store import dynamo  # noqa: E402
from gpurent.store import money as store  # noqa: E402
from infra.local import template  # noqa: E402
from infra.local.client import invoke  # noqa: E402

RUNS = 30
calls: Counter[str] = Counter()


def count(event_name: str, **kwargs: Any) -> None:
    calls[event_name.rsplit(".", 1)[-1]] += 1


def measure(name: str, fn: Callable[[int], Any]) -> None:
    times = []
    per_call: list[Counter[str]] = []
    for i in range(RUNS):
        calls.clear()
        t = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t) * 1000)
        per_call.append(Counter(calls))
    typical = per_call[len(per_call) // 2]
    reads = sum(v for k, v in typical.items() if k in ("GetItem", "Query", "BatchGetItem", "Scan"))
    writes = sum(v for k, v in typical.items() if k not in ("GetItem", "Query", "BatchGetItem", "Scan"))
    detail = ", ".join(f"{k} {v}" for k, v in sorted(typical.items()))
    print(f"{name:<34} {reads:>5} {writes:>6}  {statistics.median(times):8.2f} ms   {detail}")


def main() -> None:
    with mock_aws():
        names = template.default_table_names("bench")
        os.environ.update({template.TABLE_ENV[k]: v for k, v in names.items()})
        config.reset()
        template.create_tables(dynamo.client(), names)
        dynamo.client().meta.events.register("before-call.dynamodb.*", count)
        clock.set_clock(clock.ManualClock())
        u = "usr_01JBENCH0000000000000000000"
        wallet.credit(u, 10**9, "adjustment", "fund")

        def rental(i: int) -> Any:
            return lambda w, steps: [store.money_put({"pk": f"USER#{u}", "sk": f"RENTAL#r{i}",
                                                      "reserveCents": steps[0].info["reserve"]})]

        def rental_update(i: int, old: int, release: bool = False) -> Any:
            def extras(w: Any, steps: Any) -> Any:
                new = 0 if release else steps[0].info["split"].reserve_after
                return [store.money_update(f"USER#{u}", f"RENTAL#r{i}", "SET reserveCents = :n",
                                           "reserveCents = :o", {}, {":n": new, ":o": old})]
            return extras

        print(f"{'operation / endpoint':<34} {'reads':>5} {'writes':>6}  {'median':>11}   requests")
        measure("credit", lambda i: wallet.credit(u, 100, "stripe_topup", f"c{i}"))
        measure("credit (replayed key)", lambda i: wallet.credit(u, 100, "stripe_topup", f"c{i}"))
        measure("reserve (+ rental row)", lambda i: wallet.reserve(u, 280, f"r{i}", rental(i)))
        measure("charge (+ rental update)", lambda i: wallet.charge(u, 280, 5, 280, f"ch{i}", {"rentalId": f"r{i}"},
                                                                    rental_update(i, 280)))
        measure("release (+ rental update)", lambda i: wallet.release(u, 280, f"rl{i}", rental_update(i, 280, True)))
        measure("debit", lambda i: wallet.debit(u, 1, f"d{i}"))

        with contextlib.redirect_stderr(io.StringIO()):
            invoke("POST", "/v1/auth/request-code", body={"email": "bench@bench.test"})
        code = re.search(r"\d{6}", notify.mailbox()[0]["body"]).group()  # type: ignore[union-attr]
        r = invoke("POST", "/v1/auth/verify-code", body={"email": "bench@bench.test", "code": code})
        sid = r.cookies[0].split(";")[0].split("=", 1)[1]
        for i in range(60):
            wallet.credit("usr_x", 1, "adjustment", f"x{i}")
        measure("GET /v1/billing/balance", lambda i: invoke("GET", "/v1/billing/balance", cookies={"sid": sid}))
        measure("GET /v1/billing/ledger", lambda i: invoke("GET", "/v1/billing/ledger", cookies={"sid": sid}))
        measure("GET /v1/auth/me", lambda i: invoke("GET", "/v1/auth/me", cookies={"sid": sid}))
        print("\nAPI requests include the session read (GetItem) and the rate-limit count (UpdateItem).")


if __name__ == "__main__":
    main()
