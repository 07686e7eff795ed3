"""Metering's arithmetic: billable seconds, the charging plan, and the exhaustion prediction
that runs the same plan forward (checked against a second-by-second search)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpurent import metering, outbox, wallet
from gpurent.money import charge_for_seconds
from gpurent.records import Rental
from tests.fakes.world import FakeWorld
from tests.unit.core.conftest import RATE, T0, rental, seed


def brute_force(available: int, running: list[Rental], now: float, horizon: int) -> float | None:
    for s in range(horizon + 1):
        if metering.exhausted_at(available, running, now + s):
            return now + s
    return None


running_sets = st.lists(st.tuples(st.integers(1, 5_000), st.integers(0, 3_000)), min_size=1, max_size=3)


def _running(rates_and_reserves: list[tuple[int, int]]) -> list[Rental]:
    return [rental(id=f"rent_{i}", price_per_hour_cents=rate, reserve_cents=reserve)
            for i, (rate, reserve) in enumerate(rates_and_reserves)]


@settings(max_examples=100, deadline=None)
@given(available=st.integers(0, 3_000), rs=running_sets, ran=st.integers(0, 3_000))
def test_the_prediction_is_a_moment_the_plan_exhausts_and_the_second_before_does_not(
        available: int, rs: list[tuple[int, int]], ran: int) -> None:
    running, now, horizon = _running(rs), T0 + ran, 3600
    t = metering.predict_exhaustion(available, running, now, horizon)
    if t is None:
        assert not metering.exhausted_at(available, running, now + horizon)
    else:
        assert now <= t <= now + horizon and metering.exhausted_at(available, running, t)
        assert t == now or not metering.exhausted_at(available, running, t - 1)


@settings(max_examples=15, deadline=None)
@given(available=st.integers(0, 600), rs=running_sets, ran=st.integers(0, 3_000))
def test_the_prediction_is_the_first_second_a_search_finds(available: int, rs: list[tuple[int, int]],
                                                          ran: int) -> None:
    running, now = _running(rs), T0 + ran
    assert metering.predict_exhaustion(available, running, now, 240) == brute_force(available, running, now, 240)


def test_no_running_rental_never_exhausts() -> None:
    assert metering.predict_exhaustion(0, [], T0, 3600) is None


def test_a_funded_wallet_is_not_predicted_to_run_out_within_the_horizon() -> None:
    assert metering.predict_exhaustion(10**7, [rental()], T0, 3600) is None


def test_billable_seconds_stop_at_the_limit() -> None:
    r = rental(auto_stop_after_hours=0.01)
    assert metering.billable_seconds(r, T0 + 20) == 20
    assert metering.billable_seconds(r, T0 + 3600) == 36


def test_the_charging_plan_takes_each_rental_against_what_the_previous_left() -> None:
    a = rental(id="rent_a", reserve_cents=RATE, charged_cents=0)
    b = rental(id="rent_b", reserve_cents=0, charged_cents=0)
    steps = metering.plan_charges(wallet.Wallet("usr_fake", 100, RATE), [a, b], T0 + 3600)
    first, second = (s.info["split"] for s in steps)
    assert (first.from_reserve, first.from_available, first.topup) == (RATE, 0, 100)  # tops its reserve up: 100 left
    assert (second.from_available, second.overage) == (0, RATE)  # nothing left for the second
    assert [s.info["rentalId"] for s in steps] == ["rent_a", "rent_b"]


def test_a_tick_charges_the_formula_and_moves_the_rental_in_the_same_transaction(world: FakeWorld) -> None:
    r = seed(world, rental(), available=10_000)
    world.clock.advance(1234)
    result, after = metering.charge_wallet(r.user_id, [r], T0 + 1234)
    cost = charge_for_seconds(1234, RATE)
    stored = world.rentals.get(r.user_id, r.id)
    assert stored is not None and after == [stored]
    assert (stored.charged_cents, stored.billed_seconds, stored.metered_until, stored.reserve_cents) == (
        cost, 1234, T0 + 1234, RATE)
    assert result.available + result.reserved == 10_000 + RATE - cost
    # A second tick at the same moment charges nothing more.
    _, again = metering.charge_wallet(r.user_id, after, T0 + 1234)
    assert again[0].charged_cents == cost


def test_a_tick_writes_no_marker_and_the_wallets_version_makes_it_exactly_once(world: FakeWorld) -> None:
    """A rental's first tick writes the wallet (its meter now on it), the rental row (under a
    condition on its version) and the ledger row; the ticks after it the wallet and the ledger
    row only, no operation marker. A pass that planned on the wallet and the rental as they
    were before another pass charged them (an overlapping sweep, a retried invocation, a
    redelivered part) is refused by the wallet's version, plans again on the wallet that won
    and charges only what is not charged yet."""
    r = seed(world, rental(), available=10_000)
    markers = {k for k in world.money.items if k[0].startswith("OP#")}
    sizes: list[int] = []
    transact = world.money.transact

    def counting(items: list[dict[str, object]], token: str | None = None) -> None:
        sizes.append(len(items))
        transact(items, token)

    world.money.transact = counting  # type: ignore[method-assign]
    before = world.money.get_wallet(r.user_id)
    world.clock.advance(600)
    result, after = metering.charge_wallet(r.user_id, [r], T0 + 600)
    assert {k for k in world.money.items if k[0].startswith("OP#")} == markers  # none added by the tick
    assert not result.replayed and after[0].charged_cents == charge_for_seconds(600, RATE)
    assert sizes == [3]  # the wallet, the rental (its first tick), the ledger row
    stored = world.rentals.get(r.user_id, r.id)
    assert stored is not None and stored.version == r.version + 1 and stored.charged_cents == after[0].charged_cents
    on_wallet = world.money.get_wallet(r.user_id)
    assert on_wallet is not None and on_wallet["meters"][r.id]["c"] == charge_for_seconds(600, RATE)
    # A pass that read the rental before that tick: it plans on the meter on the wallet.
    world.clock.advance(60)
    _, again = metering.charge_wallet(r.user_id, [r], T0 + 660)
    assert sizes == [3, 2]  # the wallet and the ledger row only
    assert again[0].charged_cents == charge_for_seconds(660, RATE)
    assert world.rentals.get(r.user_id, r.id) == stored  # the rental row was not written again
    # A pass that planned on the wallet as it was before both ticks (read with others, then
    # overtaken): its plan is the rental's first tick, refused whole (the wallet's version
    # and the rental's); the sweep's recovery re-reads and charges only what is not charged.
    world.clock.advance(60)
    out = metering._charge_all(r.user_id, [r], T0 + 720, known=before)
    assert out.conflicts == 1 and out.charged == charge_for_seconds(720, RATE) - charge_for_seconds(660, RATE)
    assert sizes == [3, 2, 3, 2]
    ledger = [-int(x["amountCents"]) for x in world.money.all_ledger(r.user_id) if x["type"] == "rental_charge"]
    meter = (world.money.get_wallet(r.user_id) or {})["meters"][r.id]
    assert sum(ledger) == charge_for_seconds(720, RATE) == meter["c"] and meter["u"] == T0 + 720
    # And once more at the same moment: nothing more to charge.
    metering.charge_wallet(r.user_id, [r], T0 + 720)
    assert sum(-int(x["amountCents"]) for x in world.money.all_ledger(r.user_id)
               if x["type"] == "rental_charge") == charge_for_seconds(720, RATE)


def test_a_tick_of_a_rental_settled_meanwhile_is_refused_whole(world: FakeWorld) -> None:
    """Settlement takes the meter off the wallet and writes the rental, in one transaction: a
    pass that read the rental running before the stop finds no meter on the wallet, so it
    writes the rental row under its version, which the stop moved: refused, nothing charged."""
    from gpurent import rentals

    r = seed(world, rental(), available=10_000)
    world.clock.advance(600)
    _, after = metering.charge_wallet(r.user_id, [r], T0 + 600)
    world.clock.advance(30)
    rentals.stop(r.user_id, r.id)
    w = world.money.get_wallet(r.user_id)
    assert w is not None and r.id not in w.get("meters", {})
    money, rows = world.money.wallet(r.user_id), world.money.all_ledger(r.user_id)
    world.clock.advance(30)
    with pytest.raises(wallet.BusinessConditionFailed):
        metering.charge_wallet(r.user_id, after, T0 + 660)
    assert world.money.wallet(r.user_id) == money and world.money.all_ledger(r.user_id) == rows
    out = metering._charge_all(r.user_id, after, T0 + 660)  # the sweep's own recovery: re-read, skip it
    assert out.conflicts == 1 and out.charged == 0 and world.money.all_ledger(r.user_id) == rows
    settled = world.rentals.get(r.user_id, r.id)
    assert settled is not None and settled.status == "stopping"
    assert settled.charged_cents == charge_for_seconds(630, RATE) and settled.billed_seconds == 630


def test_a_wallet_that_cannot_pay_is_exhausted_stopped_and_told(world: FakeWorld) -> None:
    from gpurent import notify

    r = seed(world, rental(), available=0)
    world.users.add(r.user_id, "dry@example.test")
    world.clock.advance(2 * 3600)
    out = metering.meter_wallet(r.user_id, [r], T0 + 2 * 3600)
    assert out.exhausted
    stopped = world.rentals.get(r.user_id, r.id)
    assert stopped is not None and (stopped.status, stopped.stop_reason) == ("stopping", "insufficient_balance")
    assert stopped.billed_seconds == 2 * 3600 and stopped.overage_cents == charge_for_seconds(7200, RATE) - RATE
    # The courtesy email and the overage invoice's Stripe copy are owed (outbox effects), done
    # when the timer function drains them.
    assert sorted(e["kind"] for e in world.outbox.for_user(r.user_id)) == ["exhausted_email", "invoice_mirror"]
    assert not any(m["to"] == "dry@example.test" for m in notify.mailbox())
    assert outbox.drain(r.user_id) == {"effects": 2, "failed": 0}
    assert any(m["to"] == "dry@example.test" and r.id in m["body"] for m in notify.mailbox())
    assert world.outbox.for_user(r.user_id) == []


def test_a_wallet_keeps_at_most_max_on_wallet_meters_the_rest_stay_on_their_rentals(
        world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wallet item is rewritten by every money operation and DynamoDB refuses one over
    400 KB: past `MAX_ON_WALLET` running rentals a meter stays on its rental, whose ticks write
    it there under its version; once a stop makes room, the next tick moves it to the wallet."""
    from gpurent import rentals
    from gpurent.rentals import meters

    monkeypatch.setattr(meters, "MAX_ON_WALLET", 1)
    first = seed(world, rental(), available=10_000)
    second = seed(world, rental(id="rent_01M8QVFHFZ7QVG2EB10YWZ4GKT"), available=0)
    world.clock.advance(600)
    _, after = metering.charge_wallet(first.user_id, [first, second], T0 + 600)
    kept = (world.money.get_wallet(first.user_id) or {}).get("meters", {})
    assert list(kept) == [first.id]
    own = world.rentals.get(second.user_id, second.id)
    assert own is not None and own.charged_cents == charge_for_seconds(600, RATE) and own.version == second.version + 1
    # The next tick writes the wallet and both ledger rows, and the second rental again.
    world.clock.advance(60)
    _, after = metering.charge_wallet(first.user_id, after, T0 + 660)
    own = world.rentals.get(second.user_id, second.id)
    assert own is not None and own.charged_cents == charge_for_seconds(660, RATE) and own.version == second.version + 2
    assert list((world.money.get_wallet(first.user_id) or {})["meters"]) == [first.id]
    # The first stops: its meter goes back to its rental, and the second's moves to the wallet.
    rentals.stop(first.user_id, first.id)
    world.clock.advance(60)
    _, after = metering.charge_wallet(second.user_id, [after[1]], T0 + 720)
    kept = (world.money.get_wallet(first.user_id) or {})["meters"]
    assert list(kept) == [second.id] and kept[second.id]["c"] == charge_for_seconds(720, RATE)
    for r in (first, second):
        ledger = sum(-int(x["amountCents"]) for x in world.money.all_ledger(r.user_id)
                     if x["type"] == "rental_charge" and x.get("rentalId") == r.id)
        refunds = sum(int(x["amountCents"]) for x in world.money.all_ledger(r.user_id)
                      if x["type"] == "refund" and x.get("rentalId") == r.id)
        stored = world.rentals.get(r.user_id, r.id)
        assert stored is not None
        on = (world.money.get_wallet(r.user_id) or {})["meters"].get(r.id)
        assert ledger - refunds == (on["c"] if on else stored.charged_cents - stored.refunded_cents)
    money = world.money.wallet(first.user_id)
    assert money[1] == kept[second.id]["r"]  # reserved: the one running rental's reserve


def test_with_the_setting_off_ticks_write_the_rentals_and_bring_meters_back_from_the_wallet(
        world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """`meters_on_wallet` off (a deployment switches it off before rolling back past this
    release: older code reads a running rental's meter from the rental only): a meter on the
    wallet goes back to its rental at the next tick, and no tick puts one there."""
    from gpurent import config

    first = seed(world, rental(), available=10_000)
    world.clock.advance(600)
    _, after = metering.charge_wallet(first.user_id, [first], T0 + 600)
    assert list((world.money.get_wallet(first.user_id) or {})["meters"]) == [first.id]
    monkeypatch.setenv("METERS_ON_WALLET", "0")
    config.reset()
    second = seed(world, rental(id="rent_01M8QVFHFZ7QVG2EB10YWZ4GKT"), available=0)
    world.clock.advance(60)
    stale = after[0]  # the rental as a pass read it before the next tick
    _, after = metering.charge_wallet(first.user_id, [after[0], second], T0 + 660)
    assert (world.money.get_wallet(first.user_id) or {})["meters"] == {}
    for r, seconds in ((first, 660), (second, 660)):
        own = world.rentals.get(r.user_id, r.id)
        assert own is not None and own.charged_cents == charge_for_seconds(seconds, RATE)
        assert own.metered_until == T0 + 660
        ledger = sum(-int(x["amountCents"]) for x in world.money.all_ledger(r.user_id)
                     if x["type"] == "rental_charge" and x.get("rentalId") == r.id)
        assert ledger == own.charged_cents
    w = world.money.wallet(first.user_id)
    stored = [world.rentals.get(r.user_id, r.id) for r in (first, second)]
    assert w[1] == sum(r.reserve_cents for r in stored if r is not None)  # reserved == Σ the rentals' reserves
    # A pass that read the rental before that tick is refused by its version, not charged twice.
    with pytest.raises(wallet.BusinessConditionFailed):
        metering.charge_wallet(first.user_id, [stale], T0 + 660)
    # And back on: the next tick puts both meters on the wallet again.
    monkeypatch.setenv("METERS_ON_WALLET", "1")
    config.reset()
    world.clock.advance(60)
    metering.charge_wallet(first.user_id, after, T0 + 720)
    kept = (world.money.get_wallet(first.user_id) or {})["meters"]
    assert sorted(kept) == sorted([first.id, second.id]) and kept[first.id]["c"] == charge_for_seconds(720, RATE)
