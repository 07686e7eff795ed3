"""Settlement: the final numbers (`plan_settlement`), the limits (`limit_deadline`), and
`settle` / `stop` / `fail` end to end on the fake stores."""

from __future__ import annotations

import pytest

from gpurent import rentals, wallet
from gpurent.errors import ApiError
from gpurent.money import charge_for_seconds, seconds_within_cap, whole_seconds
from gpurent.wallet import ChargeSplit
from tests.fakes.world import FakeWorld
from tests.unit.core.conftest import RATE, T0, rental, seed


def split(charged: int = 0, overage: int = 0) -> ChargeSplit:
    return ChargeSplit(charged, charged, 0, overage, 0, 0)


# ---------------------------------------------------------------- plan_settlement

def test_a_pod_that_ran_under_a_minute_gets_everything_back_and_its_overage_forgiven() -> None:
    r = rental(charged_cents=3, overage_cents=2)
    final = rentals.plan_settlement(r, 59, split(charged=1, overage=1))
    assert (final.charged, final.refund, final.overage) == (4, 4, 0)


def test_a_minute_or_more_is_charged_to_the_second_with_no_refund() -> None:
    seconds = 3600 + 17
    total = charge_for_seconds(seconds, RATE)
    r = rental(charged_cents=total - 5)
    final = rentals.plan_settlement(r, seconds, split(charged=5))
    assert (final.charged, final.refund, final.overage) == (total, 0, 0)


def test_what_was_metered_past_the_billed_end_is_given_back_overage_first() -> None:
    """A provider crash billed to its last healthy moment, after a tick charged beyond it."""
    billed = charge_for_seconds(600, RATE)
    r = rental(charged_cents=billed + 30, overage_cents=20)  # 50 metered past the end
    final = rentals.plan_settlement(r, 600, split())
    assert (final.charged, final.refund, final.overage) == (billed + 30, 30, 0)
    r = rental(charged_cents=billed - 10, overage_cents=40)  # 30 past the end, all of it overage
    final = rentals.plan_settlement(r, 600, split())
    assert (final.charged, final.refund, final.overage) == (billed - 10, 0, 10)


def test_the_remaining_overage_is_invoiced() -> None:
    seconds = 7200
    total = charge_for_seconds(seconds, RATE)
    final = rentals.plan_settlement(rental(charged_cents=200), seconds, split(charged=50, overage=total - 250))
    assert (final.charged, final.refund, final.overage) == (250, 0, total - 250)


# ---------------------------------------------------------------- limit_deadline

def test_no_limit_and_not_running_have_no_deadline() -> None:
    assert rentals.limit_deadline(rental()) is None
    assert rentals.limit_deadline(rental(status="provisioning", running_at=None, auto_stop_after_hours=1)) is None


def test_auto_stop_counts_from_running_to_the_whole_second() -> None:
    assert rentals.limit_deadline(rental(auto_stop_after_hours=0.01)) == (T0 + 36, "auto_stop")
    assert rentals.limit_deadline(rental(auto_stop_after_hours=1 / 7)) == (T0 + whole_seconds(3600 / 7), "auto_stop")


def test_max_total_stops_at_the_last_second_within_the_cap() -> None:
    moment, reason = rentals.limit_deadline(rental(max_total_cents=100)) or (0.0, "")
    assert reason == "max_total" and moment == T0 + seconds_within_cap(100, RATE)
    seconds = int(moment - T0)
    assert charge_for_seconds(seconds, RATE) <= 100 < charge_for_seconds(seconds + 1, RATE)


def test_the_earlier_limit_wins() -> None:
    assert rentals.limit_deadline(rental(auto_stop_after_hours=1, max_total_cents=1))[1] == "max_total"  # type: ignore[index]
    assert rentals.limit_deadline(rental(auto_stop_after_hours=0.001, max_total_cents=10_000))[1] == "auto_stop"  # type: ignore[index]


# ---------------------------------------------------------------- settle / stop / fail on the fakes

def test_settle_charges_to_the_second_and_gives_the_reserve_back(world: FakeWorld) -> None:
    r = seed(world, rental(), available=10_000)
    world.clock.advance(1800)
    done = rentals.settle(r, "user")
    cost = charge_for_seconds(1800, RATE)
    assert (done.status, done.billed_seconds, done.charged_cents, done.reserve_cents) == ("stopping", 1800, cost, 0)
    assert (done.stop_reason, done.stopped_at, done.metered_until) == ("user", T0 + 1800, T0 + 1800)
    assert world.money.wallet(r.user_id) == (10_000 + RATE - cost, 0)
    rows = world.money.all_ledger(r.user_id)
    assert [(x["type"], x["amountCents"]) for x in rows][-1] == ("rental_charge", -cost)
    with pytest.raises(rentals.Settled):  # another actor settling it again replays
        rentals.settle(r, "user")
    assert world.money.wallet(r.user_id) == (10_000 + RATE - cost, 0)


def test_settle_never_bills_past_the_rentals_own_limit(world: FakeWorld) -> None:
    r = seed(world, rental(auto_stop_after_hours=0.5), available=10_000)
    world.clock.advance(5 * 3600)  # stopped hours late
    done = rentals.settle(r, "user")
    assert done.billed_seconds == 1800 and done.charged_cents == charge_for_seconds(1800, RATE)


def test_settle_of_an_empty_wallet_opens_an_overage_invoice(world: FakeWorld) -> None:
    r = seed(world, rental(), available=0)
    world.clock.advance(3 * 3600)
    done = rentals.settle(r, "insufficient_balance")
    owed = charge_for_seconds(3 * 3600, RATE) - RATE
    assert (done.charged_cents, done.overage_cents) == (RATE, owed)
    (invoice,) = world.invoices.of_user(r.user_id)
    assert (invoice.reason, invoice.status, invoice.amount_cents, invoice.rental_id) == ("overage", "open", owed, r.id)
    assert done.overage_invoice_id == invoice.id
    stored = world.money.get_wallet(r.user_id) or {}
    assert (stored["openInvoicesCents"], stored["openInvoiceCount"]) == (owed, 1)


def test_a_settle_that_lost_the_race_to_a_tick_changes_nothing(world: FakeWorld) -> None:
    r = seed(world, rental(), available=10_000)
    world.clock.advance(600)
    world.rentals.update(r.user_id, r.id, {"last_healthy_at": T0 + 600}, ("running",))  # a health check wrote
    before = (world.money.wallet(r.user_id), len(world.money.all_ledger(r.user_id)))
    with pytest.raises(wallet.BusinessConditionFailed):
        rentals.settle(r, "user")  # planned on the version it read
    assert (world.money.wallet(r.user_id), len(world.money.all_ledger(r.user_id))) == before
    assert world.rentals.get(r.user_id, r.id).status == "running"  # type: ignore[union-attr]


def test_stop_retries_a_rental_that_moved_and_terminates_it(world: FakeWorld) -> None:
    r = seed(world, rental(instance_id="i-9"), available=10_000)
    world.clock.advance(120)
    answer = rentals.stop(r.user_id, r.id)
    assert answer == {"id": r.id, "status": "stopping", "finalChargedCents": charge_for_seconds(120, RATE),
                      "refundedCents": 0}
    assert ("terminate", "i-9") in world.provider.calls
    with pytest.raises(ApiError) as again:
        rentals.stop(r.user_id, r.id)
    assert again.value.code == "already_stopped"


def test_a_short_run_is_refunded_in_full(world: FakeWorld) -> None:
    r = seed(world, rental(), available=1_000)
    world.clock.advance(30)
    answer = rentals.stop(r.user_id, r.id)
    cost = charge_for_seconds(30, RATE)
    assert (answer["finalChargedCents"], answer["refundedCents"]) == (cost, cost)
    assert world.money.wallet(r.user_id) == (1_000 + RATE, 0)


def test_a_failed_launch_is_never_billed_and_releases_its_reserve(world: FakeWorld) -> None:
    r = seed(world, rental(status="provisioning", running_at=None, metered_until=None, instance_id=None),
             available=500)
    done = rentals.fail(r, "Provision failed: no capacity")
    assert (done.status, done.error, done.reserve_cents, done.charged_cents) == (
        "failed", "Provision failed: no capacity", 0, 0)
    assert world.money.wallet(r.user_id) == (500 + RATE, 0)
    assert rentals.fail(done, "again").status == "failed"  # someone else moved it on first: no harm


# ---------------------------------------------------------------- whole seconds, the short-run allowance

def test_the_refund_compares_the_raw_running_time_and_bills_whole_seconds(world: FakeWorld) -> None:
    """59.5 s is under a minute (refunded); 60.5 s is billed 60 whole seconds (the floor)."""
    r = seed(world, rental(), available=1_000)
    world.clock.advance(59.5)
    done = rentals.settle(r, "user")
    assert (done.billed_seconds, done.refunded_cents) == (59, done.charged_cents)
    r2 = seed(world, rental(id="rent_01M8QVFHFZ7QVG2EB10YWZ4GKT", running_at=T0 + 59.5, metered_until=T0 + 59.5),
              available=0)
    world.clock.advance(60.5)
    done = rentals.settle(r2, "user")
    assert (done.billed_seconds, done.refunded_cents, done.short_run_refund) == (60, 0, None)
    assert done.charged_cents == charge_for_seconds(60, RATE)


def _short_run(world: FakeWorld, n: int, reason: str = "user") -> dict[str, object]:
    rid = f"rent_01M8QVFHFZ7QVG2EB10YWZ4G{n:02d}"
    start = world.clock.now()
    r = seed(world, rental(id=rid, running_at=start, metered_until=start), available=0)
    world.clock.advance(30)
    if reason == "user":
        return rentals.stop(r.user_id, r.id)
    done = rentals.settle(r, "provider_failure")
    return {"refundedCents": done.refunded_cents, "shortRunRefund": done.short_run_refund}


def test_short_runs_are_refunded_three_times_a_day_then_billed(world: FakeWorld) -> None:
    cost = charge_for_seconds(30, RATE)
    answers = [_short_run(world, n) for n in range(4)]
    assert [a["refundedCents"] for a in answers] == [cost, cost, cost, 0]
    assert [a["shortRunRefund"] for a in answers] == [
        {"refunded": True, "remaining": left, "limit": 3, "windowHours": 24} for left in (2, 1, 0)
    ] + [{"refunded": False, "remaining": 0, "limit": 3, "windowHours": 24}]
    # A provider's crash is always refunded and takes no slot.
    crashed = _short_run(world, 4, reason="provider_failure")
    assert crashed["refundedCents"] == cost and crashed["shortRunRefund"] is None
    # The window rolls: 24 hours after the first refund, one slot is free again.
    world.clock.advance(rentals.SHORT_RUN_PERIOD - 5 * 30)  # the next stop is 24 h after the first refund
    assert _short_run(world, 5)["shortRunRefund"] == {"refunded": True, "remaining": 0, "limit": 3, "windowHours": 24}
