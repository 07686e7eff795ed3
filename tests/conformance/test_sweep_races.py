"""The fanned-out metering sweep on DynamoDB Local, where concurrent writers really race
(DynamoDB's own conditional writes and transactions): a worker charging many wallets at once on threads, and
two workers on the same wallets at the same time (a redelivered part racing its twin,
a hand-off racing the next minute's worker). Every charge must be the formula of its
billed seconds, once; every wallet must equal its ledger."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import pytest

from gpurent import config, ids, sweep, wallet
from gpurent.money import charge_for_seconds
from gpurent.records import Rental, active_shard, active_shards
from gpurent.rentals import meters
from gpurent.store import rentals as rental_store
from gpurent.store.money import TransactItem
from infra.local import template
from tests.conftest import TEST_ENV, reset_clients, table_env
from tests.unit.core.conftest import rental
from tests.walletkit import check_invariants

WALLETS = 24
FUNDS = 100_000


@pytest.fixture
def tables(monkeypatch: pytest.MonkeyPatch, clock: Any, dynamodb_local: str) -> Iterator[None]:
    clock.set(time.time())  # DynamoDB Local expires items by TTL against real time
    names = template.default_table_names(f"t{uuid.uuid4().hex[:8]}")
    for k, v in {**TEST_ENV, **table_env(names), "MAIL_MODE": "console", "DYNAMODB_ENDPOINT": dynamodb_local,
                 "SWEEP_CONCURRENCY": "8"}.items():
        monkeypatch.setenv(k, v)
    reset_clients()
    config.reset()
    from gpurent.store import dynamo

    template.create_tables(dynamo.client(), names)
    yield
    reset_clients()
    config.reset()


@pytest.fixture
def running(tables: None, clock: Any) -> list[Rental]:
    """WALLETS wallets, each with one or two running rentals, funded as launches leave them."""
    out = []
    for i in range(WALLETS):
        user_id = ids.new_id("usr")
        mine = [replace(rental(), id=ids.new_id("rent"), user_id=user_id, price_per_hour_cents=price,
                        reserve_cents=price, running_at=clock.now(), metered_until=clock.now(),
                        last_healthy_at=clock.now(), created_at=clock.now() - 10)
                for price in ((250, 99) if i % 3 == 0 else (180,))]
        wallet.credit(user_id, FUNDS, "adjustment", f"seed:{user_id}", {"description": "test"})
        for r in mine:
            def extras(w: wallet.Wallet, steps: Sequence[wallet.Step], r: Rental = r) -> list[TransactItem]:
                return [rental_store.put_item(r), rental_store.owner_item(r.id, r.user_id)]

            wallet.reserve(user_id, r.reserve_cents, f"reserve:{r.id}", extras=extras)
        out.extend(mine)
    return out


def exact(rs: list[Rental], now: float) -> None:
    for r in rs:
        got = meters.current(r.user_id, r.id)
        assert got is not None and got.status == "running"
        assert got.metered_until == now, (got.metered_until, now)
        assert got.billed_seconds == int(now - r.running_at)  # type: ignore[operator]
        assert got.charged_cents == charge_for_seconds(got.billed_seconds, r.price_per_hour_cents)
    for user_id in {r.user_id for r in rs}:
        check_invariants(user_id)


def test_a_worker_charges_many_wallets_at_once_each_exactly(running: list[Rental], clock: Any) -> None:
    clock.advance(1234)
    report = sweep.start()
    assert report.wallets == WALLETS and report.failed == 0 and report.parts == active_shards()
    assert report.rentals == len(running)
    exact(running, clock.now())


def test_two_workers_on_the_same_wallets_at_once_charge_each_second_once(running: list[Rental], clock: Any) -> None:
    clock.advance(600)
    busiest = max(range(active_shards()), key=lambda n: sum(active_shard(r.user_id) == n for r in running))
    part = sweep.Part(busiest, clock.now())
    barrier = threading.Barrier(2)
    reports: list[sweep.Report] = []

    def worker() -> None:
        barrier.wait(60)
        reports.append(sweep.run_part(part))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(reports) == 2 and all(r.failed == 0 for r in reports)
    mine = [r for r in running if active_shard(r.user_id) == busiest]
    assert mine and reports[0].rentals + reports[1].rentals >= len(mine)
    exact(mine, clock.now())
    # and the next minute, the whole sweep: still exact, for every wallet
    clock.advance(60)
    sweep.start()
    exact(running, clock.now())
