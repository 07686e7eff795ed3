"""Stripe refunds and disputes of top-ups reverse the credit in the ledger (issue 15, item 8),
and out-of-order `setup_intent.succeeded` events keep the newest card.

The events are signed test events (Stripe's scheme, `infra.local.stripe_local.sign`) about
real objects of the local Stripe: a saved-card top-up's charge and PaymentIntent."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from gpurent import wallet
from infra.local.client import invoke
from infra.local.stripe_local import LocalStripe, sign
from tests import stripe_fixtures
from tests.conftest import Api, run_timers
from tests.integration.test_billing import add_card, deliver, ledger
from tests.walletkit import check_invariants


def event(type_: str, obj: dict[str, Any], created: int | None = None) -> Any:
    """Deliver a signed Stripe event about `obj` to the webhook; returns the reply."""
    body = json.dumps({"id": f"evt_test_{time.time_ns()}", "object": "event", "type": type_,
                       "created": created or int(time.time()), "data": {"object": obj}}).encode()
    return invoke("POST", "/v1/webhooks/stripe", raw=body,
                  headers={"stripe-signature": sign(stripe_fixtures.WEBHOOK_SECRET, body)})


def top_up(api: Api, ls: LocalStripe, cents: int) -> dict[str, Any]:
    """A saved-card top-up; returns its charge as Stripe has it."""
    r = api.post("/v1/billing/checkout", {"amountCents": cents})
    assert r.status == 200 and r.json()["status"] == "succeeded", r.body
    pi = stripe_fixtures.stripe_get(ls, f"/v1/payment_intents/{r.json()['paymentIntentId']}")
    charge_id = pi["latest_charge"] if isinstance(pi["latest_charge"], str) else pi["latest_charge"]["id"]
    return stripe_fixtures.stripe_get(ls, f"/v1/charges/{charge_id}")


def refunded(charge: dict[str, Any], cents: int) -> dict[str, Any]:
    return {**charge, "amount_refunded": cents, "refunded": cents >= int(charge["amount"])}


def dispute(charge: dict[str, Any], status: str = "needs_response", dp: str = "dp_test_1") -> dict[str, Any]:
    return {"id": dp, "object": "dispute", "amount": int(charge["amount"]), "charge": charge["id"],
            "payment_intent": charge["payment_intent"], "status": status, "currency": "usd"}


def balance(api: Api) -> dict[str, Any]:
    return dict(api.get("/v1/billing/balance").json())


@pytest.fixture
def funded(api: Api, user, local_stripe) -> tuple[Api, dict[str, Any], dict[str, Any]]:
    add_card(api, local_stripe)
    return api, user, top_up(api, local_stripe, 5000)


def test_a_refund_at_stripe_reverses_the_credit_once(funded, local_stripe) -> None:
    api, user, charge = funded
    assert balance(api)["availableCents"] == 5000
    assert event("charge.refunded", refunded(charge, 2000)).status == 200
    assert event("charge.refunded", refunded(charge, 2000)).status == 200  # the same refund again (another event)
    assert balance(api)["availableCents"] == 3000
    rows = [e for e in ledger(api) if e["type"] == "topup_refund"]
    assert [e["amountCents"] for e in rows] == [-2000] and rows[0]["stripeChargeId"] == charge["id"]
    # A second refund: the charge is now refunded in full (Stripe sends the cumulative amount).
    assert event("charge.refunded", refunded(charge, 5000)).status == 200
    assert event("charge.refunded", refunded(charge, 2000)).status == 200  # late and out of order: nothing
    assert balance(api)["availableCents"] == 0
    assert sorted(e["amountCents"] for e in ledger(api) if e["type"] == "topup_refund") == [-3000, -2000]
    assert api.get("/v1/billing/ledger?type=topup_refund").json()["entries"][0]["amountCents"] == -3000
    check_invariants(user["id"])


def test_a_refund_larger_than_available_becomes_an_invoice_never_a_negative_balance(funded) -> None:
    api, user, charge = funded
    wallet.debit(user["id"], 4000, "spent", {"description": "spent it"})
    assert event("charge.refunded", refunded(charge, 5000)).status == 200
    bal = balance(api)
    assert (bal["availableCents"], bal["totalCents"]) == (0, 0)
    assert (bal["openInvoicesCents"], bal["openInvoiceCount"]) == (4000, 1)
    assert [e["amountCents"] for e in ledger(api) if e["type"] == "topup_refund"] == [-1000]
    (inv,) = api.get("/v1/billing/invoices").json()["data"]
    assert (inv["reason"], inv["status"], inv["amountCents"]) == ("manual", "open", 4000)
    assert charge["id"] in inv["lineItems"][0]["description"]
    check_invariants(user["id"])


def test_a_dispute_reverses_the_credit_and_a_won_dispute_restores_it(funded) -> None:
    api, user, charge = funded
    wallet.debit(user["id"], 3000, "spent", {"description": "spent it"})
    assert event("charge.dispute.created", dispute(charge)).status == 200
    assert event("charge.dispute.created", dispute(charge)).status == 200  # redelivered
    bal = balance(api)
    assert (bal["availableCents"], bal["openInvoicesCents"]) == (0, 3000)
    assert [e["amountCents"] for e in ledger(api) if e["type"] == "dispute"] == [-2000]
    assert event("charge.dispute.closed", dispute(charge, "won")).status == 200
    assert event("charge.dispute.closed", dispute(charge, "won")).status == 200
    bal = balance(api)
    assert (bal["availableCents"], bal["openInvoicesCents"], bal["openInvoiceCount"]) == (2000, 0, 0)
    assert [e["amountCents"] for e in ledger(api) if e["type"] == "dispute_won"] == [2000]
    (inv,) = api.get("/v1/billing/invoices").json()["data"]
    assert inv["status"] == "void"
    check_invariants(user["id"])


def test_a_lost_dispute_keeps_the_reversal_and_closed_before_created_is_handled(funded) -> None:
    api, user, charge = funded
    assert event("charge.dispute.closed", dispute(charge, "lost", "dp_test_2")).status == 200  # created never seen
    assert event("charge.dispute.created", dispute(charge, "needs_response", "dp_test_2")).status == 200  # late
    assert balance(api)["availableCents"] == 0
    assert [e["amountCents"] for e in ledger(api) if e["type"] == "dispute"] == [-5000]
    check_invariants(user["id"])


def test_events_about_charges_that_are_not_our_top_ups_are_acknowledged(api: Api, user, local_stripe) -> None:
    foreign = {"id": "ch_not_ours", "object": "charge", "amount": 1000, "amount_refunded": 1000,
               "payment_intent": None, "refunded": True}
    assert event("charge.refunded", foreign).status == 200
    assert event("charge.dispute.created", {"id": "dp_x", "object": "dispute", "amount": 1000,
                                            "charge": "ch_not_ours", "status": "needs_response"}).status == 200
    assert ledger(api) == []


def test_out_of_order_setup_intent_events_keep_the_newest_card(api: Api, user, local_stripe) -> None:
    """Regression (issue 15, item 8): the event of an older SetupIntent delivered after a newer one
    replaced the newer card with the older one."""
    first = add_card(api, local_stripe)
    r = api.post("/v1/billing/setup-intent")
    si_id = r.json()["clientSecret"].split("_secret_")[0]
    local_stripe.confirm_setup_intent(si_id, "5555555555554444")
    newer = local_stripe.wait_for("setup_intent.succeeded", lambda o: o["id"] == si_id)
    older = next(d for d in local_stripe.deliveries() if d.type == "setup_intent.succeeded" and d.id != newer.id)
    now = int(time.time())

    def resigned(d: Any, created: int) -> Any:
        obj = {**d.object, "created": created}
        return event("setup_intent.succeeded", obj, created)

    assert resigned(newer, now + 10).status == 200
    card = api.get("/v1/billing/card").json()
    assert card["pmId"] != first["pmId"]
    assert resigned(older, now).status == 200  # late: an older SetupIntent
    assert api.get("/v1/billing/card").json() == card
    assert deliver(older).status == 200  # the original delivery too
    run_timers()
