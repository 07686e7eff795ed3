"""The crash-point harness: count the I/O calls a path makes across the ports and kill
the path at any one of them.

Ports intercepted (each intercepted call is one numbered *call*):

- DynamoDB: the one client of `gpurent.store.dynamo.client()`, by wrapping its
  `_make_api_call` (one logical API call, whatever botocore retries underneath);
- the provider adapters' HTTP: `gpurent.providers.http.JsonHttp._once` (one HTTP
  request to a provider);
- Stripe: `gpurent.billing.gateway.client.call` (one Stripe API request; the gateway's public
  functions make one or more);
- the mailer: `gpurent.notify.send`;
- timers: `gpurent.timers.arm` (an SQS `SendMessage` in AWS; in process here);
- the reconciler's hand-offs: `gpurent.reconciler.send` (an SQS `SendMessage` in AWS).

A run is armed with `(k, mode)`: calls 1…k−1 happen; call k raises `Crash` just before
it is made (`before`) or just after it returned or raised (`after`: its effect, if any,
happened and its answer is lost). From then on the process is dead: any further
intercepted call (a `finally` block, an unwinding `async with`) raises `Crash` too,
without being made. `Crash` is a `BaseException`, so the product's `except Exception`
blocks cannot swallow it: that is what a Lambda timeout or an out-of-memory kill looks
like to the code that was running.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

MODES = ("before", "after")


class Crash(BaseException):
    """The Lambda running the path died here (timeout, OOM, a deploy)."""


_ID = re.compile(r"/(?:[0-9]+|[A-Za-z]+_[A-Za-z0-9]+|[0-9a-f-]{16,})(?=/|$)")


def _path_shape(url: str) -> str:
    path = re.sub(r"^https?://[^/]+", "", url).split("?", 1)[0]
    return _ID.sub("/{id}", path)


@dataclass
class Harness:
    """Counts intercepted calls while armed; crashes at call `crash_at` in `mode`."""

    armed: bool = False
    crash_at: int | None = None
    mode: str = "before"
    calls: list[str] = field(default_factory=list)
    fired: str | None = None  # the label of the call the crash happened at
    dead: bool = False

    # ---------------------------------------------------------------- arming

    @contextmanager
    def run(self, crash_at: int | None = None, mode: str = "before") -> Iterator[Harness]:
        """Count (and with `crash_at`, crash) the calls made inside the block."""
        assert mode in MODES
        self.armed, self.crash_at, self.mode = True, crash_at, mode
        self.calls, self.fired, self.dead = [], None, False
        try:
            yield self
        finally:
            self.armed = False

    # ---------------------------------------------------------------- the hook

    def _enter(self, label: str) -> tuple[int, bool]:
        """Number this call; raise if the crash is before it. Returns (k, crash after it)."""
        if self.dead:
            raise Crash(f"dead process: {label} never happens")
        self.calls.append(label)
        k = len(self.calls)
        if k == self.crash_at:
            if self.mode == "before":
                self.fired, self.dead = label, True
                raise Crash(f"crash before call {k}: {label}")
            return k, True
        return k, False

    def _after(self, k: int, label: str, exc: BaseException | None) -> None:
        self.fired, self.dead = label, True
        raise Crash(f"crash after call {k}: {label}") from exc

    def around(self, label: str, fn: Callable[[], T]) -> T:
        if not self.armed:
            return fn()
        k, crash_after = self._enter(label)
        try:
            out = fn()
        except Exception as exc:
            if crash_after:
                self._after(k, label, exc)
            raise
        if crash_after:
            self._after(k, label, None)
        return out

    async def around_async(self, label: str, fn: Callable[[], Awaitable[T]]) -> T:
        if not self.armed:
            return await fn()
        k, crash_after = self._enter(label)
        try:
            out = await fn()
        except Exception as exc:
            if crash_after:
                self._after(k, label, exc)
            raise
        if crash_after:
            self._after(k, label, None)
        return out


HARNESS = Harness()


# ---------------------------------------------------------------- installing the hooks

def install_dynamo(client: Any) -> None:
    """Wrap this DynamoDB client's `_make_api_call` (idempotent per client object)."""
    if getattr(client, "_crashpoints_wrapped", False):
        return
    real = client._make_api_call

    def _make_api_call(operation_name: str, api_params: dict[str, Any]) -> Any:
        label = f"dynamo:{operation_name}"
        if operation_name in ("TransactWriteItems",):
            label += f"[{len(api_params.get('TransactItems', []))}]"
        return HARNESS.around(label, lambda: real(operation_name, api_params))

    client._make_api_call = _make_api_call
    client._crashpoints_wrapped = True


def install_ports(monkeypatch: Any) -> None:
    """Provider HTTP, Stripe, mailer and timers (DynamoDB is per client: `install_dynamo`)."""
    from gpurent import notify, timers
    from gpurent.billing import gateway
    from gpurent.providers.http import JsonHttp

    real_once = JsonHttp._once

    async def _once(self: Any, method: str, url: str, json: Any, params: Any, timeout: Any) -> Any:
        body = ""
        if isinstance(json, dict) and isinstance(json.get("query"), str):  # RunPod's GraphQL: name the operation
            m = re.search(r"\b(mutation|query)\s*(\w*)\s*[({]\s*(\w+)", json["query"])
            body = f" {m.group(1)} {m.group(2) or m.group(3)}" if m else ""
        label = f"{self.provider}:{method} {_path_shape(url)}{body}"
        return await HARNESS.around_async(label, lambda: real_once(self, method, url, json, params, timeout))

    monkeypatch.setattr(JsonHttp, "_once", _once)

    real_call = gateway.client.call

    def _call(fn: Callable[[], T]) -> T:
        caller = sys._getframe(1).f_code.co_name
        return HARNESS.around(f"stripe:{caller}", lambda: real_call(fn))

    monkeypatch.setattr(gateway.client, "call", _call)

    real_send = notify.send

    def send(to: str, subject: str, body: str) -> None:
        HARNESS.around("mail:send", lambda: real_send(to, subject, body))

    monkeypatch.setattr(notify, "send", send)

    from gpurent import reconciler

    real_hand_off = reconciler.send

    def hand_off(body: dict[str, Any]) -> None:
        what = "chunk" if "rentals" in body else "pass"
        HARNESS.around(f"reconcile:send {what}", lambda: real_hand_off(body))

    monkeypatch.setattr(reconciler, "send", hand_off)

    real_arm = timers.arm

    def arm(user_id: str, due: float, rental_id: str = "", kind: str = "") -> None:
        HARNESS.around("timer:arm", lambda: real_arm(user_id, due, rental_id, kind))

    monkeypatch.setattr(timers, "arm", arm)


def with_occurrence(calls: list[str]) -> list[str]:
    """`label#n`: the n-th call with that label in the run (stable when other calls are added)."""
    seen: dict[str, int] = {}
    out = []
    for c in calls:
        seen[c] = seen.get(c, 0) + 1
        out.append(f"{c}#{seen[c]}")
    return out
