"""The reconciler scaled out (issue 17): the coordinator hands each provider to a worker
through the reconcile queue, a worker moves only the rentals its provider's list disagrees
with (one list per provider page, one event loop and one pooled HTTP client per pass), hands
the rest of a large change on in chunks, and a healthy pod costs no write. Faults lose no
machine: a worker dying halfway, a provider's list timing out, a hand-off lost or late — the
next minute's pass finishes the work.

Through the real handlers, moto (SQS included) and the provider simulators; the races on
DynamoDB Local."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from gpurent import config, reconciler, rentals
from gpurent.providers import vast
from gpurent.providers.base import ProviderError
from gpurent.rentals import instances, lifecycle
from gpurent.store import dynamo
from gpurent.store import rentals as rental_store
from infra.local import template
from infra.local.events import schedule_event, sqs_event
from infra.local.functions import load_handler
from tests.conftest import Api
from tests.integration.conftest import BOOT_SECONDS, Locking, World, funder, sign_in
from tests.integration.test_rentals import FUNDS, charge, get, launched, running
from tests.walletkit import check_invariants

LAMBDA_H100 = {"familyId": "h100-80gb", "gpuCount": 8}
WRITES = ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem")


def coordinator() -> dict[str, Any]:
    code_uri = {name: c for name, c, _ in template.schedules()}["ReconcileFunction"]
    return dict(load_handler(code_uri)(schedule_event(), None))


def worker() -> Any:
    return load_handler(template.queue_consumers()["ReconcileQueue"])


def deliver_pending() -> list[dict[str, Any]]:
    """What the reconcile queue's mapping does, in process: each hand-off to the worker function,
    the ones the workers make in turn included."""
    out = []
    while bodies := reconciler.pending():
        out += [dict(worker()(sqs_event([b]), None)) for b in bodies]
    return out


@pytest.fixture
def requests_by_operation(aws: None) -> Iterator[Counter[str]]:
    """DynamoDB requests by operation, as the product's client sends them."""
    seen: Counter[str] = Counter()

    def count(event_name: str, **kwargs: Any) -> None:
        seen[event_name.rsplit(".", 1)[-1]] += 1

    events = dynamo.client().meta.events
    events.register("before-call.dynamodb.*", count)
    yield seen
    events.unregister("before-call.dynamodb.*", count)


@pytest.fixture
def queue(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real (moto) reconcile queue, configured as a deployment configures it."""
    url = boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="t-ReconcileQueue")["QueueUrl"]
    monkeypatch.setenv("RECONCILE_QUEUE_URL", url)
    config.reset()
    yield url
    monkeypatch.delenv("RECONCILE_QUEUE_URL")
    config.reset()


def received(url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    out = []
    while got := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for m in got:
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return out


@pytest.fixture
def lambda_world(aws: None, sim_world: World) -> World:
    """Lambda Cloud only (its capacity is not used up by renting), on fresh tables."""
    sim_world.install(providers="lambda")
    return sim_world


@pytest.fixture
def vast_world(aws: None, sim_world: World) -> World:
    """vast.ai only, on fresh tables."""
    sim_world.install(providers="vast")
    return sim_world


# ---------------------------------------------------------------- the fan-out


def test_the_schedule_hands_each_provider_to_a_worker_through_the_queue(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any, queue: str,
) -> None:
    rid = launched(api)["id"]
    clock.advance(BOOT_SECONDS + 1)
    assert coordinator() == {"handedOff": 3}
    bodies = received(queue)
    assert sorted(b["provider"] for b in bodies) == ["lambda", "runpod", "vast"]
    assert {b["at"] for b in bodies} == {clock.now()}
    for body in bodies:
        worker()(sqs_event([body]), None)
    assert get(api, rid)["status"] == "running"  # moved by its provider's worker, no GET involved
    check_invariants(funded_user["id"])


def test_a_hand_off_older_than_a_minute_is_dropped_and_the_next_pass_does_its_work(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    rid = launched(api)["id"]
    clock.advance(BOOT_SECONDS + 1)
    coordinator()
    late = reconciler.pending()
    assert len(late) == 3
    clock.advance(reconciler.STALE_AFTER + 1)  # the queue delivered them late (a throttled worker)
    asked = len(world.requests())
    assert [dict(worker()(sqs_event([b]), None)) for b in late] == [{"stale": 1}] * 3
    assert len(world.requests()) == asked  # no provider was asked anything
    row = rental_store.get(funded_user["id"], rid)
    assert row is not None and row.status == "provisioning"
    coordinator()
    deliver_pending()
    row = rental_store.get(funded_user["id"], rid)
    assert row is not None and row.status == "running"
    check_invariants(funded_user["id"])


def test_the_record_read_beside_the_index_runs_as_the_worker_function(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The previous pass's record is read in another thread, at once with the index query: it
    still runs as the worker function (its AWS call is checked against that function's role)."""
    from infra.local.functions import CURRENT_FUNCTION

    launched(api)
    clock.advance(BOOT_SECONDS + 1)
    seen: list[tuple[str | None, str]] = []
    real = rental_store.get_pass

    def get_pass(code: str) -> Any:
        seen.append((CURRENT_FUNCTION.get(), threading.current_thread().name))
        return real(code)

    monkeypatch.setattr(rental_store, "get_pass", get_pass)
    coordinator()
    deliver_pending()
    assert len(seen) == 3 and all(f == "ReconcileWorkerFunction" for f, _ in seen), seen
    assert all(t.startswith("reconcile-read") for _, t in seen), seen  # beside the query, not before it


def test_a_lost_hand_off_is_done_by_the_next_minutes_pass(
    api: Api, funded_user: dict[str, Any], lambda_world: World, clock: Any,
) -> None:
    ids = [launched(api, LAMBDA_H100)["id"] for _ in range(3)]
    clock.advance(BOOT_SECONDS + 1)
    coordinator()
    assert len(reconciler.pending()) == 3  # lost: no worker ever sees them
    for rid in ids:
        row = rental_store.get(funded_user["id"], rid)
        assert row is not None and row.status == "provisioning"
    clock.advance(60)
    coordinator()
    deliver_pending()
    for rid in ids:
        row = rental_store.get(funded_user["id"], rid)
        assert row is not None and row.status == "running"
    check_invariants(funded_user["id"])


def test_a_worker_with_more_changed_rentals_than_it_moves_hands_the_rest_on_in_chunks(
    api: Api, funded_user: dict[str, Any], lambda_world: World, clock: Any, queue: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reconciler, "LOCAL_WORK", 2)
    monkeypatch.setattr(reconciler, "CHUNK", 2)
    ids = [launched(api, LAMBDA_H100)["id"] for _ in range(7)]
    clock.advance(BOOT_SECONDS + 1)
    coordinator()
    (mine,) = [b for b in received(queue) if b["provider"] == "lambda"]
    counts = worker()(sqs_event([mine]), None)
    assert counts["changed"] == 7 and counts["advanced"] == 2 and counts["handedOff"] == 5, counts
    chunks = received(queue)
    assert sorted(len(c["rentals"]) for c in chunks) == [1, 2, 2] and {c["provider"] for c in chunks} == {"lambda"}
    assert sum(rental_store.get(funded_user["id"], r).status == "running" for r in ids) == 2  # type: ignore[union-attr]
    for chunk in chunks:
        assert worker()(sqs_event([chunk]), None)["advanced"] == len(chunk["rentals"])
    assert {rental_store.get(funded_user["id"], r).status for r in ids} == {"running"}  # type: ignore[union-attr]
    check_invariants(funded_user["id"])


# ---------------------------------------------------------------- what a pass costs


def test_a_pass_over_healthy_pods_writes_only_its_record_and_opens_one_client_kept_for_the_next(
    api: Api, funded_user: dict[str, Any], lambda_world: World, clock: Any, monkeypatch: pytest.MonkeyPatch,
    requests_by_operation: Counter[str],
) -> None:
    world = lambda_world
    ids = [running(api, clock, LAMBDA_H100)["id"] for _ in range(4)]
    stopping = running(api, clock, LAMBDA_H100)["id"]
    world.sims.lambdacloud.set_knobs(terminate="error")
    assert api.post(f"/v1/rentals/{stopping}/stop").status == 200  # its terminate failed: the pass sends it
    world.sims.lambdacloud.set_knobs(terminate=None)
    clock.advance(120)
    clients = []
    real_init = httpx.AsyncClient.__init__

    def counted(self: httpx.AsyncClient, *a: Any, **kw: Any) -> None:
        clients.append(self)
        real_init(self, *a, **kw)

    monkeypatch.setattr(httpx.AsyncClient, "__init__", counted)
    monkeypatch.setattr(asyncio, "run", lambda *a, **kw: pytest.fail("a provider call made its own loop"))
    instances.close_shared_loop()  # as in a new process: the pass starts the loop and its client
    requests_by_operation.clear()
    before = len(world.requests())
    counts = rentals.reconcile()
    calls = world.requests()[before:]
    assert counts["checked"] == 5 and counts["changed"] == 1, counts  # the stopping one only
    # One list, then the stopping rental's terminate and get: three calls on one pooled client.
    assert sorted(m for _, m, _ in calls) == ["GET", "GET", "POST"], calls
    assert len(clients) == 1, clients
    writes = {k: v for k, v in requests_by_operation.items() if k in WRITES}
    # The stopping rental becomes stopped (one UpdateItem); the pass's record (one PutItem).
    assert writes == {"UpdateItem": 1, "PutItem": 1}, requests_by_operation
    assert rental_store.get(funded_user["id"], stopping).status == "stopped"  # type: ignore[union-attr]
    for rid in ids:
        row = rental_store.get(funded_user["id"], rid)
        assert row is not None and row.last_healthy_at == row.running_at  # never written since it ran
    check_invariants(funded_user["id"])
    clock.advance(60)
    before = len(world.requests())
    assert rentals.reconcile()["checked"] == 4  # the next minute, a warm function: no new loop or client
    assert [m for _, m, _ in world.requests()[before:]] == ["GET"]
    assert len(clients) == 1, clients


def test_a_vast_pass_lists_in_id_ranges_cut_among_its_live_rentals(
    api: Api, funded_user: dict[str, Any], vast_world: World, clock: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker hands the list its live rentals' instance ids; vast.ai's adapter cuts its list
    among them (here every 2) and lists the ranges at once: one page each, and a pod gone from
    the middle range is found as surely as from one list."""
    world = vast_world
    monkeypatch.setattr(vast, "LIST_RANGE", 2)
    ids = []
    for _ in range(5):
        ids.append(running(api, clock, {"familyId": "rtx-4090", "gpuCount": 1})["id"])
        world.refresh()  # the rented ask leaves vast.ai's search
    by_instance = {}
    for rid in ids:
        row = rental_store.get(funded_user["id"], rid)
        assert row is not None and row.provider == "vast" and row.instance_id
        by_instance[row.instance_id] = rid
    ordered = sorted(by_instance, key=int)
    gone = ordered[2]  # in [3rd, 5th)
    assert world.sims.vast.vanish(gone)
    clock.advance(120)
    before = len(world.requests("vast"))
    counts = rentals.reconcile()
    lists = [p for _, m, p in world.requests("vast")[before:] if m == "GET" and p == "/api/v1/instances/"]
    assert len(lists) == 3, lists  # [.., 3rd), [3rd, 5th), [5th, ..): one page each
    assert counts["checked"] == 5 and counts["changed"] == 1, counts
    assert get(api, by_instance[gone])["status"] != "running"
    assert all(get(api, by_instance[i])["status"] == "running" for i in ordered if i != gone)
    check_invariants(funded_user["id"])


def test_last_healthy_is_the_last_pass_that_saw_the_pod_running_not_its_last_write(
    api: Api, funded_user: dict[str, Any], lambda_world: World, clock: Any,
) -> None:
    world = lambda_world
    from gpurent import sweep

    got = running(api, clock, LAMBDA_H100)
    rid, rate = got["id"], got["pricePerHourCents"]
    row = rental_store.get(funded_user["id"], rid)
    assert row is not None and row.running_at is not None
    for _ in range(30):  # half an hour of passes: no write to the rental
        clock.advance(60)
        rentals.reconcile()
        sweep.start()
    last_seen = clock.now()
    assert rental_store.get(funded_user["id"], rid).last_healthy_at == row.running_at  # type: ignore[union-attr]
    (inst,) = world.labelled(rid)
    world.sims.lambdacloud.set_status(inst["id"], "preempted")
    clock.advance(60)
    rentals.reconcile()  # gone at once (Lambda took it back): billed to the last pass that saw it
    failed = get(api, rid)
    assert failed["status"] == "failed"
    billed = round(last_seen - row.running_at)
    assert failed["totalChargedCents"] == charge(billed, rate)
    b = api.get("/v1/billing/balance").json()
    assert (b["availableCents"], b["reservedCents"]) == (FUNDS - charge(billed, rate), 0)
    check_invariants(funded_user["id"])


def test_a_missed_pass_is_not_billed_as_healthy(
    api: Api, funded_user: dict[str, Any], lambda_world: World, clock: Any,
) -> None:
    """The record is of passes that ran: a pod found gone after ten minutes without a pass is
    billed to the last pass that saw it, not to a minute before it was found gone."""
    world = lambda_world
    got = running(api, clock, LAMBDA_H100)
    rid, rate = got["id"], got["pricePerHourCents"]
    row = rental_store.get(funded_user["id"], rid)
    assert row is not None and row.running_at is not None
    clock.advance(300)
    rentals.reconcile()
    seen = clock.now()
    (inst,) = world.labelled(rid)
    clock.advance(600)  # the reconciler did not run for ten minutes; the pod was preempted meanwhile
    world.sims.lambdacloud.set_status(inst["id"], "preempted")
    rentals.reconcile()
    assert get(api, rid)["totalChargedCents"] == charge(round(seen - row.running_at), rate)
    check_invariants(funded_user["id"])


# ---------------------------------------------------------------- faults


def test_a_provider_list_that_fails_writes_nothing_and_degrades_no_pod(
    api: Api, funded_user: dict[str, Any], lambda_world: World, clock: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = lambda_world
    rid = running(api, clock, LAMBDA_H100)["id"]
    clock.advance(60)
    rentals.reconcile()
    record = rental_store.get_pass("lambda")
    assert record is not None
    adapter = world.adapters["lambda"]

    async def timed_out(expected: Any = ()) -> Any:
        raise ProviderError("lambda", "transient", "GET /instances failed: ReadTimeout")

    real_list = adapter.list_instances
    monkeypatch.setattr(adapter, "list_instances", timed_out)
    before = rental_store.get(funded_user["id"], rid)
    clock.advance(60)
    counts = rentals.reconcile()
    assert counts["errors"] == 1
    assert rental_store.get(funded_user["id"], rid) == before  # no bad check: an API error says nothing
    assert rental_store.get_pass("lambda") == record  # nothing confirmed this minute
    monkeypatch.setattr(adapter, "list_instances", real_list)
    (inst,) = world.labelled(rid)
    world.sims.lambdacloud.set_status(inst["id"], "preempted")
    clock.advance(60)
    rentals.reconcile()
    got = get(api, rid)
    assert got["status"] == "failed"
    row = rental_store.get(funded_user["id"], rid)
    assert row is not None and row.last_healthy_at == record.listed_at  # not the minute nobody saw
    check_invariants(funded_user["id"])


def test_a_worker_that_dies_halfway_loses_no_machine(
    api: Api, funded_user: dict[str, Any], lambda_world: World, clock: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker is killed (a Lambda timeout) at its second move: one rental booted, the
    other not, the crashed pod pinned but not settled. The next pass finishes it all, and the
    crashed pod is billed to the pass that last saw it running."""
    world = lambda_world
    monkeypatch.setenv("RECONCILE_CONCURRENCY", "1")  # moves in order: the second is the one killed
    config.reset()
    crashed = running(api, clock, LAMBDA_H100)
    clock.advance(120)
    rentals.reconcile()
    seen = clock.now()
    booting = [launched(api, LAMBDA_H100)["id"] for _ in range(2)]
    (inst,) = world.labelled(crashed["id"])
    world.sims.lambdacloud.set_status(inst["id"], "preempted")
    clock.advance(BOOT_SECONDS + 1)

    class Killed(BaseException):
        """What a Lambda timeout is to the code that was running."""

    moves = []
    real = lifecycle.advance

    def dies_on_second(r: Any, listed: Any = None) -> Any:
        moves.append(r.id)
        if len(moves) == 2:
            raise Killed()
        return real(r, listed)

    monkeypatch.setattr(lifecycle, "advance", dies_on_second)
    with pytest.raises(Killed):
        rentals.reconcile()
    monkeypatch.setattr(lifecycle, "advance", real)
    assert sorted(rental_store.get(funded_user["id"], r).status for r in booting) == [  # type: ignore[union-attr]
        "provisioning", "running"]  # one moved, then the worker died
    row = rental_store.get(funded_user["id"], crashed["id"])
    assert row is not None and row.status == "running" and row.last_healthy_at == seen  # pinned before the moves
    clock.advance(60)
    rentals.reconcile()
    got = get(api, crashed["id"])
    assert got["status"] == "failed" and got["totalChargedCents"] == charge(
        round(seen - float(row.running_at or 0)), crashed["pricePerHourCents"])
    for rid in booting:
        assert rental_store.get(funded_user["id"], rid).status == "running"  # type: ignore[union-attr]
    assert world.alive(crashed["id"]) == []
    world.no_orphans()
    check_invariants(funded_user["id"])


@pytest.fixture
def lambda_locking(locking_store: None, sim_world: World, clock: Any) -> Locking:
    """Lambda Cloud only, on DynamoDB Local (real conditional writes under concurrency)."""
    sim_world.install(providers="lambda")
    api = Api()
    user = sign_in(api, "alice@example.com")
    fund = funder(clock)
    fund(user["id"], FUNDS)
    return Locking(sim_world, api, user, fund)


def test_two_passes_of_one_provider_at_once_settle_each_crash_once(lambda_locking: Locking, clock: Any) -> None:
    """A late hand-off and the next minute's, on two workers at once, on DynamoDB Local: every
    move is a conditional write on what its pass saw, so each crashed pod is settled once."""
    api, world, uid = lambda_locking.api, lambda_locking.world, lambda_locking.user["id"]
    made = [running(api, clock, LAMBDA_H100) for _ in range(4)]
    clock.advance(300)
    rentals.reconcile()
    seen = clock.now()
    for m in made[:3]:
        (inst,) = world.labelled(m["id"])
        world.sims.lambdacloud.set_status(inst["id"], "preempted")
    clock.advance(60)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def one_pass() -> None:
        barrier.wait()
        try:
            reconciler.reconcile_provider("lambda")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one_pass) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    from gpurent.store import money as money_store

    for m in made[:3]:
        got = get(api, m["id"])
        row = rental_store.get(uid, m["id"])
        assert row is not None and row.running_at is not None
        billed = round(seen - row.running_at)  # to the last pass that saw it running
        meter = api.get(f"/v1/rentals/{m['id']}/meter").json()
        assert got["status"] == "failed" and meter["secondsBilled"] == billed, (got, meter)
        rows = [r for r in money_store.all_ledger(uid) if r.get("rentalId") == m["id"]]
        assert [r["type"] for r in rows] == ["rental_charge"], rows  # settled once
        assert -rows[0]["amountCents"] == charge(billed, m["pricePerHourCents"]) == got["totalChargedCents"]
    assert get(api, made[3]["id"])["status"] == "running"
    check_invariants(uid)
