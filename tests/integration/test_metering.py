"""The metering sweep against moto and the simulators: exact charges over
random tick sizes, rolling reserve, one transaction per wallet, exhaustion."""

from __future__ import annotations

import random

import pytest

from gpurent import catalog_refresh, metering, rentals
from gpurent.money import charge_for_seconds
from gpurent.providers.registry import build_adapters
from gpurent.store import dynamo
from infra.simulators import start_simulators
from tests.conftest import Api
from tests.walletkit import check_invariants


@pytest.fixture
def world(aws, clock):
    s = start_simulators(now=clock.now, boot_seconds=5)
    adapters = build_adapters(s.settings())
    rentals.set_adapters(adapters)
    catalog_refresh.refresh(adapters)
    yield s
    rentals.set_adapters(None)
    s.shutdown()


def fund(user_id: str, cents: int, clock) -> None:
    admin = Api(source_ip="198.51.100.99")
    admin.sign_in("admin@gpurent.test")
    clock.advance(31)
    assert admin.post("/v1/admin/adjustments", {"userId": user_id, "amountCents": cents, "reason": "t"}).status == 200


def launch_running(api: Api, clock, family: str = "h100-80gb") -> dict:
    launched = api.post("/v1/rentals", {"familyId": family, "gpuCount": 1}).json()
    clock.advance(6)
    running = api.get(f"/v1/rentals/{launched['id']}").json()
    assert running["status"] == "running", running
    return running


def test_thirty_days_in_random_ticks_charge_exactly_the_formula(api: Api, user, world, clock) -> None:
    fund(user["id"], 10_000_000, clock)
    r = launch_running(api, clock)
    rate = r["pricePerHourCents"]
    rng = random.Random(7)
    elapsed = 0
    while elapsed < 30 * 86400:
        step = rng.choice([1, 7, 59, 61, 3599, 7201, 43_200, 86_399])
        clock.advance(step)
        elapsed += step
        metering.sweep()
    api.sign_in("alice@example.com")  # the session expired during the 30 days
    reply = api.post(f"/v1/rentals/{r['id']}/stop")
    assert reply.status == 200, reply.body
    stop = reply.json()
    got = api.get(f"/v1/rentals/{r['id']}").json()
    seconds = round(elapsed)
    assert stop["finalChargedCents"] == charge_for_seconds(seconds, rate) == got["totalChargedCents"]
    ledger = []
    base = "/v1/billing/ledger?type=rental_charge&pageSize=200"
    url = base
    while url:
        page = api.get(url).json()
        ledger.extend(page["entries"])
        url = f"{base}&cursor={page['nextCursor']}" if page["nextCursor"] else ""
    assert -sum(e["amountCents"] for e in ledger) == charge_for_seconds(seconds, rate)
    check_invariants(user["id"])


def test_the_reserve_rolls_and_one_transaction_charges_a_wallet(api: Api, user, world, clock) -> None:
    fund(user["id"], 100_000, clock)
    a = launch_running(api, clock)
    b = launch_running(api, clock, "rtx-4090")
    clock.advance(1800)
    calls: list[str] = []
    dynamo.client().meta.events.register("before-call.dynamodb.TransactWriteItems", lambda **kw: calls.append("tx"))
    metering.sweep()
    assert calls == ["tx"]  # two rentals, one wallet: one transaction
    bal = api.get("/v1/billing/balance").json()
    assert bal["reservedCents"] == a["pricePerHourCents"] + b["pricePerHourCents"]  # topped back up to an hour
    charged = api.get(f"/v1/rentals/{a['id']}").json()["totalChargedCents"]
    assert bal["totalCents"] == 100_000 - charged - api.get(f"/v1/rentals/{b['id']}").json()["totalChargedCents"]
    metering.sweep()  # nothing new to charge: no rows
    check_invariants(user["id"])


def test_an_empty_wallet_stops_every_running_rental(api: Api, user, world, clock) -> None:
    r0 = api.post("/v1/rentals/preview", {"familyId": "h100-80gb", "gpuCount": 1}).json()
    fund(user["id"], r0["pricePerHourCents"] + 10, clock)
    r = launch_running(api, clock)
    clock.advance(2 * 3600)
    metering.sweep()
    got = api.get(f"/v1/rentals/{r['id']}").json()
    assert got["status"] in ("stopping", "stopped") and got["stopReason"] == "insufficient_balance"
    bal = api.get("/v1/billing/balance").json()
    assert bal["availableCents"] == 0 and bal["reservedCents"] == 0
    check_invariants(user["id"])
