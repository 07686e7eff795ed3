"""Billing against moto and the local Stripe (localstripe + its gap-filling proxy),
through the real `stripe` library: cards, top-ups (Checkout and saved card),
the webhook (signed with Stripe's scheme, replayed, tampered), auto-topup and
invoices. Each credit must land exactly once."""

from __future__ import annotations

import json
import time
from typing import Any, cast

import pytest

from gpurent import timers, wallet
from gpurent.billing import autotopup, invoices
from gpurent.store import billing as billing_store
from gpurent.store import money as money_store
from infra.local.client import invoke
from infra.local.stripe_local import LocalStripe, sign
from tests import stripe_fixtures
from tests.conftest import Api, run_timers, sent_mail
from tests.walletkit import check_invariants

DECLINES_WHEN_CHARGED = "4000000000000341"
DECLINED = "4000000000000002"


def deliver(delivery: Any) -> Any:
    body, sig = stripe_fixtures.replay_args(delivery)
    return invoke("POST", "/v1/webhooks/stripe", raw=body, headers={"stripe-signature": sig})


def deliver_all(ls: LocalStripe, types: tuple[str, ...] | None = None) -> list[Any]:
    replies = []
    for d in ls.deliveries():
        if types is None or d.event["type"] in types:
            replies.append(deliver(d))
    return replies


def ledger(api: Api) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], api.get("/v1/billing/ledger?pageSize=200").json()["entries"])


def add_card(api: Api, ls: LocalStripe, card: str = "4242424242424242") -> dict[str, Any]:
    r = api.post("/v1/billing/setup-intent")
    assert r.status == 200, r.body
    secret = r.json()["clientSecret"]
    assert r.json()["publishableKey"].startswith("pk_")
    si_id = secret.split("_secret_")[0]
    ls.confirm_setup_intent(si_id, card)
    d = ls.wait_for("setup_intent.succeeded", lambda o: o["id"] == si_id)
    assert deliver(d).status == 200
    return cast(dict[str, Any], api.get("/v1/billing/card").json())


def test_no_card_reads_as_nulls_and_a_setup_intent_saves_one(api: Api, user, local_stripe) -> None:
    assert api.get("/v1/billing/card").json() == {"brand": None, "last4": None, "expMonth": None,
                                                  "expYear": None, "pmId": None}
    card = add_card(api, local_stripe)
    assert card["last4"] == "4242" and card["pmId"].startswith("pm_") and card["expYear"] > 2000
    item = billing_store.wallet_item(user["id"])
    assert item["stripeCustomerId"].startswith("cus_")
    cus = stripe_fixtures.stripe_get(local_stripe, f"/v1/customers/{item['stripeCustomerId']}")
    assert cus["invoice_settings"]["default_payment_method"] == card["pmId"]
    # A second SetupIntent replaces the card (never 409 card_already_on_file).
    second = add_card(api, local_stripe)
    assert second["pmId"] != card["pmId"]
    assert billing_store.wallet_item(user["id"])["stripeCustomerId"] == item["stripeCustomerId"]  # one customer


def test_checkout_credits_once_whichever_events_arrive_and_however_often(api: Api, user, local_stripe) -> None:
    r = api.post("/v1/billing/checkout", {"amountCents": 2500})
    assert r.status == 200, r.body
    session = r.json()
    assert session["sessionId"].startswith("cs_") and session["checkoutUrl"]
    local_stripe.complete_checkout(session["sessionId"], "4242424242424242", save_card=True)
    local_stripe.wait_for("payment_intent.succeeded")
    events = local_stripe.deliveries()
    for _ in range(3):  # every event, three times, in delivery order and reversed
        for d in events + events[::-1]:
            assert deliver(d).status == 200
    rows = [e for e in ledger(api) if e["type"] == "stripe_topup"]
    assert len(rows) == 1 and rows[0]["amountCents"] == 2500 and rows[0]["stripeChargeId"].startswith("ch_")
    assert api.get("/v1/billing/balance").json()["availableCents"] == 2500
    assert api.get("/v1/billing/card").json()["last4"] == "4242"  # the checkout saved the card
    run_timers()  # the email is an outbox effect of the credit, sent by the timer function
    assert sum("received" in m.subject for m in sent_mail()) == 1
    check_invariants(user["id"])


def test_a_duplicate_event_answers_duplicate_without_effect(api: Api, user, local_stripe) -> None:
    session = api.post("/v1/billing/checkout", {"amountCents": 1000}).json()
    local_stripe.complete_checkout(session["sessionId"])
    d = local_stripe.wait_for("checkout.session.completed")
    assert deliver(d).json() == {"received": True}
    assert deliver(d).json() == {"received": True, "duplicate": True}
    assert api.get("/v1/billing/balance").json()["totalCents"] == 1000


def test_the_saved_card_is_charged_at_once_and_its_webhook_adds_nothing(api: Api, user, local_stripe) -> None:
    add_card(api, local_stripe)
    r = api.post("/v1/billing/checkout", {"amountCents": 5000}, headers={"idempotency-key": "k1"})
    assert r.status == 200, r.body
    body = r.json()
    assert body["checkoutUrl"] is None and body["sessionId"] is None and body["status"] == "succeeded"
    assert api.get("/v1/billing/balance").json()["availableCents"] == 5000  # at once, no webhook needed
    d = local_stripe.wait_for("payment_intent.succeeded",
                              lambda o: o["id"] == body["paymentIntentId"])
    assert deliver(d).json()["received"] is True
    assert api.get("/v1/billing/balance").json()["availableCents"] == 5000
    # useCheckout forces a Checkout Session even with a card on file.
    forced = api.post("/v1/billing/checkout", {"amountCents": 5000, "useCheckout": True}).json()
    assert forced["sessionId"].startswith("cs_")
    check_invariants(user["id"])


def _payment_intents(ls: LocalStripe, customer: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after = ""
    while True:
        page = stripe_fixtures.stripe_get(ls, f"/v1/payment_intents?limit=100{after}")
        found.extend(p for p in page["data"] if p.get("customer") == customer)
        if not page.get("has_more") or not page["data"]:
            return found
        after = f"&starting_after={page['data'][-1]['id']}"


def test_a_failing_email_after_a_saved_card_credit_does_not_fail_the_request(
        api: Api, user, local_stripe, monkeypatch, clock) -> None:
    """Regression (issue 15, item 5): the "top-up received" email failed after the credit and the
    request answered 500 "please retry" though the money had moved. Side effects after the
    commit never fail a request: the email waits in the outbox and is sent once it can be."""
    from gpurent import notify

    add_card(api, local_stripe)
    real_send = notify.send

    def ses_down(to: str, subject: str, body: str) -> None:
        raise RuntimeError("SES is down")

    monkeypatch.setattr(notify, "send", ses_down)
    r = api.post("/v1/billing/checkout", {"amountCents": 5000})
    assert r.status == 200, r.body
    assert r.json()["status"] == "succeeded"
    assert api.get("/v1/billing/balance").json()["availableCents"] == 5000
    run_timers()  # the email cannot go yet: it stays in the outbox
    assert not any("received" in m.subject for m in sent_mail())
    monkeypatch.setattr(notify, "send", real_send)
    clock.advance(120)
    run_timers()
    assert sum("received" in m.subject for m in sent_mail()) == 1
    check_invariants(user["id"])


def test_a_retry_without_a_key_after_a_500_does_not_charge_the_card_twice(
        api: Api, user, local_stripe, monkeypatch) -> None:
    """Regression (issue 15, item 5): without an Idempotency-Key the Stripe key was random, so the
    retry of a request that died after charging the card was a second PaymentIntent. The charge
    now writes a durable intent first and derives its Stripe key from it: the retry resumes it."""
    from gpurent.billing import topups

    add_card(api, local_stripe)
    customer = str(billing_store.wallet_item(user["id"])["stripeCustomerId"])
    real_deposit = topups.deposit
    calls = {"n": 0}

    def dies_once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the Lambda died after Stripe charged the card")
        return real_deposit(*args, **kwargs)

    monkeypatch.setattr(topups, "deposit", dies_once)
    first = api.post("/v1/billing/checkout", {"amountCents": 5000})
    assert first.status == 500
    again = api.post("/v1/billing/checkout", {"amountCents": 5000})  # the client retries, no key
    assert again.status == 200, again.body
    assert [p["status"] for p in _payment_intents(local_stripe, customer)] == ["succeeded"]
    assert api.get("/v1/billing/balance").json()["availableCents"] == 5000
    # A later top-up is a new one.
    third = api.post("/v1/billing/checkout", {"amountCents": 5000})
    assert third.status == 200 and third.json()["paymentIntentId"] != again.json()["paymentIntentId"]
    assert len(_payment_intents(local_stripe, customer)) == 2
    assert api.get("/v1/billing/balance").json()["availableCents"] == 10_000
    check_invariants(user["id"])


def test_a_declined_saved_card_is_card_declined_and_writes_nothing(api: Api, user, local_stripe) -> None:
    add_card(api, local_stripe, DECLINES_WHEN_CHARGED)
    before = money_store.get_wallet(user["id"])
    r = api.post("/v1/billing/checkout", {"amountCents": 5000})
    assert r.status == 400 and r.json()["error"] == "card_declined", r.body
    assert "code" in r.json()["details"]
    assert money_store.get_wallet(user["id"]) == before
    assert ledger(api) == []


@pytest.mark.parametrize("saved_card", [False, True])
def test_a_reused_idempotency_key_with_another_amount_is_validation_failed(
        api: Api, user, local_stripe, saved_card: bool) -> None:
    """Regression (issue 15, item 7): Checkout with a reused Idempotency-Key and another amount
    answered 500 (Stripe refused the key); it is the documented 400, and nothing is charged."""
    if saved_card:
        add_card(api, local_stripe)
    first = api.post("/v1/billing/checkout", {"amountCents": 1000}, headers={"idempotency-key": "same"})
    assert first.status == 200, first.body
    again = api.post("/v1/billing/checkout", {"amountCents": 1000}, headers={"idempotency-key": "same"})
    assert again.status == 200 and again.json() == first.json()
    other = api.post("/v1/billing/checkout", {"amountCents": 2000}, headers={"idempotency-key": "same"})
    assert other.status == 400, other.body
    assert other.json()["error"] == "validation_failed" and "idempotencyKey" in other.json()["details"]
    assert api.get("/v1/billing/balance").json()["totalCents"] == (1000 if saved_card else 0)


@pytest.mark.parametrize("amount", [0, 99, 500_001, -5, 10**12])
def test_checkout_amount_out_of_range_is_invalid_amount(api: Api, user, local_stripe, amount: int) -> None:
    r = api.post("/v1/billing/checkout", {"amountCents": amount})
    assert r.status == 400 and r.json()["error"] == "invalid_amount"
    assert billing_store.wallet_item(user["id"]) == {}  # no customer, nothing


@pytest.mark.parametrize("body", [{}, {"amountCents": "100"}, {"amountCents": 100.5}, {"amountCents": 100, "x": 1},
                                  {"amountCents": 100, "useCheckout": "yes"}])
def test_checkout_bad_body_is_validation_failed(api: Api, user, local_stripe, body: dict[str, Any]) -> None:
    r = api.post("/v1/billing/checkout", body)
    assert r.status == 400 and r.json()["error"] == "validation_failed"
    assert billing_store.wallet_item(user["id"]) == {}


def test_billing_disabled_without_stripe(api: Api, user, monkeypatch) -> None:
    from gpurent.billing import gateway

    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    monkeypatch.delenv("STRIPE_SECRET_KEY_PARAM", raising=False)
    gateway.reset()
    for method, url, body in [("POST", "/v1/billing/checkout", {"amountCents": 1000}),
                              ("POST", "/v1/billing/setup-intent", None)]:
        r = api.call(method, url, body)
        assert r.status == 400 and r.json()["error"] == "billing_disabled", (url, r.body)
    r = api.put("/v1/billing/auto-topup", {"enabled": True, "thresholdCents": 500, "topupAmountCents": 2000})
    assert r.status == 400 and r.json()["error"] == "billing_disabled"
    assert billing_store.wallet_item(user["id"]) == {}


def test_checkout_is_limited_to_ten_an_hour(api: Api, user, local_stripe, clock) -> None:
    for _ in range(10):
        assert api.post("/v1/billing/checkout", {"amountCents": 1000}).status == 200
    r = api.post("/v1/billing/checkout", {"amountCents": 1000})
    assert r.status == 429 and r.json()["error"] == "rate_limited" and int(r.headers["retry-after"]) > 0
    clock.advance(3600)
    api.sign_in("alice@example.com")
    assert api.post("/v1/billing/checkout", {"amountCents": 1000}).status == 200


def test_a_reused_idempotency_key_with_another_amount_is_a_400_not_a_500(api: Api, user, local_stripe) -> None:
    """Regression (found by the contract fuzz run once amounts had their documented range): Stripe's
    IdempotencyError went untranslated and the API answered 500."""
    assert api.post("/v1/billing/checkout", {"amountCents": 1000}, headers={"idempotency-key": "k"}).status == 200
    r = api.post("/v1/billing/checkout", {"amountCents": 499999}, headers={"idempotency-key": "k"})
    assert r.status == 400, r.body
    assert r.json()["error"] == "validation_failed" and "idempotencyKey" in r.json()["details"]


def test_webhook_refuses_tampered_stale_and_unsigned_events(api: Api, user, local_stripe) -> None:
    session = api.post("/v1/billing/checkout", {"amountCents": 1000}).json()
    local_stripe.complete_checkout(session["sessionId"])
    d = local_stripe.wait_for("checkout.session.completed")
    tampered = d.body.replace(b'"amount_total": 1000', b'"amount_total": 99999')
    if tampered == d.body:
        tampered = d.body.replace(b"1000", b"9999", 1)
    stale = sign(stripe_fixtures.WEBHOOK_SECRET, d.body, timestamp=int(time.time()) - 3600)
    wrong = sign("whsec_someone_else", d.body)
    # Correctly signed but dated 6 minutes ahead: valid for longer than the tolerance, so refused too.
    future = sign(stripe_fixtures.WEBHOOK_SECRET, d.body, timestamp=int(time.time()) + 360)
    for raw, sig in [(tampered, d.signature), (d.body, stale), (d.body, wrong), (d.body, ""), (b"{}", d.signature),
                     (d.body, future)]:
        r = invoke("POST", "/v1/webhooks/stripe", raw=raw, headers={"stripe-signature": sig} if sig else {})
        assert r.status == 400 and json.loads(r.body)["error"] == "invalid_signature"
    r = invoke("POST", "/v1/webhooks/stripe", raw=d.body)  # no header at all
    assert r.status == 400
    assert api.get("/v1/billing/balance").json()["totalCents"] == 0
    assert ledger(api) == []
    assert invoke("POST", "/v1/billing/stripe/webhook", raw=d.body,  # the alias path
                  headers={"stripe-signature": d.signature}).status == 200
    assert api.get("/v1/billing/balance").json()["totalCents"] == 1000


def test_unknown_events_are_acknowledged(api: Api, user, local_stripe) -> None:
    body = json.dumps({"id": "evt_unknown_1", "object": "event", "type": "customer.tax_id.created",
                       "data": {"object": {}}}).encode()
    r = invoke("POST", "/v1/webhooks/stripe", raw=body,
               headers={"stripe-signature": sign(stripe_fixtures.WEBHOOK_SECRET, body)})
    assert r.status == 200 and json.loads(r.body) == {"received": True}


def test_delete_card_detaches_and_switches_auto_topup_off(api: Api, user, local_stripe) -> None:
    card = add_card(api, local_stripe)
    r = api.put("/v1/billing/auto-topup", {"enabled": True, "thresholdCents": 500, "topupAmountCents": 2000})
    assert r.status == 200 and r.json() == {"enabled": True, "thresholdCents": 500, "topupAmountCents": 2000}
    assert api.delete("/v1/billing/card").json() == {"ok": True}
    assert api.get("/v1/billing/card").json()["pmId"] is None
    got = api.get("/v1/billing/auto-topup").json()
    assert got["enabled"] is False and got["disabledReason"] == "card_removed" and got["thresholdCents"] == 500
    pm = stripe_fixtures.stripe_get(local_stripe, f"/v1/payment_methods/{card['pmId']}")
    assert pm["customer"] is None


@pytest.mark.parametrize(("body", "field"), [
    ({"enabled": True, "topupAmountCents": 2000}, "thresholdCents"),
    ({"enabled": True, "thresholdCents": 500}, "topupAmountCents"),
    ({"enabled": True, "thresholdCents": 99, "topupAmountCents": 2000}, "thresholdCents"),
    ({"enabled": True, "thresholdCents": 100_001, "topupAmountCents": 2000}, "thresholdCents"),
    ({"enabled": True, "thresholdCents": 500, "topupAmountCents": 999}, "topupAmountCents"),
    ({"enabled": True, "thresholdCents": 500, "topupAmountCents": 500_001}, "topupAmountCents"),
    ({"enabled": True, "thresholdCents": 500, "topupAmountCents": 2000}, "card"),  # no card on file
])
def test_auto_topup_refuses_bad_settings(api: Api, user, local_stripe, body: dict[str, Any], field: str) -> None:
    r = api.put("/v1/billing/auto-topup", body)
    assert r.status == 400 and r.json()["error"] == "validation_failed" and field in r.json()["details"], r.body
    assert "autoTopup" not in billing_store.wallet_item(user["id"])


def _debit(user_id: str, cents: int, key: str) -> None:
    wallet.debit(user_id, cents, key, {"description": "test debit"})


def test_auto_topup_fires_once_below_the_threshold_and_cools_down(api: Api, user, local_stripe, clock) -> None:
    add_card(api, local_stripe)
    assert api.post("/v1/billing/checkout", {"amountCents": 3000}).status == 200  # saved card: 3000 available
    assert api.put("/v1/billing/auto-topup",
                   {"enabled": True, "thresholdCents": 1000, "topupAmountCents": 2000}).status == 200
    _debit(user["id"], 2500, "d1")  # 500 < 1000: fires (from the timer the debit armed)
    run_timers()
    bal = api.get("/v1/billing/balance").json()
    assert bal["availableCents"] == 500 + 2000
    rows = [e for e in ledger(api) if e["type"] == "auto_topup"]
    assert len(rows) == 1 and rows[0]["amountCents"] == 2000
    _debit(user["id"], 2000, "d2")  # below again, inside the 5-minute cooldown: nothing
    run_timers()
    assert api.get("/v1/billing/balance").json()["availableCents"] == 500
    clock.advance(301)
    _debit(user["id"], 100, "d3")
    run_timers()
    assert api.get("/v1/billing/balance").json()["availableCents"] == 400 + 2000
    # The auto-topup's own webhook adds nothing.
    for d in local_stripe.deliveries():
        if d.event["type"] == "payment_intent.succeeded":
            deliver(d)
    assert len([e for e in ledger(api) if e["type"] == "auto_topup"]) == 2
    check_invariants(user["id"])


def test_a_debit_crossing_the_threshold_only_enqueues_the_top_up(api: Api, user, local_stripe, monkeypatch) -> None:
    """The wallet never calls Stripe: a debit below the threshold arms a timer and returns;
    the timer function charges the card."""
    from gpurent.billing import gateway

    add_card(api, local_stripe)
    wallet.credit(user["id"], 3000, "adjustment", "seed", {"description": "seed"})
    assert api.put("/v1/billing/auto-topup",
                   {"enabled": True, "thresholdCents": 1000, "topupAmountCents": 2000}).status == 200
    run_timers()
    stripe_calls: list[str] = []
    real_call = gateway.client.call

    def counting(fn: Any) -> Any:
        stripe_calls.append("call")
        return real_call(fn)

    monkeypatch.setattr(gateway.client, "call", counting)
    _debit(user["id"], 2500, "d1")  # 500 < 1000
    assert stripe_calls == []  # the debit itself made no Stripe call
    assert [t.kind for t in timers.due(float("inf"))] == [timers.AUTO_TOPUP]
    assert api.get("/v1/billing/balance").json()["availableCents"] == 500
    timers.arm(user["id"], 0, kind=timers.AUTO_TOPUP)  # due now
    assert run_timers() >= 1
    assert stripe_calls  # the timer function charged the card
    assert api.get("/v1/billing/balance").json()["availableCents"] == 2500
    check_invariants(user["id"])


def test_a_declined_auto_topup_switches_off_and_invoices_with_a_pay_link(api: Api, user, local_stripe) -> None:
    add_card(api, local_stripe, DECLINES_WHEN_CHARGED)
    wallet.credit(user["id"], 1500, "adjustment", "seed", {"description": "seed"})
    assert api.put("/v1/billing/auto-topup",
                   {"enabled": True, "thresholdCents": 1000, "topupAmountCents": 2000}).status == 200
    _debit(user["id"], 1000, "d1")
    run_timers()
    got = api.get("/v1/billing/auto-topup").json()
    assert got["enabled"] is False and got["disabledReason"] == "card_declined"
    listed = api.get("/v1/billing/invoices").json()["data"]
    assert len(listed) == 1
    inv = listed[0]
    assert (inv["reason"], inv["status"], inv["amountCents"]) == ("topup_failed", "open", 2000)
    assert inv["stripeInvoiceId"].startswith("in_") and inv["hostedInvoiceUrl"]
    bal = api.get("/v1/billing/balance").json()
    assert (bal["openInvoicesCents"], bal["openInvoiceCount"], bal["availableCents"]) == (2000, 1, 500)
    mail = [m for m in sent_mail() if "auto-topup failed" in m.subject]
    assert len(mail) == 1 and inv["hostedInvoiceUrl"] in mail[0].body
    assert api.get(f"/v1/billing/invoices/{inv['id']}/pay-url").json()["url"]
    # Paying it credits the wallet once (G17), however many times the events arrive.
    local_stripe.pay_invoice(inv["stripeInvoiceId"], "4242424242424242")
    for _ in range(2):
        deliver_all(local_stripe, ("invoice.paid", "invoice.payment_succeeded", "payment_intent.succeeded"))
    paid = api.get(f"/v1/billing/invoices/{inv['id']}").json()
    assert paid["status"] == "paid" and paid["paidAt"]
    bal = api.get("/v1/billing/balance").json()
    assert (bal["openInvoicesCents"], bal["openInvoiceCount"], bal["availableCents"]) == (0, 0, 2500)
    assert api.get(f"/v1/billing/invoices/{inv['id']}/pay-url").json() == {"url": None}
    check_invariants(user["id"])


def test_a_permanent_stripe_refusal_ends_the_attempt_like_a_decline(api: Api, user, local_stripe) -> None:
    """Regression (issue 15, item 3): a pending attempt that met a permanent refusal (here the
    Stripe customer was deleted in Stripe's dashboard: 404 on every charge) was retried with the
    old card forever and blocked every new attempt. Only "Stripe unreachable" keeps an attempt
    pending; any other refusal ends it as a decline does: invoice, auto-topup off, email."""
    import stripe

    from infra.local.stripe_local import SECRET_KEY

    add_card(api, local_stripe)
    wallet.credit(user["id"], 1500, "adjustment", "seed", {"description": "seed"})
    assert api.put("/v1/billing/auto-topup",
                   {"enabled": True, "thresholdCents": 1000, "topupAmountCents": 2000}).status == 200
    run_timers()
    customer = str(billing_store.wallet_item(user["id"])["stripeCustomerId"])
    stripe.StripeClient(SECRET_KEY, base_addresses={"api": local_stripe.api_base}).v1.customers.delete(customer)
    _debit(user["id"], 1000, "d1")
    run_timers()
    got = api.get("/v1/billing/auto-topup").json()
    assert got["enabled"] is False and got["disabledReason"] == "payment_failed", got
    item = billing_store.wallet_item(user["id"])
    assert item["autoTopupAttemptDone"] == item["autoTopupAttempt"]  # the attempt ended
    listed = api.get("/v1/billing/invoices").json()["data"]
    assert [(i["reason"], i["status"], i["amountCents"]) for i in listed] == [("topup_failed", "open", 2000)]
    mail = [m for m in sent_mail() if "auto-topup failed" in m.subject]
    assert len(mail) == 1
    _debit(user["id"], 10, "d2")
    run_timers()  # nothing is retried
    assert len(api.get("/v1/billing/invoices").json()["data"]) == 1
    check_invariants(user["id"])


def test_an_attempt_resumed_after_stripe_forgot_its_key_finds_its_payment(
        api: Api, user, local_stripe, monkeypatch, clock) -> None:
    """Regression (issue 15, item 6): Stripe keeps an idempotency key for 24 hours. An auto-topup
    attempt that charged the card and died before recording it, resumed more than a day later,
    made a second PaymentIntent under the forgotten key. It now looks the payment up by its
    metadata (customer + attempt) first."""
    from gpurent.billing import topups

    add_card(api, local_stripe)
    wallet.credit(user["id"], 1500, "adjustment", "seed", {"description": "seed"})
    assert api.put("/v1/billing/auto-topup",
                   {"enabled": True, "thresholdCents": 1000, "topupAmountCents": 2000}).status == 200
    run_timers()
    customer = str(billing_store.wallet_item(user["id"])["stripeCustomerId"])
    real_deposit = topups.deposit

    def dies(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the Lambda died after Stripe charged the card")

    monkeypatch.setattr(topups, "deposit", dies)
    _debit(user["id"], 1000, "d1")
    run_timers()  # the attempt charged the card, then its invocation died
    assert [p["status"] for p in _payment_intents(local_stripe, customer)] == ["succeeded"]
    monkeypatch.setattr(topups, "deposit", real_deposit)
    timers.clear()  # its resume timers were lost too (the queue kept them only so long)
    local_stripe.expire_idempotency_keys()
    clock.advance(25 * 3600)
    _debit(user["id"], 1, "d2")  # a debit asks again: the stuck attempt is resumed
    run_timers()
    assert [p["status"] for p in _payment_intents(local_stripe, customer)] == ["succeeded"]
    assert [e["amountCents"] for e in ledger(api) if e["type"] == "auto_topup"] == [2000]
    check_invariants(user["id"])


def test_a_saved_card_top_up_retried_after_a_day_finds_its_payment(
        api: Api, user, local_stripe, monkeypatch, clock) -> None:
    from gpurent.billing import topups

    add_card(api, local_stripe)
    customer = str(billing_store.wallet_item(user["id"])["stripeCustomerId"])
    real_deposit = topups.deposit
    monkeypatch.setattr(topups, "deposit", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("died")))
    assert api.post("/v1/billing/checkout", {"amountCents": 4000}, headers={"idempotency-key": "t-1"}).status == 500
    monkeypatch.setattr(topups, "deposit", real_deposit)
    local_stripe.expire_idempotency_keys()
    clock.advance(25 * 3600)
    api.sign_in("alice@example.com")
    r = api.post("/v1/billing/checkout", {"amountCents": 4000}, headers={"idempotency-key": "t-1"})
    assert r.status == 200, r.body
    assert len(_payment_intents(local_stripe, customer)) == 1
    assert api.get("/v1/billing/balance").json()["availableCents"] == 4000
    check_invariants(user["id"])


def test_many_debits_racing_past_the_threshold_fire_one_auto_topup(api: Api, user, local_stripe) -> None:
    """The cooldown claim is one conditional write: of racing checks exactly one fires (moto
    serialises the writes; the same claim on DynamoDB Local is in the conformance tier)."""
    add_card(api, local_stripe)
    wallet.credit(user["id"], 10_000, "adjustment", "seed", {"description": "seed"})
    assert api.put("/v1/billing/auto-topup",
                   {"enabled": True, "thresholdCents": 20_000, "topupAmountCents": 2000}).status == 200
    run_timers()
    fired = [e for e in ledger(api) if e["type"] == "auto_topup"]
    assert len(fired) == 1  # switching it on below the threshold fires at once
    for i in range(20):
        autotopup.run(user["id"])
        _debit(user["id"], 10, f"race{i}")
        run_timers()
    assert len([e for e in ledger(api) if e["type"] == "auto_topup"]) == 1
    check_invariants(user["id"])


def test_invoices_list_filter_page_and_admin_void(api: Api, user, local_stripe, clock) -> None:
    admin = Api(source_ip="198.51.100.99")
    admin.sign_in("admin@gpurent.test")
    made = []
    for i in range(3):
        r = admin.post("/v1/admin/invoices", {"userId": user["id"], "amountCents": 1000 + i,
                                              "description": f"wire {i}"})
        assert r.status == 200, r.body
        made.append(r.json())
        clock.advance(1)  # ids sort by time; the same millisecond would not order them
    assert made[0]["reason"] == "manual" and made[0]["stripeInvoiceId"].startswith("in_")
    page1 = api.get("/v1/billing/invoices?limit=2").json()
    assert [i["id"] for i in page1["data"]] == [made[2]["id"], made[1]["id"]] and page1["nextCursor"]
    page2 = api.get(f"/v1/billing/invoices?limit=2&cursor={page1['nextCursor']}").json()
    assert [i["id"] for i in page2["data"]] == [made[0]["id"]] and page2["nextCursor"] is None
    assert admin.post(f"/v1/admin/invoices/{made[1]['id']}/void").json() == {"ok": True}
    assert admin.post(f"/v1/admin/invoices/{made[1]['id']}/void").json() == {"ok": True}  # idempotent
    assert [i["id"] for i in api.get("/v1/billing/invoices?status=void").json()["data"]] == [made[1]["id"]]
    assert len(api.get("/v1/billing/invoices?status=open").json()["data"]) == 2
    bal = api.get("/v1/billing/balance").json()
    assert (bal["openInvoicesCents"], bal["openInvoiceCount"]) == (1000 + 1002, 2)
    # The voided event from Stripe changes nothing more.
    deliver_all(local_stripe, ("invoice.voided",))
    assert api.get("/v1/billing/balance").json()["openInvoiceCount"] == 2
    # Someone else's invoice is not found; bad ids and statuses are refused.
    other = Api(source_ip="198.51.100.8")
    other.sign_in("bob@example.com")
    assert other.get(f"/v1/billing/invoices/{made[0]['id']}").status == 404
    assert other.get(f"/v1/billing/invoices/{made[0]['id']}").json()["error"] == "invoice_not_found"
    assert api.get("/v1/billing/invoices/inv_nope").status == 404
    assert api.get("/v1/billing/invoices?status=draft").status == 400
    assert api.post(f"/v1/admin/invoices/{made[0]['id']}/void").status == 403  # not an admin
    check_invariants(user["id"])


def test_an_overage_invoice_is_mirrored_and_paying_it_clears_the_debt_only(api: Api, user, local_stripe) -> None:
    inv = invoices.issue(invoices.new_invoice(user["id"], "overage", 321, "Usage beyond the wallet balance"),
                         "overage-test")
    stripe_id = invoices.mirror(inv).stripe_invoice_id
    assert stripe_id is not None and stripe_id.startswith("in_")
    local_stripe.pay_invoice(stripe_id)
    deliver_all(local_stripe, ("invoice.paid",))
    bal = api.get("/v1/billing/balance").json()
    assert (bal["totalCents"], bal["openInvoicesCents"], bal["openInvoiceCount"]) == (0, 0, 0)
    assert ledger(api) == []


def test_a_non_utf8_webhook_body_is_invalid_signature_not_a_crash(api: Api, user, local_stripe) -> None:
    body = b"\xff\xfe{}"
    r = invoke("POST", "/v1/webhooks/stripe", raw=body,
               headers={"stripe-signature": sign(stripe_fixtures.WEBHOOK_SECRET, body)})
    assert r.status == 400 and json.loads(r.body)["error"] == "invalid_signature"
