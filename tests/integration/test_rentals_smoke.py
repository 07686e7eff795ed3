"""A first end-to-end launch → running → stop through the handlers and the simulators."""

from __future__ import annotations

import pytest

from gpurent import catalog_refresh, rentals
from gpurent.providers import registry
from gpurent.providers.registry import build_adapters
from infra.simulators import start_simulators
from tests.conftest import Api


@pytest.fixture
def sims(aws, clock):
    s = start_simulators(now=clock.now, boot_seconds=20)
    adapters = build_adapters(s.settings())
    registry.set_adapters(adapters)
    catalog_refresh.refresh(adapters)
    yield s
    registry.set_adapters(None)
    s.shutdown()


def test_launch_run_stop(api: Api, user, sims, clock) -> None:
    admin = Api(source_ip="198.51.100.99")
    admin.sign_in("admin@gpurent.test")
    clock.advance(31)
    r = admin.post("/v1/admin/adjustments", {"userId": user["id"], "amountCents": 10_000, "reason": "t"})
    assert r.status == 200, r.body
    r = api.post("/v1/rentals", {"familyId": "rtx-4090", "gpuCount": 1})
    assert r.status == 200, r.body
    launched = r.json()
    assert launched["status"] == "provisioning" and launched["warnings"]
    price = launched["pricePerHourCents"]
    bal = api.get("/v1/billing/balance").json()
    assert bal["reservedCents"] == price and bal["availableCents"] == 10_000 - price
    clock.advance(25)
    got = api.get(f"/v1/rentals/{launched['id']}").json()
    assert got["status"] == "running" and got["host"] and got["port"], got
    clock.advance(3600)
    meter = api.get(f"/v1/rentals/{launched['id']}/meter").json()
    assert meter["secondsBilled"] == 3600 and meter["currentChargeCents"] == price
    stop = api.post(f"/v1/rentals/{launched['id']}/stop").json()
    assert stop == {"id": launched["id"], "status": "stopping", "finalChargedCents": price, "refundedCents": 0}
    bal = api.get("/v1/billing/balance").json()
    assert bal == {**bal, "availableCents": 10_000 - price, "reservedCents": 0}
    rentals.reconcile()
    assert api.get(f"/v1/rentals/{launched['id']}").json()["status"] == "stopped"
    assert api.post(f"/v1/rentals/{launched['id']}/stop").status == 409


def _fund(user_id: str, clock, cents: int = 10_000) -> None:
    admin = Api(source_ip="198.51.100.99")
    admin.sign_in("admin@gpurent.test")
    clock.advance(31)
    assert admin.post("/v1/admin/adjustments", {"userId": user_id, "amountCents": cents, "reason": "t"}).status == 200


@pytest.mark.parametrize(("limits", "reason"), [({"autoStopAfterHours": 0.5}, "auto_stop"),
                                                ({"maxTotalCents": 7}, "max_total")])
def test_own_limits_stop_the_rental_and_bill_exactly_to_them(api: Api, user, sims, clock, limits, reason) -> None:
    _fund(user["id"], clock)
    launched = api.post("/v1/rentals", {"familyId": "rtx-4090", "gpuCount": 1, **limits}).json()
    clock.advance(25)
    running = api.get(f"/v1/rentals/{launched['id']}").json()
    assert running["status"] == "running"
    price = running["pricePerHourCents"]
    clock.advance(3 * 3600)  # the reconciler runs late: billing still stops at the limit
    rentals.reconcile()
    done = api.get(f"/v1/rentals/{launched['id']}").json()
    assert done["status"] in ("stopping", "stopped") and done["stopReason"] == reason
    if reason == "auto_stop":
        assert done["totalChargedCents"] == (1800 * price * 2 + 3600) // 7200
    else:
        assert done["totalChargedCents"] <= 7
    rentals.reconcile()
    assert api.get(f"/v1/rentals/{launched['id']}").json()["status"] == "stopped"
    bal = api.get("/v1/billing/balance").json()
    assert bal["reservedCents"] == 0 and bal["totalCents"] == 10_000 - done["totalChargedCents"]
