"""What each rental operation costs: DynamoDB requests by operation (botocore
event hooks on the store's client) and provider HTTP calls (counted at the
provider simulators), and its median latency. Prints figures; asserts nothing.

    .venv/bin/python bench/rentals.py                  # both parts
    .venv/bin/python bench/rentals.py --api            # the API and small reconcile passes only
    .venv/bin/python bench/rentals.py --scale [N]      # the reconciler at N live rentals (10,000)

The API part runs against moto in-process and the simulators on loopback. Rentals
are placed on the Lambda Cloud simulator (its capacity is not used up by renting,
so every run launches the same way); the adapters of all three providers are
installed, so a reconcile pass also lists the instances of each.

The scale part runs against DynamoDB Local and the simulators: N running rentals
(a third at each provider, 10 to a wallet) are seeded straight into the store, each
wallet in one money transaction with its rentals' one-hour reserves, and each with
its instance at its provider's simulator (clones of one instance allocated through
the adapter, so every list answer has the recorded shape). It measures each
provider's pass as its worker runs it (`reconciler.reconcile_provider`), in the
steady state and with 1 % of the rentals changed, and prints a model of 100,000
live rentals on AWS with its assumptions.
"""

from __future__ import annotations

import contextlib
import io
import os
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
                   "POWERTOOLS_METRICS_DISABLED": "1", "RATE_LIMIT_PER_MINUTE": "1000000",
                   "RATE_LIMIT_PER_HOUR": "10000000", "ADMIN_EMAILS": "admin@bench.test"})

from moto import mock_aws  # noqa: E402

from gpurent import catalog_refresh, clock, config, notify, rentals, wallet  # noqa: E402
from gpurent.providers import registry  # noqa: E402
from gpurent.providers.registry import build_adapters  # noqa: E402
from gpurent.store import dynamo  # noqa: E402
from infra.local import template  # noqa: E402
from infra.local.client import invoke  # noqa: E402
from infra.simulators import Simulators, start_simulators  # noqa: E402

RUNS = 20
BOOT = 20.0
READS = ("GetItem", "Query", "BatchGetItem", "Scan")
PASS_SIZES = (10, 50)
SCALE = 10_000
calls: Counter[str] = Counter()
rows: list[tuple[str, int, int, str, float, str]] = []


def count(event_name: str, **kwargs: Any) -> None:
    calls[event_name.rsplit(".", 1)[-1]] += 1


def provider_calls(sims: Simulators) -> Counter[str]:
    out: Counter[str] = Counter()
    for s in sims.all():
        with s.lock:
            for method, _path in s.requests:
                out[f"{s.code} {method}"] += 1
    return out


def measure(name: str, sims: Simulators, fn: Callable[[int], Any], runs: int = RUNS) -> None:
    times = []
    per_call: list[tuple[Counter[str], Counter[str]]] = []
    for i in range(runs):
        calls.clear()
        before = provider_calls(sims)
        t = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t) * 1000)
        per_call.append((Counter(calls), provider_calls(sims) - before))
    ddb, http = per_call[len(per_call) // 2]
    reads = sum(v for k, v in ddb.items() if k in READS)
    writes = sum(v for k, v in ddb.items() if k not in READS)
    detail = ", ".join(f"{k} {v}" for k, v in sorted(ddb.items()))
    provider = ", ".join(f"{k} {v}" for k, v in sorted(http.items())) or "-"
    rows.append((name, reads, writes, provider, statistics.median(times), detail))
    print(f"{name:<44} {reads:>5} {writes:>6}  {sum(http.values()):>4}  {statistics.median(times):9.1f} ms   "
          f"{detail} | {provider}", flush=True)


def sign_in(email: str) -> str:
    with contextlib.redirect_stderr(io.StringIO()):
        invoke("POST", "/v1/auth/request-code", body={"email": email})
    message = next(m for m in notify.mailbox() if m["to"] == email)
    code = message["body"].split("code is ", 1)[1][:6]
    r = invoke("POST", "/v1/auth/verify-code", body={"email": email, "code": code})
    return r.cookies[0].split(";")[0].split("=", 1)[1]


def main() -> None:
    args = sys.argv[1:]
    if "--scale" not in args:
        api_part()
    if "--api" not in args:
        n = next((int(a) for a in args if a.isdigit()), SCALE)
        from bench import reconcile_scale

        reconcile_scale.run(n)


def api_part() -> None:
    manual = clock.ManualClock()
    clock.set_clock(manual)
    sims = start_simulators(now=clock.now, boot_seconds=BOOT)
    try:
        with mock_aws():
            names = template.default_table_names("bench")
            os.environ.update({template.TABLE_ENV[k]: v for k, v in names.items()})
            config.reset()
            template.create_tables(dynamo.client(), names)
            every = build_adapters(sims.settings())
            catalog_refresh.refresh(build_adapters({**sims.settings(), "PROVIDERS": "lambda"}))
            registry.set_adapters(every)
            sid = sign_in("bench@bench.test")
            cookies = {"sid": sid}
            user_id = invoke("GET", "/v1/auth/me", cookies=cookies).json()["user"]["id"]
            wallet.credit(user_id, 10**8, "adjustment", "bench-funding")
            dynamo.client().meta.events.register("before-call.dynamodb.*", count)
            run(sims, cookies)
            print("\nAPI requests include the session read (GetItem) and the rate-limit count (UpdateItem).")
    finally:
        registry.set_adapters(None)
        sims.shutdown()


def run(sims: Simulators, cookies: dict[str, str]) -> None:
    manual = clock.get_clock()
    assert isinstance(manual, clock.ManualClock)
    body = {"familyId": "rtx-4090", "gpuCount": 1}
    launched: list[str] = []

    def api(method: str, url: str, payload: Any = None) -> Any:
        r = invoke(method, url, body=payload, cookies=cookies)
        assert r.status == 200, (url, r.status, r.body)
        return r.json()

    print(f"{'operation':<44} {'reads':>5} {'writes':>6}  {'http':>4}  {'median':>12}   DynamoDB | provider calls")
    measure("POST /v1/rentals (launch)", sims, lambda i: launched.append(api("POST", "/v1/rentals", body)["id"]))
    keyed = invoke("POST", "/v1/rentals", body=body, cookies=cookies, headers={"Idempotency-Key": "bench-key"})
    measure("POST /v1/rentals (replayed Idempotency-Key)", sims,
            lambda i: invoke("POST", "/v1/rentals", body=body, cookies=cookies,
                             headers={"Idempotency-Key": "bench-key"}))
    api("POST", f"/v1/rentals/{keyed.json()['id']}/stop")  # from provisioning: out of the way
    manual.advance(5)
    measure("GET /v1/rentals/{id} provisioning (polls)", sims, lambda i: api("GET", f"/v1/rentals/{launched[i]}"))
    measure("GET /v1/rentals/{id} provisioning (< 2 s)", sims, lambda i: api("GET", f"/v1/rentals/{launched[i]}"))
    manual.advance(BOOT)
    measure("GET /v1/rentals/{id} provisioning → running", sims, lambda i: api("GET", f"/v1/rentals/{launched[i]}"))
    manual.advance(600)
    measure("GET /v1/rentals/{id} running", sims, lambda i: api("GET", f"/v1/rentals/{launched[i]}"))
    measure("GET /v1/rentals/{id}/meter running", sims, lambda i: api("GET", f"/v1/rentals/{launched[i]}/meter"))
    measure("GET /v1/rentals (page of 50)", sims, lambda i: api("GET", "/v1/rentals"))
    measure("POST /v1/rentals/{id}/stop running", sims, lambda i: api("POST", f"/v1/rentals/{launched[i]}/stop"))
    measure(f"reconcile pass: {RUNS + 1} stopping → stopped", sims, lambda i: rentals.reconcile(), runs=1)
    measure("reconcile pass: nothing live", sims, lambda i: rentals.reconcile(), runs=5)
    for n in PASS_SIZES:
        catalog_refresh.refresh(build_adapters({**sims.settings(), "PROVIDERS": "lambda"}))
        mine = [api("POST", "/v1/rentals", body)["id"] for _ in range(n)]
        measure(f"reconcile pass: {n} provisioning (not booted)", sims, lambda i: rentals.reconcile(), runs=1)
        manual.advance(BOOT + 1)
        measure(f"reconcile pass: {n} provisioning → running", sims, lambda i: rentals.reconcile(), runs=1)
        manual.advance(60)
        measure(f"reconcile pass: {n} running (health check)", sims, lambda i: rentals.reconcile(), runs=3)
        for rid in mine:
            api("POST", f"/v1/rentals/{rid}/stop")
        rentals.reconcile()


if __name__ == "__main__":
    main()
