"""A snapshot of the whole world of a crash point, taken once per path right after its
setup and restored before each of its 2N crash points (building the world again for
each — new tables, the catalog refreshed from the simulators, users signed in, rentals
launched and booted, cards saved at Stripe — was most of the enumeration's time).

What a run can change, and what the snapshot keeps, is everything a fresh world was
built from:

- the test clock (`ManualClock`): the world's timestamps are relative to it;
- DynamoDB: every item of each of the run's tables in moto's in-process backend (the
  tables themselves stay: same names, same schema, same TTL settings);
- the provider simulators: their instances, knobs, stock/capacity/offers, request log,
  id counters and random generators (not their servers, locks or threads);
- the local Stripe: localstripe's object store and the proxy's own objects (Checkout
  sessions, invoices, invoice items, events, idempotent replies) and its deliveries;
  localstripe's in-flight webhooks (it sends its own events a second late) are let
  land first, so no event of one crash point reaches the next;
- the in-process timers (`gpurent.timers`: the SQS queue's messages) and the mailbox;
- the in-process catalog cache, as the setup left it (a warm Lambda's), and the
  adapters, built again.

Restoring hands each crash point a copy (deep), so nothing a run does leaks into the
snapshot or into the next run.

Runs alike, worlds alike (`SeededRandomness`, `digest`): every random draw of a run (ids,
tokens, idempotency keys, localstripe's ids) comes from generators seeded alike at each
restore (one for the test's thread, one for the others: a draw of the local Stripe's
threads landing between two of the test's would change every id after it), and the local
Stripe's clock is stopped for the whole path (the crash points' `ctx`: it stamps what it
makes with the wall clock's second), so two runs that make the same calls leave the same
world. Many crash points do:
a crash after call k (its answer lost) and one before call k+1 of the same invocation, or
crashes before two successive reads. `digest` is a hash of everything a snapshot keeps
(plus the reconciler's hand-offs still in memory, which a recovery reads): the enumeration
recovers and checks a world once, and a later crash point whose act left a world with the
same digest is that world, already recovered and checked. A world that differs in anything
(an id, a timestamp, the order of a table's items) gets its own recovery.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import pickle
import random
import secrets
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

from gpurent import catalog, notify, reconciler, timers
from gpurent import clock as clock_mod
from gpurent.providers import registry
from gpurent.providers.registry import build_adapters
from gpurent.store import dynamo
from infra.local.stripe_local import LocalStripe
from infra.simulators import Simulators
from infra.simulators.common import SimulatorBase

# What a simulator is made of besides its state: its clock, its lock, its HTTP server.
_SIM_MACHINERY = frozenset({"now", "lock", "_server", "_thread", "_stopping", "boot_seconds", "api_key",
                            "seed_value", "ssh_key_names"})
# The proxy's own Stripe objects (localstripe keeps the rest in its global store).
_STRIPE_PROXY_STATE = ("_deliveries", "_sessions", "_session_extra", "_invoices", "_items", "_events", "_idem")


def _moto_tables(names: list[str]) -> dict[str, Any]:
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][dynamo.client().meta.region_name]
    return {n: backend.tables[n] for n in names}


def _sim_state(sim: SimulatorBase) -> dict[str, Any]:
    with sim.lock:
        return copy.deepcopy({k: v for k, v in vars(sim).items() if k not in _SIM_MACHINERY})


def _sim_restore(sim: SimulatorBase, state: dict[str, Any]) -> None:
    with sim.lock:
        for k, v in copy.deepcopy(state).items():
            setattr(sim, k, v)


def settle_stripe(ls: LocalStripe, timeout: float = 5.0) -> None:
    """Let localstripe's webhooks still in flight (each sent a second after its change)
    land in the proxy's deliveries."""
    loop = ls._ls._loop
    if loop is None:
        return

    async def drain() -> None:
        me = asyncio.current_task()
        sending = [t for t in asyncio.all_tasks() if t is not me and not t.done()
                   and getattr(t.get_coro(), "__name__", "") == "_send_webhook"]
        if sending:
            await asyncio.wait(sending, timeout=timeout)

    asyncio.run_coroutine_threadsafe(drain(), loop).result(timeout + 5)


async def _prompt_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


def prompt_stripe_events(monkeypatch: Any) -> None:
    """localstripe sends each of its own events a second after the change (an
    `asyncio.sleep(1)` in `localstripe.webhooks._send_webhook`); here they go to the proxy's
    deliveries at once. Nothing waits on that second: the local Stripe has no webhook URL
    (events are only recorded) and the recovery delivers them itself, so all it would
    cost is the wait for them before each restore."""
    import types

    import localstripe.webhooks

    shim = types.SimpleNamespace(sleep=_prompt_sleep, ensure_future=asyncio.ensure_future)
    monkeypatch.setattr(localstripe.webhooks, "asyncio", shim)


def _stripe_state(ls: LocalStripe) -> tuple[bytes, dict[str, Any]]:
    from localstripe.resources import store

    settle_stripe(ls)
    with ls._lock:
        return (pickle.dumps(dict(store), protocol=pickle.HIGHEST_PROTOCOL),
                copy.deepcopy({k: getattr(ls, k) for k in _STRIPE_PROXY_STATE}))


def _stripe_restore(ls: LocalStripe, saved: tuple[bytes, dict[str, Any]]) -> None:
    from localstripe.resources import store

    settle_stripe(ls)
    objects, proxy = saved
    with ls._lock:
        dict.clear(store)
        dict.update(store, pickle.loads(objects))  # our own pickle of a moment ago
        for k, v in copy.deepcopy(proxy).items():
            setattr(ls, k, v)  # the proxy reads them under its lock, by attribute


@dataclass
class World:
    """Everything a run can change, as it was right after the path's setup."""

    now: float
    tables: dict[str, dict[Any, Any]]
    sims: list[dict[str, Any]]
    stripe: tuple[bytes, dict[str, Any]]
    timers: tuple[list[Any], set[Any]]
    mailbox: deque[dict[str, Any]]  # a copy of `notify._mailbox`
    catalog: Any
    extra: dict[str, Any]  # the test's own (the path's state, its users), deep-copied back

    @classmethod
    def take(cls, clock: clock_mod.ManualClock, table_names: list[str], sims: Simulators, ls: LocalStripe,
             extra: dict[str, Any]) -> World:
        tables = {n: copy.deepcopy(t.items) for n, t in _moto_tables(table_names).items()}
        with timers._lock:
            pending = (copy.deepcopy(timers._pending), set(timers._armed))
        return cls(clock.now(), tables, [_sim_state(s) for s in sims.all()], _stripe_state(ls), pending,
                   copy.deepcopy(notify._mailbox), copy.deepcopy(catalog._cache), copy.deepcopy(extra))

    def restore(self, clock: clock_mod.ManualClock, sims: Simulators, ls: LocalStripe,
                settings: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Put the world back; returns (a copy of `extra`, the provider adapters, built anew)."""
        _stripe_restore(ls, self.stripe)
        clock.set(self.now)
        for name, table in _moto_tables(list(self.tables)).items():
            table.items = copy.deepcopy(self.tables[name])
        for sim, state in zip(sims.all(), self.sims, strict=True):
            _sim_restore(sim, state)
        with timers._lock:
            timers._pending[:] = copy.deepcopy(self.timers[0])
            timers._armed.clear()
            timers._armed.update(self.timers[1])
        notify.clear_mailbox()
        notify._mailbox.extend(copy.deepcopy(self.mailbox))
        with catalog._lock:
            catalog._cache = copy.deepcopy(self.catalog)
        adapters = build_adapters(settings)
        registry.set_adapters(adapters)
        return copy.deepcopy(self.extra), adapters


class SeededRandomness:
    """The randomness of the product (`secrets`, `uuid.uuid4`) and of the global `random`
    (localstripe's ids, the providers' retry jitter), drawn from generators that `reseed`
    puts back to the same start before each run."""

    SEED = 20261201

    def __init__(self, monkeypatch: Any) -> None:
        # The test's own thread draws from `rng`; every other thread (the local Stripe's proxy
        # answering, its events sent a second late) from `others`: a background draw landing
        # between two of the test thread's draws would change every id after it.
        self.rng = random.Random(self.SEED)
        self.others = random.Random(self.SEED + 1)
        home = threading.current_thread()

        class Either:
            def __getattr__(_, name: str) -> Any:
                return getattr(self.rng if threading.current_thread() is home else self.others, name)

        rng = cast(random.Random, Either())  # it hands every attribute on to a Random

        def token_bytes(nbytes: int | None = None) -> bytes:
            return rng.randbytes(32 if nbytes is None else nbytes)

        def token_urlsafe(nbytes: int | None = None) -> str:
            import base64

            return base64.urlsafe_b64encode(token_bytes(nbytes)).rstrip(b"=").decode("ascii")

        monkeypatch.setattr(secrets, "randbits", rng.getrandbits)
        monkeypatch.setattr(secrets, "randbelow", rng.randrange)
        monkeypatch.setattr(secrets, "choice", rng.choice)
        monkeypatch.setattr(secrets, "token_bytes", token_bytes)
        monkeypatch.setattr(secrets, "token_hex", lambda nbytes=None: token_bytes(nbytes).hex())
        monkeypatch.setattr(secrets, "token_urlsafe", token_urlsafe)
        monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=rng.getrandbits(128), version=4))
        self._global_state = random.getstate()

    def reseed(self) -> None:
        self.rng.seed(self.SEED)
        self.others.seed(self.SEED + 1)
        random.seed(self.SEED)

    def close(self) -> None:
        """The global generator as it was (the other tests of this worker draw from it)."""
        random.setstate(self._global_state)


def digest(clock: clock_mod.ManualClock, table_names: list[str], sims: Simulators, ls: LocalStripe,
           extra: dict[str, Any]) -> str | None:
    """A hash of the world as it is now (what `World.take` keeps, and the reconciler's
    hand-offs in memory); None if some part cannot be pickled (that world is never taken
    for another)."""
    from localstripe.resources import store

    settle_stripe(ls)
    h = hashlib.sha256()
    try:
        with ls._lock:
            h.update(pickle.dumps(dict(store), protocol=pickle.HIGHEST_PROTOCOL))
            h.update(pickle.dumps({k: getattr(ls, k) for k in _STRIPE_PROXY_STATE}, protocol=pickle.HIGHEST_PROTOCOL))
        h.update(pickle.dumps({n: t.items for n, t in _moto_tables(table_names).items()},
                              protocol=pickle.HIGHEST_PROTOCOL))
        for sim in sims.all():
            with sim.lock:
                h.update(pickle.dumps({k: v for k, v in vars(sim).items() if k not in _SIM_MACHINERY},
                                      protocol=pickle.HIGHEST_PROTOCOL))
        with timers._lock:
            h.update(pickle.dumps((timers._pending, sorted(timers._armed)), protocol=pickle.HIGHEST_PROTOCOL))
        with reconciler._pending_lock:
            h.update(pickle.dumps(reconciler._pending, protocol=pickle.HIGHEST_PROTOCOL))
        h.update(pickle.dumps((clock.now(), list(notify._mailbox), catalog._cache, extra),
                              protocol=pickle.HIGHEST_PROTOCOL))
    except (pickle.PicklingError, TypeError, AttributeError):
        return None
    return h.hexdigest()
