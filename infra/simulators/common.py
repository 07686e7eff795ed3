"""What the three provider simulators share: the HTTP server, knobs, instances, the clock.

Each simulator is a ``ThreadingHTTPServer`` on 127.0.0.1 (port 0: the OS picks a free
one) that speaks one provider's wire format. Time comes from an injected ``now()`` so a
test clock can jump: an instance's state is derived from ``now() - created_at`` when it is
read, never from a timer.

Control routes (no auth; these servers only ever listen on loopback):

- ``GET  /_sim/knobs``, ``POST /_sim/knobs`` with a JSON object of the knobs to change
- ``GET  /_sim/instances`` every instance with its phase and label
- ``POST /_sim/instances/{id}/crash`` the provider's failure state from then on
- ``POST /_sim/instances/{id}/vanish`` the provider forgets the instance
- ``POST /_sim/instances/{id}/status`` ``{"status": …, "message": …}``: from then on the
  provider reports this raw status (its own vocabulary: vast ``actual_status``, RunPod
  ``desiredStatus``, Lambda ``status``) and message; ``{"status": null}`` lifts it
- ``POST /_sim/reset`` knobs off, instances gone, offers re-seeded
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("gpurent.simulators")

Clock = Callable[[], float]
Phase = Literal["provisioning", "running", "crashed", "stopped", "terminated"]

MAX_SLEEP_SECONDS = 30.0
REQUEST_LOG = 10_000

ALLOCATE_MODES = frozenset({"capacity", "quota", "auth", "error", "timeout", "refuse"})
LIST_OFFERS_MODES = frozenset({"error", "timeout"})
TERMINATE_MODES = frozenset({"error"})


@dataclass
class Knobs:
    """Fault switches. ``None`` is normal behaviour."""

    allocate: str | None = None  # capacity | quota | auth | error | timeout | refuse
    # allocate="refuse": the provider's refusal, in its own error envelope, with this code
    # (vast `error`, Lambda `error.code`; RunPod has none) and these words.
    refusal_code: str | None = None
    refusal_text: str = "Refused."
    list_offers: str | None = None  # error | timeout
    terminate: str | None = None  # error
    # vast: a search answers at most this many offers whatever `limit` asks (None: no cap)
    search_cap: int | None = 64
    latency_seconds: float = 0.0  # added to every provider request
    hang_seconds: float = 15.0  # how long a "timeout" mode holds the answer back (≤ 30 s)

    def update(self, changes: Mapping[str, Any]) -> None:
        allowed = {"allocate": ALLOCATE_MODES, "list_offers": LIST_OFFERS_MODES, "terminate": TERMINATE_MODES}
        for key, value in changes.items():
            if key in allowed:
                if value is not None and value not in allowed[key]:
                    raise ValueError(f"{key} must be one of {sorted(allowed[key])} or null")
                setattr(self, key, value)
            elif key == "search_cap":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                    raise ValueError("search_cap must be an integer ≥ 1 or null")
                self.search_cap = value
            elif key == "refusal_code":
                if value is not None and not isinstance(value, str):
                    raise ValueError("refusal_code must be a string or null")
                self.refusal_code = value
            elif key == "refusal_text":
                if not isinstance(value, str) or not value:
                    raise ValueError("refusal_text must be a non-empty string")
                self.refusal_text = value
            elif key in ("latency_seconds", "hang_seconds"):
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{key} must be a number ≥ 0")
                setattr(self, key, float(value))
            else:
                raise ValueError(f"unknown knob {key!r}")


@dataclass
class SimInstance:
    id: str
    label: str | None
    created_at: float
    boot_seconds: float
    host: str
    ssh_port: int
    details: dict[str, Any] = field(default_factory=dict)  # provider-specific (offer, image, …)
    crashed: bool = False
    stopped: bool = False
    terminated_at: float | None = None
    # A raw provider status forced by a test (stuck, unknown, rebooting, preempted …) and
    # its message; the simulator reports it as the provider would, with no SSH endpoint.
    forced_status: str | None = None
    forced_message: str | None = None

    def phase(self, now: float) -> Phase:
        if self.terminated_at is not None:
            return "terminated"
        if self.crashed:
            return "crashed"
        if self.stopped:
            return "stopped"
        return "running" if now - self.created_at >= self.boot_seconds else "provisioning"

    def booted_fraction(self, now: float) -> float:
        if self.boot_seconds <= 0:
            return 1.0
        return max(0.0, min(1.0, (now - self.created_at) / self.boot_seconds))


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        if not self.body:
            return None
        return json.loads(self.body)


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-able; bytes are sent as they are
    headers: dict[str, str] = field(default_factory=dict)


class SimServer(ThreadingHTTPServer):
    """A simulator's HTTP server. A client that goes away mid-request (a crash point killing a
    provider call in flight, a pass that timed out) is not an error of the simulator: no
    traceback for it. Anything else is printed as the standard library prints it."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class SimulatorBase:
    """One provider simulator. Subclasses implement ``seed()`` and ``route()``."""

    code: ClassVar[str] = ""
    path_prefix: ClassVar[str] = ""  # what the adapter's base URL carries after the origin

    def __init__(self, *, now: Clock, boot_seconds: float = 20.0, api_key: str, seed: int = 7) -> None:
        self.now = now
        self.boot_seconds = boot_seconds
        self.api_key = api_key
        self.seed_value = seed
        self.lock = threading.RLock()
        self.knobs = Knobs()
        self.instances: dict[str, SimInstance] = {}
        # (method, path) of the latest provider calls, for tests (bounded: a simulator serving a
        # long-running local stack must not grow).
        self.requests: deque[tuple[str, str]] = deque(maxlen=REQUEST_LOG)
        self._stopping = threading.Event()
        self._counter = 0
        self.reset()
        handler = type(f"{type(self).__name__}Handler", (_Handler,), {"sim": self})
        self._server = SimServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"sim-{self.code}", daemon=True)
        self._thread.start()

    # --- lifecycle -----------------------------------------------------------------

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def base_url(self) -> str:
        """The base URL to configure the adapter with."""
        return self.origin + self.path_prefix

    def settings(self) -> dict[str, str]:
        """The provider settings (`gpurent.providers.registry`) that point its adapter here."""
        prefix = self.code.upper()
        return {f"{prefix}_BASE_URL": self.base_url, f"{prefix}_API_KEY": self.api_key}

    def shutdown(self) -> None:
        self._stopping.set()  # wakes every request that is hanging in a timeout mode
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def pause(self, seconds: float) -> None:
        """Sleep at most 30 s, and not at all once shutdown has begun."""
        if seconds > 0:
            self._stopping.wait(min(seconds, MAX_SLEEP_SECONDS))

    # --- knobs (Python side) -------------------------------------------------------

    def set_knobs(self, **changes: Any) -> Knobs:
        with self.lock:
            self.knobs.update(changes)
            return Knobs(**asdict(self.knobs))

    def crash(self, instance_id: str) -> bool:
        with self.lock:
            inst = self.instances.get(instance_id)
            if inst is None or inst.terminated_at is not None:
                return False
            inst.crashed = True
            return True

    def set_status(self, instance_id: str, status: str | None, message: str | None = None) -> bool:
        """Force the provider's raw status of an instance (None: back to its own life)."""
        with self.lock:
            inst = self.instances.get(instance_id)
            if inst is None:
                return False
            inst.forced_status, inst.forced_message = status, message
            return True

    def vanish(self, instance_id: str) -> bool:
        with self.lock:
            inst = self.instances.pop(instance_id, None)
            if inst is not None:
                self.on_removed(inst)
            return inst is not None

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            now = self.now()
            return [
                {"id": i.id, "label": i.label, "status": i.phase(now), "host": i.host, "sshPort": i.ssh_port,
                 "createdAt": i.created_at}
                for i in self.instances.values()
            ]

    def reset(self) -> None:
        with self.lock:
            self.knobs = Knobs()
            self.instances.clear()
            self.requests.clear()
            self._counter = 0
            self.seed()

    # --- for subclasses ------------------------------------------------------------

    def seed(self) -> None:
        raise NotImplementedError

    def route(self, req: Request) -> Reply:
        raise NotImplementedError

    def on_removed(self, inst: SimInstance) -> None:
        """An instance left for good (terminated or vanished): give its capacity back."""

    def next_number(self) -> int:
        with self.lock:
            self._counter += 1
            return self._counter

    def new_instance(self, instance_id: str, label: str | None, details: dict[str, Any]) -> SimInstance:
        n = self.next_number()
        inst = SimInstance(
            id=instance_id, label=label, created_at=self.now(), boot_seconds=self.boot_seconds,
            host=f"203.0.113.{10 + n % 240}", ssh_port=40000 + n, details=details,
        )
        with self.lock:
            self.instances[instance_id] = inst
        return inst

    def terminate_instance(self, inst: SimInstance, *, forget: bool) -> None:
        with self.lock:
            if inst.terminated_at is None:
                inst.terminated_at = self.now()
                self.on_removed(inst)
            if forget:
                self.instances.pop(inst.id, None)

    def hang(self) -> None:
        """What a "timeout" mode does: hold the answer back longer than a read timeout."""
        with self.lock:
            seconds = self.knobs.hang_seconds
        self.pause(seconds)

    def bearer_ok(self, req: Request) -> bool:
        auth = req.headers.get("authorization") or ""
        return auth == f"Bearer {self.api_key}" or req.arg("api_key") == self.api_key

    # --- dispatch ------------------------------------------------------------------

    def dispatch(self, req: Request) -> Reply:
        if req.path.startswith("/_sim/"):
            return self._control(req)
        with self.lock:
            latency = self.knobs.latency_seconds
            self.requests.append((req.method, req.path))
        self.pause(latency)
        return self.route(req)

    _INSTANCE_ACTION = re.compile(r"^/_sim/instances/([^/]+)/(crash|vanish|status)$")

    def _control(self, req: Request) -> Reply:
        if req.path == "/_sim/knobs":
            if req.method == "POST":
                try:
                    body = req.json()
                    if not isinstance(body, dict):
                        raise ValueError("the body must be a JSON object")
                    knobs = self.set_knobs(**body)
                except ValueError as e:
                    return Reply(400, {"error": str(e)})
                return Reply(200, asdict(knobs))
            with self.lock:
                return Reply(200, asdict(self.knobs))
        if req.path == "/_sim/instances" and req.method == "GET":
            return Reply(200, {"instances": self.snapshot()})
        if req.path == "/_sim/reset" and req.method == "POST":
            self.reset()
            return Reply(200, {"ok": True})
        m = self._INSTANCE_ACTION.match(req.path)
        if m and req.method == "POST" and m.group(2) == "status":
            body = req.json() if req.body else {}
            if not isinstance(body, dict):
                return Reply(400, {"error": "the body must be a JSON object"})
            done = self.set_status(m.group(1), body.get("status"), body.get("message"))
            return Reply(200 if done else 404, {"ok": done})
        if m and req.method == "POST":
            done = self.crash(m.group(1)) if m.group(2) == "crash" else self.vanish(m.group(1))
            return Reply(200 if done else 404, {"ok": done})
        return Reply(404, {"error": f"no control route {req.method} {req.path}"})


class _Handler(BaseHTTPRequestHandler):
    sim: ClassVar[SimulatorBase]
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.sim.code, format % args)

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = Request(self.command, parts.path, parse_qs(parts.query), headers, body)
        try:
            reply = self.sim.dispatch(req)
        except Exception:  # a simulator bug must answer, not hang the client
            log.exception("%s simulator failed on %s %s", self.sim.code, self.command, parts.path)
            reply = Reply(500, {"error": "simulator failure"})
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            # Exactly "application/json": the vast CLI refuses a charset suffix.
            self.send_header("Content-Type", reply.headers.pop("Content-Type", "application/json"))
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except OSError:  # the client gave up (a timeout mode): nothing to tell anyone
            self.close_connection = True

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle
    do_DELETE = _handle
    do_PATCH = _handle
