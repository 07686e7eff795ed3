"""Rentals against providers as they really behave (issue 16), through the real handlers
and the simulators: refusals in the providers' own words, multi-GPU prices, machines
stuck before running, flaky health, Lambda preemption, price tolerance.

Each money-moving test ends with `check_invariants`."""

from __future__ import annotations

from typing import Any

import pytest

from gpurent import catalog, sweep
from gpurent.listing import Listing
from gpurent.store import rentals as rental_store
from tests.conftest import Api
from tests.integration.conftest import World
from tests.integration.helpers import envelope
from tests.integration.test_rentals import FUNDS, balance, get, launch, launched
from tests.walletkit import check_invariants

# ---------------------------------------------------------------- refusals (item 5)


def runpod_ties(world: World, family: str = "rtx-4090") -> list[Listing]:
    """RunPod only: the family ×1 at its list price in several data centres (a tie)."""
    world.install(providers="runpod")
    found = catalog.candidates(family, 1, None)
    tied = [c for c in found if c.price_per_hour_cents == found[0].price_per_hour_cents]
    assert len(tied) >= 2, found
    return found


def data_centre(listing: Listing) -> str:
    return listing.offer_key.split("|")[2]


def test_runpod_saying_no_instances_are_available_fails_over_to_the_next_listing(
    api: Api, funded_user: dict[str, Any], sim_world: World, aws: None,
) -> None:
    """RunPod's real refusal when a data centre emptied since the refresh ("There are no longer
    any instances available ...") is capacity: the launch goes on to the next listing."""
    found = runpod_ties(sim_world)
    first, second = found[0], found[1]
    rp = sim_world.sims.runpod
    type_id = first.offer_key.split("|")[0]
    with rp.lock:
        rp.stock[(type_id, data_centre(first))] = 0
    answer = launched(api)
    row = rental_store.get(funded_user["id"], answer["id"])
    assert row is not None and row.listing_id == second.id and row.attempts == (first.id,)
    (inst,) = sim_world.labelled(answer["id"])
    assert rp.instances[inst["id"]].details["dataCenterId"] == data_centre(second)
    check_invariants(funded_user["id"])


def test_runpod_words_we_do_not_know_fail_the_launch_without_failover(
    api: Api, funded_user: dict[str, Any], sim_world: World, aws: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    runpod_ties(sim_world)
    adapter = sim_world.adapters["runpod"]
    tried: list[str] = []
    real = adapter.allocate

    async def counting(req: Any) -> str:
        tried.append(req.offer.offer_key)
        return await real(req)

    monkeypatch.setattr(adapter, "allocate", counting)
    sim_world.sims.runpod.set_knobs(allocate="refuse", refusal_text="The flux capacitor is misaligned")
    err = envelope(launch(api), 400, "model_unavailable")
    assert "flux capacitor" in err["message"]
    assert len(tried) == 1  # unknown words are transient: no failover
    assert get(api, err["details"]["rentalId"])["status"] == "failed"
    assert (balance(api)["availableCents"], balance(api)["reservedCents"]) == (FUNDS, 0)
    check_invariants(funded_user["id"])


# ---------------------------------------------------------------- stuck before running (item 3)


def on(world: World, provider: str) -> None:
    world.install(providers=provider)


def instance_of(world: World, rid: str) -> dict[str, Any]:
    (inst,) = world.labelled(rid)
    return inst


def test_vast_stuck_in_created_with_an_oci_error_fails_at_once_unbilled(
    api: Api, funded_user: dict[str, Any], sim_world: World, aws: None, clock: Any,
) -> None:
    on(sim_world, "vast")
    rid = launched(api)["id"]
    inst = instance_of(sim_world, rid)
    sim_world.sims.vast.set_status(inst["id"], "created", "Error response from daemon: OCI runtime create failed: "
                                   "runc create failed: unable to start container process")
    clock.advance(5)
    got = get(api, rid)  # a provisioning rental is checked on GET
    assert got["status"] == "failed" and "OCI runtime create failed" in got["error"]
    assert got["totalChargedCents"] == 0
    assert (balance(api)["availableCents"], balance(api)["reservedCents"]) == (FUNDS, 0)
    assert sim_world.alive(rid) == []  # terminated
    check_invariants(funded_user["id"])


@pytest.mark.parametrize(("provider", "status", "deadline"), [
    ("vast", "loading", 600), ("runpod", "RESTARTING", 1200), ("lambda", "booting", 1800),
])
def test_a_machine_stuck_before_running_fails_at_its_providers_deadline(
    api: Api, funded_user: dict[str, Any], sim_world: World, aws: None, clock: Any,
    provider: str, status: str, deadline: int,
) -> None:
    from gpurent import rentals
    from gpurent.providers import registry

    assert registry.provision_deadline(provider) == deadline
    on(sim_world, provider)
    rid = launched(api)["id"]
    price = get(api, rid)["pricePerHourCents"]
    sim_world.sim(provider).set_status(instance_of(sim_world, rid)["id"], status)
    clock.advance(deadline - 5)
    rentals.reconcile()
    assert get(api, rid)["status"] == "provisioning"  # still within its deadline
    assert balance(api)["reservedCents"] == price
    clock.advance(10)
    rentals.reconcile()
    got = get(api, rid)
    assert got["status"] == "failed" and "not running" in got["error"] and got["totalChargedCents"] == 0
    assert (balance(api)["availableCents"], balance(api)["reservedCents"]) == (FUNDS, 0)
    assert sim_world.alive(rid) == []
    check_invariants(funded_user["id"])


# ---------------------------------------------------------------- health with a grace period (item 4)


def running_on(api: Api, world: World, clock: Any, provider: str,
               body: dict[str, Any] | None = None) -> dict[str, Any]:
    from tests.integration.conftest import BOOT_SECONDS

    on(world, provider)
    rid = launched(api, body)["id"]
    clock.advance(BOOT_SECONDS + 1)
    got = get(api, rid)
    assert got["status"] == "running", got
    return got


@pytest.mark.parametrize(("provider", "status"), [
    ("vast", "rebooting"), ("vast", "unknown"), ("runpod", "RUNNING"), ("lambda", "unhealthy"),
])
def test_one_bad_check_never_fails_a_running_pod(
    api: Api, funded_user: dict[str, Any], sim_world: World, aws: None, clock: Any, provider: str, status: str,
) -> None:
    """vast rebooting / no heartbeat, a RunPod pod whose port is not known, Lambda unhealthy:
    degraded, then healthy again; never terminated, billed throughout."""
    from gpurent import rentals
    from tests.integration.test_rentals import charge

    got = running_on(api, sim_world, clock, provider)
    rid, rate = got["id"], got["pricePerHourCents"]
    iid = instance_of(sim_world, rid)["id"]
    clock.advance(60)
    rentals.reconcile()
    sim_world.sim(provider).set_status(iid, status)  # RunPod: RUNNING without a runtime (no port)
    for _ in range(2):
        clock.advance(60)
        rentals.reconcile()
        row = rental_store.get(funded_user["id"], rid)
        assert row is not None and row.status == "running" and row.bad_checks >= 1
    assert sim_world.alive(rid)  # never terminated on a miss
    sim_world.sim(provider).set_status(iid, None)
    clock.advance(60)
    rentals.reconcile()
    row = rental_store.get(funded_user["id"], rid)
    assert row is not None and row.status == "running" and row.bad_checks == 0 and row.unhealthy_since is None
    sweep.start()
    seconds = int(clock.now() - float(row.running_at or 0))
    assert get(api, rid)["totalChargedCents"] == charge(seconds, rate)  # the degraded minutes are billed
    check_invariants(funded_user["id"])


def test_a_pod_that_stays_bad_fails_after_the_grace_billed_to_its_last_healthy_moment(
    api: Api, funded_user: dict[str, Any], sim_world: World, aws: None, clock: Any,
) -> None:
    from gpurent import rentals
    from gpurent.rentals import lifecycle
    from tests.integration.test_rentals import charge

    got = running_on(api, sim_world, clock, "vast", {"familyId": "h100-80gb", "gpuCount": 8})
    rid, rate = got["id"], got["pricePerHourCents"]
    clock.advance(300)
    rentals.reconcile()  # healthy: 300 s after running
    sim_world.sims.vast.set_status(instance_of(sim_world, rid)["id"], "unknown", "no heartbeat")
    # Many checks in a short time are not enough: the grace also needs time.
    for _ in range(lifecycle.HEALTH_BAD_CHECKS + 1):
        clock.advance(10)
        rentals.reconcile()
    assert rental_store.get(funded_user["id"], rid).status == "running"  # type: ignore[union-attr]
    sweep.start()  # billed while degraded …
    assert get(api, rid)["totalChargedCents"] > charge(300, rate)
    clock.advance(lifecycle.HEALTH_GRACE_SECONDS)
    rentals.reconcile()
    failed = get(api, rid)
    # … and settled to the last healthy moment once declared failed: the degraded time is given back
    assert failed["status"] == "failed" and "unknown" in failed["error"]
    assert failed["totalChargedCents"] == charge(300, rate)
    assert sim_world.alive(rid) == []
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"]) == (FUNDS - charge(300, rate), 0)
    check_invariants(funded_user["id"])


@pytest.mark.parametrize("status", ["preempted", "terminating"])
def test_lambda_preempting_or_terminating_a_pod_fails_it_at_once(
    api: Api, funded_user: dict[str, Any], sim_world: World, aws: None, clock: Any, status: str,
) -> None:
    from gpurent import rentals
    from tests.integration.test_rentals import charge

    got = running_on(api, sim_world, clock, "lambda")
    rid, rate = got["id"], got["pricePerHourCents"]
    clock.advance(600)
    rentals.reconcile()  # healthy at +600
    sim_world.sims.lambdacloud.set_status(instance_of(sim_world, rid)["id"], status)
    clock.advance(30)
    rentals.reconcile()  # no grace: Lambda is ending it on its own
    failed = get(api, rid)
    assert failed["status"] == "failed" and status in failed["error"]
    assert failed["totalChargedCents"] == charge(600, rate)
    check_invariants(funded_user["id"])


# ---------------------------------------------------------------- price tolerance (item 6)


def one_cheap_then_dearer(world: World) -> tuple[Listing, Listing]:
    """RunPod's H100 ×1 in one data centre only (the cheapest listing), Lambda's dearer behind it."""
    rp = world.sims.runpod
    type_id = "NVIDIA H100 80GB HBM3"
    with rp.lock:
        for (t, dc) in list(rp.stock):
            if t == type_id:
                rp.stock[(t, dc)] = 4 if dc == "US-OR-1" else 0
    world.install(providers="runpod,lambda")
    found = catalog.candidates("h100-80gb", 1, None)
    assert found[0].provider == "runpod" and found[1].provider == "lambda", found
    assert found[1].price_per_hour_cents > found[0].price_per_hour_cents
    return found[0], found[1]


def test_without_a_tolerance_failover_never_goes_dearer(
    api: Api, funded_user: dict[str, Any], sim_world: World, aws: None,
) -> None:
    one_cheap_then_dearer(sim_world)
    sim_world.sims.runpod.set_knobs(allocate="capacity")
    err = envelope(launch(api, {"familyId": "h100-80gb", "gpuCount": 1}), 400, "model_unavailable")
    assert "no instances currently available" in err["message"].lower()
    assert sim_world.sims.lambdacloud.snapshot() == []
    assert (balance(api)["availableCents"], balance(api)["reservedCents"]) == (FUNDS, 0)
    check_invariants(funded_user["id"])


def test_a_tolerance_places_the_launch_on_a_dearer_listing_at_the_rate_obtained(
    api: Api, funded_user: dict[str, Any], sim_world: World, aws: None, clock: Any,
) -> None:
    """RunPod says "There are no instances currently available" (capacity): within
    maxPricePerHourCents the launch goes on to Lambda, dearer; that rate is charged and
    reserved (the reserve moved in one transaction, no ledger row), and the answer says so."""
    from tests.integration.conftest import BOOT_SECONDS
    from tests.integration.test_rentals import charge, ledger

    cheap, dear = one_cheap_then_dearer(sim_world)
    sim_world.sims.runpod.set_knobs(allocate="capacity")
    answer = launched(api, {"familyId": "h100-80gb", "gpuCount": 1,
                            "maxPricePerHourCents": dear.price_per_hour_cents})
    assert answer["pricePerHourCents"] == dear.price_per_hour_cents
    assert answer["quotedPricePerHourCents"] == cheap.price_per_hour_cents
    assert any("instead of the quoted" in w for w in answer["warnings"])
    row = rental_store.get(funded_user["id"], answer["id"])
    assert row is not None and row.provider == "lambda" and row.listing_id == dear.id
    assert row.reserve_cents == dear.price_per_hour_cents and row.attempts == (cheap.id,)
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"]) == (FUNDS - dear.price_per_hour_cents, dear.price_per_hour_cents)
    assert [e["type"] for e in ledger(funded_user["id"])] == ["adjustment"]  # reserves move no ledger row
    clock.advance(BOOT_SECONDS + 1)
    assert get(api, answer["id"])["status"] == "running"
    clock.advance(3600)
    sweep.start()
    assert get(api, answer["id"])["totalChargedCents"] == charge(3600, dear.price_per_hour_cents)
    check_invariants(funded_user["id"])


def test_a_tolerance_below_the_cheapest_listing_is_refused_and_writes_nothing(
    api: Api, funded_user: dict[str, Any], sim_world: World, aws: None,
) -> None:
    from tests.integration.conftest import state as snapshot

    cheap, _ = one_cheap_then_dearer(sim_world)
    before = snapshot()
    body = {"familyId": "h100-80gb", "gpuCount": 1, "maxPricePerHourCents": cheap.price_per_hour_cents - 1}
    for url in ("/v1/rentals", "/v1/rentals/preview"):
        err = envelope(api.post(url, body), 400, "model_unavailable")
        assert err["details"] == {"cheapestPricePerHourCents": cheap.price_per_hour_cents}
    assert snapshot() == before
    assert api.post("/v1/rentals/preview", {**body, "maxPricePerHourCents": cheap.price_per_hour_cents}).status == 200


def test_a_dearer_listing_the_wallet_cannot_reserve_is_skipped(
    api: Api, user: dict[str, Any], fund: Any, sim_world: World, aws: None,
) -> None:
    cheap, dear = one_cheap_then_dearer(sim_world)
    fund(user["id"], cheap.price_per_hour_cents)  # an hour of the quote, not of the dearer listing
    sim_world.sims.runpod.set_knobs(allocate="capacity")
    err = envelope(launch(api, {"familyId": "h100-80gb", "gpuCount": 1,
                                "maxPricePerHourCents": dear.price_per_hour_cents}), 400, "model_unavailable")
    assert "reserve" in err["message"]
    assert sim_world.sims.lambdacloud.snapshot() == []  # never called at a price the wallet cannot cover
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"]) == (cheap.price_per_hour_cents, 0)
    check_invariants(user["id"])


# ---------------------------------------------------------------- the reconciler scales (item 7)


def forget_requests(world: World) -> None:
    for sim in world.sims.all():
        with sim.lock:
            sim.requests.clear()


def test_a_reconcile_pass_lists_each_provider_once_instead_of_a_get_per_rental(
    api: Api, funded_user: dict[str, Any], sim_world: World, aws: None, clock: Any,
) -> None:
    """Twelve running rentals on Lambda: the pass lists each configured provider once and asks
    for no instance one by one, and writes no rental whose provider shows it as the store has
    it (healthy: no `lastHealthyAt` write); a rental the list is silent about (its instance
    vanished) costs one get, and is found gone, billed to the last pass that saw it running."""
    from gpurent import rentals
    from gpurent.providers import registry
    from gpurent.providers.registry import build_adapters
    from tests.integration.conftest import BOOT_SECONDS

    sim_world.install(providers="lambda")  # the catalog: Lambda only
    registry.set_adapters(build_adapters({**sim_world.sims.settings(), "PROVIDER_READ_TIMEOUT_SECONDS": "2"}))
    ids = []
    for _ in range(12):
        ids.append(launched(api, {"familyId": "h100-80gb", "gpuCount": 8})["id"])
    clock.advance(BOOT_SECONDS + 1)
    rentals.reconcile()
    assert {get(api, rid)["status"] for rid in ids} == {"running"}
    forget_requests(sim_world)
    clock.advance(60)
    before = {rid: rental_store.get(funded_user["id"], rid) for rid in ids}
    counts = rentals.reconcile()
    calls = sim_world.requests()
    assert counts["errors"] == 0 and counts["checked"] == 12 and counts["changed"] == 0, counts
    lists = [c for c in calls if c[1] == "GET" and c[2].rstrip("/").endswith("instances")] + [
        c for c in calls if c[0] == "runpod"]
    assert len(calls) == len(lists) == 3, calls  # vast, RunPod, Lambda: one list each, no get
    assert {rid: rental_store.get(funded_user["id"], rid) for rid in ids} == before  # nothing written
    seen_running = clock.now()
    assert {get(api, rid)["provider"] for rid in ids} == {"lambda"}
    gone = ids[0]
    (inst,) = sim_world.labelled(gone)
    sim_world.sims.lambdacloud.vanish(inst["id"])
    forget_requests(sim_world)
    clock.advance(60)
    rentals.reconcile()
    calls = sim_world.requests()
    # three lists, one get for the rental the list is silent about, one terminate (idempotent) of its machine
    assert sorted(c[1] for c in calls) == ["GET", "GET", "GET", "POST", "POST"], calls
    assert len([c for c in calls if c[0] == "lambda"]) == 3, calls
    failed = get(api, gone)
    assert failed["status"] == "failed"
    row = rental_store.get(funded_user["id"], gone)
    assert row is not None and row.last_healthy_at == seen_running  # the previous pass saw it running
    check_invariants(funded_user["id"])
