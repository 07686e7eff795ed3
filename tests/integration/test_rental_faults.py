"""Rentals under faults, against the provider simulators: a provider that times
out or fails while allocating, our function dying between allocate and
recording, a Lambda retry of the whole launch, a provider 5xx on terminate, a
provider that loses the instance, and races (two stops, stop against the
reconciler, stop against the launch).

In each: the money invariants hold (`check_invariants`), after one
`rentals.reconcile()` pass no simulator instance labelled with a rental id
lives without a live rental, and after recovery no rental is left in a
transitional state. Races run against DynamoDB Local (`locking`), where
conditional writes are real."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from gpurent import rentals
from gpurent.records import Rental
from gpurent.rentals import launching, views
from gpurent.store import rentals as rental_store
from infra.local.functions import CURRENT_FUNCTION
from tests.conftest import Api
from tests.integration.conftest import BOOT_SECONDS, Locking, World
from tests.integration.helpers import envelope
from tests.integration.test_rentals import BASIC, FUNDS, balance, charge, get, launch, launched, ledger, running
from tests.walletkit import check_invariants

TRANSITIONAL = ("provisioning", "stopping")


def recovered(world: World, user_id: str, passes: int = 1) -> list[Rental]:
    """Reconcile, then check the three promises; returns the user's rentals."""
    for _ in range(passes):
        rentals.reconcile()
    world.no_orphans()
    check_invariants(user_id)
    rows, _ = rental_store.list_for_user(user_id, None, 200, None)
    return rows


def settled(world: World, user_id: str, passes: int = 1) -> list[Rental]:
    rows = recovered(world, user_id, passes)
    stuck = [(r.id, r.status) for r in rows if r.status in TRANSITIONAL]
    assert not stuck, f"left in a transitional state: {stuck}"
    return rows


def row(user_id: str, rid: str) -> Rental:
    found = rental_store.get(user_id, rid)
    assert found is not None
    return found


def charges_of(user_id: str, rid: str) -> list[tuple[str, int]]:
    return [(r["type"], int(r["amountCents"])) for r in ledger(user_id) if r.get("rentalId") == rid]


def once(fn: Callable[..., Any], fault: Callable[[], None]) -> Callable[..., Any]:
    """`fn`, with `fault` run once instead of the first call."""
    fired = threading.Event()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not fired.is_set():
            fired.set()
            fault()
        return fn(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------- allocate: timeout and errors

@pytest.mark.parametrize("recover_by", ["reconcile", "get"])
def test_an_allocate_timeout_adopts_the_instance_found_under_our_label(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any, recover_by: str,
) -> None:
    uid = funded_user["id"]
    world.sims.vast.set_knobs(allocate="timeout")
    r = launch(api)
    assert r.status == 200, r.body  # the instance exists: the launch looked under our label and adopted it
    rid = r.json()["id"]
    assert r.json()["status"] == "provisioning"
    world.sims.vast.set_knobs(allocate=None)
    stored = row(uid, rid)
    (inst,) = world.labelled(rid)  # it does exist
    assert stored.status == "provisioning" and stored.instance_id == inst["id"]
    price = stored.price_per_hour_cents
    assert balance(api)["reservedCents"] == price

    clock.advance(BOOT_SECONDS + 1)
    if recover_by == "reconcile":
        rentals.reconcile()  # adopts it by label and sees it running
        rentals.reconcile()
        got = get(api, rid)
    else:
        got = get(api, rid)  # a provisioning rental is refreshed from its provider
        clock.advance(3)
        got = get(api, rid)
    assert got["status"] == "running", got
    assert row(uid, rid).instance_id == inst["id"]
    assert (got["host"], got["port"]) == (inst["host"], inst["sshPort"])
    assert len(world.labelled(rid)) == 1, "never a second machine"
    world.no_orphans()
    clock.advance(600)
    stop = api.post(f"/v1/rentals/{rid}/stop").json()
    assert stop["finalChargedCents"] == charge(600, price)
    settled(world, uid)
    assert world.alive() == []


def test_an_allocate_timeout_whose_instance_the_provider_dropped_fails_with_the_money_back(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    uid = funded_user["id"]
    world.sims.vast.set_knobs(allocate="timeout")
    rid = launched(api)["id"]
    world.sims.vast.set_knobs(allocate=None)
    (inst,) = world.labelled(rid)
    assert world.sims.vast.vanish(inst["id"])  # the provider never kept it
    settled(world, uid)
    got = get(api, rid)
    assert got["status"] == "failed" and got["error"] and got["totalChargedCents"] == 0
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"]) == (FUNDS, 0)
    assert charges_of(uid, rid) == []


def test_a_provider_5xx_on_allocate_is_model_unavailable_with_the_money_back(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    """Issue: every refusal other than capacity/quota (and other than a timeout) → 400
    model_unavailable, the rental failed and visible with its error, the reserve released."""
    uid = funded_user["id"]
    world.sims.vast.set_knobs(allocate="error")
    r = launch(api)
    err = envelope(r, 400, "model_unavailable")
    rid = err["details"]["rentalId"]
    got = get(api, rid)
    assert got["status"] == "failed" and got["error"]
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"]) == (FUNDS, 0)
    world.sims.vast.set_knobs(allocate=None)
    settled(world, uid)


def test_a_provider_5xx_on_allocate_never_leaves_money_or_a_machine_behind(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    """Whatever the answer to a 5xx, recovery ends with the reserve back and nothing running."""
    uid = funded_user["id"]
    world.sims.vast.set_knobs(allocate="error")
    r = launch(api)
    assert r.status in (200, 400), r.body
    world.sims.vast.set_knobs(allocate=None)
    clock.advance(rentals.ADOPT_GRACE + 1)
    rows = settled(world, uid)
    assert [x.status for x in rows] == ["failed"]
    assert world.alive() == []
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"]) == (FUNDS, 0)


# ---------------------------------------------------------------- our function dies mid-launch

def test_a_crash_between_allocate_and_recording_is_adopted_by_the_reconciler(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    uid = funded_user["id"]

    def die() -> None:
        raise RuntimeError("the Lambda was killed right after the provider answered")

    monkeypatch.setattr(rental_store, "update", once(rental_store.update, die))
    r = launch(api)
    envelope(r, 500, "internal_error")
    (stored,) = rental_store.list_for_user(uid, None, 10, None)[0]
    rid = stored.id
    assert stored.status == "provisioning" and not stored.instance_id
    (inst,) = world.labelled(rid)
    assert balance(api)["reservedCents"] == stored.price_per_hour_cents

    rentals.reconcile()  # the dead launch still holds its allocation lease: hands off
    assert not row(uid, rid).instance_id
    clock.advance(rentals.ALLOCATION_LEASE + 1)
    recovered(world, uid)
    assert row(uid, rid).instance_id == inst["id"], "adopted by its label"
    clock.advance(BOOT_SECONDS + 1)
    rows = settled(world, uid)
    assert [x.status for x in rows] == ["running"]
    assert len(world.labelled(rid)) == 1
    clock.advance(100)
    assert api.post(f"/v1/rentals/{rid}/stop").json()["finalChargedCents"] == charge(100, stored.price_per_hour_cents)
    settled(world, uid)


def test_a_lambda_retry_after_a_crash_after_allocate_answers_the_same_rental(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    uid = funded_user["id"]

    def die() -> None:
        raise RuntimeError("killed after allocate")

    monkeypatch.setattr(rental_store, "update", once(rental_store.update, die))
    envelope(launch(api, key="retry-me"), 500, "internal_error")
    (first,) = rental_store.list_for_user(uid, None, 10, None)[0]
    retry = launch(api, key="retry-me")  # the client (or API Gateway) retries the whole request
    assert retry.status == 200, retry.body
    assert retry.json()["id"] == first.id and retry.json()["status"] == "provisioning"
    assert len(world.labelled(first.id)) == 1, "one machine"
    assert len(rental_store.list_for_user(uid, None, 10, None)[0]) == 1, "one rental"
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"]) == (FUNDS - first.price_per_hour_cents, first.price_per_hour_cents)
    clock.advance(rentals.ALLOCATION_LEASE + BOOT_SECONDS + 1)
    recovered(world, uid)
    assert get(api, first.id)["status"] == "running"
    settled(world, uid)


def test_a_lambda_retry_after_a_crash_before_allocate_completes_the_launch(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first attempt took the reserve and wrote the row, then died before calling the
    provider. The retry must not answer 200 for a rental nobody will ever allocate: either
    it carries the launch on (the rental runs) or it fails it with the money back."""
    uid = funded_user["id"]

    def die() -> None:
        raise RuntimeError("killed between the reserve and the provider call")

    monkeypatch.setattr(launching, "_allocate", once(launching._allocate, die))
    envelope(launch(api, key="retry-2"), 500, "internal_error")
    (first,) = rental_store.list_for_user(uid, None, 10, None)[0]
    assert world.labelled(first.id) == []
    clock.advance(rentals.ALLOCATION_LEASE + 1)  # the dead attempt's allocation lease runs out
    retry = launch(api, key="retry-2")
    assert retry.json().get("id", retry.json().get("details", {}).get("rentalId")) == first.id
    clock.advance(BOOT_SECONDS + 1)
    rentals.reconcile()
    rentals.reconcile()
    got = get(api, first.id)
    if retry.status == 200:
        assert got["status"] == "running", f"answered 200 {retry.json()['status']} but the rental is {got}"
        assert len(world.labelled(first.id)) == 1
    else:
        envelope(retry, 400, "model_unavailable")
        assert got["status"] == "failed" and balance(api)["reservedCents"] == 0
    settled(world, uid)


# ---------------------------------------------------------------- terminate and lost instances

def test_a_provider_5xx_on_terminate_keeps_stopping_until_the_provider_confirms(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    uid = funded_user["id"]
    got = running(api, clock)
    rid, price = got["id"], got["pricePerHourCents"]
    clock.advance(1800)
    world.sims.vast.set_knobs(terminate="error")
    r = api.post(f"/v1/rentals/{rid}/stop")
    assert r.status == 200, r.body
    assert r.json() == {"id": rid, "status": "stopping", "finalChargedCents": charge(1800, price), "refundedCents": 0}
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"]) == (FUNDS - charge(1800, price), 0), "settled at the stop"
    for _ in range(2):
        clock.advance(60)
        recovered(world, uid)
        assert get(api, rid)["status"] == "stopping", "not stopped while the machine may still run"
        assert len(world.alive(rid)) == 1
    world.sims.vast.set_knobs(terminate=None)
    clock.advance(60)
    settled(world, uid)
    assert get(api, rid)["status"] == "stopped"
    assert world.alive() == []
    assert charges_of(uid, rid) == [("rental_charge", -charge(1800, price))], "charged once, nothing after the stop"


def test_a_provider_5xx_on_terminate_of_a_provisioning_rental(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    uid = funded_user["id"]
    rid = launched(api)["id"]
    world.sims.vast.set_knobs(terminate="error")
    assert api.post(f"/v1/rentals/{rid}/stop").status == 200
    clock.advance(BOOT_SECONDS + 1)
    recovered(world, uid)
    assert get(api, rid)["status"] == "stopping" and len(world.alive(rid)) == 1
    world.sims.vast.set_knobs(terminate=None)
    settled(world, uid)
    assert world.alive() == [] and get(api, rid)["totalChargedCents"] == 0


@pytest.mark.parametrize(("healthy_for", "refunded"), [(400, False), (30, True)])
def test_the_provider_losing_a_running_instance_fails_it_billed_to_the_last_healthy_moment(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any, healthy_for: int, refunded: bool,
) -> None:
    uid = funded_user["id"]
    got = running(api, clock, {"familyId": "h100-80gb", "gpuCount": 8})
    rid, price = got["id"], got["pricePerHourCents"]
    clock.advance(healthy_for)
    rentals.reconcile()
    (inst,) = world.labelled(rid)
    assert world.sims.vast.vanish(inst["id"])
    clock.advance(500)
    settled(world, uid)
    failed = get(api, rid)
    assert failed["status"] == "failed" and failed["error"]
    c = charge(healthy_for, price)
    assert failed["totalChargedCents"] == (0 if refunded else c)
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"]) == (FUNDS - (0 if refunded else c), 0)
    expected = [("rental_charge", -c), ("refund", c)] if refunded else [("rental_charge", -c)]
    assert sorted(charges_of(uid, rid)) == sorted(expected)


def test_the_provider_losing_a_provisioning_instance_fails_it_unbilled(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    uid = funded_user["id"]
    rid = launched(api)["id"]
    (inst,) = world.labelled(rid)
    world.sims.vast.vanish(inst["id"])
    clock.advance(3)
    got = get(api, rid)  # the GET refresh notices
    assert got["status"] == "failed" and got["error"] and got["totalChargedCents"] == 0
    settled(world, uid)
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"]) == (FUNDS, 0)
    assert charges_of(uid, rid) == []


def test_a_crash_while_provisioning_fails_it_unbilled_and_terminates(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    uid = funded_user["id"]
    rid = launched(api)["id"]
    (inst,) = world.labelled(rid)
    world.sims.vast.crash(inst["id"])
    rows = settled(world, uid)
    assert [x.status for x in rows] == ["failed"]
    assert world.alive() == [] and balance(api)["reservedCents"] == 0


# ---------------------------------------------------------------- races

def test_two_stops_at_once_of_a_provisioning_rental_answer_one_200_and_one_409(locking: Locking) -> None:
    api, world, uid = locking.api, locking.world, locking.user["id"]
    rid = launched(api)["id"]
    barrier = threading.Barrier(2)

    def stop(_: int) -> Any:
        barrier.wait()
        return api.post(f"/v1/rentals/{rid}/stop")

    with ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(stop, range(2)))
    check_invariants(uid)
    assert balance(api)["reservedCents"] == 0 and balance(api)["availableCents"] == FUNDS
    assert sorted(r.status for r in replies) == [200, 409], [r.body for r in replies]
    settled(world, uid)


def test_two_stops_at_once_answer_one_200_and_one_409_and_charge_once(locking: Locking, clock: Any) -> None:
    api, world, uid = locking.api, locking.world, locking.user["id"]
    got = running(api, clock)
    rid, price = got["id"], got["pricePerHourCents"]
    clock.advance(1000)
    barrier = threading.Barrier(2)

    def stop(_: int) -> Any:
        barrier.wait()
        return api.post(f"/v1/rentals/{rid}/stop")

    with ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(stop, range(2)))
    assert charges_of(uid, rid) == [("rental_charge", -charge(1000, price))]
    check_invariants(uid)
    assert sorted(r.status for r in replies) == [200, 409], [r.body for r in replies]
    (ok,) = [r for r in replies if r.status == 200]
    (conflict,) = [r for r in replies if r.status == 409]
    assert ok.json() == {"id": rid, "status": "stopping", "finalChargedCents": charge(1000, price), "refundedCents": 0}
    envelope(conflict, 409, "already_stopped")
    assert charges_of(uid, rid) == [("rental_charge", -charge(1000, price))]
    settled(world, uid)


def test_many_stops_at_once_charge_once(locking: Locking, clock: Any) -> None:
    api, world, uid = locking.api, locking.world, locking.user["id"]
    got = running(api, clock, {"familyId": "a100-80gb", "gpuCount": 1})
    rid, price = got["id"], got["pricePerHourCents"]
    clock.advance(2000)
    barrier = threading.Barrier(6)

    def stop(_: int) -> int:
        barrier.wait()
        return api.post(f"/v1/rentals/{rid}/stop").status

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(stop, range(6)))
    assert charges_of(uid, rid) == [("rental_charge", -charge(2000, price))]
    check_invariants(uid)
    assert sorted(statuses) == [200] + [409] * 5, statuses
    settled(world, uid)


@pytest.mark.parametrize("state", ["running", "provisioning"])
def test_a_stop_whose_rental_the_reconciler_touched_meanwhile_still_succeeds(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any, monkeypatch: pytest.MonkeyPatch, state: str,
) -> None:
    """Deterministic interleaving: the reconciler writes the rental (its health check, or
    provisioning → running) between the stop's read and the stop's write. The user's stop
    must still answer 200, and the rental is charged once."""
    uid = funded_user["id"]
    if state == "running":
        got = running(api, clock)
        clock.advance(700)
        billed = 700
    else:
        got = launched(api)
        clock.advance(BOOT_SECONDS + 1)  # booted at the provider; nobody has looked yet
        billed = 0
    rid, price = got["id"], got["pricePerHourCents"]
    real_get_owned = views.get_owned
    fired = threading.Event()

    def get_owned_then_reconcile(user_id: str, rental_id: str) -> Rental:
        r = real_get_owned(user_id, rental_id)
        if not fired.is_set():
            fired.set()
            token = CURRENT_FUNCTION.set("ReconcileWorkerFunction")  # the pass runs right now, in another Lambda
            try:
                rentals.reconcile()
            finally:
                CURRENT_FUNCTION.reset(token)
        return r

    monkeypatch.setattr(views, "get_owned", get_owned_then_reconcile)
    r = api.post(f"/v1/rentals/{rid}/stop")
    assert fired.is_set()
    monkeypatch.setattr(views, "get_owned", real_get_owned)
    check_invariants(uid)
    assert r.status == 200, r.body
    assert r.json() == {"id": rid, "status": "stopping", "finalChargedCents": charge(billed, price),
                        "refundedCents": 0}
    assert charges_of(uid, rid) == ([("rental_charge", -charge(billed, price))] if charge(billed, price) else [])
    settled(world, uid)
    assert get(api, rid)["status"] == "stopped"


def test_stop_racing_the_reconciler(locking: Locking, clock: Any) -> None:
    api, world, uid = locking.api, locking.world, locking.user["id"]
    families = ["rtx-4090", "rtx-5090", "a100-80gb", "h100-80gb", "b200"]
    ids = [launched(api, {"familyId": f, "gpuCount": 1})["id"] for f in families]
    clock.advance(BOOT_SECONDS + 1)
    made = [get(api, rid) for rid in ids]
    assert {m["status"] for m in made} == {"running"}
    clock.advance(900)
    outcomes = []
    for got in made:
        barrier = threading.Barrier(2)

        def stop(rid: str = got["id"], b: threading.Barrier = barrier) -> Any:
            b.wait()
            return api.post(f"/v1/rentals/{rid}/stop")

        def reconcile(b: threading.Barrier = barrier) -> Any:
            b.wait()
            return rentals.reconcile()

        with ThreadPoolExecutor(2) as pool:
            stopped = pool.submit(stop)
            pool.submit(reconcile).result()
            outcomes.append((got["id"], stopped.result().status, stopped.result().body))
    check_invariants(uid)
    for (rid, status, _), got in zip(outcomes, made, strict=True):
        if status == 200:
            assert charges_of(uid, rid) == [("rental_charge", -charge(900, got["pricePerHourCents"]))]
    assert [o[1] for o in outcomes] == [200] * len(made), outcomes
    rows = settled(world, uid)
    assert {x.status for x in rows} == {"stopped"}


def test_a_crash_noticed_by_the_reconciler_while_the_user_stops_settles_once(locking: Locking, clock: Any) -> None:
    api, world, uid = locking.api, locking.world, locking.user["id"]
    got = running(api, clock, {"familyId": "h100-80gb", "gpuCount": 1})
    rid, price = got["id"], got["pricePerHourCents"]
    clock.advance(300)
    rentals.reconcile()  # healthy at +300
    (inst,) = world.labelled(rid)
    world.sims.vast.crash(inst["id"])
    clock.advance(200)
    barrier = threading.Barrier(2)

    def stop() -> Any:
        barrier.wait()
        return api.post(f"/v1/rentals/{rid}/stop")

    def reconcile() -> Any:
        barrier.wait()
        return rentals.reconcile()

    with ThreadPoolExecutor(2) as pool:
        stopped = pool.submit(stop)
        pool.submit(reconcile).result()
        reply = stopped.result()
    assert reply.status in (200, 409), reply.body
    final = settled(world, uid, passes=2)
    (only,) = final
    assert only.status in ("stopped", "failed")
    rows = charges_of(uid, rid)
    assert len([x for x in rows if x[0] == "rental_charge"]) == 1, rows
    billed = -sum(a for _, a in rows)
    # The crash bills up to +300 (last healthy); a stop that won bills up to +500.
    assert billed in (charge(300, price), charge(500, price)), rows
    if reply.status == 200:
        assert reply.json()["finalChargedCents"] == billed


def test_a_stop_while_the_launch_is_allocating_leaves_no_machine(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    uid = funded_user["id"]
    adapter = world.adapters["vast"]
    real_allocate = adapter.allocate
    stops: list[Any] = []

    async def allocate_while_the_user_stops(req: Any) -> str:
        stops.append(api.post(f"/v1/rentals/{req.rental_id}/stop"))  # the user clicks Stop meanwhile
        return await real_allocate(req)

    monkeypatch.setattr(adapter, "allocate", allocate_while_the_user_stops)
    r = launch(api)
    assert r.status == 200, r.body
    rid = r.json()["id"]
    assert stops[0].status == 200, stops[0].body
    assert stops[0].json() == {"id": rid, "status": "stopping", "finalChargedCents": 0, "refundedCents": 0}
    assert len(world.labelled(rid)) == 1, "the allocation went through at the provider"
    clock.advance(BOOT_SECONDS + 1)
    settled(world, uid)
    assert get(api, rid)["status"] == "stopped"
    assert world.alive() == []
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"]) == (FUNDS, 0)


def test_a_timeout_then_a_retry_with_the_same_key_makes_one_machine(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    """The client saw a slow launch (the provider hung) and retried with its Idempotency-Key."""
    uid = funded_user["id"]
    world.sims.vast.set_knobs(allocate="timeout")
    first = launch(api, BASIC, key="slow")
    world.sims.vast.set_knobs(allocate=None)
    again = launch(api, BASIC, key="slow")
    assert first.status == again.status == 200
    assert first.json()["id"] == again.json()["id"]
    assert len(world.labelled(first.json()["id"])) == 1
    clock.advance(BOOT_SECONDS + 1)
    rows = settled(world, uid, passes=2)
    assert [x.status for x in rows] == ["running"]
