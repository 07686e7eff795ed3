"""Time travel on the local stack: how long `POST /dev/clock/advance` takes with
pods running, and whether the stack's memory stays flat over a simulated day.

Starts `make dev`'s stack (DynamoDB Local, the local Stripe, the simulators) on a
free port, funds one user, launches PODS pods (spread over the families, so every
simulated provider has some), lets them boot, then:

1. advances one hour with every pod running (the figure the docs quote);
2. advances HOURS simulated hours, one hour per request, printing after each
   hour the seconds it took and the resident memory of the stack process and of
   DynamoDB Local's JVM; then a whole day in one request;
3. checks the money still adds up (every pod metered to the second, the ledger
   equal to the balance) and stops the stack with SIGTERM, timing the stop.

It prints figures; it never passes or fails on time.

    .venv/bin/python bench/clock.py [--pods 10] [--hours 24] [--no-day-jump]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.local import journey  # noqa: E402
from infra.local.process import LocalStackProcess  # noqa: E402

FAMILIES = ("rtx-4090", "a100-80gb", "h100-80gb", "rtx-5090", "l40s-48gb")


def mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


def stack_stats(http: Any) -> dict[str, Any]:
    return dict(http.get("/dev/stats").json())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=10)
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--day-jump", action=argparse.BooleanOptionalAction, default=True,
                    help="then advance a whole day in one request")
    args = ap.parse_args()

    stack = LocalStackProcess.start()
    print(f"stack ready in {stack.ready_seconds:.1f} s on {stack.url}", flush=True)
    try:
        email = journey.new_email("bench-clock")
        user = journey.sign_in(stack.url, email, timeout=1800)  # a busy machine makes a jump slow
        admin = journey.sign_in(stack.url, journey.LOCAL_ADMIN)
        r = journey.fund(admin, email, 10_000_000)
        assert r.status_code == 200, r.text
        families = [f["id"] for f in user.get("/v1/catalog/families").json()["families"]]
        rids: list[str] = []
        usable = [f for f in FAMILIES if f in families] or families
        refused = 0
        while len(rids) < args.pods and refused < 5 * args.pods:
            # A simulated provider may refuse an offer (as real ones do): try the next family.
            r = journey.launch(user, usable[(len(rids) + refused) % len(usable)], name=f"bench-{len(rids)}")
            if r.status_code >= 400:
                refused += 1  # its offers were taken: the catalog refresh at the end of a jump sees that
                journey.advance(user, 60)
                continue
            rids.append(r.json()["id"])
        journey.advance(user, 60)
        statuses = [user.get(f"/v1/rentals/{rid}").json()["status"] for rid in rids]
        print(f"{args.pods} pods launched: {dict(Counter(statuses))} ({refused} launches refused)", flush=True)

        t, cpu = time.perf_counter(), stack.cpu()
        journey.advance(user, 3600)
        one_hour = time.perf_counter() - t
        rss, cpu_after = stack.rss(), stack.cpu()
        print(f"advance 1 h with {args.pods} pods running: {one_hour:.2f} s (CPU: stack "
              f"{cpu_after['stack'] - cpu['stack']:.1f} s, DynamoDB Local "
              f"{cpu_after['children'] - cpu['children']:.1f} s;"
              f" memory: stack {mb(rss['stack'])}, DynamoDB Local {mb(rss['children'])})", flush=True)

        day_began = time.perf_counter()
        for hour in range(1, args.hours + 1):
            t = time.perf_counter()
            journey.advance(user, 3600)
            rss = stack.rss()
            print(f"  hour {hour:2d}: {time.perf_counter() - t:5.2f} s   stack {mb(rss['stack']):>7}   "
                  f"DynamoDB Local {mb(rss['children']):>7}", flush=True)
        day = time.perf_counter() - day_began
        print(f"{args.hours} simulated hours, one request each, with {args.pods} pods running: {day:.1f} s",
              flush=True)
        if args.day_jump:
            t, cpu = time.perf_counter(), stack.cpu()
            journey.advance(user, 86400)
            cpu_after, rss = stack.cpu(), stack.rss()
            print(f"a simulated day in one request (each job at most 240 times, evenly spread) with "
                  f"{args.pods} pods running: {time.perf_counter() - t:.1f} s (CPU: stack "
                  f"{cpu_after['stack'] - cpu['stack']:.1f} s, DynamoDB Local "
                  f"{cpu_after['children'] - cpu['children']:.1f} s; memory: stack {mb(rss['stack'])}, "
                  f"DynamoDB Local {mb(rss['children'])})", flush=True)
        print("scheduled work:", stack_stats(user)["jobs"], flush=True)

        rentals = [user.get(f"/v1/rentals/{rid}").json() for rid in rids]
        running = [x for x in rentals if x["status"] == "running"]
        bal = journey.balance(user)
        rows = journey.ledger(user)
        assert sum(row["amountCents"] for row in rows) == bal["totalCents"], "the ledger does not add up"
        charged = sum(int(x.get("totalChargedCents") or 0) for x in rentals)
        print(f"{len(running)} pods still running, {charged} cents charged, ledger rows {len(rows)}: "
              f"ledger = balance", flush=True)
    finally:
        code, took, alive = stack.stop()
        print(f"SIGTERM: the stack exited with {code} in {took:.2f} s; children left: {alive or 'none'}")


if __name__ == "__main__":
    main()
