"""Every money path, killed at every I/O call (before it, and after it with its answer
lost), then recovered the way production recovers, then checked (issue #10).

For each path: a fresh world (new tables, simulators and local Stripe reset) is built
and the path's setup run in it once, and that world is kept as a snapshot (`world.py`:
the tables' items, the simulators, the local Stripe, the timers, the clock); every run
starts from a restored copy of it. One uncrashed run counts the path's calls (N, never
hard-coded: a new I/O call is enumerated automatically); then for k = 1…N and mode ∈
{before, after} the world is restored, the path runs with the crash armed at call k, and
production's recovery follows:

- the client retries the same request with the same `Idempotency-Key` (launch, top-up)
  or simply again (stop);
- Stripe redelivers the event (and delivers the other events of the same payment);
- SQS redelivers a timer message whose Lambda died;
- the schedule runs on (the metering sweep and the reconciler every minute, due timers
  at their second: `infra.local.scheduler.LocalScheduler`), the clock moving past the
  launch lease, the adopt grace and the auto-topup cooldown where the path waits on them
  (`LONG`: the longest of the three plus one tick).

A crash point whose act leaves exactly the world (`world.digest`) of an earlier run of the
same path that recovered and passed its checks is that world: it counts as recovered
without running the recovery again ("same world" in the table; ~2/3 of the points: a
crash after call k and one before call k+1 of the same invocation, or before two
successive reads, leave the same world). Every point still runs its act, and the crash
still has to fire at its call.

Then: invariants 1-4 and 8 (`check_invariants`) for every user; invariant 5 per rental
(charges = the formula of its billed seconds, never more seconds than it ran, the ledger
rows agree); invariant 7 (no instance with our label outlives its rental, at most one
instance per rental, no stopped rental whose instance runs); no rental left
`provisioning`/`stopping`; each Stripe payment credited exactly once (ledger rows per
paymentIntentId; invoice credits per invoice); the balance's open-invoice counters equal
the open invoices; overage settled equals the overage invoices; plus each path's own
promise (the launch ends running, the stop ends stopped, …).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest

from gpurent import catalog, catalog_refresh, config, notify, reconciler, rentals, timers, wallet
from gpurent import clock as clock_mod
from gpurent.billing import autotopup, invoices
from gpurent.listing import Listing
from gpurent.money import charge_for_seconds, whole_seconds
from gpurent.providers import registry
from gpurent.providers.registry import build_adapters
from gpurent.records import Rental
from gpurent.rentals import ADOPT_GRACE, ALLOCATION_LEASE, instances, meters
from gpurent.store import dynamo
from gpurent.store import invoices as invoice_store
from gpurent.store import money as money_store
from gpurent.store import rentals as rental_store
from infra.local import template
from infra.local.client import invoke
from infra.local.events import schedule_event, sqs_event
from infra.local.functions import load_handler
from infra.local.scheduler import LocalScheduler
from infra.local.stripe_local import Delivery, LocalStripe, sign
from infra.simulators import Simulators
from tests import stripe_fixtures
from tests.conftest import TEST_ENV, Api, reset_clients, table_env
from tests.crashpoints import RESULTS, PathResult
from tests.crashpoints.conftest import BOOT_SECONDS
from tests.crashpoints.harness import HARNESS, MODES, Crash, install_dynamo, with_occurrence
from tests.crashpoints.world import SeededRandomness, World, digest
from tests.walletkit import check_invariants

# A path runs dozens of crash points, each with minutes of simulated schedule: on a loaded machine
# that takes longer than the suite's default per-test timeout.
pytestmark = pytest.mark.timeout(1800)

TRANSITIONAL = ("provisioning", "stopping")
DECLINES_WHEN_CHARGED = "4000000000000341"
FUNDS = 100_000
TOPUP = 5000
TICK = 60.0  # the metering sweep's and the reconciler's rate (template.yaml: rate(1 minute))
# Seconds of schedule after a crash whose recovery waits on time: the longest of the launch
# lease, the adopt grace and the auto-topup cooldown, plus one tick (the pass that acts on it).
# Counted from the crash (the schedule's first pass runs at once), so the pass at LONG is
# the first that every one of them is past.
LONG = max(ALLOCATION_LEASE, ADOPT_GRACE, autotopup.COOLDOWN) + TICK


# ---------------------------------------------------------------- the world of one run

@dataclass
class Ctx:
    clock: clock_mod.ManualClock
    sims: Simulators
    ls: LocalStripe
    monkeypatch: pytest.MonkeyPatch
    adapters: dict[str, Any] = field(default_factory=dict)
    users: list[str] = field(default_factory=list)
    customers: dict[str, str] = field(default_factory=dict)  # user id → Stripe customer (once known)
    run_no: int = 0
    table_names: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # seconds spent per phase (setup, restore, act, …)
    randomness: SeededRandomness | None = None  # reseeded at each restore: runs alike leave worlds alike
    recovered: set[str] = field(default_factory=set)  # digests of the worlds after act already recovered

    # ------------------------------------------------------------ reset

    def fresh(self, providers: str) -> None:
        """New tables, simulators and local Stripe reset, clocks moved on: nothing of the
        previous run is visible."""
        self.run_no += 1
        self.clock.advance(7200)
        names = template.default_table_names(f"c{uuid.uuid4().hex[:10]}")
        self.table_names = list(names.values())
        # One reconcile move at a time: the calls of a run come in the same order every time.
        for k, v in {**TEST_ENV, **table_env(names), "RECONCILE_CONCURRENCY": "1"}.items():
            self.monkeypatch.setenv(k, v)
        reset_clients()
        client = dynamo.client()
        template.create_tables(client, names)
        install_dynamo(client)
        timers.clear()
        reconciler.pending()  # hand-offs of the previous run are gone with it
        notify.clear_mailbox()
        catalog.invalidate()
        self.sims.reset()
        self.ls.reset()
        self.ls.clear_deliveries()
        # No path here makes a simulator hang, so the providers' read timeout only has to outlast
        # a loaded machine: at 0.1 s, a slow loopback answer became a timeout now and then, and
        # the crashed run took another path than the baseline ("the run diverged").
        settings = {**self.sims.settings(), "PROVIDER_READ_TIMEOUT_SECONDS": "10"}
        settings["PROVIDERS"] = providers
        self.settings = settings
        self.adapters = build_adapters(settings)
        registry.set_adapters(self.adapters)
        catalog_refresh.refresh(self.adapters)
        self.users, self.customers = [], {}

    def digest(self, st: dict[str, Any]) -> str | None:
        """The world as a run's act left it (`world.digest`)."""
        return digest(self.clock, self.table_names, self.sims, self.ls,
                      {"st": st, "users": self.users, "customers": self.customers})

    def snapshot(self, st: dict[str, Any]) -> World:
        """The world as it is now (right after a path's setup), with the path's state."""
        return World.take(self.clock, self.table_names, self.sims, self.ls,
                          {"st": st, "users": self.users, "customers": self.customers})

    def restore(self, world: World) -> dict[str, Any]:
        """Back to `world` (same tables, simulators, Stripe, timers, clock); returns a copy of
        the path's state."""
        self.run_no += 1
        reconciler.pending()  # a hand-off of another run never reaches this one
        extra, self.adapters = world.restore(self.clock, self.sims, self.ls, self.settings)
        if self.randomness is not None:
            self.randomness.reseed()
        self.users, self.customers = extra["users"], extra["customers"]
        return dict(extra["st"])

    # ------------------------------------------------------------ people and money

    def sign_in(self, email: str) -> tuple[Api, str]:
        """A user with a session (the e-mail code flow has its own tests; here it would only cost time)."""
        from gpurent import auth

        user, _ = auth.upsert_user(email)
        sid, _ = auth.create_session(str(user["id"]))
        api = Api(source_ip=f"198.51.100.{10 + len(self.users)}")
        api.cookies["sid"] = sid
        self.users.append(str(user["id"]))
        return api, str(user["id"])

    @staticmethod
    def fund(user_id: str, cents: int) -> None:
        wallet.credit(user_id, cents, "adjustment", f"fund:{uuid.uuid4().hex}", {"description": "test funding"})

    def running(self, api: Api, body: dict[str, Any]) -> str:
        r = api.post("/v1/rentals", body)
        assert r.status == 200, r.body
        rid = str(r.json()["id"])
        self.clock.advance(BOOT_SECONDS + 1)
        got = api.get(f"/v1/rentals/{rid}").json()
        assert got["status"] == "running", got
        return rid

    def add_card(self, api: Api, card: str = "4242424242424242") -> None:
        r = api.post("/v1/billing/setup-intent")
        assert r.status == 200, r.body
        si_id = r.json()["clientSecret"].split("_secret_")[0]
        self.ls.confirm_setup_intent(si_id, card)
        d = self.ls.wait_for("setup_intent.succeeded", lambda o: o["id"] == si_id)
        assert deliver(d).status == 200

    # ------------------------------------------------------------ production's recovery

    def schedule(self, seconds: float = 130.0, catalog: bool = False) -> None:
        """The schedule runs on for `seconds`: sweep and reconcile every minute, due timers at
        their second. With `catalog`, the catalog is refreshed first and every 150 s (it is
        every minute in production; only a launch reads it, and reading it is moto's slowest
        answer)."""
        if catalog:
            catalog_refresh.refresh(self.adapters)
        sched = LocalScheduler(self.clock, only=("MeteringSweepFunction", "ReconcileFunction"))
        done = 0.0
        while done < seconds:
            step = min(150.0, seconds - done)
            sched.advance(step)
            done += step
            if catalog:
                catalog_refresh.refresh(self.adapters)

    def stripe_events(self, wait_for_payments: bool = True) -> None:
        """Stripe delivers (again) every event of this run's users, after waiting for the
        `payment_intent.succeeded` of each succeeded top-up payment (localstripe sends its
        own events about a second late)."""
        if wait_for_payments:
            for pi in self.payment_intents():
                if pi["status"] == "succeeded" and pi["metadata"].get("user_id"):
                    def succeeded(o: dict[str, Any], i: str = pi["id"]) -> bool:
                        return bool(o["id"] == i)

                    self.ls.wait_for("payment_intent.succeeded", succeeded, timeout=5)
        for d in self.ls.deliveries():
            if self.mine(d.object):
                for _ in range(3):  # a 500 is retried by Stripe
                    if deliver(d).status < 300:
                        break

    def mine(self, obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if meta.get("user_id") in self.users:
            return True
        return bool(obj.get("customer")) and obj.get("customer") in self.known_customers()

    def known_customers(self) -> set[str]:
        from gpurent.store import billing as billing_store

        out = set()
        for uid in self.users:
            cus = billing_store.wallet_item(uid).get("stripeCustomerId")
            if cus:
                out.add(str(cus))
        return out | set(self.customers.values())

    def payment_intents(self) -> list[dict[str, Any]]:
        """Stripe's truth: every PaymentIntent of this run's users (localstripe's store)."""
        from localstripe.resources import store

        customers = self.known_customers()
        out = []
        for key, pi in list(store.items()):
            if not key.startswith("payment_intent:"):
                continue
            meta = dict(getattr(pi, "metadata", None) or {})
            cus = getattr(pi, "customer", None)
            if meta.get("user_id") in self.users or (cus and cus in customers):
                out.append({"id": pi.id, "status": pi.status, "amount": int(pi.amount), "metadata": meta,
                            "customer": cus})
        return out


def deliver(d: Any) -> Any:
    body, sig = stripe_fixtures.replay_args(d)
    return invoke("POST", "/v1/webhooks/stripe", raw=body, headers={"stripe-signature": sig})


def fire_timer(user_id: str, rental_id: str = "") -> dict[str, Any]:
    handler = load_handler(template.queue_consumers()["TimerQueue"])
    body: dict[str, Any] = {"userId": user_id, "due": clock_mod.now()}
    if rental_id:
        body["rentalId"] = rental_id
    return dict(handler(sqs_event([body]), None))


def deliver_due_timers(st: dict[str, Any]) -> None:
    """SQS delivers the timers due now to the timer function, one message per invocation. A
    message is in flight from its delivery until its invocation returns: if the invocation dies,
    `redeliver` puts it back (the visibility timeout runs out and SQS delivers it again)."""
    handler = load_handler(template.queue_consumers()["TimerQueue"])
    for _ in range(20):
        due = timers.due(clock_mod.now())
        if not due:
            return
        for t in due:
            st.setdefault("inflight", []).append(t)
            handler(sqs_event([t.body()]), None)
            st["inflight"].remove(t)


def redeliver(st: dict[str, Any]) -> None:
    for t in st.pop("inflight", []):
        timers.arm(t.user_id, t.due, t.rental_id, t.kind)


def scheduled(name: str) -> Any:
    code_uri = {n: c for n, c, _ in template.schedules()}[name]
    return load_handler(code_uri)(schedule_event(f"arn:aws:events:us-east-1:123456789012:rule/{name}"), None)


# ---------------------------------------------------------------- the checks

def rentals_of(user_id: str) -> list[Rental]:
    rows, _ = rental_store.list_for_user(user_id, None, 200, None)
    w = wallet.get(user_id)
    return [meters.of(w, r) for r in rows]  # a running rental's meter, once ticked, is on the wallet


def all_invoices(user_id: str) -> list[dict[str, Any]]:
    """The user's invoices as their stored attributes (the checks below read them so)."""
    rows, _ = invoice_store.list_for_user(user_id, None, 200, invoices.STATUSES)
    return [invoice_store.invoice_item(i) for i in rows]


def check_world(ctx: Ctx) -> list[str]:
    """What must hold after recovery, whatever the path; returns the problems found."""
    problems: list[str] = []
    now = clock_mod.now()

    def expect(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    ledgers = {}
    for uid in ctx.users:
        try:
            check_invariants(uid)
        except AssertionError as exc:
            problems.append(f"invariants 1-4/8 of {uid}: {str(exc)[:300]}")
        ledgers[uid] = money_store.all_ledger(uid)
    # rentals: invariant 5, no transitional state, invariant 7
    by_id: dict[str, Rental] = {}
    for uid in ctx.users:
        rows = ledgers[uid]
        for r in rentals_of(uid):
            by_id[str(r.id)] = r
            rid = r.id
            expect(r.status not in TRANSITIONAL, f"rental {rid} left {r.status}")
            if r.running_at is not None:
                seconds, rate = int(r.billed_seconds), int(r.price_per_hour_cents)
                paid, refunded = int(r.charged_cents), int(r.refunded_cents)
                net = paid + int(r.overage_cents) - refunded  # what the rental costs the user
                short_refunded = r.short_run_refund["refunded"] if r.short_run_refund else True  # a crash: always
                if r.status != "running" and seconds < rentals.REFUND_WINDOW and short_refunded:
                    expect(paid == refunded, f"rental {rid}: ran {seconds} s < 60 s, paid {paid}, refunded {refunded}")
                else:
                    expect(net == charge_for_seconds(seconds, rate),
                           f"rental {rid}: costs {net} != formula of {seconds} s at {rate}")
                end = float(r.stopped_at) if r.stopped_at else now
                expect(seconds <= whole_seconds(end - float(r.running_at)),
                       f"rental {rid}: billed {seconds} s beyond its running time")
            charged = -sum(int(x["amountCents"]) for x in rows if x.get("rentalId") == rid
                           and x["type"] == "rental_charge")
            refunded = sum(int(x["amountCents"]) for x in rows if x.get("rentalId") == rid and x["type"] == "refund")
            expect(charged == int(r.charged_cents),
                   f"rental {rid}: ledger charges {charged} != chargedCents {r.charged_cents}")
            expect(refunded == int(r.refunded_cents),
                   f"rental {rid}: ledger refunds {refunded} != refundedCents {r.refunded_cents}")
    # instances at the providers
    alive: dict[str, list[str]] = {}
    for sim in ctx.sims.all():
        for inst in sim.snapshot():
            label = str(inst["label"] or "")
            if not label.startswith("rent_") or inst["status"] == "terminated":
                continue
            alive.setdefault(label, []).append(f"{sim.code}:{inst['id']}")
            owner = rental_store.find_by_id(label)
            expect(owner is not None and owner.status == "running",
                   f"instance {sim.code}:{inst['id']} ({inst['status']}) outlives rental {label} "
                   f"({owner and owner.status})")
            if owner is not None and owner.status == "running":
                expect(str(owner.instance_id) == str(inst["id"]),
                       f"instance {sim.code}:{inst['id']} is not rental {label}'s ({owner.instance_id})")
    for label, found in alive.items():
        expect(len(found) <= 1, f"rental {label} has {len(found)} live instances: {found}")
    # Stripe: each payment credited exactly once
    pis = ctx.payment_intents()
    credited: dict[str, int] = {}
    for uid in ctx.users:
        for x in ledgers[uid]:
            if x.get("paymentIntentId") and x["type"] in ("stripe_topup", "auto_topup"):  # not its reversals
                credited[str(x["paymentIntentId"])] = credited.get(str(x["paymentIntentId"]), 0) + 1
    for pi in pis:
        want = 1 if pi["status"] == "succeeded" and pi["metadata"].get("user_id") else 0
        n = credited.pop(pi["id"], 0)
        expect(n == want, f"payment {pi['id']} ({pi['status']}, {pi['amount']}): credited {n} times, want {want}")
    expect(not credited, f"credits for payments Stripe does not know as ours: {credited}")
    # invoices: counters, Stripe's status mirrored, credits once, overage = usage beyond the money
    for uid in ctx.users:
        invs = all_invoices(uid)
        w = wallet.get(uid)
        open_ = [i for i in invs if i["status"] == "open"]
        expect((w.open_invoices_cents, w.open_invoice_count) == (sum(int(i["amountCents"]) for i in open_),
                                                                 len(open_)),
               f"{uid}: counters {(w.open_invoices_cents, w.open_invoice_count)} != open invoices "
               f"{[(i['id'], i['amountCents']) for i in open_]}")
        for inv in invs:
            n = sum(1 for x in ledgers[uid] if x.get("invoiceId") == inv["id"])
            want = 1 if inv["status"] == "paid" and inv["reason"] == "topup_failed" else 0
            expect(n == want, f"invoice {inv['id']} ({inv['reason']}, {inv['status']}) credited {n} times")
            if inv.get("stripeInvoiceId"):
                remote = stripe_fixtures.stripe_get(ctx.ls, f"/v1/invoices/{inv['stripeInvoiceId']}")
                if remote.get("status") == "paid":
                    expect(inv["status"] == "paid", f"invoice {inv['id']} paid at Stripe, {inv['status']} here")
        settled = [r for r in rentals_of(uid) if r.status in ("stopped", "failed")
                   and not int(r.refunded_cents)]
        overage = sum(int(r.overage_cents) for r in settled)
        invoiced = sum(int(i["amountCents"]) for i in invs if i["reason"] == "overage" and i["status"] in
                       ("open", "paid"))
        expect(overage == invoiced, f"{uid}: overage {overage} != overage invoices {invoiced}")
    # side effects owed after money moved (emails, Stripe mirrors): every one was done
    from gpurent.store import outbox as outbox_store

    for uid in ctx.users:
        left = [(i["kind"], i.get("attempts")) for i in outbox_store.for_user(uid)]
        expect(not left, f"{uid}: side effects never done: {left}")
    return problems


# ---------------------------------------------------------------- the paths

@dataclass
class Path:
    name: str
    setup: Callable[[Ctx], dict[str, Any]]
    act: Callable[[Ctx, dict[str, Any]], Any]
    recover: Callable[[Ctx, dict[str, Any]], None]
    check: Callable[[Ctx, dict[str, Any]], list[str]] = lambda ctx, st: []
    providers: str = "lambda"  # one provider's catalog keeps moto's answers small (runpod lists 163 offers)


def _retry(call: Callable[[], Any], tries: int = 3) -> Any:
    """A client retrying its request until it gets an answer that is not a server error."""
    reply = None
    for _ in range(tries):
        reply = call()
        if reply.status < 500:
            return reply
    return reply


# -- launch, with a failover: the cheapest listing (Lambda, tied with others) has no capacity

def _tied(ctx: Ctx) -> list[Listing]:
    found = catalog.candidates("rtx-4090", 1, None)
    tied = [c for c in found if c.price_per_hour_cents == found[0].price_per_hour_cents]
    assert len(tied) >= 3 and {c.provider for c in tied} == {"lambda"}, found
    return tied


def launch_setup(ctx: Ctx, refuse_all: bool = False) -> dict[str, Any]:
    api, uid = ctx.sign_in("alice@example.com")
    ctx.fund(uid, FUNDS)
    tied = _tied(ctx)
    if refuse_all:
        ctx.sims.lambdacloud.set_knobs(allocate="capacity")
    else:  # the first listing's region ran out since the refresh: a capacity refusal, then failover
        ctx.sims.lambdacloud.capacity["gpu_1x_rtx4090"].remove(str(tied[0].offer_key).split("|", 1)[1])
    return {"api": api, "uid": uid, "key": f"launch-{uuid.uuid4().hex[:8]}", "price": tied[0].price_per_hour_cents,
            "tied": [t.id for t in tied]}


def launch_act(ctx: Ctx, st: dict[str, Any]) -> Any:
    return st["api"].post("/v1/rentals", {"familyId": "rtx-4090", "gpuCount": 1},
                          headers={"Idempotency-Key": st["key"]})


def launch_recover(ctx: Ctx, st: dict[str, Any]) -> None:
    st["reply"] = _retry(lambda: launch_act(ctx, st))
    ctx.schedule(LONG, catalog=True)  # past the launch lease and the adopt grace


def launch_check(ctx: Ctx, st: dict[str, Any], want: str) -> list[str]:
    out = []
    reply = st["reply"]
    rows = rentals_of(st["uid"])
    if reply.status not in (200, 400):
        out.append(f"the retried launch answered {reply.status}: {reply.body[:200]}")
    if len(rows) != 1:
        out.append(f"{len(rows)} rentals for one launch: {[(r.id, r.status) for r in rows]}")
    for r in rows:
        if r.status != want:
            out.append(f"rental {r.id} ended {r.status} ({r.error}), want {want}")
        if int(r.price_per_hour_cents) != int(st["price"]):
            out.append(f"rental {r.id} at {r.price_per_hour_cents}, quoted {st['price']}")
    return out


# -- stops

def stop_setup(ctx: Ctx, **launch: Any) -> dict[str, Any]:
    api, uid = ctx.sign_in("alice@example.com")
    ctx.fund(uid, FUNDS)
    rid = ctx.running(api, {"familyId": "h100-80gb", "gpuCount": 1, **launch})
    return {"api": api, "uid": uid, "rid": rid}


def user_stop_setup(ctx: Ctx) -> dict[str, Any]:
    st = stop_setup(ctx)
    ctx.clock.advance(125)
    return st


def user_stop_act(ctx: Ctx, st: dict[str, Any]) -> Any:
    return st["api"].post(f"/v1/rentals/{st['rid']}/stop")


def user_stop_recover(ctx: Ctx, st: dict[str, Any]) -> None:
    st["reply"] = _retry(lambda: user_stop_act(ctx, st))
    ctx.schedule()


def stopped_check(st: dict[str, Any], reason: str) -> list[str]:
    r = rental_store.get(st["uid"], st["rid"])
    assert r is not None
    out = []
    if r.status != "stopped" or r.stop_reason != reason:
        out.append(f"rental {st['rid']} ended {r.status} ({r.stop_reason}), want stopped ({reason})")
    return out


def user_stop_check(ctx: Ctx, st: dict[str, Any]) -> list[str]:
    out = stopped_check(st, "user")
    if st["reply"].status not in (200, 409):
        out.append(f"the retried stop answered {st['reply'].status}: {st['reply'].body[:200]}")
    return out


AUTO_STOP_HOURS = 0.05  # 180 s


def timed_setup(ctx: Ctx) -> dict[str, Any]:
    st = stop_setup(ctx, autoStopAfterHours=AUTO_STOP_HOURS)
    ctx.clock.advance(AUTO_STOP_HOURS * 3600 + 2)
    return st


def timed_act(ctx: Ctx, st: dict[str, Any]) -> Any:
    return fire_timer(st["uid"])  # the wallet's timer, due at the limit


def timed_recover(ctx: Ctx, st: dict[str, Any]) -> None:
    fire_timer(st["uid"])  # the Lambda died: SQS redelivers the message
    ctx.schedule()


def timed_check(ctx: Ctx, st: dict[str, Any]) -> list[str]:
    out = stopped_check(st, "auto_stop")
    r = rental_store.get(st["uid"], st["rid"])
    assert r is not None
    if int(r.billed_seconds) != whole_seconds(AUTO_STOP_HOURS * 3600):
        out.append(f"billed {r.billed_seconds} s, the limit is {whole_seconds(AUTO_STOP_HOURS * 3600)} s")
    return out




def empty_setup(ctx: Ctx) -> dict[str, Any]:
    api, uid = ctx.sign_in("alice@example.com")
    price = catalog.candidates("h100-80gb", 1, None)[0].price_per_hour_cents
    ctx.fund(uid, price + 10)  # an hour of reserve and 10 cents
    rid = ctx.running(api, {"familyId": "h100-80gb", "gpuCount": 1})
    ctx.clock.advance(70 * 60)  # the money ran out after ~63 minutes
    return {"api": api, "uid": uid, "rid": rid}


def sweep_act(ctx: Ctx, st: dict[str, Any]) -> Any:
    return scheduled("MeteringSweepFunction")


def schedule_recover(ctx: Ctx, st: dict[str, Any]) -> None:
    ctx.schedule()


def health_grace_recover(ctx: Ctx, st: dict[str, Any]) -> None:
    """Long enough for a crashed pod to be declared failed: a running pod is degraded until
    `HEALTH_BAD_CHECKS` bad checks spanning `HEALTH_GRACE_SECONDS` (one reconcile a minute)."""
    from gpurent.rentals import lifecycle

    ctx.schedule(130.0 + lifecycle.HEALTH_GRACE_SECONDS + 60.0)


def empty_check(ctx: Ctx, st: dict[str, Any]) -> list[str]:
    out = stopped_check(st, "insufficient_balance")
    w = wallet.get(st["uid"])
    if (w.available, w.reserved) != (0, 0):
        out.append(f"wallet after the empty-wallet stop: {w}")
    return out


# -- the metering sweep over three wallets

def sweep3_setup(ctx: Ctx) -> dict[str, Any]:
    users = []
    for i, family in enumerate(("h100-80gb", "rtx-4090", "a100-80gb")):
        api, uid = ctx.sign_in(f"user{i}@example.com")
        ctx.fund(uid, FUNDS)
        users.append((uid, ctx.running(api, {"familyId": family, "gpuCount": 1})))
    ctx.clock.advance(300)
    return {"users": users}


def sweep3_check(ctx: Ctx, st: dict[str, Any]) -> list[str]:
    out = []
    for uid, rid in st["users"]:
        r = meters.current(uid, rid)
        assert r is not None
        if r.status != "running":
            out.append(f"rental {rid} of {uid} is {r.status}, want running")
        elif clock_mod.now() - float(r.metered_until or 0) > 120:
            out.append(f"rental {rid} not metered since {r.metered_until}")
    return out


def fanout_act(ctx: Ctx, st: dict[str, Any]) -> Any:
    """The fanned-out sweep's workers with time for one wallet among them all: the first
    wallet is metered, every other worker runs out of time and its hand-off is lost (the next
    minute's parts cover those wallets)."""
    from gpurent import sweep
    from gpurent.records import active_shards

    started = {"n": 0}

    def time_left() -> float:
        started["n"] += 1
        return 60.0 if started["n"] == 1 else 0.0

    real = sweep.hand_off
    sweep.hand_off = lambda part: None
    try:
        for n in range(active_shards()):
            sweep.run_part(sweep.Part(n, clock_mod.now()), time_left)
    finally:
        sweep.hand_off = real


# -- a reconcile pass with work of every kind

def reconcile_setup(ctx: Ctx) -> dict[str, Any]:
    api, uid = ctx.sign_in("alice@example.com")
    ctx.fund(uid, FUNDS)
    healthy = ctx.running(api, {"familyId": "h100-80gb", "gpuCount": 1})
    crashed = ctx.running(api, {"familyId": "rtx-4090", "gpuCount": 1})
    stopping = ctx.running(api, {"familyId": "a100-80gb", "gpuCount": 1})
    ctx.clock.advance(90)
    r = api.post(f"/v1/rentals/{stopping}/stop")
    assert r.status == 200, r.body
    r = api.post("/v1/rentals", {"familyId": "h100-80gb", "gpuCount": 1})
    assert r.status == 200, r.body
    booting = str(r.json()["id"])
    row = rental_store.get(uid, crashed)
    assert row is not None
    for sim in ctx.sims.all():
        sim.crash(str(row.instance_id))
    # An orphan: an instance under a rental id we never recorded (a launch that died).
    from gpurent.providers.base import AllocateRequest
    from gpurent.templates import DEFAULT_TEMPLATE, get_template

    offer = catalog.candidates("rtx-4090", 1, None)[0]
    template_ = get_template(DEFAULT_TEMPLATE)
    assert template_ is not None
    orphan = f"rent_{uuid.uuid4().hex[:26].upper()}"
    instances.run(ctx.adapters[offer.provider].allocate(AllocateRequest(
        rental_id=orphan, offer=offer.to_offer(), image=template_.image,
        start_command=template_.start_command, ssh_public_keys=())))
    timers.clear()  # the stop's follow-up timer is lost: the reconciler finishes it
    ctx.clock.advance(BOOT_SECONDS + 1)
    return {"uid": uid, "healthy": healthy, "crashed": crashed, "stopping": stopping, "booting": booting}


def reconcile_act(ctx: Ctx, st: dict[str, Any]) -> Any:
    """The coordinator, then its hand-offs delivered to the worker function (the reconcile
    queue's mapping, one message at a time): a crash anywhere kills the rest of the pass."""
    handed = scheduled("ReconcileFunction")
    worker = load_handler(template.queue_consumers()["ReconcileQueue"])
    for body in reconciler.pending():
        worker(sqs_event([body]), None)
    return handed


def reconcile_check(ctx: Ctx, st: dict[str, Any]) -> list[str]:
    want = {"healthy": "running", "booting": "running", "crashed": "failed", "stopping": "stopped"}
    out = []
    for k, status in want.items():
        r = rental_store.get(st["uid"], st[k])
        assert r is not None
        if r.status != status:
            out.append(f"{k} rental {st[k]} is {r.status}, want {status}")
    return out


# -- Stripe: Checkout webhook, saved card, auto-topup, invoice

def checkout_setup(ctx: Ctx) -> dict[str, Any]:
    api, uid = ctx.sign_in("alice@example.com")
    r = api.post("/v1/billing/checkout", {"amountCents": TOPUP})
    assert r.status == 200, r.body
    ctx.ls.complete_checkout(r.json()["sessionId"], "4242424242424242", save_card=True)
    d = ctx.ls.wait_for("checkout.session.completed", lambda o: o["id"] == r.json()["sessionId"])
    return {"api": api, "uid": uid, "delivery": d}


def webhook_act(ctx: Ctx, st: dict[str, Any]) -> Any:
    return deliver(st["delivery"])


def webhook_recover(ctx: Ctx, st: dict[str, Any]) -> None:
    _retry(lambda: deliver(st["delivery"]))  # Stripe retries the event until it gets a 2xx
    ctx.stripe_events(wait_for_payments=False)  # and delivers the payment's other events
    ctx.schedule(120)


def credited(uid: str, want: int, types: tuple[str, ...] = ("stripe_topup", "auto_topup")) -> list[str]:
    got = sum(int(x["amountCents"]) for x in money_store.all_ledger(uid) if x["type"] in types)
    return [] if got == want else [f"top-ups credited {got}, want {want}"]


def checkout_check(ctx: Ctx, st: dict[str, Any]) -> list[str]:
    out = credited(st["uid"], TOPUP)
    card = st["api"].get("/v1/billing/card").json()
    if not card.get("pmId"):
        out.append("the card the payer saved at Checkout is not on file")
    return out


def saved_card_setup(ctx: Ctx) -> dict[str, Any]:
    api, uid = ctx.sign_in("alice@example.com")
    ctx.add_card(api)
    return {"api": api, "uid": uid, "key": f"topup-{uuid.uuid4().hex[:8]}"}


def saved_card_act(ctx: Ctx, st: dict[str, Any]) -> Any:
    return st["api"].post("/v1/billing/checkout", {"amountCents": TOPUP}, headers={"Idempotency-Key": st["key"]})


def saved_card_recover(ctx: Ctx, st: dict[str, Any]) -> None:
    st["reply"] = _retry(lambda: saved_card_act(ctx, st))
    ctx.stripe_events()
    ctx.schedule(120)


def saved_card_check(ctx: Ctx, st: dict[str, Any]) -> list[str]:
    out = credited(st["uid"], TOPUP)
    charged = [p for p in ctx.payment_intents() if p["status"] == "succeeded"]
    if len(charged) != 1:
        out.append(f"the card was charged {len(charged)} times for one top-up: {charged}")
    if st["reply"].status != 200:
        out.append(f"the retried top-up answered {st['reply'].status}: {st['reply'].body[:200]}")
    return out


THRESHOLD, AUTO_AMOUNT = 1000, 2000


def auto_setup(ctx: Ctx, card: str = "4242424242424242") -> dict[str, Any]:
    api, uid = ctx.sign_in("alice@example.com")
    ctx.add_card(api, card)
    price = catalog.candidates("h100-80gb", 1, None)[0].price_per_hour_cents
    ctx.fund(uid, price + THRESHOLD + 10)
    rid = ctx.running(api, {"familyId": "h100-80gb", "gpuCount": 1})
    r = api.put("/v1/billing/auto-topup", {"enabled": True, "thresholdCents": THRESHOLD,
                                           "topupAmountCents": AUTO_AMOUNT})
    assert r.status == 200, r.body
    assert wallet.get(uid).available >= THRESHOLD
    ctx.clock.advance(600)  # ~32 cents of use: the sweep's reserve top-up takes available below the threshold
    return {"api": api, "uid": uid, "rid": rid}


def auto_act(ctx: Ctx, st: dict[str, Any]) -> Any:
    """The sweep (it finds the wallet below the threshold and arms the auto-topup timer), then
    the timer function that timer reaches (it claims the attempt and charges the card)."""
    scheduled("MeteringSweepFunction")
    deliver_due_timers(st)


def auto_recover(ctx: Ctx, st: dict[str, Any]) -> None:
    redeliver(st)  # an invocation that died: SQS delivers its message again
    ctx.schedule(LONG)  # the sweeps and timers go on; a pending attempt is resumed, a due one fired
    ctx.stripe_events()


def auto_success_check(ctx: Ctx, st: dict[str, Any]) -> list[str]:
    got = [x for x in money_store.all_ledger(st["uid"]) if x["type"] == "auto_topup"]
    out = [] if got else ["no auto-topup credited after recovery"]
    if wallet.get(st["uid"]).available < THRESHOLD:
        out.append(f"available {wallet.get(st['uid']).available} still below the threshold")
    return out


def auto_decline_check(ctx: Ctx, st: dict[str, Any]) -> list[str]:
    settings = autotopup.get(st["uid"])
    failed = [i for i in all_invoices(st["uid"]) if i["reason"] == "topup_failed"]
    out = []
    if settings["enabled"]:
        out.append("auto-topup still on after its card declined (the recovery's debits fired it again)")
    if not failed:
        out.append(f"auto-topup switched off ({settings['disabledReason']}) without a topup_failed invoice")
    for inv in failed:
        if int(inv["amountCents"]) != AUTO_AMOUNT or inv["status"] != "open":
            out.append(f"topup_failed invoice {inv['id']}: {inv['status']} {inv['amountCents']}")
    if len(failed) > 1:
        out.append(f"{len(failed)} topup_failed invoices for one declined auto-topup")
    return out


def invoice_setup(ctx: Ctx) -> dict[str, Any]:
    api, uid = ctx.sign_in("alice@example.com")
    inv = invoices.issue(invoices.new_invoice(uid, "topup_failed", AUTO_AMOUNT, "Auto-topup of $20.00 (card declined)"),
                         f"autotopup_failed:{uid}:setup")
    stripe_id = invoices.mirror(inv).stripe_invoice_id
    assert stripe_id is not None
    ctx.ls.pay_invoice(stripe_id, "4242424242424242")
    d = ctx.ls.wait_for("invoice.paid", lambda o: o["id"] == stripe_id)
    return {"api": api, "uid": uid, "delivery": d, "invoice": inv.id}


def invoice_check(ctx: Ctx, st: dict[str, Any]) -> list[str]:
    inv = invoice_store.get(st["uid"], st["invoice"])
    out = [] if inv and inv.status == "paid" else [f"invoice {st['invoice']} is {inv and inv.status}"]
    return out + credited(st["uid"], AUTO_AMOUNT)


# -- the outbox: side effects owed after money moved, done by the timer function

def outbox_setup(ctx: Ctx) -> dict[str, Any]:
    """An empty wallet stopped by the sweep: its settlement owes the overage invoice's Stripe copy,
    the stop owes the courtesy email; both wait in the outbox for the timer function."""
    st = empty_setup(ctx)
    scheduled("MeteringSweepFunction")
    from gpurent.store import outbox as outbox_store

    st["owed"] = sorted(i["kind"] for i in outbox_store.for_user(st["uid"]))
    assert st["owed"] == ["exhausted_email", "invoice_mirror"], st["owed"]
    return st


def outbox_act(ctx: Ctx, st: dict[str, Any]) -> Any:
    deliver_due_timers(st)  # the stop's follow-up, the metering timer and the outbox timer


def outbox_recover(ctx: Ctx, st: dict[str, Any]) -> None:
    redeliver(st)
    ctx.schedule()  # the sweep re-arms the timer of an overdue outbox


def outbox_check(ctx: Ctx, st: dict[str, Any]) -> list[str]:
    out = empty_check(ctx, st)
    r = rental_store.get(st["uid"], st["rid"])
    assert r is not None
    inv = invoice_store.get(st["uid"], str(r.overage_invoice_id))
    if inv is None or not inv.stripe_invoice_id:
        out.append(f"the overage invoice was never mirrored to Stripe: {inv and inv.stripe_invoice_id}")
    return out  # the email: `check_world` finds the outbox empty (an effect is deleted once done)


def adjust_setup(ctx: Ctx) -> dict[str, Any]:
    admin, _ = ctx.sign_in("admin@gpurent.test")
    _, uid = ctx.sign_in("alice@example.com")
    return {"admin": admin, "uid": uid, "key": f"adj-{uuid.uuid4().hex[:8]}"}


def adjust_act(ctx: Ctx, st: dict[str, Any]) -> Any:
    return st["admin"].post("/v1/admin/adjustments", {"userId": st["uid"], "amountCents": 2500, "reason": "goodwill"},
                            headers={"Idempotency-Key": st["key"]})


def adjust_recover(ctx: Ctx, st: dict[str, Any]) -> None:
    st["reply"] = _retry(lambda: adjust_act(ctx, st))
    ctx.schedule()


def adjust_check(ctx: Ctx, st: dict[str, Any]) -> list[str]:
    out = [] if st["reply"].status == 200 else [f"the retried adjustment answered {st['reply'].status}"]
    if wallet.get(st["uid"]).total != 2500:
        out.append(f"adjusted {wallet.get(st['uid']).total}, want 2500 once")
    return out


# -- refunds and disputes of a top-up, made at Stripe (signed events to the webhook)

SPENT = 4000  # of the TOPUP: a reversal of the whole top-up is partly an invoice


def signed_event(type_: str, obj: dict[str, Any]) -> Delivery:
    """A signed Stripe event with a fixed id (so Stripe's redelivery is the same event)."""
    event = {"id": f"evt_{uuid.uuid4().hex[:16]}", "object": "event", "type": type_, "created": int(time.time()),
             "data": {"object": obj}}
    body = json.dumps(event).encode()
    return Delivery(body, sign(stripe_fixtures.WEBHOOK_SECRET, body), event, "test")


def reversal_setup(ctx: Ctx, *events: str) -> dict[str, Any]:
    """A saved-card top-up of TOPUP, SPENT of it gone (an admin debit), and the events about its
    charge that the path delivers: a full refund, or a dispute created and then closed."""
    api, uid = ctx.sign_in("alice@example.com")
    ctx.add_card(api)
    r = api.post("/v1/billing/checkout", {"amountCents": TOPUP})
    assert r.status == 200 and r.json()["status"] == "succeeded", r.body
    pi = stripe_fixtures.stripe_get(ctx.ls, f"/v1/payment_intents/{r.json()['paymentIntentId']}")
    charge_id = pi["latest_charge"] if isinstance(pi["latest_charge"], str) else pi["latest_charge"]["id"]
    charge = stripe_fixtures.stripe_get(ctx.ls, f"/v1/charges/{charge_id}")
    ctx.stripe_events()  # the top-up's own events, before the path
    wallet.debit(uid, SPENT, "spent", {"description": "spent it"})
    dispute = {"id": f"dp_{uuid.uuid4().hex[:10]}", "object": "dispute", "amount": TOPUP, "charge": charge_id,
               "payment_intent": pi["id"], "currency": "usd"}
    made = {"refund": lambda: signed_event("charge.refunded", {**charge, "amount_refunded": TOPUP, "refunded": True}),
            "dispute": lambda: signed_event("charge.dispute.created", {**dispute, "status": "needs_response"}),
            "won": lambda: signed_event("charge.dispute.closed", {**dispute, "status": "won"})}
    return {"api": api, "uid": uid, "charge": charge_id, "events": [made[e]() for e in events]}


def reversal_act(ctx: Ctx, st: dict[str, Any]) -> Any:
    for d in st["events"]:
        deliver(d)


def reversal_recover(ctx: Ctx, st: dict[str, Any]) -> None:
    for d in st["events"]:
        _retry(partial(deliver, d))  # Stripe retries each event until it gets a 2xx
    ctx.schedule(120)  # the outbox (the email, the invoice's Stripe copy) drains


def refund_check(ctx: Ctx, st: dict[str, Any]) -> list[str]:
    rows = money_store.all_ledger(st["uid"])
    taken = -sum(int(x["amountCents"]) for x in rows if x["type"] == "topup_refund")
    invs = [i for i in all_invoices(st["uid"]) if i["reason"] == "manual"]
    out = [] if taken == TOPUP - SPENT else [f"refund took {taken} from the wallet, want {TOPUP - SPENT}"]
    if [int(i["amountCents"]) for i in invs] != [SPENT]:
        out.append(f"refund beyond the balance invoiced {[(i['amountCents'], i['status']) for i in invs]}, "
                   f"want one of {SPENT}")
    return out


def dispute_won_check(ctx: Ctx, st: dict[str, Any]) -> list[str]:
    rows = money_store.all_ledger(st["uid"])
    net = sum(int(x["amountCents"]) for x in rows if x["type"] in ("dispute", "dispute_won"))
    invs = [i for i in all_invoices(st["uid"]) if i["reason"] == "manual"]
    out = [] if net == 0 else [f"a won dispute left {net} reversed"]
    if any(i["status"] != "void" for i in invs) or len(invs) != 1:
        out.append(f"the dispute's invoice: {[(i['amountCents'], i['status']) for i in invs]}, want one void")
    if wallet.get(st["uid"]).total != TOPUP - SPENT:
        out.append(f"total {wallet.get(st['uid']).total} after a won dispute, want {TOPUP - SPENT}")
    return out


PATHS = [
    Path("launch (failover)", launch_setup, launch_act, launch_recover,
         lambda ctx, st: launch_check(ctx, st, "running")),
    Path("launch (all refused)", lambda ctx: launch_setup(ctx, refuse_all=True), launch_act, launch_recover,
         lambda ctx, st: launch_check(ctx, st, "failed")),
    Path("stop (user)", user_stop_setup, user_stop_act, user_stop_recover, user_stop_check),
    Path("stop (autoStopAfterHours timer)", timed_setup, timed_act, timed_recover, timed_check),
    Path("stop (empty wallet, sweep)", empty_setup, sweep_act, schedule_recover, empty_check),
    Path("metering sweep (3 wallets)", sweep3_setup, sweep_act, schedule_recover, sweep3_check),
    Path("sweep workers out of time (hand-offs lost)", sweep3_setup, fanout_act, schedule_recover, sweep3_check),
    Path("reconcile pass", reconcile_setup, reconcile_act, health_grace_recover, reconcile_check),
    Path("checkout webhook", checkout_setup, webhook_act, webhook_recover, checkout_check),
    Path("saved-card top-up", saved_card_setup, saved_card_act, saved_card_recover, saved_card_check),
    Path("auto-topup (success)", auto_setup, auto_act, auto_recover, auto_success_check),
    Path("auto-topup (decline)", lambda ctx: auto_setup(ctx, DECLINES_WHEN_CHARGED), auto_act, auto_recover,
         auto_decline_check),
    Path("invoice.paid webhook", invoice_setup, webhook_act, webhook_recover, invoice_check),
    Path("outbox drain (timer)", outbox_setup, outbox_act, outbox_recover, outbox_check),
    Path("admin adjustment", adjust_setup, adjust_act, adjust_recover, adjust_check),
    Path("refund webhook (beyond the balance)", lambda ctx: reversal_setup(ctx, "refund"), reversal_act,
         reversal_recover, refund_check),
    Path("dispute webhooks (created, won)", lambda ctx: reversal_setup(ctx, "dispute", "won"), reversal_act,
         reversal_recover, dispute_won_check),
]
BY_NAME = {p.name: p for p in PATHS}

@dataclass(frozen=True)
class KnownBug:
    """A product bug the enumeration found. A crash point of `path` whose every problem
    contains `signature` is counted as this bug (not as a failure); `example` (call#n,
    mode) is kept as a named xfail(strict) test, which becomes the regression test once
    the bug is fixed (remove the entry then)."""

    name: str
    path: str
    signature: str
    example: tuple[str, str]
    reason: str


KNOWN_BUGS: list[KnownBug] = []  # none open

# Crash points that found product bugs, fixed at their root; each must now recover.
REGRESSIONS = [
    # checkout.session.completed wrote its marker with the credit and saved the card only afterwards:
    # a crash between the two lost the card for good. Now the card is saved before the credit.
    # (The credit's transaction: wallet, marker, ledger row, event marker and the email's outbox item.)
    ("checkout_card_lost", "checkout webhook", "dynamo:TransactWriteItems[5]#1", "after"),
    # A declined auto-topup switched auto-topup off before issuing the topup_failed invoice: a crash
    # between the two left it off with no invoice and no e-mail. Now the claimed attempt is resumed
    # (its timer, or any sweep) under the same Stripe key and the invoice comes first. (The crash is
    # now right after Stripe declined: the auto-topup runs in the timer function.)
    ("autotopup_decline_no_invoice", "auto-topup (decline)", "stripe:charge_saved_card#1", "after"),
]
BUGS_BY_NAME = {b.name: b for b in KNOWN_BUGS}


class BugStillThere(AssertionError):
    """The known bug's crash point still fails, with the bug's signature only."""


def known_bug(path: str, problems: list[str]) -> KnownBug | None:
    for bug in KNOWN_BUGS:
        if bug.path == path and problems and all(bug.signature in p for p in problems):
            return bug
    return None


# ---------------------------------------------------------------- running one crash point

@dataclass
class Outcome:
    calls: list[str]
    problems: list[str]
    fired: str | None
    same_world: bool = False  # the act left a world already recovered and checked


PHASES = ("restore", "act", "recover", "check")


def prepare(ctx: Ctx, path: Path) -> World:
    """A fresh world and the path's setup in it, kept as a snapshot every run starts from."""
    started = time.monotonic()
    ctx.fresh(path.providers)
    world = ctx.snapshot(path.setup(ctx))
    ctx.phases["setup"] = ctx.phases.get("setup", 0.0) + time.monotonic() - started
    return world


def execute(ctx: Ctx, path: Path, world: World, crash_at: int | None = None, mode: str = "before") -> Outcome:
    t0 = time.monotonic()
    st = ctx.restore(world)
    t1 = time.monotonic()
    problems: list[str] = []
    with HARNESS.run(crash_at, mode) as h:
        try:
            path.act(ctx, st)
        except Crash:
            pass
    calls, fired = list(h.calls), h.fired
    if crash_at is not None and fired is None:
        problems.append(f"the crash at call {crash_at} never fired: this run made {len(calls)} calls")
    left = ctx.digest(st) if ctx.randomness is not None else None
    t2 = time.monotonic()
    if not problems and left is not None and left in ctx.recovered:
        ctx.phases["act"] = ctx.phases.get("act", 0.0) + t2 - t1
        return Outcome(calls, problems, fired, same_world=True)
    path.recover(ctx, st)
    t3 = time.monotonic()
    problems += check_world(ctx)
    problems += path.check(ctx, st)
    t4 = time.monotonic()
    for phase, seconds in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
        ctx.phases[phase] = ctx.phases.get(phase, 0.0) + seconds
    if not problems and left is not None:
        ctx.recovered.add(left)
    return Outcome(calls, problems, fired)


class _FrozenTime:
    """What the local Stripe reads of the `time` module, stopped at one moment."""

    def __init__(self, at: float) -> None:
        self._at = at

    def time(self) -> float:
        return self._at

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def ctx(aws: None, clock: clock_mod.ManualClock, simulators: Simulators, local_stripe: LocalStripe,
        ports: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ctx]:
    import localstripe.resources

    from infra.local import stripe_local

    c = Ctx(clock, simulators, local_stripe, monkeypatch)
    c.randomness = SeededRandomness(monkeypatch)
    # The local Stripe stamps what it makes (`created`, periods, the signatures' `t`) with the
    # wall clock's second: frozen at this path's start, so runs alike leave Stripe alike
    # whichever second they ran in (a path runs well within the signatures' 300 s tolerance).
    frozen = _FrozenTime(time.time())
    monkeypatch.setattr(localstripe.resources, "time", frozen)
    monkeypatch.setattr(stripe_local, "time", frozen)
    yield c
    c.randomness.close()
    registry.set_adapters(None)
    catalog.invalidate()
    timers.clear()
    simulators.reset()
    config.reset()


def crash_points(calls: list[str]) -> list[tuple[int, str, str]]:
    named = with_occurrence(calls)
    return [(k, named[k - 1], mode) for k in range(1, len(calls) + 1) for mode in MODES]


@pytest.mark.parametrize("name", [p.name for p in PATHS])
def test_every_crash_point_recovers(ctx: Ctx, name: str) -> None:
    path = BY_NAME[name]
    started = time.monotonic()
    world = prepare(ctx, path)
    baseline = execute(ctx, path, world)
    assert not baseline.problems, f"{name}: the uncrashed run itself fails its checks: {baseline.problems}"
    assert baseline.calls, f"{name}: the path made no I/O call"
    result = PathResult(name, baseline.calls)
    RESULTS[name] = result
    for k, call, mode in crash_points(baseline.calls):
        outcome = execute(ctx, path, world, k, mode)
        result.enumerated += 1
        where = f"k={k} {mode} {call}"
        if outcome.fired is not None and outcome.fired != baseline.calls[k - 1]:
            outcome.problems.insert(0, f"the run diverged: call {k} was {outcome.fired}")
        if not outcome.problems:
            result.recovered += 1
            result.same_world += outcome.same_world
        elif (bug := known_bug(name, outcome.problems)) is not None:
            result.known_bugs.append(f"{where}: known bug {bug.name}")
        else:
            result.failed.append(f"{where}: {'; '.join(outcome.problems)[:600]}")
    result.seconds = time.monotonic() - started
    print(f"\n{name}: {result.enumerated} crash points over {len(baseline.calls)} I/O calls, "
          f"{result.recovered} recovered ({result.same_world} to a world already recovered), "
          f"{len(result.known_bugs)} known bugs, {len(result.failed)} failed; "
          f"{result.seconds:.1f} s: " + ", ".join(f"{k} {v:.1f}" for k, v in ctx.phases.items()))
    assert result.enumerated == 2 * len(baseline.calls)
    assert not result.failed, "\n".join(result.failed)


@pytest.mark.parametrize("bug", [
    pytest.param(b.name, id=b.name, marks=pytest.mark.xfail(strict=True, raises=BugStillThere, reason=b.reason))
    for b in KNOWN_BUGS])
def test_known_bug_crash_point(ctx: Ctx, bug: str) -> None:
    """The crash point that found a product bug: xfail until the bug is fixed, then a regression test."""
    found = BUGS_BY_NAME[bug]
    path = BY_NAME[found.path]
    call, mode = found.example
    world = prepare(ctx, path)
    baseline = execute(ctx, path, world)
    named = with_occurrence(baseline.calls)
    assert call in named, f"{call} is no longer a call of {found.path}: {named}"
    outcome = execute(ctx, path, world, named.index(call) + 1, mode)
    if outcome.problems and known_bug(found.path, outcome.problems) is found:
        raise BugStillThere("; ".join(outcome.problems))
    assert not outcome.problems, outcome.problems  # anything else fails for real


@pytest.mark.parametrize(("name", "path_name", "call", "mode"), REGRESSIONS, ids=[r[0] for r in REGRESSIONS])
def test_regression_crash_point(ctx: Ctx, name: str, path_name: str, call: str, mode: str) -> None:
    """A crash point that once lost a card or an invoice: it must recover with every check intact."""
    path = BY_NAME[path_name]
    world = prepare(ctx, path)
    baseline = execute(ctx, path, world)
    named = with_occurrence(baseline.calls)
    assert call in named, f"{call} is no longer a call of {path_name}: {named}"
    k = named.index(call) + 1
    outcome = execute(ctx, path, world, k, mode)
    assert outcome.fired == baseline.calls[k - 1]
    assert not outcome.problems, outcome.problems


def test_runs_alike_leave_worlds_alike_and_any_change_shows(ctx: Ctx) -> None:
    """What lets the enumeration recover a world once (`world.digest`): two runs of the same
    act from the same snapshot leave the same digest, because their ids are drawn alike
    (the act mints a ledger row and an audit entry); a run whose draws differ leaves
    another; and every part of the world a recovery reads changes the digest. (Sent e-mail
    goes to SES here, which nothing reads back: it is not part of the world.)"""
    path = BY_NAME["admin adjustment"]
    world = prepare(ctx, path)
    st = ctx.restore(world)
    assert path.act(ctx, st).status == 200
    first = ctx.digest(st)
    st = ctx.restore(world)
    assert path.act(ctx, st).status == 200
    now = ctx.digest(st)
    assert first is not None and now == first

    other = ctx.restore(world)
    assert ctx.randomness is not None
    ctx.randomness.rng.getrandbits(80)  # one draw more: every id after it differs
    assert path.act(ctx, other).status == 200
    assert ctx.digest(other) != first

    seen = {now}
    changes: dict[str, Callable[[], Any]] = {
        "a ledger row": lambda: wallet.credit(st["uid"], 1, "adjustment", "digest-test", {"description": "t"}),
        "a timer": lambda: timers.arm(st["uid"], clock_mod.now() + 30),
        "a hand-off": lambda: reconciler.send({"provider": "vast", "kind": "pass"}),
        "the path's state": lambda: st.update(reply=None),
        "the clock": lambda: ctx.clock.advance(1),
    }
    for what, change in changes.items():
        change()
        got = ctx.digest(st)
        assert got is not None and got not in seen, what
        seen.add(got)
