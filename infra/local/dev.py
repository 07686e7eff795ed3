"""`make dev`: the whole system on one machine, with the same handler code
that runs in Lambda.

- HTTP on 127.0.0.1:$PORT (default 3000), routed as template.yaml declares;
- DynamoDB Local (Java, in memory, started and stopped with the stack) unless
  DYNAMODB_ENDPOINT is given;
- emails printed to the console and listed at GET /dev/mailbox;
- a test clock: GET /dev/clock, POST /dev/clock/advance {"seconds": n};
- later capabilities plug in through `SERVICES` (provider simulators, Stripe,
  scheduled functions): each is a function `start(stack) -> stop`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "layers" / "gpurent"))

from gpurent import clock, config, notify  # noqa: E402
from gpurent.store import dynamo  # noqa: E402
from infra.local import template  # noqa: E402
from infra.local.server import LocalServer  # noqa: E402
from infra.local.static import start_dashboard  # noqa: E402
from infra.local.stripe_local import start_stripe  # noqa: E402 - cheap: localstripe is imported lazily

STOP_SECONDS = 4.0


@dataclass
class Stack:
    server: LocalServer
    clock: clock.OffsetClock
    env: dict[str, str]
    stops: list[Callable[[], None]] = field(default_factory=list)
    children: list[int] = field(default_factory=list)  # pids of child processes (GET /dev/stats)
    serving: bool = False
    scheduler: Any = None  # infra.local.scheduler.LocalScheduler, once started
    # Work to run when the test clock moves (scheduled functions register here).
    on_advance: list[Callable[[float], None]] = field(default_factory=list)


def local_env(port: int) -> dict[str, str]:
    public = f"http://127.0.0.1:{port}"
    names = template.default_table_names("gpurent-local")
    env = {
        "STAGE": "local",
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "PUBLIC_URL": os.environ.get("PUBLIC_URL", public),
        "ALLOWED_ORIGINS": os.environ.get(
            "ALLOWED_ORIGINS", f"{public},http://localhost:{port},http://localhost:5173"
        ),
        "ADMIN_EMAILS": os.environ.get("ADMIN_EMAILS", "admin@localhost"),
        "MAIL_MODE": "console",
        "COOKIE_SECURE": "0",
        "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
        "POWERTOOLS_METRICS_DISABLED": "1",
        "POWERTOOLS_TRACE_DISABLED": "1",
    }
    env.update({template.TABLE_ENV[k]: v for k, v in names.items()})
    return env


def say(message: str) -> None:
    """A progress line of `make dev` (stdout, so a person sees what it is doing)."""
    print(f"[dev] {message}", flush=True)


def start_dynamodb(stack: Stack) -> Callable[[], None]:
    """DynamoDB Local (in memory, on a free loopback port, stopped with the stack), unless
    DYNAMODB_ENDPOINT names another endpoint; then every table of template.yaml."""
    endpoint = os.environ.get("DYNAMODB_ENDPOINT")
    stop: Callable[[], None] = lambda: None  # noqa: E731
    if not endpoint:
        from infra.local import dynamodb_local

        say("starting DynamoDB Local (Java, in memory)")
        db = dynamodb_local.start()
        stack.children.extend(db.pids)
        endpoint = db.endpoint
        stop = db.stop
        say(f"DynamoDB Local on {endpoint} ({db.started_seconds:.1f} s)")
    else:
        say(f"DynamoDB at {endpoint} (DYNAMODB_ENDPOINT)")
    os.environ["DYNAMODB_ENDPOINT"] = endpoint
    config.reset()
    dynamo.reset_client()
    names = {k: os.environ[v] for k, v in template.TABLE_ENV.items()}
    template.create_tables(dynamo.client(), names)
    return stop


def add_dev_routes(stack: Stack) -> None:
    def mailbox(path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        return 200, notify.mailbox()

    def show_clock(path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        return 200, {"now": clock.now_iso(), "epoch": clock.now(), "offsetSeconds": stack.clock.offset}

    def advance(path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        try:
            raw = json.loads(body or b"{}").get("seconds")
        except (ValueError, AttributeError):
            raw = None
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return 400, {"error": "validation_failed", "message": "seconds must be a number",
                         "details": {"seconds": "must be a number"}}
        seconds = float(raw)
        if not 0 < seconds <= 31 * 86400:
            return 400, {"error": "validation_failed", "message": "seconds must be in (0, 2678400]",
                         "details": {"seconds": "must be in (0, 2678400]"}}
        if stack.on_advance:
            for work in stack.on_advance:
                work(seconds)  # moves the clock itself, running what falls due on the way
        else:
            stack.clock.advance(seconds)
        return show_clock(path, headers, body)

    def stats(path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        from gpurent import timers
        from infra.local.process import rss_bytes

        jobs = stack.scheduler.stats if stack.scheduler is not None else {}
        return 200, {
            "rssBytes": rss_bytes(os.getpid()),
            "childrenRssBytes": sum(rss_bytes(p) for p in stack.children),
            "threads": threading.active_count(),
            "mailbox": len(notify.mailbox()),
            "timersPending": timers.pending_count(),
            "jobs": {name: {"runs": int(n), "seconds": round(t, 3), "databaseCpuSeconds": round(c, 3)}
                     for name, (n, t, c) in sorted(jobs.items())},
        }

    stack.server.add_dev_route("GET", "/dev/mailbox", mailbox)
    stack.server.add_dev_route("GET", "/dev/stats", stats)
    stack.server.add_dev_route("GET", "/dev/clock", show_clock)
    stack.server.add_dev_route("POST", "/dev/clock/advance", advance)


def start_providers(stack: Stack) -> Callable[[], None]:
    """Provider simulators speaking the vast.ai / RunPod / Lambda Cloud wire formats,
    reading the test clock; the real adapters are pointed at them."""
    from infra.simulators import start_simulators

    boot = float(os.environ.get("SIM_BOOT_SECONDS", "20"))
    sims = start_simulators(now=clock.now, boot_seconds=boot)
    os.environ.update(sims.settings())

    def providers(path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        return 200, {s.__class__.__name__.removesuffix("Simulator").lower(): s.origin for s in sims.all()}

    stack.server.add_dev_route("GET", "/dev/providers", providers)
    return sims.shutdown


def start_schedules(stack: Stack) -> Callable[[], None]:
    """The scheduled functions of template.yaml and the timer queue's consumer, on the test
    clock (`infra.local.scheduler`): each schedule runs once at start, then at its rate (or
    every LOCAL_SCHEDULE_SECONDS of real time); `POST /dev/clock/advance` runs every piece
    of work that falls due on the way, in order."""
    from infra.local.scheduler import LocalScheduler

    override = os.environ.get("LOCAL_SCHEDULE_SECONDS")
    scheduler = LocalScheduler(stack.clock, float(override) if override else None)
    scheduler.database_pids = list(stack.children)
    scheduler.run_due()
    stack.scheduler = scheduler
    stack.on_advance.append(lambda seconds: scheduler.advance(seconds, progress=lambda line: say(line)))
    return scheduler.start()


# Capabilities that need a running service plug in here: (name, start). Order matters:
# the schedules run the catalog refresh against the simulators once before serving.
SERVICES: list[tuple[str, Callable[[Stack], Callable[[], None]]]] = [
    ("dynamodb", start_dynamodb),
    ("stripe", start_stripe),
    ("providers", start_providers),
    ("schedules", start_schedules),
    ("dashboard", start_dashboard),
]


def main() -> None:
    began = time.monotonic()
    port = int(os.environ.get("PORT", "3000"))
    server = LocalServer("127.0.0.1", port)
    port = int(server.server_address[1])
    os.environ.update({k: v for k, v in local_env(port).items() if k not in os.environ or k in (
        "STAGE", "MAIL_MODE", "COOKIE_SECURE", "POWERTOOLS_METRICS_DISABLED", "POWERTOOLS_TRACE_DISABLED")})
    config.reset()
    test_clock = clock.OffsetClock()
    clock.set_clock(test_clock)
    stack = Stack(server=server, clock=test_clock, env=dict(os.environ))

    done = threading.Event()

    def shutdown(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, shutdown)
    try:
        for name, start in SERVICES:
            t = time.monotonic()
            stack.stops.append(start(stack))
            say(f"{name} ready ({time.monotonic() - t:.1f} s)")
            if done.is_set():  # SIGTERM while starting: stop what started
                raise KeyboardInterrupt
        add_dev_routes(stack)
        signal.signal(signal.SIGINT, shutdown)
        server.start()
        stack.serving = True
        say(f"ready in {time.monotonic() - began:.1f} s; Ctrl-C stops everything")
        print(f"gpurent local stack listening on {server.url}", flush=True)
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        print("gpurent local stack stopping", flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        stop_all(stack)
        # Every service is stopped (or was given its time): leave now, without waiting for a
        # request still in flight (a long clock jump, a retrying DynamoDB call) to notice.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def stop_all(stack: Stack) -> None:
    """Stop the server and every service at once (they are independent), within STOP_SECONDS
    in all: a stuck one is reported and left to the process exit (its threads are daemons,
    DynamoDB Local's JVM has a watchdog that ends it when this process ends)."""
    deadline = time.monotonic() + STOP_SECONDS
    work = ([stack.server.shutdown] if stack.serving else []) + list(reversed(stack.stops))
    workers = [threading.Thread(target=stop, daemon=True) for stop in work]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    if any(w.is_alive() for w in workers):
        print("[dev] a service did not stop in time; leaving it to the exit", file=sys.stderr, flush=True)
    stack.server.server_close()


if __name__ == "__main__":
    main()
