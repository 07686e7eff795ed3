"""Shared fixtures of the rental tests: the provider simulators with the adapters
installed and the catalog seeded, funding by admin adjustment, and a
DynamoDB Local backend for the races (moto does not serialise concurrent
writers, so a race is only real against DynamoDB Local).

Time is the test's ManualClock: the simulators derive an instance's state from
it, so booting is `clock.advance(BOOT_SECONDS)`, never a sleep."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpurent import catalog, catalog_refresh, notify
from gpurent import clock as clock_mod
from gpurent.providers import registry
from gpurent.providers.base import ProviderAdapter
from gpurent.providers.registry import build_adapters
from gpurent.store import rentals as rental_store
from infra.local import template
from infra.simulators import Simulators, start_simulators
from tests.conftest import TEST_ENV, Api, reset_clients, table_env
from tests.integration.helpers import scan

ROOT = Path(__file__).resolve().parents[2]
BOOT_SECONDS = 20.0  # simulated boot time of every instance
HANG_SECONDS = 0.5  # how long a simulator's "timeout" mode holds its answer
READ_TIMEOUT = "0.2"  # the adapters' read timeout: shorter than HANG_SECONDS
ADMIN_EMAIL = "admin@gpurent.test"
LIVE = ("provisioning", "running", "stopping")


# ---------------------------------------------------------------- simulators

@dataclass
class World:
    """The simulators, the adapters installed in `gpurent.rentals`, and helpers to look at both."""

    sims: Simulators
    adapters: dict[str, ProviderAdapter]

    def install(self, providers: str | None = None, **settings: str) -> dict[str, ProviderAdapter]:
        """(Re)build the adapters (optionally only some providers), install them and refresh the catalog."""
        extra = {"PROVIDER_READ_TIMEOUT_SECONDS": READ_TIMEOUT, **settings}
        if providers:
            extra["PROVIDERS"] = providers
        self.adapters = build_adapters({**self.sims.settings(), **extra})
        registry.set_adapters(self.adapters)
        catalog_refresh.refresh(self.adapters)
        return self.adapters

    def refresh(self) -> None:
        catalog_refresh.refresh(self.adapters)

    def sim(self, code: str) -> Any:
        return {"vast": self.sims.vast, "runpod": self.sims.runpod, "lambda": self.sims.lambdacloud}[code]

    def instances(self) -> list[dict[str, Any]]:
        """Every instance at every simulator, with its provider code."""
        return [{**i, "provider": s.code} for s in self.sims.all() for i in s.snapshot()]

    def labelled(self, rental_id: str) -> list[dict[str, Any]]:
        return [i for i in self.instances() if i["label"] == rental_id]

    def alive(self, rental_id: str | None = None) -> list[dict[str, Any]]:
        """Instances still billing at their provider (not terminated), ours only."""
        return [i for i in self.instances() if i["label"] and str(i["label"]).startswith("rent_")
                and i["status"] != "terminated" and (rental_id is None or i["label"] == rental_id)]

    def requests(self, code: str | None = None) -> list[tuple[str, str, str]]:
        """(provider, method, path) of every provider call the simulators answered so far."""
        out: list[tuple[str, str, str]] = []
        for s in self.sims.all():
            if code is None or s.code == code:
                with s.lock:
                    out.extend((s.code, m, p) for m, p in s.requests)
        return out

    def knobs(self, **changes: Any) -> None:
        for s in self.sims.all():
            s.set_knobs(**changes)

    def no_orphans(self) -> None:
        """Invariant 7: every instance with our label is a live rental's machine: none lives
        without a live rental, and none under a live rental's label but the one it recorded."""
        for inst in self.alive():
            owner = rental_store.find_by_id(str(inst["label"]))
            assert owner is not None and owner.status in LIVE, (inst, owner and owner.status)
            if owner.instance_id is not None:
                assert (owner.provider, owner.instance_id) == (inst["provider"], str(inst["id"])), (inst, owner)


@pytest.fixture(scope="session")
def simulator_servers() -> Iterator[Simulators]:
    """The three simulators on loopback, started once: they read the time from
    `gpurent.clock`, which each test's `clock` fixture sets to its ManualClock."""
    s = start_simulators(now=clock_mod.now, boot_seconds=BOOT_SECONDS)
    yield s
    s.shutdown()


@pytest.fixture
def sim_world(clock: Any, simulator_servers: Simulators) -> Iterator[World]:
    """The simulators, reset (no instances, knobs off, offers re-seeded); nothing installed yet."""
    simulator_servers.reset()
    for sim in simulator_servers.all():
        sim.set_knobs(hang_seconds=HANG_SECONDS)
    yield World(simulator_servers, {})
    registry.set_adapters(None)
    catalog.invalidate()
    simulator_servers.reset()


@pytest.fixture
def world(aws: None, sim_world: World) -> World:
    """Every provider installed against moto, the catalog seeded from the simulators."""
    sim_world.install()
    return sim_world


@pytest.fixture
def sims(world: World) -> Simulators:
    return world.sims


def state() -> dict[str, list[dict[str, Any]]]:
    """Every item of the identity, money and ledger tables (not the catalog, which only the
    refresh writes, nor request-rate counters, which count the request itself)."""
    from gpurent.config import settings

    s = settings()
    out = {}
    for table in (s.identity_table, s.money_table, s.ledger_table):
        items = [i for i in scan(table) if not str(i.get("pk", "")).startswith("RATE#")]
        out[table] = sorted(items, key=lambda i: (str(i["pk"]), str(i["sk"])))
    return out


# ---------------------------------------------------------------- people and money

def sign_in(api: Api, email: str) -> dict[str, Any]:
    """Sign in whichever way mail is delivered (SES under moto, the console mailbox otherwise)."""
    from gpurent.config import settings

    if settings().mail_mode != "console":
        return api.sign_in(email)
    r = api.post("/v1/auth/request-code", {"email": email})
    assert r.status == 200, r.body
    message = next(m for m in notify.mailbox() if m["to"] == email)
    code = re.search(r"\b(\d{6})\b", message["body"])
    assert code is not None
    r = api.post("/v1/auth/verify-code", {"email": email, "code": code.group(1)})
    assert r.status == 200, (r.body, code.group(1), notify.mailbox())
    return dict(r.json()["user"])


Fund = Callable[[str, int], None]


def funder(clock: Any) -> Fund:
    admin = Api(source_ip="198.51.100.99")
    sign_in(admin, ADMIN_EMAIL)
    clock.advance(1)

    def fund(user_id: str, cents: int) -> None:
        r = admin.post("/v1/admin/adjustments", {"userId": user_id, "amountCents": cents, "reason": "test funding"})
        assert r.status == 200, r.body

    return fund


@pytest.fixture
def fund(aws: None, clock: Any) -> Fund:
    """fund(user_id, cents): an admin adjustment by admin@gpurent.test."""
    return funder(clock)


@pytest.fixture
def funded_user(user: dict[str, Any], fund: Fund) -> dict[str, Any]:
    """alice, with $1,000 available."""
    fund(user["id"], 100_000)
    return user


# ---------------------------------------------------------------- DynamoDB Local (races)

@pytest.fixture(scope="session")
def dynamodb_local_endpoint(dynamodb_local: str) -> str:
    return dynamodb_local


@pytest.fixture
def locking_store(monkeypatch: pytest.MonkeyPatch, clock: Any, dynamodb_local_endpoint: str) -> Iterator[None]:
    """Fresh tables on DynamoDB Local (real conditional writes and transactions); mail to the console.

    DynamoDB Local expires items by TTL against the wall clock, and the ManualClock starts
    months away from it: without moving the clock to now, a sign-in code or a session could
    be deleted by TTL in the middle of a test."""
    clock.set(time.time())
    names = template.default_table_names(f"t{uuid.uuid4().hex[:8]}")
    for k, v in {**TEST_ENV, **table_env(names), "MAIL_MODE": "console",
                 "DYNAMODB_ENDPOINT": dynamodb_local_endpoint}.items():
        monkeypatch.setenv(k, v)
    reset_clients()
    notify.clear_mailbox()
    from gpurent.store import dynamo

    template.create_tables(dynamo.client(), names)
    yield
    reset_clients()


@dataclass
class Locking:
    """A signed-in, funded user against DynamoDB Local, with the simulators installed."""

    world: World
    api: Api
    user: dict[str, Any]
    fund: Fund


@pytest.fixture
def locking(locking_store: None, sim_world: World, clock: Any) -> Locking:
    sim_world.install()
    api = Api()
    user = sign_in(api, "alice@example.com")
    fund = funder(clock)
    fund(user["id"], 100_000)
    return Locking(sim_world, api, user, fund)
