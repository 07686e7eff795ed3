"""The metering sweep against moto and the simulators: exact charges over
random tick sizes, rolling reserve, one transaction per wallet, exhaustion."""

from __future__ import annotations

import itertools
import random
from typing import TYPE_CHECKING, Any

import pytest

from gpurent import catalog_refresh, config, metering, rentals, sweep
from gpurent.money import charge_for_seconds
from gpurent.providers import registry
from gpurent.providers.registry import build_adapters
from gpurent.records import Rental
from gpurent.rentals import meters
from gpurent.store import dynamo
from infra.simulators import start_simulators
from tests.conftest import Api, sent_mail
from tests.integration.helpers import reconcile_through_health_grace
from tests.walletkit import check_invariants

if TYPE_CHECKING:
    from infra.local.scheduler import LocalScheduler


@pytest.fixture
def world(aws, clock):
    s = start_simulators(now=clock.now, boot_seconds=5)
    adapters = build_adapters(s.settings())
    registry.set_adapters(adapters)
    catalog_refresh.refresh(adapters)
    yield s
    registry.set_adapters(None)
    s.shutdown()


def fund(user_id: str, cents: int, clock) -> None:
    admin = Api(source_ip="198.51.100.99")
    admin.sign_in("admin@gpurent.test")
    clock.advance(31)
    assert admin.post("/v1/admin/adjustments", {"userId": user_id, "amountCents": cents, "reason": "t"}).status == 200


def launch_running(api: Api, clock, family: str = "h100-80gb") -> dict[str, Any]:
    launched = api.post("/v1/rentals", {"familyId": family, "gpuCount": 1}).json()
    clock.advance(6)
    running: dict[str, Any] = api.get(f"/v1/rentals/{launched['id']}").json()
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
        sweep.start()
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
    sweep.start()
    assert calls == ["tx"]  # two rentals, one wallet: one transaction
    bal = api.get("/v1/billing/balance").json()
    assert bal["reservedCents"] == a["pricePerHourCents"] + b["pricePerHourCents"]  # topped back up to an hour
    charged = api.get(f"/v1/rentals/{a['id']}").json()["totalChargedCents"]
    assert bal["totalCents"] == 100_000 - charged - api.get(f"/v1/rentals/{b['id']}").json()["totalChargedCents"]
    sweep.start()  # nothing new to charge: no rows
    check_invariants(user["id"])


def test_an_empty_wallet_stops_every_running_rental(api: Api, user, world, clock) -> None:
    r0 = api.post("/v1/rentals/preview", {"familyId": "h100-80gb", "gpuCount": 1}).json()
    fund(user["id"], r0["pricePerHourCents"] + 10, clock)
    r = launch_running(api, clock)
    clock.advance(2 * 3600)
    sweep.start()
    got = api.get(f"/v1/rentals/{r['id']}").json()
    assert got["status"] in ("stopping", "stopped") and got["stopReason"] == "insufficient_balance"
    bal = api.get("/v1/billing/balance").json()
    assert bal["availableCents"] == 0 and bal["reservedCents"] == 0
    check_invariants(user["id"])


# ---------------------------------------------------------------- on time: timers, overage invoices

def _money_ran_out_at(r: Rental, money: int) -> float:
    """The first second at which the rental's charge reached the wallet's money."""
    rate = int(r.price_per_hour_cents)
    s = 0
    while charge_for_seconds(s, rate) < money:
        s += 1
    return float(r.running_at or 0) + s


def _scheduler(clock):
    from infra.local.scheduler import LocalScheduler

    return LocalScheduler(clock, only=("MeteringSweepFunction", "ReconcileFunction"))


def test_a_wallet_running_dry_stops_within_five_seconds_though_the_sweep_is_once_a_minute(
        api: Api, user, world, clock) -> None:

    preview = api.post("/v1/rentals/preview", {"familyId": "h100-80gb", "gpuCount": 1}).json()
    money = preview["pricePerHourCents"] + 137  # an hour's reserve and a little more: runs ~1 h 3 min
    fund(user["id"], money, clock)
    launched = launch_running(api, clock)
    scheduler = _scheduler(clock)
    for _ in range(16):  # 2 hours in 7.5-minute jumps: many sweeps, and a timer in one of the jumps
        scheduler.advance(450)
    r = meters.current(user["id"], launched["id"])
    assert r is not None and r.status in ("stopping", "stopped") and r.stop_reason == "insufficient_balance"
    assert r.stopped_at is not None
    ran_out = _money_ran_out_at(r, money)
    assert 0 <= float(r.stopped_at) - ran_out <= 5, (r.stopped_at, ran_out)
    # The sweeps alone would have stopped it up to a minute late; a timer did it.
    assert any(what.startswith("timers:") and abs(t - float(r.stopped_at)) < 1 for t, what in scheduler.log)
    # Every cent is accounted for: what the wallet held was charged, the rest is invoiced.
    formula = charge_for_seconds(int(r.billed_seconds), int(r.price_per_hour_cents))
    assert int(r.charged_cents) == money
    assert int(r.overage_cents) == formula - money
    bal = api.get("/v1/billing/balance").json()
    assert bal["totalCents"] == 0 and bal["openInvoicesCents"] == formula - money
    assert bal["openInvoiceCount"] == (1 if formula > money else 0)
    mail = [m for m in sent_mail() if m.destinations["ToAddresses"] == ["alice@example.com"]
            and "stopped" in m.subject]
    assert len(mail) == 1 and "overage invoice" in mail[0].body
    check_invariants(user["id"])


def test_the_usage_beyond_the_money_becomes_one_overage_invoice(api: Api, user, world, clock) -> None:
    from gpurent.store import invoices as invoice_store

    preview = api.post("/v1/rentals/preview", {"familyId": "h100-80gb", "gpuCount": 1}).json()
    money = preview["pricePerHourCents"] + 10
    fund(user["id"], money, clock)
    launched = launch_running(api, clock)
    clock.advance(2 * 3600)  # no sweep, no timer for two hours (an outage of both): a real overage
    sweep.start()
    r = meters.current(user["id"], launched["id"])
    assert r is not None and r.stop_reason == "insufficient_balance"
    owed = charge_for_seconds(int(r.billed_seconds), int(r.price_per_hour_cents)) - money
    assert owed > 100
    assert r.overage_invoice_id is not None
    invoice = invoice_store.get(user["id"], r.overage_invoice_id)
    assert invoice is not None
    assert (invoice.reason, invoice.status, invoice.amount_cents, invoice.rental_id) == ("overage", "open", owed, r.id)
    assert invoice.line_items[0].amount_cents == owed
    assert invoice_store.owner_of(invoice.id) == user["id"]
    bal = api.get("/v1/billing/balance").json()
    assert (bal["openInvoicesCents"], bal["openInvoiceCount"]) == (owed, 1)
    sweep.start()  # nothing more to do: no second invoice
    assert api.get("/v1/billing/balance").json()["openInvoiceCount"] == 1
    check_invariants(user["id"])


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("autoStopAfterHours", 0.01, "auto_stop"),  # 36 s: before the first sweep
    ("maxTotalCents", 3, "max_total"),
])
def test_limit_stops_happen_on_the_second(api: Api, user, world, clock, field, value, reason) -> None:

    fund(user["id"], 100_000, clock)
    launched = api.post("/v1/rentals", {"familyId": "h100-80gb", "gpuCount": 1, field: value}).json()
    clock.advance(6)
    assert api.get(f"/v1/rentals/{launched['id']}").json()["status"] == "running"
    scheduler = _scheduler(clock)
    scheduler.advance(1800)
    r = meters.current(user["id"], launched["id"])
    assert r is not None and r.stop_reason == reason, r
    assert r.stopped_at is not None and r.running_at is not None
    deadline = rentals.limit_deadline(r)
    assert deadline is not None
    assert 0 <= float(r.stopped_at) - deadline[0] <= 5
    assert int(r.billed_seconds) == round(deadline[0] - float(r.running_at))
    if field == "maxTotalCents":
        assert int(r.charged_cents) <= value
    check_invariants(user["id"])


def test_advancing_the_clock_runs_every_due_piece_of_work_in_order(api: Api, user, world, clock) -> None:
    fund(user["id"], 100_000, clock)
    launch_running(api, clock)
    scheduler = _scheduler(clock)
    start = clock.now()
    scheduler.advance(600)
    assert clock.now() == pytest.approx(start + 600)
    times = [t for t, _ in scheduler.log]
    assert times == sorted(times)
    sweeps = [t for t, what in scheduler.log if what == "MeteringSweepFunction"]
    reconciles = [t for t, what in scheduler.log if what == "ReconcileFunction"]
    assert len(sweeps) == len(reconciles) == 11  # at start + every minute of the ten
    assert all(b - a == pytest.approx(60) for a, b in itertools.pairwise(sweeps))


# ---------------------------------------------------------------- settlement edge cases (found by the metering machine)

def test_a_stop_after_a_missed_limit_bills_only_up_to_the_limit(api: Api, user, world, clock) -> None:
    """Regression: a user stop that lands after `autoStopAfterHours` came (its timer lost) bills
    the seconds to the limit, not to the stop."""

    fund(user["id"], 100_000, clock)
    launched = api.post("/v1/rentals", {"familyId": "h100-80gb", "gpuCount": 1, "autoStopAfterHours": 0.01}).json()
    clock.advance(6)
    assert api.get(f"/v1/rentals/{launched['id']}").json()["status"] == "running"
    from gpurent import timers

    timers.clear()  # the timer is lost: no sweep, no timer before the user's stop
    clock.advance(600)
    stop = api.post(f"/v1/rentals/{launched['id']}/stop").json()
    r = meters.current(user["id"], launched["id"])
    assert r is not None and int(r.billed_seconds) == 36
    assert stop["finalChargedCents"] == charge_for_seconds(36, int(r.price_per_hour_cents))
    check_invariants(user["id"])


def test_a_crash_reported_after_a_tick_charged_past_it_gives_the_excess_back(api: Api, user, world, clock) -> None:
    """Regression: a provider crash is billed up to the last healthy moment; what a sweep had
    already charged beyond that moment is refunded."""

    fund(user["id"], 100_000, clock)
    r = launch_running(api, clock)
    clock.advance(120)
    rentals.reconcile()  # healthy at +120
    clock.advance(1800)
    sweep.start()  # charged to +1920
    stored = meters.current(user["id"], r["id"])
    assert stored is not None
    sim = {"vast": world.vast, "runpod": world.runpod, "lambda": world.lambdacloud}[stored.provider]
    assert sim.crash(str(stored.instance_id))
    reconcile_through_health_grace(clock)
    got = meters.current(user["id"], r["id"])
    assert got is not None and got.status == "failed"
    assert got.last_healthy_at is not None and got.running_at is not None
    rate = int(got.price_per_hour_cents)
    billed = int(got.billed_seconds)
    assert billed == round(float(got.last_healthy_at) - float(got.running_at))
    assert billed < 1900
    assert int(got.charged_cents) - int(got.refunded_cents) + int(got.overage_cents) == charge_for_seconds(
        billed, rate)
    assert int(got.refunded_cents) > 0
    assert api.get(f"/v1/rentals/{r['id']}").json()["totalChargedCents"] == charge_for_seconds(billed, rate)
    check_invariants(user["id"])


def test_a_metering_tick_writes_no_marker_and_money_operations_keep_theirs(api: Api, user, world, clock) -> None:
    """A tick is exactly-once by its rentals' versions: it writes the wallet, the rentals and the
    ledger rows, no operation marker (docs/decisions.md "Metering writes")."""
    from gpurent.store import dynamo

    fund(user["id"], 100_000, clock)
    launch_running(api, clock)
    for _ in range(3):
        clock.advance(600)
        sweep.start()
    items = dynamo.client().scan(TableName=config.settings().money_table)["Items"]
    markers = [i["pk"]["S"] for i in items if i["pk"]["S"].startswith("OP#")]
    assert markers and not any(k.startswith("OP#meter:") for k in markers)  # adjustments, reserves: kept
    charges = [e for e in api.get("/v1/billing/ledger?type=rental_charge&pageSize=200").json()["entries"]]
    assert len(charges) == 3
    check_invariants(user["id"])


def item_bytes(item: dict[str, Any]) -> int:
    """An item's size by DynamoDB's rules (attribute names plus values), rounded up: a number
    is counted as one byte per character (DynamoDB stores about half that)."""
    def value(v: dict[str, Any]) -> int:
        ((t, x),) = v.items()
        if t == "M":
            return 3 + sum(len(k.encode()) + 1 + value(e) for k, e in x.items())
        if t == "L":
            return 3 + sum(1 + value(e) for e in x)
        if t in ("BOOL", "NULL"):
            return 1
        return len(str(x).encode())

    return sum(len(k.encode()) + value(v) for k, v in item.items())


def test_a_running_rental_item_is_lean_and_a_replayed_launch_still_answers_its_first_answer(
        api: Api, user, world, clock) -> None:
    """Every tick rewrites the running rental's item (1 write unit per started KB, twice in a
    transaction): it carries neither the offer it was allocated from nor the launch's answer.
    The answer lives on the launch's operation marker, so a replay still answers it."""
    fund(user["id"], 100_000, clock)
    headers = {"Idempotency-Key": "lean-item-1"}
    first = api.post("/v1/rentals", {"familyId": "h100-80gb", "gpuCount": 1}, headers=headers)
    assert first.status == 200, first.body
    clock.advance(6)
    assert api.get(f"/v1/rentals/{first.json()['id']}").json()["status"] == "running"
    clock.advance(60)
    sweep.start()
    raw = dynamo.client().get_item(TableName=config.settings().money_table, ConsistentRead=True,
                                   Key=dynamo.key(f"USER#{user['id']}", f"RENTAL#{first.json()['id']}"))["Item"]
    assert "offer" not in raw and "launchAnswer" not in raw
    assert item_bytes(raw) < 1024, item_bytes(raw)
    again = api.post("/v1/rentals", {"familyId": "h100-80gb", "gpuCount": 1}, headers=headers)
    assert again.status == 200 and again.json() == first.json()  # the first answer, not the rental now
    assert first.json()["status"] == "provisioning"
    check_invariants(user["id"])


# ---------------------------------------------------------------- auto-topup is a state (issue 15, item 1)

def _auto_topup_on(api: Api, ls, threshold: int, amount: int) -> None:
    from tests.integration.test_billing import add_card

    add_card(api, ls)
    r = api.put("/v1/billing/auto-topup", {"enabled": True, "thresholdCents": threshold, "topupAmountCents": amount})
    assert r.status == 200, r.body


def _auto_topups(api: Api) -> list[dict[str, Any]]:
    return [e for e in api.get("/v1/billing/ledger?type=auto_topup&pageSize=200").json()["entries"]]


def test_auto_topup_fires_again_after_available_hit_zero_inside_the_cooldown(
        api: Api, user, world, clock, local_stripe) -> None:
    """Regression (issue 15, item 1): once available reached 0 inside the 5-minute cooldown (an
    admin debit), later ticks drew only on the reserve, no debit of available happened, nothing
    asked again, and an hour later the pod was stopped for `insufficient_balance` with auto-topup
    still on. The sweep now asks every minute: below the threshold, not cooling down, nothing
    pending → fire."""

    preview = api.post("/v1/rentals/preview", {"familyId": "h100-80gb", "gpuCount": 1}).json()
    fund(user["id"], preview["pricePerHourCents"] + 1500, clock)
    r = launch_running(api, clock)
    _auto_topup_on(api, local_stripe, 1000, 2000)
    scheduler = _scheduler(clock)
    admin = Api(source_ip="198.51.100.99")
    admin.sign_in("admin@gpurent.test")
    assert admin.post("/v1/admin/adjustments", {"userId": user["id"], "amountCents": -600, "reason": "t"}).status == 200
    scheduler.advance(5)  # the auto-topup timer the debit armed
    assert len(_auto_topups(api)) == 1
    available = api.get("/v1/billing/balance").json()["availableCents"]
    assert available >= 2000
    # Inside the cooldown, available goes to 0: nothing can fire now.
    assert admin.post("/v1/admin/adjustments", {"userId": user["id"], "amountCents": -available,
                                                "reason": "t"}).status == 200
    scheduler.advance(10)
    assert len(_auto_topups(api)) == 1
    for _ in range(16):  # two hours
        scheduler.advance(450)
    got = meters.current(user["id"], r["id"])
    assert got is not None
    assert got.status == "running", (got.status, got.stop_reason)
    assert len(_auto_topups(api)) >= 2
    assert api.get("/v1/billing/auto-topup").json()["enabled"] is True
    check_invariants(user["id"])


def _running_dry_with_stripe_down(api: Api, user, clock, ls, monkeypatch) -> tuple[
        dict[str, Any], float, dict[str, bool], LocalScheduler]:
    """A pod whose wallet runs dry at `ran_out`; auto-topup is switched on a minute before,
    while Stripe cannot be reached (`outage["on"]`): the attempt is claimed and pending."""
    from gpurent.billing import gateway

    preview = api.post("/v1/rentals/preview", {"familyId": "h100-80gb", "gpuCount": 1}).json()
    money = preview["pricePerHourCents"] + 30
    fund(user["id"], money, clock)
    r = launch_running(api, clock)
    running = meters.current(user["id"], r["id"])
    assert running is not None
    ran_out = _money_ran_out_at(running, money)
    scheduler = _scheduler(clock)
    scheduler.advance(ran_out - 60 - clock.now())
    outage = {"on": True}
    real_call = gateway.client.call

    def flaky(fn):
        if outage["on"]:
            raise gateway.StripeUnavailable("connection refused")
        return real_call(fn)

    from tests.integration.test_billing import add_card

    add_card(api, ls)
    monkeypatch.setattr(gateway.client, "call", flaky)
    api.sign_in("alice@example.com")
    r2 = api.put("/v1/billing/auto-topup", {"enabled": True, "thresholdCents": 100, "topupAmountCents": 2000})
    assert r2.status == 200, r2.body
    assert api.get("/v1/billing/balance").json()["availableCents"] == 0
    scheduler.advance(1)  # the timer claims the attempt; Stripe does not answer
    assert api.get("/v1/billing/auto-topup").json()["lastAttemptAt"] is not None
    return r, ran_out, outage, scheduler


def test_a_pending_auto_topup_holds_the_exhaustion_stop_until_its_outcome(
        api: Api, user, world, clock, local_stripe, monkeypatch) -> None:
    """The money runs out while an auto-topup attempt is pending (Stripe unreachable): the stop
    is held; Stripe answers again, the attempt goes through, the pod never stops."""

    r, ran_out, outage, scheduler = _running_dry_with_stripe_down(api, user, clock, local_stripe, monkeypatch)
    scheduler.advance(ran_out + 10 - clock.now())  # past the moment the money ran out
    got = meters.current(user["id"], r["id"])
    assert got is not None
    assert got.status == "running", got.stop_reason
    outage["on"] = False
    scheduler.advance(110)  # the attempt's timer tries again: it goes through
    got = meters.current(user["id"], r["id"])
    assert got is not None
    assert got.status == "running", got.stop_reason
    assert len(_auto_topups(api)) == 1
    assert api.get("/v1/billing/balance").json()["availableCents"] > 1000
    check_invariants(user["id"])


def test_an_attempt_stuck_past_its_window_no_longer_holds_the_stop(
        api: Api, user, world, clock, local_stripe, monkeypatch) -> None:
    """Stripe stays unreachable: the stop is held only for the attempt's bounded window."""
    from gpurent import wallet

    r, ran_out, _, scheduler = _running_dry_with_stripe_down(api, user, clock, local_stripe, monkeypatch)
    claimed = ran_out - 59
    scheduler.advance(ran_out + wallet.AUTO_TOPUP_WINDOW - clock.now())
    got = meters.current(user["id"], r["id"])
    assert got is not None
    assert got.status in ("stopping", "stopped"), got.status
    assert got.stop_reason == "insufficient_balance"
    assert ran_out < (got.stopped_at or 0.0) <= claimed + wallet.AUTO_TOPUP_WINDOW + 2, (got.stopped_at, ran_out)
    assert _auto_topups(api) == []
    check_invariants(user["id"])


# ---------------------------------------------------------------- never backwards (issue 15, item 9)

def test_a_sweep_that_loses_to_a_later_timer_never_moves_the_meter_backwards(api: Api, user, world, clock) -> None:
    """Regression: the sweep took `now` once; when its write lost to a timer that had metered the
    wallet later, it re-read the rental and charged it again at its own, earlier `now`, writing
    `billedSeconds` / `meteredUntil` backwards (invariant 5 false until the next tick)."""

    fund(user["id"], 100_000, clock)
    r = launch_running(api, clock)
    clock.advance(100)
    swept_at = clock.now()
    stale = meters.current(user["id"], r["id"])  # what the sweep read at its start
    assert stale is not None
    clock.advance(30)
    metering.on_timer(user["id"])  # a timer meters the wallet meanwhile, 30 s later
    after_timer = meters.current(user["id"], r["id"])
    assert after_timer is not None and after_timer.metered_until == clock.now()
    metering.meter_wallet(user["id"], [stale], swept_at)  # the sweep goes on with what it read
    got = meters.current(user["id"], r["id"])
    assert got is not None
    assert (got.metered_until or 0.0) >= (after_timer.metered_until or 0.0)
    assert got.billed_seconds >= after_timer.billed_seconds
    assert rentals.metered_cents(got) == charge_for_seconds(got.billed_seconds, got.price_per_hour_cents)
    check_invariants(user["id"])


# ---------------------------------------------------------------- whole seconds (issue 15, item 10)

@pytest.mark.parametrize(("ran", "billed", "refunded"), [(59.5, 59, True), (59.99, 59, True), (60.0, 60, False),
                                                         (61.7, 61, False)])
def test_billed_seconds_are_the_floor_and_the_refund_compares_the_raw_duration(
        api: Api, user, world, clock, ran: float, billed: int, refunded: bool) -> None:
    """Regression: a pod that ran 59.5 s was billed 60 s (seconds were rounded half up) and not
    refunded. Billed seconds are the whole seconds run (floor), and the under-a-minute refund
    compares the raw running time."""

    fund(user["id"], 100_000, clock)
    r = launch_running(api, clock)
    clock.advance(ran)
    stop = api.post(f"/v1/rentals/{r['id']}/stop")
    assert stop.status == 200, stop.body
    got = meters.current(user["id"], r["id"])
    assert got is not None and got.billed_seconds == billed
    charged = charge_for_seconds(billed, got.price_per_hour_cents)
    assert stop.json()["finalChargedCents"] == charged
    assert stop.json()["refundedCents"] == (charged if refunded else 0)
    check_invariants(user["id"])


# ---------------------------------------------------------------- no free compute (issue 15, item 12)

def test_the_under_a_minute_refund_is_an_allowance_of_three_a_day(api: Api, user, world, clock) -> None:
    """Regression: the under-60-s full refund let anyone run 8×H100 for 59 s, again and again, for
    nothing. Honest mistakes keep it: three refunded short runs per rolling 24 hours; beyond that a
    short run is billed its seconds, and the stop answer says which it was."""
    fund(user["id"], 100_000, clock)
    answers = []
    for _ in range(4):
        r = launch_running(api, clock)
        clock.advance(30)
        stop = api.post(f"/v1/rentals/{r['id']}/stop")
        assert stop.status == 200, stop.body
        answers.append(stop.json())
        clock.advance(60)
    assert [a["refundedCents"] == a["finalChargedCents"] > 0 for a in answers] == [True, True, True, False]
    assert [a["shortRunRefund"]["refunded"] for a in answers] == [True, True, True, False]
    assert [a["shortRunRefund"]["remaining"] for a in answers] == [2, 1, 0, 0]
    assert all(a["shortRunRefund"]["limit"] == 3 for a in answers)
    clock.advance(86_400)  # a day after the first: the allowance is back
    catalog_refresh.refresh(build_adapters(world.settings()))  # the listings went stale meanwhile
    r = launch_running(api, clock)
    clock.advance(30)
    again = api.post(f"/v1/rentals/{r['id']}/stop").json()
    assert again["shortRunRefund"]["refunded"] is True and again["refundedCents"] == again["finalChargedCents"]
    r = launch_running(api, clock)
    clock.advance(90)  # over a minute: no short-run field at all
    assert "shortRunRefund" not in api.post(f"/v1/rentals/{r['id']}/stop").json()
    check_invariants(user["id"])
