"""Billing races on DynamoDB Local (DynamoDB's own conditional writes and transactions)
with the local Stripe (localstripe + its proxy):

- the same signed webhook event delivered 10 times at once credits exactly once;
- a saved-card charge racing its own `payment_intent.succeeded` webhook credits once;
- 20 debits racing past the auto-topup threshold, then 20 auto-topup timers run at once,
  fire exactly one auto-topup (one `auto_topup` row, one PaymentIntent at Stripe).

Handlers run in-process (`infra.local.client.invoke`), each racer in its own thread,
released together by a barrier. Every test ends with `check_invariants`."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from gpurent import clock as clock_mod
from gpurent import notify, timers, wallet
from gpurent.billing import autotopup, gateway
from gpurent.records import LedgerRow
from gpurent.store import billing as billing_store
from gpurent.store import money as money_store
from infra.local import template
from infra.local.client import Reply, invoke
from infra.local.stripe_local import Delivery, LocalStripe
from tests import stripe_fixtures
from tests.conftest import TEST_ENV, Api, reset_clients, run_timers, table_env
from tests.integration.conftest import sign_in
from tests.integration.test_billing import add_card
from tests.walletkit import check_invariants

CARD = "4242424242424242"
TIMEOUT = 60  # seconds any racer may take before the test calls it a hang


@pytest.fixture
def races(monkeypatch: pytest.MonkeyPatch, clock: Any, dynamodb_local: str,
          local_stripe: LocalStripe) -> Iterator[LocalStripe]:
    """Fresh tables on DynamoDB Local, mail to the console mailbox, the gateway on the local Stripe.

    The ManualClock is moved to the wall clock: DynamoDB Local expires items by TTL
    against real time, and a sign-in code or session must not vanish mid-test."""
    clock.set(time.time())
    names = template.default_table_names(f"t{uuid.uuid4().hex[:8]}")
    for k, v in {**TEST_ENV, **table_env(names), "MAIL_MODE": "console", "DYNAMODB_ENDPOINT": dynamodb_local}.items():
        monkeypatch.setenv(k, v)
    reset_clients()
    gateway.reset()
    notify.clear_mailbox()
    from gpurent.store import dynamo

    template.create_tables(dynamo.client(), names)
    yield local_stripe
    reset_clients()


@pytest.fixture
def alice(races: LocalStripe) -> tuple[Api, dict[str, Any]]:
    api = Api()
    return api, sign_in(api, f"alice-{uuid.uuid4().hex[:8]}@example.com")


# ---------------------------------------------------------------- helpers

def deliver(d: Delivery) -> Reply:
    body, sig = stripe_fixtures.replay_args(d)
    return invoke("POST", "/v1/webhooks/stripe", raw=body, headers={"stripe-signature": sig})


def all_at_once(n: int, work: Callable[[int], Any]) -> list[Any]:
    """`work(i)` for i in range(n), each in its own thread, released together."""
    barrier = threading.Barrier(n)

    def one(i: int) -> Any:
        barrier.wait(TIMEOUT)
        return work(i)

    with ThreadPoolExecutor(n) as pool:
        return [f.result(TIMEOUT) for f in [pool.submit(one, i) for i in range(n)]]


def rows_of(user_id: str, entry_type: str) -> list[LedgerRow]:
    return [r for r in money_store.all_ledger(user_id) if r["type"] == entry_type]


def received_mails(email: str) -> list[dict[str, Any]]:
    """The "received" emails, once the timer function has done the outbox's effects."""
    run_timers()
    return [m for m in notify.mailbox() if m["to"] == email and "received" in m["subject"]]


class TickingClock:
    """Time that moves on by a millisecond at every reading, as real time would between racers.

    Under a frozen ManualClock every racer would name the same auto-topup attempt (its
    Stripe idempotency key is the claim's millisecond), so Stripe's idempotency alone
    would hide a broken claim; with time moving, only the claim stands between the
    racers and twenty charges."""

    def __init__(self, start: float) -> None:
        self._t = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            self._t += 0.001
            return self._t


def payment_intents_of(ls: LocalStripe, customer: str) -> list[dict[str, Any]]:
    """Every PaymentIntent the local Stripe holds for `customer` (listed page by page: the
    server is shared by the whole session)."""
    found: list[dict[str, Any]] = []
    after = ""
    for _ in range(1000):
        page = stripe_fixtures.stripe_get(ls, f"/v1/payment_intents?limit=100{after}")
        found.extend(p for p in page["data"] if p.get("customer") == customer)
        if not page.get("has_more") or not page["data"]:
            return found
        after = f"&starting_after={page['data'][-1]['id']}"
    raise AssertionError("the PaymentIntent list does not end")


# ---------------------------------------------------------------- (a) one event, ten deliveries at once

@pytest.mark.parametrize("event_type", ["checkout.session.completed", "payment_intent.succeeded"])
def test_the_same_event_delivered_ten_times_at_once_credits_once(
        races: LocalStripe, alice: tuple[Api, dict[str, Any]], event_type: str) -> None:
    api, user = alice
    r = api.post("/v1/billing/checkout", {"amountCents": 2500})
    assert r.status == 200, r.body
    session = races.complete_checkout(r.json()["sessionId"], CARD, save_card=True)
    pi_id = session["payment_intent"]
    match = (lambda o: o["id"] == session["id"]) if event_type == "checkout.session.completed" else (
        lambda o: o["id"] == pi_id)
    d = races.wait_for(event_type, match, timeout=10)

    replies = all_at_once(10, lambda _: deliver(d))

    assert [x.status for x in replies] == [200] * 10, [x.body for x in replies]
    bodies = [json.loads(x.body) for x in replies]
    assert all(b["received"] is True for b in bodies), bodies
    # Exactly one delivery did the work; the other nine are recognised as duplicates.
    assert sum(not b.get("duplicate") for b in bodies) == 1, bodies
    rows = rows_of(user["id"], "stripe_topup")
    assert len(rows) == 1 and int(rows[0]["amountCents"]) == 2500, rows
    assert len(money_store.all_ledger(user["id"])) == 1
    bal = api.get("/v1/billing/balance").json()
    assert (bal["availableCents"], bal["totalCents"]) == (2500, 2500)
    assert len(received_mails(user["email"])) == 1
    # Once more, late: still nothing more.
    assert json.loads(deliver(d).body) == {"received": True, "duplicate": True}
    assert check_invariants(user["id"]).total == 2500


def test_every_event_of_one_checkout_delivered_ten_times_at_once_credits_once(
        races: LocalStripe, alice: tuple[Api, dict[str, Any]]) -> None:
    """checkout.session.completed and payment_intent.succeeded of the same payment, ten copies
    of each, all twenty at once: one credit under `deposit_<pi>`."""
    api, user = alice
    session = races.complete_checkout(api.post("/v1/billing/checkout", {"amountCents": 4100}).json()["sessionId"])
    completed = races.wait_for("checkout.session.completed", lambda o: o["id"] == session["id"], timeout=10)
    succeeded = races.wait_for("payment_intent.succeeded", lambda o: o["id"] == session["payment_intent"],
                               timeout=10)

    replies = all_at_once(20, lambda i: deliver(completed if i % 2 else succeeded))

    assert [x.status for x in replies] == [200] * 20, [x.body for x in replies]
    rows = rows_of(user["id"], "stripe_topup")
    assert len(rows) == 1 and int(rows[0]["amountCents"]) == 4100, rows
    assert len(received_mails(user["email"])) == 1
    assert check_invariants(user["id"]).total == 4100


# ---------------------------------------------------------------- (b) a saved-card charge racing its webhook

@pytest.mark.parametrize("order", ["together", "webhook_first"])
def test_a_saved_card_charge_racing_its_own_webhook_credits_once(
        races: LocalStripe, alice: tuple[Api, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, order: str) -> None:
    """The request charges the card at Stripe; before it credits, the PaymentIntent's own
    `payment_intent.succeeded` arrives (three copies) and runs alongside the request's
    credit (`together`) or entirely before it (`webhook_first`)."""
    api, user = alice
    add_card(api, races)
    real_charge = gateway.charge_saved_card
    webhook_replies: list[Reply] = []
    threads: list[threading.Thread] = []
    copies = 3

    def charge_then_race(**kw: Any) -> gateway.Payment:
        payment = real_charge(**kw)
        d = races.wait_for("payment_intent.succeeded", lambda o: o["id"] == payment.payment_intent_id, timeout=10)
        if order == "webhook_first":
            webhook_replies.extend(deliver(d) for _ in range(copies))
            return payment
        barrier = threading.Barrier(copies + 1)

        def hook() -> None:
            barrier.wait(TIMEOUT)
            webhook_replies.append(deliver(d))

        threads[:] = [threading.Thread(target=hook) for _ in range(copies)]
        for t in threads:
            t.start()
        barrier.wait(TIMEOUT)  # the request's own credit starts with the webhooks
        return payment

    monkeypatch.setattr(gateway, "charge_saved_card", charge_then_race)
    total = 0
    for i, amount in enumerate((5000, 1234, 777)):
        webhook_replies.clear()
        r = api.post("/v1/billing/checkout", {"amountCents": amount}, headers={"idempotency-key": f"race-{i}"})
        for t in threads:
            t.join(TIMEOUT)
        assert r.status == 200, r.body
        body = r.json()
        assert body["status"] == "succeeded" and body["checkoutUrl"] is None, body
        assert [x.status for x in webhook_replies] == [200] * copies, [x.body for x in webhook_replies]
        total += amount
        rows = [x for x in rows_of(user["id"], "stripe_topup") if x.get("paymentIntentId") == body["paymentIntentId"]]
        assert len(rows) == 1 and int(rows[0]["amountCents"]) == amount, rows_of(user["id"], "stripe_topup")
        bal = api.get("/v1/billing/balance").json()
        assert (bal["availableCents"], bal["totalCents"]) == (total, total), (i, bal)
    assert len(rows_of(user["id"], "stripe_topup")) == 3
    assert len(received_mails(user["email"])) == 3
    assert check_invariants(user["id"]).total == total


# ---------------------------------------------------------------- (c) many debits racing past the threshold

def test_twenty_debits_racing_past_the_threshold_fire_one_auto_topup(
        races: LocalStripe, alice: tuple[Api, dict[str, Any]]) -> None:
    api, user = alice
    uid = user["id"]
    add_card(api, races)
    wallet.credit(uid, 5_050, "adjustment", "seed", {"description": "seed"})
    r = api.put("/v1/billing/auto-topup", {"enabled": True, "thresholdCents": 5_000, "topupAmountCents": 2_000})
    assert r.status == 200, r.body
    assert rows_of(uid, "auto_topup") == []  # 5050 is not below 5000: nothing yet
    customer = str(billing_store.wallet_item(uid)["stripeCustomerId"])
    assert payment_intents_of(races, customer) == []

    clock_mod.set_clock(TickingClock(clock_mod.now()))  # the `clock` fixture puts the old one back
    # Every one of the 20 debits leaves available below the threshold (each arms the auto-topup timer)…
    all_at_once(20, lambda i: wallet.debit(uid, 100, f"race-debit-{i}", {"description": "race"}))
    assert {t.kind for t in timers.due(float("inf"))} == {timers.AUTO_TOPUP}
    assert rows_of(uid, "auto_topup") == []  # …and none calls Stripe itself
    # …and the timer function runs 20 times at once (duplicates, redeliveries): one claim wins.
    all_at_once(20, lambda i: autotopup.run(uid))

    fired = rows_of(uid, "auto_topup")
    assert len(fired) == 1 and int(fired[0]["amountCents"]) == 2_000, fired
    assert len(rows_of(uid, "adjustment")) == 21  # the seed and the 20 debits, each once
    intents = payment_intents_of(races, customer)
    assert len(intents) == 1, [(p["id"], p["status"], p.get("metadata")) for p in intents]
    (pi,) = intents
    assert pi["amount"] == 2_000 and pi["status"] == "succeeded"
    assert pi["metadata"].get("kind") == "auto_topup" and pi["metadata"].get("user_id") == uid
    w = check_invariants(uid)
    assert (w.available, w.total) == (5_050 - 2_000 + 2_000, 5_050)
    # Its own webhook, late and twice, adds nothing.
    d = races.wait_for("payment_intent.succeeded", lambda o: o["id"] == pi["id"], timeout=10)
    assert [deliver(d).status for _ in range(2)] == [200, 200]
    assert len(rows_of(uid, "auto_topup")) == 1
    auto = api.get("/v1/billing/auto-topup").json()
    assert auto["enabled"] is True and auto["lastAttemptAt"] is not None
    assert check_invariants(uid).total == 5_050


# ---------------------------------------------------------------- (d) a hot wallet, through the API

def test_sixteen_concurrent_adjustment_requests_each_land_or_say_retry(
        races: LocalStripe, alice: tuple[Api, dict[str, Any]]) -> None:
    """16 admin adjustments of one wallet at once, through the handler (a person's request:
    bounded retries). Each answers 200 (applied once) or 503 `service_unavailable` with
    `Retry-After` (applied not at all) — never a 500 — and the wallet holds exactly the 200s."""
    _, user = alice
    admin = Api(source_ip="198.51.100.250")
    sign_in(admin, "admin@gpurent.test")
    amounts = [100 if i % 2 else 70 for i in range(16)]

    def one(i: int) -> Reply:
        return admin.post("/v1/admin/adjustments", {"userId": user["id"], "amountCents": amounts[i],
                                                    "reason": "race"}, headers={"idempotency-key": f"hot-{i}"})

    replies = all_at_once(16, one)
    assert {r.status for r in replies} <= {200, 503}, [(r.status, r.body) for r in replies]
    for r in replies:
        if r.status == 503:
            assert json.loads(r.body)["error"] == "service_unavailable" and int(r.headers["retry-after"]) >= 1
    landed = sum(a for a, r in zip(amounts, replies, strict=True) if r.status == 200)
    assert check_invariants(user["id"]).total == landed
    # A 503 wrote nothing: the client's retry with the same key applies it once.
    for i, r in enumerate(replies):
        if r.status == 503:
            assert one(i).status == 200
    assert check_invariants(user["id"]).total == sum(amounts)
