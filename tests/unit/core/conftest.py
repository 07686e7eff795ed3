"""The money core on fakes: no DynamoDB, no Stripe, no provider; milliseconds per test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from gpurent import timers
from gpurent.listing import Listing
from gpurent.records import Rental
from tests.fakes.world import FakeWorld, install

T0 = 1_780_000_000.0
RATE = 250  # cents per hour
OFFER = Listing("lst_FAKE", "fake", "k1", "H100 SXM", "h100-80gb", "H100_SXM_80GB", 80, 1, 200, RATE, "US-East", "US",
                "NVLink")


def rental(**changes: Any) -> Rental:
    """A running rental started at T0 with its one-hour reserve (as `mark_running` leaves it)."""
    base = Rental(
        id="rent_01M8QVFHFZ7QVG2EB10YWZ4GKS", user_id="usr_fake", status="running", family_id="h100-80gb", gpu_count=1,
        template_id="ubuntu-24-04", price_per_hour_cents=RATE, listing_id=OFFER.id, provider="fake",
        region="US-East", region_code="US", model=OFFER.model, offer=OFFER, created_at=T0 - 10,
        reserve_cents=RATE, running_at=T0, metered_until=T0, last_healthy_at=T0, instance_id="i-1",
    )
    return replace(base, **changes)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWorld]:
    w = install(monkeypatch, start=T0)
    yield w
    timers.clear()


def seed(world: FakeWorld, r: Rental, available: int) -> Rental:
    """Store the rental and a wallet holding its reserve plus `available`, as a launch would."""
    from gpurent import wallet

    wallet.credit(r.user_id, available + r.reserve_cents, "adjustment", f"seed:{r.id}", {"description": "test"})
    if r.reserve_cents:
        wallet.reserve(r.user_id, r.reserve_cents, f"reserve:{r.id}",
                       extras=lambda w, steps: [world.rentals.put_item(r), world.rentals.owner_item(r.id, r.user_id)])
    else:
        world.money.transact([world.rentals.put_item(r), world.rentals.owner_item(r.id, r.user_id)])
    stored = world.rentals.get(r.user_id, r.id)
    assert stored is not None
    return stored
