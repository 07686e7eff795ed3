"""A hypothesis state machine over metering: real launches against the provider
simulators, a manual clock moved by random amounts (1 s … hours), stops,
top-ups and debits, metering sweeps, the in-process timers, reconciles, and
sweeps (or timer runs) that crash or race, each followed by a normal sweep.

After every step it checks invariants 1-5 and 8 of `spec/decisions.md`
(`tests.walletkit.check_invariants` for 1-4 and the ledger side of 8) and,
per rental, that what it was metered at is exactly the formula:

- while running: `chargedCents + overageCents == charge_for_seconds(billedSeconds, rate)`,
  `billedSeconds` being its running time up to `meteredUntil`, never past its
  limit deadline (`autoStopAfterHours` / `maxTotalCents`) nor past now;
- settled: the same with the final `billedSeconds`; a run under 60 s gets
  everything it was charged back (`refundedCents == chargedCents`), a longer
  one nothing; the reserve is 0;
- the `rental_charge` ledger rows of a rental sum to its `chargedCents`, its
  `refund` rows to its `refundedCents`;
- the wallet total equals an independent model (what the test put in minus
  what the rentals say they were charged plus their refunds), and the usage
  beyond the money equals the overage invoices and the `openInvoices*`
  counters (invariant 8).

After a sweep that ran normally: every running rental is metered up to now,
none is past its limit deadline, and no exhausted wallet has a running pod.

Faults: the N-th money transaction of a sweep (or of a timer run) raises
before it reaches DynamoDB, or commits and then raises (the answer is lost),
either as an `Exception` (the code's own handlers see it) or as a
`BaseException` (the invocation is killed); or another sweep runs between
that transaction's read and its write (two sweeps overlapping).

Fresh tables per example (moto copies table state inside every transaction);
the simulators start once per module and are reset per example.
`HYPOTHESIS_PROFILE=thorough` runs many more and longer examples.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from gpurent import catalog, catalog_refresh, config, metering, rentals, sweep, timers, wallet
from gpurent import clock as clock_mod
from gpurent.errors import ApiError
from gpurent.listing import Listing
from gpurent.money import charge_for_seconds, whole_seconds
from gpurent.providers import registry
from gpurent.providers.base import ProviderAdapter
from gpurent.providers.registry import build_adapters
from gpurent.records import ACTIVE_SHARDS
from gpurent.store import dynamo
from gpurent.store import money as money_store
from gpurent.store import rentals as rental_store
from infra.local import template
from infra.simulators import Simulators, start_simulators
from tests.walletkit import check_invariants

# Own profile names: the wallet machine registers "ci"/"thorough" with other sizes.
settings.register_profile("metering-ci", max_examples=25, stateful_step_count=15, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("metering-thorough", max_examples=600, stateful_step_count=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE = "metering-" + os.environ.get("HYPOTHESIS_PROFILE", "ci")

BOOT_SECONDS = 5.0  # simulated boot time: a tick ≥ 5 s and a reconcile make a rental running
USERS = ("A", "B")
FAMILIES = ("rtx-4090", "h100-80gb", "b300")  # ~0.3, ~2, ~5 $/h: wallets run dry within a few ticks
SWEEP_EVERY = 60.0

AUTO_STOP = st.none() | st.sampled_from([0.005, 0.01, 0.0167, 0.02, 0.5, 1.0, 2.5])
MAX_TOTAL = st.none() | st.integers(1, 600)
MONEY = st.one_of(st.sampled_from([0, 35, 250, 600, 1_200]), st.integers(0, 2_000))
TICKS = st.one_of(
    st.sampled_from([1, 5, 30, 59, 60, 61, 90, 91, 3599, 3601, 7200, 4 * 3600 + 17, 8 * 3600]),
    st.integers(1, 600),
    st.integers(600, 6 * 3600),
)


REACHED: Counter[str] = Counter()  # how the examples' rentals ended (printed with -s)


class Crash(BaseException):
    """The invocation dies (a Lambda timeout, a kill): no handler of ours sees it."""


class Fault(Exception):
    """An error the code's own handlers see (a network error, a throttle)."""


@dataclass
class Injection:
    nth: int  # the n-th money transaction from now
    where: str  # before | after | overlap
    kind: type[BaseException]
    calls: int = 0
    fired: bool = False


class MeteringMachine(RuleBasedStateMachine):
    sims: Simulators
    adapters: dict[str, ProviderAdapter]
    listings: tuple[Listing, ...]  # the catalog, read once per test: not what is under test here

    def __init__(self) -> None:
        super().__init__()
        self.run_id = uuid.uuid4().hex[:10]
        self.clock = clock_mod.get_clock()
        assert isinstance(self.clock, clock_mod.ManualClock)
        self.n = 0
        self.rids: dict[str, str] = {}  # rental id → user id (every rental a launch created)
        self.funded: dict[str, int] = {}  # user id → cents the test put in (credits − debits)
        self.injection: Injection | None = None
        self.next_sweep = self.clock.now() + SWEEP_EVERY
        self.real_transact = money_store.transact
        money_store.transact = self._transact  # type: ignore[assignment]
        self.real_live_listings = catalog.live_listings
        catalog.live_listings = self._live_listings  # type: ignore[assignment]
        # Fresh, small tables per example: moto copies table state inside every transaction.
        self.names = template.default_table_names(f"m{self.run_id}")
        self.saved_env = {v: os.environ.get(v) for v in template.TABLE_ENV.values()}
        os.environ.update({template.TABLE_ENV[k]: v for k, v in self.names.items()})
        config.reset()
        template.create_tables(dynamo.client(), self.names)
        timers.clear()
        self.sims.reset()
        registry.set_adapters(self.adapters)

    def teardown(self) -> None:
        for rid, user in self.rids.items():  # what the example reached (--hypothesis-show-statistics)
            r = rental_store.get(user, rid)
            if r is not None:
                overage = r.overage_cents > 0
                REACHED[f"rental {r.status} {r.stop_reason or r.error or ''} {overage=}"] += 1
        money_store.transact = self.real_transact  # type: ignore[assignment]
        catalog.live_listings = self.real_live_listings  # type: ignore[assignment]
        timers.clear()
        catalog.invalidate()
        for name in self.names.values():
            dynamo.client().delete_table(TableName=name)
        for k, v in self.saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        config.reset()

    # ------------------------------------------------------------ plumbing

    def _transact(self, items: list[Any], token: str | None = None) -> None:
        inj = self.injection
        if inj is None or inj.fired:
            self.real_transact(items, token)
            return
        inj.calls += 1
        if inj.calls != inj.nth:
            self.real_transact(items, token)
            return
        inj.fired = True
        REACHED[f"fault {inj.where} {inj.kind.__name__}"] += 1
        if inj.where == "before":
            raise inj.kind("the transaction never reached DynamoDB")
        if inj.where == "overlap":
            sweep.start()  # another sweep, between our read and our write
        self.real_transact(items, token)
        if inj.where == "after":
            raise inj.kind("the transaction committed but its answer was lost")

    def _live_listings(self) -> tuple[Listing, ...]:
        """The catalog as a refresh would find it now: a vast ask is one machine, gone while rented."""
        sim = self.sims.vast
        with sim.lock:
            return tuple(li for li in self.listings if not sim.offers[int(li.offer_key)]["rented"])

    def uid(self, user: str) -> str:
        return f"usr_{self.run_id}{user}"

    def key(self, kind: str) -> str:
        self.n += 1
        return f"{self.run_id}:{kind}:{self.n}"

    def now(self) -> float:
        return self.clock.now()

    def _fire_timers(self) -> int:
        fired = timers.due(self.now())
        for t in fired:
            if t.rental_id:
                rentals.on_timer(t.user_id, t.rental_id)
            else:
                metering.on_timer(t.user_id)
        return len(fired)

    def _sweep_and_check(self) -> None:
        """A normal sweep, then what a completed sweep promises at this moment."""
        sweep.start()
        now = self.now()
        for u in USERS:
            user = self.uid(u)
            running = rental_store.live_for_user(user, "running")
            w = wallet.get(user)
            for r in running:
                assert r.running_at is not None
                assert r.metered_until == now, ("a running rental was skipped by the sweep", r)
                deadline = rentals.limit_deadline(r)
                assert deadline is None or deadline[0] > now, ("running past its limit after a sweep", r)
            assert not (w.available == 0 and any(r.reserve_cents == 0 for r in running)), (
                "an exhausted wallet still has running pods after a sweep", w, running)

    # ------------------------------------------------------------ rules

    @initialize(amounts=st.tuples(*[MONEY for _ in USERS]),
                pods=st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(FAMILIES), AUTO_STOP, MAX_TOTAL),
                              max_size=3))
    def fund_and_start(self, amounts: tuple[int, ...], pods: list[tuple[str, str, float | None, int | None]]) -> None:
        """Each user's opening balance, and a few pods already running (so faults have work to hit)."""
        for u, amount in zip(USERS, amounts, strict=True):
            user = self.uid(u)
            self.funded[user] = 0
            if amount:
                wallet.credit(user, amount, "adjustment", self.key("fund"), {"description": "initial"})
                self.funded[user] += amount
        for u, family, auto_stop, max_total in pods:
            self.launch(u, family, auto_stop, max_total, wait=True)

    @rule(u=st.sampled_from(USERS), family=st.sampled_from(FAMILIES), auto_stop=AUTO_STOP, max_total=MAX_TOTAL,
          wait=st.booleans())
    def launch(self, u: str, family: str, auto_stop: float | None, max_total: int | None, wait: bool) -> None:
        """`POST /v1/rentals`; with `wait`, the pod boots and a `GET` sees it running (as `launch --wait`)."""
        user = self.uid(u)
        body = rentals.Launch(familyId=family, gpuCount=1, autoStopAfterHours=auto_stop, maxTotalCents=max_total)
        try:
            answer, status = rentals.launch(user, body, None)
        except ApiError as exc:
            if exc.code == "model_unavailable":  # every ask of the family is rented
                assert not catalog.candidates(family, 1, None)
                return
            assert exc.code == "insufficient_balance", exc.code
            assert exc.details is not None and wallet.get(user).available < int(exc.details["requiredCents"])
            return
        rid = answer["id"] if status == 200 else answer["details"]["rentalId"]
        self.rids[rid] = user
        if wait and status == 200:
            self.clock.advance(BOOT_SECONDS)
            r = rental_store.get(user, rid)
            assert r is not None
            rentals.refresh_if_provisioning(r)

    @rule(seconds=TICKS, then=st.sampled_from(["timers and sweep", "sweep", "timers", "nothing"]))
    def tick(self, seconds: int, then: str) -> None:
        """Time jumps with nothing running on the way (an outage of the schedule and of the
        timer queue, or just a long gap), then, maybe, what was due runs late."""
        self.clock.advance(seconds)
        if "timers" in then:
            self._fire_timers()
        if "sweep" in then:
            self._sweep_and_check()

    @rule(seconds=st.integers(1, 240))
    def run_on_schedule(self, seconds: int) -> None:
        """Time passes as in production: a reconcile and a sweep each minute, timers at their second."""
        end = self.now() + seconds
        self.next_sweep = max(self.next_sweep, self.now())
        while True:
            due = timers.next_due()
            moments = [t for t in (due, self.next_sweep) if t is not None and t <= end]
            if not moments:
                break
            moment = min(moments)
            self.clock.set(max(self.now(), moment))
            if due is not None and due == moment:
                self._fire_timers()
            else:
                rentals.reconcile()
                self._sweep_and_check()
                self.next_sweep = moment + SWEEP_EVERY
        self.clock.set(end)

    @precondition(lambda self: self.rids)
    @rule(data=st.data())
    def stop(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(sorted(self.rids)))
        user = self.rids[rid]
        before = rental_store.get(user, rid)
        assert before is not None
        try:
            answer = rentals.stop(user, rid)
        except ApiError as exc:
            assert exc.code == "already_stopped", exc.code
            assert before.status in ("stopping", "stopped", "failed")
            return
        assert before.status in ("provisioning", "running")
        after = rental_store.get(user, rid)
        assert after is not None and after.status == "stopping"
        assert answer["finalChargedCents"] == rentals.metered_cents(after)
        assert answer["refundedCents"] == after.refunded_cents

    @rule(u=st.sampled_from(USERS), amount=st.integers(1, 2_000),
          how=st.sampled_from(["stripe_topup", "adjustment", "debit"]))
    def top_up(self, u: str, amount: int, how: str) -> None:
        user = self.uid(u)
        if how == "debit":  # an admin's negative adjustment: never below zero
            if wallet.get(user).available < amount:
                return
            wallet.adjust(user, -amount, self.key("debit"), {"description": "admin debit"})
            timers.arm(user, self.now())  # as `admin.adjust` does: pods may now run dry sooner
            self.funded[user] -= amount
            return
        wallet.credit(user, amount, how, self.key("credit"), {"description": "top-up"})
        self.funded[user] += amount

    @rule()
    def sweep(self) -> None:
        self._sweep_and_check()

    @rule(shards=st.sets(st.integers(0, ACTIVE_SHARDS - 1), max_size=ACTIVE_SHARDS),
          wallets=st.integers(0, 2), hand_off=st.sampled_from(["lost", "delivered", "twice"]))
    def a_fanned_out_sweep_partly(self, shards: set[int], wallets: int, hand_off: str) -> None:
        """Some shards' workers run (the others' parts lost), each out of time after `wallets`
        wallets; its hand-off is lost, delivered, or delivered twice (two workers on the same
        wallets). Whatever ran must be whole; the next normal sweep makes every wallet right."""
        handed: list[sweep.Part] = []
        budget = {"left": wallets}

        def time_left() -> float:
            budget["left"] -= 1
            return 60.0 if budget["left"] >= 0 else 0.0

        real = sweep.hand_off
        sweep.hand_off = handed.append  # type: ignore[assignment]
        try:
            for n in sorted(shards):
                budget["left"] = wallets
                sweep.run_part(sweep.Part(n, self.now()), time_left)
        finally:
            sweep.hand_off = real  # type: ignore[assignment]
        if hand_off != "lost":
            for part in handed * (2 if hand_off == "twice" else 1):
                sweep.run_part(part)
        self.check()
        self._sweep_and_check()

    @rule()
    def fire_due_timers(self) -> None:
        self._fire_timers()

    @rule()
    def reconcile(self) -> None:
        rentals.reconcile()

    @precondition(lambda self: self.rids)
    @rule(nth=st.integers(1, 4), where=st.sampled_from(["before", "after", "overlap"]),
          kind=st.sampled_from([Crash, Fault]), run=st.sampled_from(["sweep", "timers"]))
    def a_run_crashes_then_a_normal_sweep(self, nth: int, where: str, kind: type[BaseException],
                                          run: str) -> None:
        self.injection = Injection(nth, where, kind)
        try:
            if run == "sweep":
                sweep.start()
            else:
                for u in USERS:  # something for the timer run to do
                    timers.arm(self.uid(u), self.now())
                self._fire_timers()
        except (Crash, Fault):
            pass
        finally:
            self.injection = None
        self.check()  # every transaction is whole or absent, even mid-run
        self._sweep_and_check()

    # ------------------------------------------------------------ invariants

    @invariant()
    def invariants_hold(self) -> None:
        self.check()

    def check(self) -> None:
        real_all_ledger = money_store.all_ledger
        memo: dict[str, list[dict[str, Any]]] = {}

        def all_ledger(user_id: str) -> list[dict[str, Any]]:  # read once per check, not twice
            if user_id not in memo:
                memo[user_id] = real_all_ledger(user_id)
            return memo[user_id]

        money_store.all_ledger = all_ledger  # type: ignore[assignment]
        try:
            self._check()
        finally:
            money_store.all_ledger = real_all_ledger  # type: ignore[assignment]

    def _check(self) -> None:
        now = self.now()
        for u in USERS:
            user = self.uid(u)
            w = check_invariants(user)  # 1, 2, 3, 4 and the ledger side of 8
            rows = money_store.all_ledger(user)
            items = user_items(user)
            mine = {i["id"]: i for i in items if str(i["sk"]).startswith("RENTAL#")}
            assert set(mine) == {rid for rid, owner in self.rids.items() if owner == user}
            charged = refunded = invoiced_usage = 0
            for r in mine.values():
                self.check_rental(r, rows, now)
                charged += int(r["chargedCents"])
                refunded += int(r["refundedCents"])
                if r["status"] != "running" and r.get("runningAt") is not None and int(r["billedSeconds"]) >= 60:
                    invoiced_usage += int(r["overageCents"])
            # 8. nothing created or lost: what went in, minus charges, plus refunds, is the total
            assert w.total == self.funded[user] - charged + refunded, (w, self.funded[user], charged, refunded)
            # 8. usage beyond the money == the overage invoices (all open: nothing pays them here)
            overage = [i for i in items if str(i["sk"]).startswith("INVOICE#") and i["reason"] == "overage"]
            assert sum(int(i["amountCents"]) for i in overage) == invoiced_usage, (overage, mine)
            assert (w.open_invoices_cents, w.open_invoice_count) == (
                sum(int(i["amountCents"]) for i in overage if i["status"] == "open"),
                sum(1 for i in overage if i["status"] == "open"))
            for inv in overage:
                r = mine[inv["rentalId"]]
                assert r.get("overageInvoiceId") == inv["id"]
                assert int(inv["amountCents"]) == int(r["overageCents"]) > 0

    def check_rental(self, r: dict[str, Any], rows: list[dict[str, Any]], now: float) -> None:
        rid, status, rate = r["id"], r["status"], int(r["pricePerHourCents"])
        ledger_charged = -sum(int(x["amountCents"]) for x in rows
                              if x["type"] == "rental_charge" and x.get("rentalId") == rid)
        ledger_refunded = sum(int(x["amountCents"]) for x in rows if x["type"] == "refund" and x.get("rentalId") == rid)
        assert ledger_charged == int(r["chargedCents"]), ("rental_charge rows ≠ chargedCents", r)
        assert ledger_refunded == int(r["refundedCents"]), ("refund rows ≠ refundedCents", r)
        if status in ("running", "provisioning"):
            assert 0 <= int(r["reserveCents"]) <= rate, r
        else:
            assert int(r["reserveCents"]) == 0, r
        if r.get("runningAt") is None:  # never ran: never billed
            assert status in ("provisioning", "stopping", "stopped", "failed"), r
            assert int(r["chargedCents"]) == int(r["overageCents"]) == int(r["billedSeconds"]) == 0, r
            assert int(r["refundedCents"]) == 0, r
            return
        started = float(r["runningAt"])
        until = float(r["meteredUntil"])
        seconds = int(r["billedSeconds"])
        typed = rental_store.rental_from_item(r)  # the stored row, as the domain reads it
        deadline = rentals.limit_deadline(typed)
        assert started <= until <= now, r
        # 5. the charge is the formula of the billed seconds, exactly
        assert rentals.metered_cents(typed) == charge_for_seconds(seconds, rate), ("charge ≠ formula", r)
        assert seconds <= whole_seconds(now - started), ("billed beyond the time it ran", r)
        # never billed past its own limit
        if deadline is not None:
            assert seconds <= whole_seconds(deadline[0] - started), ("billed past its limit deadline", deadline, r)
        if r.get("maxTotalCents"):
            assert rentals.metered_cents(typed) <= int(r["maxTotalCents"]), ("charged beyond maxTotalCents", r)
        if status == "running":
            end = until if deadline is None else min(until, deadline[0])
            assert seconds == whole_seconds(end - started), ("billedSeconds ≠ time up to meteredUntil", r)
            assert int(r["refundedCents"]) == 0, r
        else:
            assert seconds == whole_seconds(until - started), r
            assert until <= float(r["stoppedAt"]), r
            expected_refund = int(r["chargedCents"]) if seconds < rentals.REFUND_WINDOW else 0
            assert int(r["refundedCents"]) == expected_refund, ("refund rule", r)


def user_items(user_id: str) -> list[dict[str, Any]]:
    """Every item of the user's partition of the money table (wallet, rentals, invoices), one query."""
    out: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": config.settings().money_table, "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": dynamo.to_values({":pk": f"USER#{user_id}"}), "ConsistentRead": True,
    }
    while True:
        r = dynamo.client().query(**kwargs)
        out.extend(i for i in (dynamo.from_item(x) for x in r["Items"]) if i)
        if "LastEvaluatedKey" not in r:
            return out
        kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]


@pytest.fixture(scope="module")
def simulators() -> Iterator[Simulators]:
    """The provider simulators on loopback, once per module; they read `gpurent.clock`,
    which the `clock` fixture of each test points at its ManualClock."""
    s = start_simulators(now=clock_mod.now, boot_seconds=BOOT_SECONDS)
    yield s
    s.shutdown()


@pytest.mark.usefixtures("aws")
def test_metering_state_machine(simulators: Simulators) -> None:
    # One provider keeps each reconcile to one listing call; the catalog is read once (from a
    # real refresh against the simulator) and served to every launch of every example.
    adapters = build_adapters({**simulators.settings(), "PROVIDERS": "vast"})
    catalog_refresh.refresh(adapters)
    catalog.invalidate()
    listings = tuple(li for li in catalog.live_listings() if li.family in FAMILIES and li.gpu_count == 1)
    assert {li.family for li in listings} == set(FAMILIES)
    MeteringMachine.sims = simulators
    MeteringMachine.adapters = adapters
    MeteringMachine.listings = listings
    try:
        run_state_machine_as_test(MeteringMachine, settings=settings.get_profile(PROFILE))
        print(sorted(REACHED.items()))
    finally:
        registry.set_adapters(None)
        catalog.invalidate()
        simulators.reset()
