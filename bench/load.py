"""A bounded load run against the local stack, then the money invariants.

Starts `make dev`'s stack (`python -m infra.local.dev`) on a free loopback
port, runs N simulated users concurrently for S seconds (each from its own
loopback address, so the per-IP sign-in limit applies per user as it would in
production): sign in by emailed code, get funded (an admin adjustment; every
fifth user also saves a card and tops up with it through the local Stripe),
then browse the catalog, launch pods, poll them, read the meter, the balance
and the ledger, and stop pods, while a clock thread advances the test clock
(so metering sweeps, timers and reconciles run under the load). Afterwards
every pod is stopped, the clock moves on, and for every wallet:

- available ≥ 0, reserved = 0 once nothing runs, total = available + reserved;
- the ledger reconciles: Σ amountCents = total, and each row's
  balanceAfterCents = its amount + the previous row's balanceAfterCents;
- every rental is terminal (`stopped`/`failed`), none stuck in a transitional state;
- each Stripe payment is credited once (one row per charge id).

It prints requests served, errors by status, latency percentiles per route,
and the invariant results; it exits non-zero if an invariant broke. It never
judges speed.

    .venv/bin/python bench/load.py [--users 50] [--seconds 120] [--dynamodb-endpoint URL]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
READY = "gpurent local stack listening on "
STACK_LOG = Path(os.environ.get("TMPDIR", "/tmp")) / "gpurent-load-stack.log"
FAMILIES = ("rtx-4090", "rtx-5090", "a100-80gb", "h100-80gb")


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: Counter[int] = Counter()
        self.by_route_status: Counter[tuple[str, int]] = Counter()

    def record(self, route: str, status: int, ms: float) -> None:
        with self.lock:
            self.latency[route].append(ms)
            self.status[status] += 1
            self.by_route_status[(route, status)] += 1


STATS = Stats()


def route_of(method: str, path: str) -> str:
    path = path.split("?", 1)[0]
    path = re.sub(r"/(rent|key|inv|tok)_[0-9A-Z]+", r"/{id}", path)
    path = re.sub(r"/dev/stripe/setup-intents/[^/]+", "/dev/stripe/setup-intents/{id}", path)
    return f"{method} {path}"


class Client:
    """httpx bound to one loopback source address, timing every request."""

    def __init__(self, base: str, source: str, timeout: float = 60) -> None:
        self.http = httpx.Client(base_url=base, timeout=timeout,
                                 transport=httpx.HTTPTransport(local_address=source))

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        t = time.perf_counter()
        r = self.http.request(method, path, **kw)
        STATS.record(route_of(method, path), r.status_code, (time.perf_counter() - t) * 1000)
        if r.status_code == 429:
            time.sleep(min(5.0, float(r.headers.get("retry-after", "1"))))
        return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_stack(dynamodb_endpoint: str | None) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DYNAMODB_ENDPOINT",)}
    env.update({"PORT": str(port), "PYTHONUNBUFFERED": "1", "SIM_BOOT_SECONDS": "10"})
    if dynamodb_endpoint:
        env["DYNAMODB_ENDPOINT"] = dynamodb_endpoint
    log = open(STACK_LOG, "w")  # the stack's stderr, kept for the run
    proc = subprocess.Popen([sys.executable, "-m", "infra.local.dev"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    for line in proc.stdout:
        if READY in line:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
            return proc, line.split(READY, 1)[1].strip()
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit("the local stack did not start")


def sign_in(c: Client, email: str) -> None:
    r = c.call("POST", "/v1/auth/request-code", json={"email": email})
    assert r.status_code == 200, r.text
    for _ in range(50):
        for m in c.call("GET", "/dev/mailbox").json():
            if m["to"] == email:
                code = re.search(r"\b(\d{6})\b", m["body"])
                if code:
                    r = c.call("POST", "/v1/auth/verify-code", json={"email": email, "code": code.group(1)})
                    assert r.status_code == 200, r.text
                    return
        time.sleep(0.1)
    raise AssertionError(f"no code for {email}")


def wait_until(pred: Any, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.2)
    return False


class User(threading.Thread):
    def __init__(self, n: int, base: str, admin: Client, deadline: float, seed: int) -> None:
        super().__init__(name=f"user-{n}", daemon=True)
        self.n, self.base, self.admin, self.deadline = n, base, admin, deadline
        self.email = f"load{n}-{seed}@example.com"
        self.c = Client(base, f"127.0.{1 + n // 250}.{1 + n % 250}")
        self.rng = random.Random(seed * 1000 + n)
        self.user_id = ""
        self.live: list[str] = []
        self.error: str | None = None
        self.refusals: Counter[str] = Counter()

    def run(self) -> None:
        try:
            self.setup()
            while time.monotonic() < self.deadline:
                self.step()
                time.sleep(self.rng.uniform(0.2, 1.0))
        except Exception as exc:  # recorded; the run reports it
            self.error = repr(exc)

    def setup(self) -> None:
        sign_in(self.c, self.email)
        self.user_id = self.c.call("GET", "/v1/auth/me").json()["user"]["id"]
        r = self.admin.call("POST", "/v1/admin/adjustments",
                            json={"userId": self.user_id, "amountCents": 20_000, "reason": "load test"},
                            headers={"idempotency-key": f"load-{self.email}"})
        assert r.status_code == 200, r.text
        if self.n % 5 == 0:  # a saved card, then a top-up with it, through the local Stripe
            secret = self.c.call("POST", "/v1/billing/setup-intent").json()["clientSecret"]
            si = secret.split("_secret_")[0]
            r = self.c.call("POST", f"/dev/stripe/setup-intents/{si}/confirm", json={"card": "4242424242424242"})
            assert r.status_code == 200, r.text
            wait_until(lambda: self.c.call("GET", "/v1/billing/card").json()["pmId"] is not None)
            r = self.c.call("POST", "/v1/billing/checkout", json={"amountCents": 5000},
                            headers={"idempotency-key": f"topup-{self.email}"})
            assert r.status_code == 200, r.text

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.15 and len(self.live) < 2:
            r = self.c.call("POST", "/v1/rentals", json={"familyId": self.rng.choice(FAMILIES), "gpuCount": 1},
                            headers={"idempotency-key": f"{self.email}-{time.monotonic_ns()}"})
            if r.status_code in (200, 201, 202):
                self.live.append(r.json()["id"])
            else:  # a documented refusal (no stock left at the quoted price, low balance): recorded
                self.refusals[r.json().get("error", "?")] += 1
        elif roll < 0.25 and self.live:
            rid = self.live.pop(self.rng.randrange(len(self.live)))
            self.c.call("POST", f"/v1/rentals/{rid}/stop")
        elif roll < 0.45 and self.live:
            rid = self.rng.choice(self.live)
            self.c.call("GET", f"/v1/rentals/{rid}")
            self.c.call("GET", f"/v1/rentals/{rid}/meter")
        elif roll < 0.65:
            self.c.call("GET", "/v1/billing/balance")
        elif roll < 0.75:
            self.c.call("GET", "/v1/billing/ledger?pageSize=50")
        elif roll < 0.9:
            self.c.call("GET", "/v1/catalog/listings?pageSize=20")
        else:
            self.c.call("GET", "/v1/rentals?pageSize=20")


def all_pages(c: Client, path: str, key: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        url = path + (f"&cursor={cursor}" if cursor else "")
        r = c.call("GET", url)
        for _ in range(5):  # the per-session limit may still be full from the run
            if r.status_code != 429:
                break
            r = c.call("GET", url)
        page = r.json()
        if key not in page:
            raise RuntimeError(f"GET {url}: {r.status_code} {page}")
        out.extend(page[key])
        cursor = page.get("nextCursor")
        if not cursor:
            return out


def check_wallet(u: User) -> list[str]:
    problems = []
    c = u.c
    rentals = all_pages(c, "/v1/rentals?pageSize=200", "rentals")
    stuck = [r["id"] for r in rentals if r["status"] not in ("stopped", "failed")]
    if stuck:
        problems.append(f"{u.email}: rentals not terminal: {stuck}")
    bal = c.call("GET", "/v1/billing/balance").json()
    rows = all_pages(c, "/v1/billing/ledger?pageSize=200", "entries")
    if bal["availableCents"] < 0 or bal["reservedCents"] < 0:
        problems.append(f"{u.email}: negative wallet {bal}")
    if bal["reservedCents"] != 0:
        problems.append(f"{u.email}: {bal['reservedCents']} still reserved with nothing running")
    if bal["totalCents"] != bal["availableCents"] + bal["reservedCents"]:
        problems.append(f"{u.email}: total != available + reserved: {bal}")
    if sum(r["amountCents"] for r in rows) != bal["totalCents"]:
        problems.append(f"{u.email}: Σ ledger {sum(r['amountCents'] for r in rows)} != total {bal['totalCents']}")
    for newer, older in itertools.pairwise(rows):
        if newer["balanceAfterCents"] != newer["amountCents"] + older["balanceAfterCents"]:
            problems.append(f"{u.email}: ledger chain broken at {newer['id']}")
            break
    charges = Counter(r["stripeChargeId"] for r in rows if r.get("stripeChargeId"))
    twice = [ch for ch, n in charges.items() if n > 1]
    if twice:
        problems.append(f"{u.email}: Stripe charges credited twice: {twice}")
    return problems


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    ap.add_argument("--dynamodb-endpoint", default=None,
                    help="an existing DynamoDB endpoint (default: the stack's own DynamoDB Local)")
    args = ap.parse_args()

    proc, base = start_stack(args.dynamodb_endpoint)
    try:
        admin = Client(base, "127.0.3.250")
        sign_in(admin, "admin@localhost")
        started = time.monotonic()
        deadline = started + args.seconds
        users = [User(n, base, admin, deadline, args.seed) for n in range(args.users)]
        for u in users:
            u.start()
        clock = Client(base, "127.0.3.251", timeout=600)  # a jump runs every sweep under the load: slow
        while time.monotonic() < deadline:
            time.sleep(10)
            clock.call("POST", "/dev/clock/advance", json={"seconds": 30})  # sweeps, timers, reconciles
        for u in users:
            u.join(timeout=120)
        served = sum(STATS.status.values())
        elapsed = time.monotonic() - started
        # Wind down: stop every pod, let the stops be confirmed.
        for u in users:
            if u.error:
                continue
            for r in all_pages(u.c, "/v1/rentals?pageSize=200", "rentals"):
                if r["status"] in ("provisioning", "running"):
                    u.c.call("POST", f"/v1/rentals/{r['id']}/stop")
        for _ in range(12):  # > ADOPT_GRACE: a stop of a pod whose allocation is uncertain waits for it
            clock.call("POST", "/dev/clock/advance", json={"seconds": 30})
        problems = []
        for u in users:
            if u.error:
                problems.append(f"{u.email}: the simulated user failed: {u.error}")
                continue
            problems.extend(check_wallet(u))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()

    print(f"load: {args.users} users for {args.seconds:.0f} s (seed {args.seed}), on {base}, "
          f"DynamoDB: {args.dynamodb_endpoint or 'DynamoDB Local (the stack starts it)'}")
    print(f"  requests served during the run  {served:,}  ({served / elapsed:.1f}/s)")
    print("  answers by status               " + ", ".join(f"{s}: {n:,}" for s, n in sorted(STATS.status.items())))
    print(f"  {'route':<44} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for route, lat in sorted(STATS.latency.items(), key=lambda kv: -len(kv[1])):
        if route.startswith("GET /dev/mailbox"):
            continue
        print(f"  {route:<44} {len(lat):>6} {pct(lat, 50):>8.1f} {pct(lat, 95):>8.1f} {pct(lat, 99):>8.1f}")
    four = {k: v for k, v in STATS.by_route_status.items() if 400 <= k[1] < 500}
    print("  4xx by route                    " + (", ".join(f"{r} {s}: {n}" for (r, s), n in sorted(four.items()))
                                                 or "none"))
    five = {k: v for k, v in STATS.by_route_status.items() if k[1] >= 500}
    print("  5xx by route                    " + (", ".join(f"{r} {s}: {n}" for (r, s), n in five.items()) or "none"))
    all_lat = [x for v in STATS.latency.values() for x in v]
    print(f"  all requests: p50 {statistics.median(all_lat):.1f} ms, p95 {pct(all_lat, 95):.1f} ms, "
          f"p99 {pct(all_lat, 99):.1f} ms")
    refusals = sum((u.refusals for u in users), Counter())
    print("  launch refusals                 " + (", ".join(f"{k}: {n}" for k, n in refusals.items()) or "none"))
    print(f"  the stack's log: {STACK_LOG}")
    print(f"  invariants over {len(users)} wallets: " + ("all hold" if not problems else f"{len(problems)} broken"))
    for p in problems:
        print("   -", p)
    return 1 if problems or five else 0


if __name__ == "__main__":
    sys.exit(main())
