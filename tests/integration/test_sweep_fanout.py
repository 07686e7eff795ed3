"""The metering sweep fanned out (`gpurent.sweep`): parts per shard through the sweep
queue (moto SQS) and the function's handler, hand-offs of a worker out of time, a
fresh order each minute, and the faults a fan-out adds (a worker dying halfway, a
hand-off lost, a part delivered twice)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest

from gpurent import catalog_refresh, config, ids, sweep, wallet
from gpurent import clock as clock_mod
from gpurent.money import charge_for_seconds
from gpurent.providers import registry
from gpurent.providers.registry import build_adapters
from gpurent.records import Rental, WalletItem, active_shard, active_shards
from gpurent.rentals import meters
from gpurent.store import money as money_store
from gpurent.store import rentals as rental_store
from gpurent.store import timers as queue_store
from infra.local.events import schedule_event, sqs_event
from infra.local.functions import LocalContext, load_handler
from infra.simulators import start_simulators
from tests.conftest import Api
from tests.integration.test_metering import fund, launch_running
from tests.walletkit import check_invariants

WALLETS = 10


@pytest.fixture
def world(aws, clock) -> Iterator[Any]:
    s = start_simulators(now=clock.now, boot_seconds=5)
    adapters = build_adapters(s.settings())
    registry.set_adapters(adapters)
    catalog_refresh.refresh(adapters)
    yield s
    registry.set_adapters(None)
    s.shutdown()


def seed_running(tpl: Rental, user_id: str) -> Rental:
    """A running rental of `user_id` as `launch` + `mark_running` leave it (cloned from a
    real one), its wallet funded and its one-hour reserve taken in one money transaction."""
    now = clock_mod.now()
    r = replace(tpl, id=ids.new_id("rent"), user_id=user_id, reserve_cents=tpl.price_per_hour_cents,
                charged_cents=0, billed_seconds=0, overage_cents=0, refunded_cents=0, running_at=now,
                metered_until=now, last_healthy_at=now, last_checked_at=now, instance_id=uuid.uuid4().hex)

    def plan(w: wallet.Wallet) -> list[Any]:
        credit = wallet.plan_credit(w, 50_000, "adjustment", {"description": "test funding"})
        funded = wallet.Wallet(user_id, w.available + 50_000, w.reserved)
        return [credit, wallet.with_step_info(wallet.plan_reserve(funded, r.reserve_cents), rentalId=r.id)]

    wallet.apply(user_id, f"seed:{r.id}", {"op": "seed"}, plan,
                 lambda w, steps: [rental_store.put_item(r), rental_store.owner_item(r.id, user_id)])
    return r


@pytest.fixture
def pods(api: Api, user, world, clock) -> list[tuple[str, str, int]]:
    """WALLETS wallets with one running pod each: (user id, rental id, rate). The first is
    launched through the API; the others are clones of it (launching ten through moto's
    catalog reads would take minutes)."""
    fund(user["id"], 50_000, clock)
    first = launch_running(api, clock)
    tpl = rental_store.get(user["id"], first["id"])
    assert tpl is not None
    out = [(user["id"], first["id"], int(first["pricePerHourCents"]))]
    for _ in range(WALLETS - 1):
        r = seed_running(tpl, ids.new_id("usr"))
        out.append((r.user_id, r.id, r.price_per_hour_cents))
    return out


@pytest.fixture
def sweep_queue(aws, monkeypatch) -> Iterator[str]:
    url = boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="sweep")["QueueUrl"]
    monkeypatch.setenv("SWEEP_QUEUE_URL", url)
    config.reset()
    queue_store.reset_client()
    yield url
    monkeypatch.delenv("SWEEP_QUEUE_URL")
    config.reset()
    queue_store.reset_client()


def receive_all(url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    out: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return out
        for m in got:
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def metered(pods: list[tuple[str, str, int]]) -> dict[str, float]:
    out = {}
    for uid, rid, _ in pods:
        r = meters.current(uid, rid)
        assert r is not None
        out[uid] = float(r.metered_until or 0)
    return out


def charges_are_the_formula(pods: list[tuple[str, str, int]]) -> None:
    for uid, rid, rate in pods:
        r = meters.current(uid, rid)
        assert r is not None
        assert r.charged_cents + r.overage_cents == charge_for_seconds(r.billed_seconds, rate)
        check_invariants(uid)


class Budget:
    """A worker's time left that runs out after `wallets` wallets were started."""

    def __init__(self, wallets: int) -> None:
        self.calls = 0
        self.wallets = wallets

    def __call__(self) -> float:
        self.calls += 1
        return 40.0 if self.calls <= self.wallets else 1.0


def test_the_coordinator_hands_one_part_per_shard_to_the_queue_and_the_workers_charge_every_wallet(
        pods, sweep_queue, clock) -> None:
    handler = load_handler("functions/sweep")
    clock.advance(120)
    started = clock.now()
    report = handler(schedule_event("arn:aws:scheduler:us-east-1:123456789012:schedule/default/sweep"),
                     LocalContext("MeteringSweepFunction"))
    assert report["parts"] == active_shards() and report["rentals"] == 0  # the coordinator charged nothing
    assert all(m < started for m in metered(pods).values())
    parts = receive_all(sweep_queue)
    assert sorted(p["shard"] for p in parts) == list(range(active_shards()))
    for p in parts:
        reply = handler(sqs_event([p]), LocalContext("MeteringSweepFunction"))
        assert reply == {"batchItemFailures": []}
    assert all(m == started for m in metered(pods).values())
    assert receive_all(sweep_queue) == []  # nobody ran out of time: no hand-off
    charges_are_the_formula(pods)


def test_a_bad_part_is_reported_alone(pods, sweep_queue, clock) -> None:
    handler = load_handler("functions/sweep")
    good = sweep.Part(active_shard(pods[0][0]), clock.now()).body()
    event = sqs_event([{"kind": "sweep", "shard": active_shards() + 3, "tick": clock.now()}, good])
    reply = handler(event, LocalContext("MeteringSweepFunction"))
    assert reply == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}


def test_a_worker_out_of_time_hands_its_remainder_on_and_no_wallet_is_charged_twice(
        pods, sweep_queue, clock) -> None:
    clock.advance(300)
    tick = clock.now()
    parts = [sweep.Part(n, tick) for n in range(active_shards())]
    part = max(parts, key=lambda p: len(sweep.wallets_of(p)))
    wallets = sweep.wallets_of(part)
    assert len(wallets) >= 2, "ten users over eight shards: one shard holds two"
    report = sweep.run_part(part, Budget(1))
    assert (report.wallets, report.handed_off) == (1, 1)
    handed = receive_all(sweep_queue)
    assert handed == [sweep.Part(part.shard, tick, wallets[1][0], 1).body()]  # from the first wallet not started
    before = {uid: m for uid, m in metered(pods).items()}
    assert before[wallets[0][1]] == tick and all(before[w[1]] < tick for w in wallets[1:])
    clock.advance(5)
    rest = sweep.run_part(sweep.Part.from_body(handed[0]))
    assert rest.wallets == len(wallets) - 1  # the remainder only, not the wallet already charged
    after = metered(pods)
    assert after[wallets[0][1]] == tick and all(after[w[1]] == tick + 5 for w in wallets[1:])
    charges_are_the_formula(pods)


def test_each_minute_draws_a_fresh_order(pods, clock) -> None:
    """No wallet is always last: across ten minutes, the last wallet of a shard changes."""
    shard = max(range(active_shards()), key=lambda n: len(sweep.wallets_of(sweep.Part(n, 0))))
    lasts = {sweep.wallets_of(sweep.Part(shard, clock.now() + 60 * m))[-1][1] for m in range(10)}
    firsts = {sweep.wallets_of(sweep.Part(shard, clock.now() + 60 * m))[0][1] for m in range(10)}
    assert len(lasts) > 1 and len(firsts) > 1


def test_a_lost_hand_off_and_a_worker_dying_halfway_wait_one_minute_and_lose_nothing(
        pods, clock, monkeypatch) -> None:
    clock.advance(600)
    lost: list[sweep.Part] = []
    monkeypatch.setattr(sweep, "hand_off", lost.append)
    for n in range(active_shards()):
        sweep.run_part(sweep.Part(n, clock.now()), Budget(0))  # every worker out of time at once
    assert len(lost) == len({active_shard(uid) for uid, _, _ in pods})
    assert all(m < clock.now() for m in metered(pods).values())  # nothing charged this minute

    class Died(BaseException):
        pass

    from gpurent import metering

    real = metering.meter_wallet
    calls = {"n": 0}

    def dies_on_the_third(user_id: str, running: Any, now: float, known: Any = None) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise Died()
        return real(user_id, running, now, known)

    monkeypatch.setattr(metering, "meter_wallet", dies_on_the_third)
    clock.advance(60)
    with pytest.raises(Died):
        sweep.start()  # the invocation dies on its third wallet: two charged, the rest not
    monkeypatch.setattr(metering, "meter_wallet", real)
    assert sum(m == clock.now() for m in metered(pods).values()) == 2
    clock.advance(60)
    report = sweep.start()  # the next minute
    assert report.wallets == WALLETS and report.failed == 0
    assert all(m == clock.now() for m in metered(pods).values())
    charges_are_the_formula(pods)


def test_a_part_delivered_twice_charges_once(pods, clock) -> None:
    clock.advance(900)
    tick = clock.now()
    first = sweep.start(tick)
    again = sweep.start(tick)  # SQS redelivers every part of the same minute
    assert first.charged_cents > 0 and again.charged_cents == 0
    charges_are_the_formula(pods)


def test_a_crowded_shard_is_split_among_workers_by_order_key(pods, sweep_queue, clock, monkeypatch) -> None:
    monkeypatch.setattr(sweep, "WALLETS_PER_WORKER", 1)
    clock.advance(300)
    tick = clock.now()
    part = max((sweep.Part(n, tick) for n in range(active_shards())), key=lambda p: len(sweep.wallets_of(p)))
    wallets = sweep.wallets_of(part)
    first = sweep.run_part(part)
    assert first.wallets == 1  # it kept one wallet and sent the others out
    slices = [sweep.Part.from_body(b) for b in receive_all(sweep_queue)]
    assert [p.after for p in slices] == [w[0] for w in wallets[1:]]
    assert [p.before for p in slices] == [w[0] for w in wallets[2:]] + [""]
    clock.advance(1)
    assert sum(sweep.run_part(p).wallets for p in slices) == len(wallets) - 1  # each wallet in one slice
    after = metered(pods)
    assert after[wallets[0][1]] == tick and all(after[w[1]] == tick + 1 for w in wallets[1:])
    charges_are_the_formula(pods)


def test_a_worker_reads_the_keys_only_index_then_only_its_wallets_rentals_whole(
        pods, sweep_queue, clock, monkeypatch) -> None:
    """The `ActiveIndex` holds keys only (a tick's writes never touch it): a worker reads its
    shard's keys, splits a crowded shard on them, then reads only the rentals of the wallets
    it kept, whole and as the table has them now (`BatchGetItem`, up to 100 a request)."""
    from gpurent.store import dynamo

    asked: list[tuple[str, str]] = []

    def note(params: dict[str, Any], **_: Any) -> None:
        for table in params["RequestItems"].values():
            assert table["ConsistentRead"]
            asked.extend((k["pk"]["S"].removeprefix("USER#"), k["sk"]["S"].removeprefix("RENTAL#"))
                         for k in table["Keys"] if k["sk"]["S"] != "WALLET")  # the wallets: below

    monkeypatch.setattr(sweep, "WALLETS_PER_WORKER", 1)
    clock.advance(300)
    tick = clock.now()
    part = max((sweep.Part(n, tick) for n in range(active_shards())), key=lambda p: len(sweep.covered(p)))
    assert len(sweep.covered(part)) > 1, "a shard with several wallets"
    events = dynamo.client().meta.events
    events.register("provide-client-params.dynamodb.BatchGetItem", note)
    try:
        assert sweep.run_part(part).wallets == 1
    finally:
        events.unregister("provide-client-params.dynamodb.BatchGetItem", note)
    (kept,) = sweep.covered(part)[:1]
    assert asked == kept[2]  # the kept wallet's rentals only: the slices sent out read their own
    uid, rid = kept[2][0]
    assert sweep.wallets_of(part)[0][2] == [rental_store.get(uid, rid)]  # whole: what a GetItem reads
    # A rental that left `running` is not handed to the sweep, even where the index lags.
    rental_store.update(uid, rid, {"status": "stopping"}, ("running",))
    assert sweep.read([kept]) == [] and rental_store.live_for_user(uid, "running") == []


def _crowded_part(clock) -> tuple[sweep.Part, list[tuple[str, str, list[tuple[str, str]]]]]:
    clock.advance(300)
    tick = clock.now()
    part = max((sweep.Part(n, tick) for n in range(active_shards())), key=lambda p: len(sweep.covered(p)))
    wallets = sweep.covered(part)
    assert len(wallets) > 1, "a shard with several wallets"
    return part, wallets


def test_a_worker_reads_its_wallets_a_hundred_a_request_not_one_get_each(pods, clock) -> None:
    """Each wallet is charged on its item as one strongly consistent `BatchGetItem` read it with
    the others (100 a request): no `GetItem` of a wallet, one request per transaction instead
    of two."""
    from gpurent.store import dynamo

    part, wallets = _crowded_part(clock)
    sent: list[tuple[str, dict[str, Any]]] = []

    def note(event_name: str, params: dict[str, Any], **_: Any) -> None:
        sent.append((event_name.rsplit(".", 1)[-1], params))

    events = dynamo.client().meta.events
    events.register("provide-client-params.dynamodb.*", note)
    try:
        report = sweep.run_part(part)
    finally:
        events.unregister("provide-client-params.dynamodb.*", note)
    assert (report.wallets, report.conflicts, report.failed) == (len(wallets), 0, 0)
    wallet_reads = [(table["ConsistentRead"], k["pk"]["S"]) for op, params in sent if op == "BatchGetItem"
                    for table in params["RequestItems"].values() for k in table["Keys"] if k["sk"]["S"] == "WALLET"]
    assert sorted(wallet_reads) == sorted((True, f"USER#{user_id}") for _, user_id, _ in wallets)
    assert [p["Key"] for op, p in sent if op == "GetItem" and p["Key"]["sk"]["S"] == "WALLET"] == []
    assert sum(op == "TransactWriteItems" for op, _ in sent) == len(wallets)
    charged = metered(pods)
    assert all(charged[user_id] == part.tick for _, user_id, _ in wallets)
    charges_are_the_formula(pods)


def test_a_wallet_that_moved_after_the_batch_read_is_charged_right(pods, clock, monkeypatch) -> None:
    """The item read with the others can be stale by the time its wallet is charged (here: an
    admin credit lands in between). The charge's write is conditioned on the wallet's version:
    it is cancelled, planned again on the wallet that won, and nothing is lost or doubled."""
    part, wallets = _crowded_part(clock)
    user_id = wallets[0][1]
    real = money_store.get_wallets  # the module the sweep reads its wallets through

    def then_credit(user_ids: list[str]) -> dict[str, WalletItem]:
        items = real(user_ids)  # read first…
        if user_id in user_ids:  # …then the wallet moves on before it is charged
            wallet.credit(user_id, 700, "adjustment", f"credit-{uuid.uuid4().hex}")
        return items

    monkeypatch.setattr(money_store, "get_wallets", then_credit)
    rid = next(rid for u, rid, _ in pods if u == user_id)
    was = meters.current(user_id, rid)
    before = wallet.get(user_id).total
    report = sweep.run_part(part)
    assert (report.wallets, report.failed) == (len(wallets), 0)
    r = meters.current(user_id, rid)
    assert was is not None and r is not None and r.metered_until == part.tick
    assert wallet.get(user_id).total == before + 700 - (r.charged_cents - was.charged_cents)
    charges_are_the_formula(pods)  # the ledger equals the wallet, every charge the formula
