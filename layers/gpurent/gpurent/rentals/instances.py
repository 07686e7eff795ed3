"""A rental's instance at its provider: the calls every part of a rental's life makes.

asyncio and the HTTP client (`providers.http`, httpx) are imported at the first provider call,
as the adapters themselves are (`providers.registry`): a request that calls no provider (a
list, a meter) does not pay for them, at cold start or after."""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Coroutine, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from gpurent.providers import registry
from gpurent.providers.base import Instance, ProviderError
from gpurent.records import Rental
from gpurent.telemetry import logger

if TYPE_CHECKING:
    import asyncio
    import concurrent.futures

T = TypeVar("T")


class ProviderLoop:
    """One event loop, in a thread of its own, and one pooled HTTP client: every provider call
    a pass's threads make (`run`) goes through them, so a pass over many rentals opens one
    connection per provider host instead of a loop, a client and a TLS handshake per call."""

    def __init__(self) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="provider-loop", daemon=True)
        self._closing: asyncio.Event | None = None
        self._session: concurrent.futures.Future[None] | None = None

    async def _hold(self, ready: threading.Event) -> None:
        import asyncio

        from gpurent.providers.http import pooled

        self._closing = asyncio.Event()
        async with pooled():
            ready.set()
            await self._closing.wait()

    def __enter__(self) -> ProviderLoop:
        self._thread.start()
        import asyncio

        ready = threading.Event()
        self._session = asyncio.run_coroutine_threadsafe(self._hold(ready), self.loop)
        ready.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        closing = self._closing
        if closing is not None:
            self.loop.call_soon_threadsafe(closing.set)
        if self._session is not None:
            with contextlib.suppress(BaseException):
                self._session.result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def alive(self) -> bool:
        return self._thread.is_alive() and self.loop.is_running()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


_loop: ContextVar[ProviderLoop | None] = ContextVar("gpurent_provider_loop", default=None)


_shared: ProviderLoop | None = None
_shared_pid = 0
_shared_lock = threading.Lock()


def shared_loop() -> ProviderLoop:
    """The process's `ProviderLoop`, started by the first pass and kept, as a boto3 client is,
    for the next invocations of a warm function: the thread, the loop and the pooled client
    are made once, not once a pass (they were a tenth of a reconcile worker's time). A forked
    child, or a process whose loop died, starts a new one."""
    global _shared, _shared_pid
    with _shared_lock:
        if _shared is None or _shared_pid != os.getpid() or not _shared.alive():
            _shared = ProviderLoop().__enter__()
            _shared_pid = os.getpid()
        return _shared


def close_shared_loop() -> None:
    """Stop the process's loop and close its client (at exit; tests that want a fresh one)."""
    global _shared
    with _shared_lock:
        found, _shared = _shared, None
    if found is not None and _shared_pid == os.getpid():
        found.__exit__(None, None, None)


atexit.register(close_shared_loop)


@contextlib.contextmanager
def provider_loop() -> Iterator[ProviderLoop]:
    """Route the provider calls made in this context (and in threads started with a copy of
    it) through the process's one loop and one pooled client until the block ends."""
    found = shared_loop()
    token = _loop.set(found)
    try:
        yield found
    finally:
        _loop.reset(token)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a provider call: on this invocation's `ProviderLoop` when there is one, else in an
    event loop of its own (an API request making one call or two)."""
    found = _loop.get()
    if found is not None:
        return found.run(coro)
    import asyncio

    return asyncio.run(coro)


# What one reconcile pass learnt from a provider's one list-instances answer: our
# instances by instance id and by label (a rental id). None: no list (ask the provider).
Listed = dict[str, Instance]


def find_by_label(r: Rental, listed: Listed | None = None) -> Instance | None:
    """The instance its provider has under this rental's label (our rental id), if any:
    from this pass's list when there is one (a list is complete: absent = not there), else
    asked of the provider (vast.ai filters its list on the label: one request)."""
    if listed is not None:
        return listed.get(r.id)
    return run(registry.adapter(r.provider).find_by_label(r.id))


def current(r: Rental, listed: Listed | None = None) -> Instance | None:
    """The rental's instance as its provider sees it now: from this pass's list, or (no list,
    or the list is silent about it: terminated and forgotten, or not listed) one get."""
    assert r.instance_id
    if listed is not None:
        found = listed.get(r.instance_id)
        if found is not None:
            return found
    return run(registry.adapter(r.provider).get_instance(r.instance_id))


def index(found: list[Instance]) -> Listed:
    out: Listed = {}
    for inst in found:
        out[inst.instance_id] = inst
        if inst.label:
            out[inst.label] = inst
    return out


def terminate_quietly(r: Rental) -> None:
    """Send terminate once now; a failure is retried by the reconciler until it succeeds."""
    if not r.instance_id:
        return
    try:
        run(registry.adapter(r.provider).terminate(r.instance_id))
    except ProviderError as exc:
        logger.warning("terminate failed; the reconciler retries", extra={"rentalId": r.id, "kind": exc.kind})
