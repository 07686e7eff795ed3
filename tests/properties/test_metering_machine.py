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

Auto-topup and Stripe (the local Stripe, through the real `stripe` library): each user
has a saved card; rules switch auto-topup on and off, top up with the saved card, make
Stripe unreachable (every call fails as a network error would) or reachable again, swap the
card for one that is declined when charged or for one Stripe no longer has (a permanent
refusal), and refund or dispute a top-up at Stripe (signed events to the webhook). Timers
go through the timer function itself (metering, auto-topup, outbox). Checked besides:

- auto-topup is a state: after a normal sweep, a wallet that is due (below the threshold,
  not cooling down, nothing pending) or holds an attempt pending for over a minute has
  its auto-topup timer armed;
- a pending attempt that met a permanent refusal ends (auto-topup off, `payment_failed`,
  a `topup_failed` invoice) as soon as its timer runs while Stripe answers;
- every PaymentIntent of the user at Stripe is credited at most once, and exactly once
  when it succeeded, unless it is the attempt or top-up intent still pending;
- refunds and disputes: per charge, what the ledger reversed plus the invoices for the
  rest equals what Stripe refunded / withdrew (a won dispute gives it back, voids its
  invoice); never a negative balance;
- the under-a-minute refund is an allowance: at most three refunded short runs per user
  in any 24 hours, a short run billed only when three were refunded in the 24 hours before.

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

import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

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

from gpurent import auth, bodies, catalog, catalog_refresh, config, rentals, sweep, timers, wallet
from gpurent import clock as clock_mod
from gpurent.billing import autotopup, cards, gateway, topups
from gpurent.errors import ApiError
from gpurent.listing import Listing
from gpurent.money import charge_for_seconds, whole_seconds
from gpurent.providers import registry
from gpurent.providers.base import ProviderAdapter
from gpurent.providers.registry import build_adapters
from gpurent.records import LedgerRow, WalletItem, active_shards
from gpurent.rentals import meters
from gpurent.store import billing as billing_store
from gpurent.store import dynamo, rental_items
from gpurent.store import money as money_store
from gpurent.store import rentals as rental_store
from infra.local import template
from infra.local.client import invoke
from infra.local.events import sqs_event
from infra.local.functions import load_handler
from infra.local.stripe_local import LocalStripe, sign
from infra.simulators import Simulators, start_simulators
from tests import stripe_fixtures
from tests.conftest import create_tables
from tests.walletkit import check_invariants

# Own profile names: the wallet machine registers "ci"/"thorough" with other sizes.
settings.register_profile("metering-ci", max_examples=15, stateful_step_count=15, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("metering-medium", max_examples=120, stateful_step_count=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("metering-thorough", max_examples=600, stateful_step_count=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE = "metering-" + os.environ.get("HYPOTHESIS_PROFILE", "ci")

BOOT_SECONDS = 5.0  # simulated boot time: a tick ≥ 5 s and a reconcile make a rental running
USERS = ("A", "B")
FAMILIES = ("rtx-4090", "h100-80gb", "b300")  # ~0.3, ~2, ~5 $/h: wallets run dry within a few ticks
SWEEP_EVERY = 60.0
GOOD_CARD, DECLINES_WHEN_CHARGED = "4242424242424242", "4000000000000341"
MISSING_PM = "pm_gone_from_stripe"  # a card Stripe no longer has: a permanent refusal (404)

AUTO_STOP = st.none() | st.sampled_from([0.005, 0.01, 0.0167, 0.02, 0.5, 1.0, 2.5])
MAX_TOTAL = st.none() | st.integers(1, 600)
MONEY = st.one_of(st.sampled_from([0, 35, 250, 600, 1_200]), st.integers(0, 2_000))
TICKS = st.one_of(
    st.sampled_from([1, 5, 30, 59, 60, 61, 90, 91, 3599, 3601, 7200, 4 * 3600 + 17, 8 * 3600]),
    st.integers(1, 600),
    st.integers(600, 6 * 3600),
)


REACHED: Counter[str] = Counter()  # how the examples' rentals ended (printed with -s)



def with_wallet_meter(item: dict[str, Any], w: wallet.Wallet) -> dict[str, Any]:
    """A rental item with its meter where it is: on the wallet once metering ticked it."""
    m = w.meters.get(str(item["id"]))
    if m is None:
        return item
    return {**item, "reserveCents": m["r"], "chargedCents": m["c"], "overageCents": m["o"], "billedSeconds": m["b"],
            "meteredUntil": m["u"]}

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
    ls: LocalStripe

    def __init__(self) -> None:
        super().__init__()
        # Hypothesis seeds the global `random` for every example; the local Stripe draws its object
        # ids from it, so a second example would meet the first one's ids (409 Conflict).
        random.seed(uuid.uuid4().int)
        self.run_id = uuid.uuid4().hex[:10]
        clock = clock_mod.get_clock()
        assert isinstance(clock, clock_mod.ManualClock)
        self.clock = clock
        self.n = 0
        self.rids: dict[str, str] = {}  # rental id → user id (every rental a launch created)
        self.funded: dict[str, int] = {}  # user id → cents the test put in (credits − debits)
        self.injection: Injection | None = None
        self.next_sweep = self.clock.now() + SWEEP_EVERY
        self.real_transact = money_store.transact
        money_store.transact = self._transact
        self.real_live_listings = catalog.live_listings
        catalog.live_listings = self._live_listings
        # Fresh, empty tables per example (a copy of moto's, `tests.conftest.create_tables`):
        # no example sees another's items.
        self.names = template.default_table_names("mmetering")
        self.saved_env = {v: os.environ.get(v) for v in (*template.TABLE_ENV.values(), "METERS_ON_WALLET")}
        os.environ.update({template.TABLE_ENV[k]: v for k, v in self.names.items()})
        config.reset()
        create_tables(self.names)
        timers.clear()
        self.sims.reset()
        registry.set_adapters(self.adapters)
        self.timer_fn = load_handler(template.queue_consumers()["TimerQueue"])
        # Stripe: reachable or not (a network failure on every call), as the rules say.
        self.stripe_ok = True
        self.real_call = gateway.client.call
        gateway.client.call = self._stripe_call
        self.users = {u: str(auth.upsert_user(f"{u.lower()}-{self.run_id}@example.com")[0]["id"]) for u in USERS}
        self.refunded: dict[str, int] = {}  # charge id → what Stripe says is refunded of it (cumulative)
        self.disputes: dict[str, dict[str, Any]] = {}  # dispute id → {charge, amount, status}
        for u in USERS:
            self._save_card(u, GOOD_CARD)

    def teardown(self) -> None:
        for rid, user in self.rids.items():  # what the example reached (--hypothesis-show-statistics)
            r = meters.current(user, rid)
            if r is not None:
                overage = r.overage_cents > 0
                REACHED[f"rental {r.status} {r.stop_reason or r.error or ''} {overage=}"] += 1
        money_store.transact = self.real_transact
        gateway.client.call = self.real_call
        catalog.live_listings = self.real_live_listings
        timers.clear()
        catalog.invalidate()
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
        return self.users[user]

    def _stripe_call(self, fn: Any) -> Any:
        if not self.stripe_ok:
            raise gateway.StripeUnavailable("Stripe cannot be reached (the machine's outage)")
        return self.real_call(fn)

    def _save_card(self, u: str, card: str) -> None:
        """A card saved the way a browser saves one: SetupIntent, confirmed at Stripe, its event."""
        si = cards.setup_intent(self.uid(u))["clientSecret"].split("_secret_")[0]
        self.ls.confirm_setup_intent(si, card)
        d = self.ls.wait_for("setup_intent.succeeded", lambda o: o["id"] == si)
        body, sig = stripe_fixtures.replay_args(d)
        assert invoke("POST", "/v1/webhooks/stripe", raw=body, headers={"stripe-signature": sig}).status == 200

    def _event(self, type_: str, obj: dict[str, Any]) -> int:
        """A signed Stripe event to the webhook; its HTTP status."""
        self.n += 1
        body = json.dumps({"id": f"evt_{self.run_id}_{self.n}", "object": "event", "type": type_,
                           "created": int(time.time()), "data": {"object": obj}}).encode()
        return invoke("POST", "/v1/webhooks/stripe", raw=body,
                      headers={"stripe-signature": sign(stripe_fixtures.WEBHOOK_SECRET, body)}).status

    def payment_intents(self, user: str) -> list[dict[str, Any]]:
        """Stripe's truth: the PaymentIntents carrying this user's id (localstripe's store)."""
        from localstripe.resources import store

        out = []
        for key, pi in list(store.items()):
            meta = dict(getattr(pi, "metadata", None) or {})
            if key.startswith("payment_intent:") and meta.get("user_id") == user:
                charge = getattr(pi, "latest_charge", None)
                out.append({"id": pi.id, "status": pi.status, "amount": int(pi.amount), "metadata": meta,
                            "charge": getattr(charge, "id", None)})
        return out

    def key(self, kind: str) -> str:
        self.n += 1
        return f"{self.run_id}:{kind}:{self.n}"

    def now(self) -> float:
        return self.clock.now()

    def _fire_timers(self) -> int:
        """SQS delivers the due timers to the timer function, one message per invocation. A message
        whose invocation failed (reported back) or died comes back after the visibility timeout."""
        fired = timers.due(self.now())
        for i, t in enumerate(fired):
            try:
                out = self.timer_fn(sqs_event([t.body()]), None)
            except BaseException:
                for rest in fired[i:]:
                    timers.arm(rest.user_id, self.now() + 180, rest.rental_id, rest.kind)
                raise
            if out["batchItemFailures"]:
                timers.arm(t.user_id, self.now() + 180, t.rental_id, t.kind)
        return len(fired)

    def _armed(self, user: str, kind: str) -> bool:
        with timers._lock:
            return any(t.user_id == user and t.kind == kind for t in timers._pending)

    def _sweep_and_check(self) -> None:
        """A normal sweep, then what a completed sweep promises at this moment."""
        sweep.start()
        now = self.now()
        for u in USERS:
            user = self.uid(u)
            w = wallet.get(user)
            running = [meters.of(w, r) for r in rental_store.live_for_user(user, "running")]
            for r in running:
                assert r.running_at is not None
                assert r.metered_until == now, ("a running rental was skipped by the sweep", r)
                deadline = rentals.limit_deadline(r)
                assert deadline is None or deadline[0] > now, ("running past its limit after a sweep", r)
            assert not (w.available == 0 and any(r.reserve_cents == 0 for r in running)
                        and not w.attempt_in_window(now)), (
                "an exhausted wallet still has running pods after a sweep (no auto-topup pending)", w, running)
            if running:
                # Auto-topup is a state: whatever happened before, the sweep asked the question.
                state = w.auto_topup_state(now)
                if state == wallet.DUE or (state == wallet.PENDING and now - float(w.auto_topup_attempt_at or 0)
                                           >= wallet.AUTO_TOPUP_RESUME_AFTER):
                    assert self._armed(user, timers.AUTO_TOPUP), ("auto-topup due but no timer armed", state, w)

    # ------------------------------------------------------------ rules

    @initialize(amounts=st.tuples(*[MONEY for _ in USERS]),
                card_top_ups=st.tuples(*[st.sampled_from([0, 0, 500, 2_000]) for _ in USERS]),
                auto=st.tuples(*[st.none() | st.sampled_from([300, 1_500]) for _ in USERS]),
                pods=st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(FAMILIES), AUTO_STOP, MAX_TOTAL),
                              max_size=3))
    def fund_and_start(self, amounts: tuple[int, ...], card_top_ups: tuple[int, ...], auto: tuple[int | None, ...],
                       pods: list[tuple[str, str, float | None, int | None]]) -> None:
        """Each user's opening balance (an admin credit, and maybe a saved-card top-up, so refunds and
        disputes have a payment to reverse), maybe auto-topup on, and a few pods already running (so
        faults have work to hit)."""
        for u, amount, card, threshold in zip(USERS, amounts, card_top_ups, auto, strict=True):
            user = self.uid(u)
            self.funded[user] = 0
            if amount:
                wallet.credit(user, amount, "adjustment", self.key("fund"), {"description": "initial"})
                self.funded[user] += amount
            if card:
                self.saved_card_top_up(u, card, keyed=True)
            if threshold is not None:
                self.set_auto_topup(u, True, threshold, 1_000)
        for u, family, auto_stop, max_total in pods:
            self.launch(u, family, auto_stop, max_total, wait=True)

    @rule(u=st.sampled_from(USERS), family=st.sampled_from(FAMILIES), auto_stop=AUTO_STOP, max_total=MAX_TOTAL,
          wait=st.booleans())
    def launch(self, u: str, family: str, auto_stop: float | None, max_total: int | None, wait: bool) -> None:
        """`POST /v1/rentals`; with `wait`, the pod boots and a `GET` sees it running (as `launch --wait`)."""
        user = self.uid(u)
        body = bodies.Launch(familyId=family, gpuCount=1, autoStopAfterHours=auto_stop, maxTotalCents=max_total)
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
            r = meters.current(user, rid)
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
        before = meters.current(user, rid)
        assert before is not None
        try:
            answer = rentals.stop(user, rid)
        except ApiError as exc:
            assert exc.code == "already_stopped", exc.code
            assert before.status in ("stopping", "stopped", "failed")
            return
        assert before.status in ("provisioning", "running")
        after = meters.current(user, rid)
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

    @rule(shards=st.sets(st.integers(0, active_shards() - 1), max_size=active_shards()),
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
            sweep.hand_off = real
        if hand_off != "lost":
            for part in handed * (2 if hand_off == "twice" else 1):
                sweep.run_part(part)
        self.check()
        self._sweep_and_check()

    @rule()
    def fire_due_timers(self) -> None:
        now = self.now()
        broken = []  # attempts on a card Stripe no longer has, whose timer runs now
        for u in USERS:
            user = self.uid(u)
            item = billing_store.wallet_item(user)
            pending = wallet.Wallet.from_record(user, item).auto_topup_pending
            due = any(t.user_id == user and t.kind == timers.AUTO_TOPUP and t.due <= now for t in timers._pending)
            if pending and due and item.get("autoTopupAttemptPmId") == MISSING_PM:
                broken.append(user)
        self._fire_timers()
        for user in broken if self.stripe_ok else []:
            # A permanent refusal ends the attempt as a decline does: never pending forever.
            item = billing_store.wallet_item(user)
            assert not wallet.Wallet.from_record(user, item).auto_topup_pending, ("a refused attempt is pending", item)
            assert (item.get("autoTopup") or {}).get("disabledReason") == "payment_failed", item.get("autoTopup")
            REACHED["auto-topup refused for good"] += 1

    # ------------------------------------------------------------ auto-topup and Stripe

    @rule(u=st.sampled_from(USERS), on=st.booleans(), threshold=st.sampled_from([100, 300, 1_500]),
          amount=st.sampled_from([1_000, 2_500]))
    def set_auto_topup(self, u: str, on: bool, threshold: int, amount: int) -> None:
        body = bodies.AutoTopup(enabled=on, thresholdCents=threshold, topupAmountCents=amount)
        autotopup.put(self.uid(u), body)  # switched on below the threshold: its timer fires it

    @rule(on=st.booleans())
    def meters_on_wallet(self, on: bool) -> None:
        """The deployment switches the running rentals' meters onto their wallets, or back onto
        the rentals (docs/deploy.md): the next ticks move them, and nothing else may change."""
        os.environ["METERS_ON_WALLET"] = "1" if on else "0"
        config.reset()
        REACHED[f"meters on the wallet {on}"] += 1

    @rule(ok=st.booleans())
    def stripe_weather(self, ok: bool) -> None:
        """Stripe becomes unreachable (every call a network error) or reachable again."""
        self.stripe_ok = ok

    @rule(u=st.sampled_from(USERS), card=st.sampled_from(["good", "declines", "gone"]))
    def change_card(self, u: str, card: str) -> None:
        user = self.uid(u)
        if card == "gone":  # deleted at Stripe behind our back: every charge is refused for good (404)
            saved = dict(billing_store.wallet_item(user).get("card") or {})
            if saved:
                billing_store.update_settings(user, {"card": {**saved, "pmId": MISSING_PM}})
            return
        if self.stripe_ok:
            self._save_card(u, GOOD_CARD if card == "good" else DECLINES_WHEN_CHARGED)

    @rule(u=st.sampled_from(USERS), amount=st.integers(100, 3_000), keyed=st.booleans())
    def saved_card_top_up(self, u: str, amount: int, keyed: bool) -> None:
        """`POST /v1/billing/checkout` with the card on file (the durable intent, then Stripe)."""
        try:
            answer = topups.checkout(self.uid(u), bodies.Checkout(amountCents=amount),
                                     self.key("topup") if keyed else None)
        except ApiError as exc:
            assert exc.code in ("card_declined", "service_unavailable", "rate_limited"), (exc.code, exc.message)
            assert exc.code != "service_unavailable" or not self.stripe_ok
            return
        assert answer["status"] in ("succeeded", "processing"), answer

    def _credited_charges(self, user: str) -> list[dict[str, Any]]:
        rows = money_store.all_ledger(user)
        credited = {str(x["paymentIntentId"]) for x in rows if x.get("paymentIntentId")}
        return [p for p in self.payment_intents(user) if p["status"] == "succeeded" and p["id"] in credited
                and p["charge"]]

    @precondition(lambda self: self.stripe_ok)
    @rule(u=st.sampled_from(USERS), data=st.data(), how=st.sampled_from(["refund part", "refund all", "dispute"]))
    def reverse_a_top_up(self, u: str, data: st.DataObject, how: str) -> None:
        """Stripe refunds, or the bank disputes, one of the user's credited top-ups."""
        user = self.uid(u)
        charges = self._credited_charges(user)
        if not charges:
            return
        pi = data.draw(st.sampled_from(charges))
        charge = stripe_fixtures.stripe_get(self.ls, f"/v1/charges/{pi['charge']}")
        if how == "dispute":
            if any(d["charge"] == charge["id"] for d in self.disputes.values()):
                return
            dp = f"dp_{self.run_id}{len(self.disputes)}"
            self.disputes[dp] = {"charge": charge["id"], "amount": pi["amount"], "status": "needs_response",
                                 "user": user}
            obj = {"id": dp, "object": "dispute", "amount": pi["amount"], "charge": charge["id"],
                   "payment_intent": pi["id"], "status": "needs_response"}
            assert self._event("charge.dispute.created", obj) == 200
            return
        done = self.refunded.get(charge["id"], 0)
        target = pi["amount"] if how == "refund all" else min(pi["amount"], done + max(1, pi["amount"] // 3))
        self.refunded[charge["id"]] = max(done, target)
        obj = {**charge, "amount_refunded": target, "refunded": target >= pi["amount"]}
        assert self._event("charge.refunded", obj) == 200

    @precondition(lambda self: self.stripe_ok and any(d["status"] == "needs_response" for d in self.disputes.values()))
    @rule(data=st.data(), won=st.booleans())
    def close_a_dispute(self, data: st.DataObject, won: bool) -> None:
        dp = data.draw(st.sampled_from(sorted(k for k, d in self.disputes.items() if d["status"] == "needs_response")))
        d = self.disputes[dp]
        d["status"] = "won" if won else "lost"
        obj = {"id": dp, "object": "dispute", "amount": d["amount"], "charge": d["charge"], "status": d["status"]}
        assert self._event("charge.dispute.closed", obj) == 200

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
        memo: dict[str, list[LedgerRow]] = {}

        def all_ledger(user_id: str) -> list[LedgerRow]:  # read once per check, not twice
            if user_id not in memo:
                memo[user_id] = real_all_ledger(user_id)
            return memo[user_id]

        money_store.all_ledger = all_ledger
        try:
            self._check()
        finally:
            money_store.all_ledger = real_all_ledger

    def _check(self) -> None:
        now = self.now()
        for u in USERS:
            user = self.uid(u)
            w = check_invariants(user)  # 1, 2, 3, 4 and the ledger side of 8
            rows = money_store.all_ledger(user)
            items = user_items(user)
            mine = {i["id"]: with_wallet_meter(i, w) for i in items if str(i["sk"]).startswith("RENTAL#")}
            assert set(mine) == {rid for rid, owner in self.rids.items() if owner == user}
            charged = refunded = invoiced_usage = 0
            for r in mine.values():
                self.check_rental(r, rows, now)
                charged += int(r["chargedCents"])
                refunded += int(r["refundedCents"])
                if r["status"] != "running" and r.get("runningAt") is not None and not short_run_refunded(r):
                    invoiced_usage += int(r["overageCents"])
            self.check_short_run_allowance(list(mine.values()))
            stripe_in = self.check_stripe(user, rows, items)
            reversed_ = self.check_reversals(user, rows, items)
            # 8. nothing created or lost: what went in (the test's own credits, Stripe's payments),
            # minus charges, plus refunds, minus what Stripe took back, is the total
            assert w.total == self.funded[user] + stripe_in - charged + refunded - reversed_, (
                w, self.funded[user], stripe_in, charged, refunded, reversed_)
            # 8. usage beyond the money == the overage invoices (all open: nothing pays them here)
            invoices = [i for i in items if str(i["sk"]).startswith("INVOICE#")]
            overage = [i for i in invoices if i["reason"] == "overage"]
            assert sum(int(i["amountCents"]) for i in overage) == invoiced_usage, (overage, mine)
            assert (w.open_invoices_cents, w.open_invoice_count) == (
                sum(int(i["amountCents"]) for i in invoices if i["status"] == "open"),
                sum(1 for i in invoices if i["status"] == "open"))
            for inv in overage:
                r = mine[inv["rentalId"]]
                assert r.get("overageInvoiceId") == inv["id"]
                assert int(inv["amountCents"]) == int(r["overageCents"]) > 0

    def check_short_run_allowance(self, mine: list[dict[str, Any]]) -> None:
        """At most three refunded short runs in any 24 hours; one is billed only when three were
        refunded in the 24 hours before it (a provider's crash, or a run too short to cost a cent,
        is not counted)."""
        short = sorted((r for r in mine if r["status"] != "running" and r.get("runningAt") is not None
                        and float(r["meteredUntil"]) - float(r["runningAt"]) < rentals.REFUND_WINDOW
                        and r.get("stopReason") != "provider_failure"
                        and charge_for_seconds(int(r["billedSeconds"]), int(r["pricePerHourCents"])) > 0),
                       key=lambda r: float(r["stoppedAt"]))
        log: list[float] = []
        for r in short:
            at = float(r["stoppedAt"])
            recent = [t for t in log if t > at - rentals.SHORT_RUN_PERIOD]
            want = len(recent) < rentals.SHORT_RUN_ALLOWANCE
            assert short_run_refunded(r) == want, ("short-run allowance", want, recent, r)
            if want:
                log.append(at)
                REACHED["short run refunded"] += 1
            else:
                REACHED["short run billed (allowance spent)"] += 1

    def check_stripe(self, user: str, rows: list[LedgerRow], items: list[dict[str, Any]]) -> int:
        """Every PaymentIntent at Stripe credited at most once; exactly once when it succeeded, unless
        it is the attempt (or top-up intent) still pending. Returns what Stripe's payments credited."""
        credited: Counter[str] = Counter(str(x["paymentIntentId"]) for x in rows if x.get("paymentIntentId")
                                         and x["type"] in ("stripe_topup", "auto_topup"))
        wallet_item = cast(WalletItem, next((i for i in items if i["sk"] == "WALLET"), {}))  # the item as stored
        pending_attempt = (wallet_item.get("autoTopupAttempt")
                           if wallet.Wallet.from_record(user, wallet_item).auto_topup_pending else None)
        pending_intents = {i.get("intentId") for i in items if str(i["sk"]).startswith("TOPUP#")
                           and i.get("status") == "pending"}
        for pi in self.payment_intents(user):
            n = credited.pop(pi["id"], 0)
            assert n <= 1, ("a payment credited twice", pi, n)
            if pi["status"] == "succeeded" and n == 0:
                assert pi["metadata"].get("attempt") == pending_attempt or (
                    pi["metadata"].get("intent") in pending_intents), ("a succeeded payment never credited", pi)
            if pi["status"] != "succeeded":
                assert n == 0, ("a failed payment credited", pi)
            if n:
                REACHED[f"stripe {pi['metadata'].get('kind')} credited"] += 1
        assert not credited, ("credits for payments Stripe does not have", credited)
        paid_invoices = sum(int(x["amountCents"]) for x in rows if x.get("invoiceId") and x["type"] == "stripe_topup")
        assert paid_invoices == 0  # nothing pays an invoice here
        return sum(int(x["amountCents"]) for x in rows if x.get("paymentIntentId")
                   and x["type"] in ("stripe_topup", "auto_topup"))

    def check_reversals(self, user: str, rows: list[LedgerRow], items: list[dict[str, Any]]) -> int:
        """What Stripe took back (refunds, disputes not won) = what the ledger took + the invoices for
        the rest; never more. Returns what the ledger took back (net of disputes won)."""
        invoices = {i["id"]: i for i in items if str(i["sk"]).startswith("INVOICE#") and i["reason"] == "manual"}

        def taken(types: tuple[str, ...], charge: str) -> int:
            return -sum(int(x["amountCents"]) for x in rows if x["type"] in types and x.get("stripeChargeId") == charge)

        def invoiced(what: str, charge: str) -> int:
            return sum(int(i["amountCents"]) for i in invoices.values() if charge in i["lineItems"][0]["description"]
                       and what in i["lineItems"][0]["description"] and i["status"] != "void")

        mine = {p["charge"] for p in self.payment_intents(user)}
        for charge, target in self.refunded.items():
            if charge in mine:
                assert taken(("topup_refund",), charge) + invoiced("refunded", charge) == target, (
                    "refund reversal", charge, target)
                REACHED["top-up refunded at Stripe"] += 1
        for dp, d in self.disputes.items():
            if d["user"] != user:
                continue
            net = taken(("dispute", "dispute_won"), d["charge"])
            if d["status"] == "won":
                assert net == 0 and invoiced("disputed", d["charge"]) == 0, ("won dispute not restored", dp, net)
            else:
                assert net + invoiced("disputed", d["charge"]) == d["amount"], ("dispute reversal", dp, net)
            REACHED[f"dispute {d['status']}"] += 1
        return -sum(int(x["amountCents"]) for x in rows if x["type"] in ("topup_refund", "dispute", "dispute_won"))

    def check_rental(self, r: dict[str, Any], rows: list[LedgerRow], now: float) -> None:
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
        typed = rental_items.rental_from_item(r)  # the stored row, as the domain reads it
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
            expected_refund = int(r["chargedCents"]) if short_run_refunded(r) else 0
            assert int(r["refundedCents"]) == expected_refund, ("refund rule", r)


def short_run_refunded(r: dict[str, Any]) -> bool:
    """A settled rental that ran under a minute and was refunded in full (the allowance allowed it)."""
    if r.get("runningAt") is None or float(r["meteredUntil"]) - float(r["runningAt"]) >= rentals.REFUND_WINDOW:
        return False
    return bool((r.get("shortRunRefund") or {}).get("refunded", True))


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
def test_metering_state_machine(simulators: Simulators, local_stripe: LocalStripe) -> None:
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
    MeteringMachine.ls = local_stripe
    try:
        run_state_machine_as_test(MeteringMachine, settings=settings.get_profile(PROFILE))
        print(sorted(REACHED.items()))
    finally:
        registry.set_adapters(None)
        catalog.invalidate()
        simulators.reset()
