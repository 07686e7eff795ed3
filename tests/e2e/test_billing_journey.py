"""Billing in `make dev`, over real HTTP against the local stack (its local Stripe
delivers signed webhooks to the stack by itself): the newcomer's journey of issue 7 —
add a card, top up through Checkout and through the saved card, turn auto-topup on,
launch a pod and watch auto-topup fire as it burns money, each credit once in the
ledger — and a card declined at setup saving nothing.

Webhooks reach the stack asynchronously (localstripe sends its own events about a
second after the call), so every wait below polls with a bound."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from tests.e2e.test_local_stack import error, mailbox, new_email, sign_in

pytestmark = pytest.mark.e2e

CARD = "4242424242424242"
DECLINED = "4000000000000002"
WAIT = 20.0  # seconds to wait for a webhook to land
T = TypeVar("T")
NO_CARD = {"brand": None, "last4": None, "expMonth": None, "expYear": None, "pmId": None}


@pytest.fixture
def http(stack: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack, timeout=600) as client:  # a hang guard, not a speed limit
        yield client


# --------------------------------------------------------------------------- helpers


def until(what: str, check: Callable[[], T | None], timeout: float = WAIT) -> T:
    """Poll `check` until it answers something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def ok(r: httpx.Response) -> Any:
    assert r.status_code == 200, (r.request.method, r.request.url.path, r.status_code, r.text)
    return r.json()


def balance(http: httpx.Client) -> dict[str, Any]:
    return dict(ok(http.get("/v1/billing/balance")))


def ledger(http: httpx.Client) -> list[dict[str, Any]]:
    """Every ledger row, newest first, across pages."""
    rows: list[dict[str, Any]] = []
    params = {"pageSize": "200"}
    for _ in range(50):
        page = ok(http.get("/v1/billing/ledger", params=params))
        rows.extend(page["entries"])
        if not page.get("nextCursor"):
            return rows
        params["cursor"] = page["nextCursor"]
    raise AssertionError("ledger pagination does not end")


def of_type(rows: list[dict[str, Any]], entry_type: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["type"] == entry_type]


def stripe_events(http: httpx.Client) -> list[dict[str, Any]]:
    """Every event the local Stripe sent so far, oldest first, with the stack's answer."""
    return list(ok(http.get("/dev/stripe/events"))["data"])


def delivered(http: httpx.Client, since: int, event_type: str, count: int = 1) -> list[dict[str, Any]]:
    """Wait until `count` events of `event_type` sent after index `since` were accepted (200) by the stack."""
    def check() -> list[dict[str, Any]] | None:
        found = [e for e in stripe_events(http)[since:] if e["type"] == event_type]
        assert all(e["status"] in (None, 200) for e in found), found  # a refused delivery is a bug
        done = [e for e in found if e["status"] == 200]
        return done if len(done) >= count else None

    return until(f"{count} × {event_type} delivered", check)


def advance(http: httpx.Client, seconds: float) -> None:
    ok(http.post("/dev/clock/advance", json={"seconds": seconds}))


def add_card(http: httpx.Client, card: str = CARD) -> tuple[str, httpx.Response]:
    """SetupIntent, then what Stripe.js would do with `card`: (setup intent id, the dev route's answer)."""
    si = ok(http.post("/v1/billing/setup-intent"))
    assert si["publishableKey"].startswith("pk_") and "_secret_" in si["clientSecret"], si
    si_id = si["clientSecret"].split("_secret_")[0]
    assert si_id.startswith("seti_"), si_id
    return si_id, http.post(f"/dev/stripe/setup-intents/{si_id}/confirm", json={"card": card})


def mails(http: httpx.Client, email: str, subject_part: str) -> list[dict[str, Any]]:
    return [m for m in mailbox(http) if m["to"] == email and subject_part in m["subject"]]


def assert_ledger_adds_up(http: httpx.Client) -> list[dict[str, Any]]:
    rows = ledger(http)
    bal = balance(http)
    assert bal["totalCents"] == sum(r["amountCents"] for r in rows), (bal, rows)
    assert bal["availableCents"] + bal["reservedCents"] == bal["totalCents"], bal
    oldest_first = rows[::-1]
    running = 0
    for r in oldest_first:
        running += r["amountCents"]
        assert r["balanceAfterCents"] == running, (r, oldest_first)
    return rows


# --------------------------------------------------------------------------- the journey


def test_newcomer_billing_journey(http: httpx.Client) -> None:
    email = new_email("billing")
    sign_in(http, email)
    assert ok(http.get("/v1/billing/card")) == NO_CARD
    assert balance(http)["totalCents"] == 0
    assert ok(http.get("/v1/billing/auto-topup"))["enabled"] is False
    start = len(stripe_events(http))

    # 1. Add a card: the setup intent confirmed as Stripe.js would; setup_intent.succeeded saves it.
    _, r = add_card(http)
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    card = until("the card on file", lambda: (c := ok(http.get("/v1/billing/card")))["pmId"] and c)
    assert (card["brand"], card["last4"]) == ("visa", "4242") and card["pmId"].startswith("pm_")
    delivered(http, start, "setup_intent.succeeded")

    # 2. Top up $20 through Checkout (forced, although a card is on file).
    mark = len(stripe_events(http))
    session = ok(http.post("/v1/billing/checkout", json={"amountCents": 2000, "useCheckout": True}))
    assert session["sessionId"].startswith("cs_") and session["checkoutUrl"], session
    assert balance(http)["totalCents"] == 0  # nothing before Stripe says it was paid
    paid = ok(http.post(f"/dev/stripe/checkout/{session['sessionId']}/complete", json={"card": CARD}))
    assert paid["payment_status"] == "paid" and paid["status"] == "complete", paid
    until("the Checkout credit", lambda: balance(http)["totalCents"] == 2000)
    delivered(http, mark, "checkout.session.completed")
    delivered(http, mark, "payment_intent.succeeded")  # the same payment's other event
    assert balance(http)["totalCents"] == 2000
    assert len(of_type(ledger(http), "stripe_topup")) == 1

    # 3. Top up $30 through the saved card: credited at once; its webhook adds nothing.
    mark = len(stripe_events(http))
    topup = ok(http.post("/v1/billing/checkout", json={"amountCents": 3000}, headers={"idempotency-key": "e2e-1"}))
    assert topup["status"] == "succeeded" and topup["checkoutUrl"] is None and topup["sessionId"] is None, topup
    assert topup["paymentIntentId"].startswith("pi_")
    assert balance(http)["totalCents"] == 5000  # at once, no webhook needed
    delivered(http, mark, "payment_intent.succeeded")
    again = ok(http.post("/v1/billing/checkout", json={"amountCents": 3000}, headers={"idempotency-key": "e2e-1"}))
    assert again["paymentIntentId"] == topup["paymentIntentId"]  # a retried request charges nothing more
    time.sleep(1.5)  # a wrong second charge's webhook would land in about a second
    assert balance(http)["totalCents"] == 5000
    assert [r["amountCents"] for r in of_type(ledger(http), "stripe_topup")] == [3000, 2000]
    assert_ledger_adds_up(http)

    # 4. Turn auto-topup on: below (5000 − one hour of the pod − $3) it adds $20.
    family, count = "h100-80gb", 8
    price = ok(http.post("/v1/rentals/preview", json={"familyId": family, "gpuCount": count}))["pricePerHourCents"]
    assert 0 < price < 4000, price
    threshold = 5000 - price - 300
    settings = {"enabled": True, "thresholdCents": threshold, "topupAmountCents": 2000}
    assert ok(http.put("/v1/billing/auto-topup", json=settings)) == settings
    got = ok(http.get("/v1/billing/auto-topup"))
    assert got["enabled"] is True and got["thresholdCents"] == threshold and got["lastAttemptAt"] is None

    # 5. Launch a pod: its hour's reserve leaves available just above the threshold.
    mark = len(stripe_events(http))
    rental = ok(http.post("/v1/rentals", json={"familyId": family, "gpuCount": count, "name": "billing-e2e"}))
    rid = rental["id"]
    assert rental["pricePerHourCents"] == price
    bal = balance(http)
    assert (bal["availableCents"], bal["reservedCents"]) == (5000 - price, price), bal
    assert of_type(ledger(http), "auto_topup") == []
    try:
        # 6. The pod burns money as the clock moves; once available drops below the threshold,
        #    auto-topup fires (at most once per 5 minutes).
        fired: list[dict[str, Any]] = []
        for _ in range(30):  # up to an hour of test clock, 2 minutes at a time
            advance(http, 120)
            fired = of_type(ledger(http), "auto_topup")
            if fired:
                break
        assert fired, (balance(http), ledger(http)[:5])
        assert ok(http.get(f"/v1/rentals/{rid}"))["status"] == "running"
        assert all(r["amountCents"] == 2000 and r["stripeChargeId"] for r in fired), fired
        assert len(of_type(ledger(http), "rental_charge")) >= 1
        assert balance(http)["availableCents"] >= threshold  # topped back up above the threshold
        assert ok(http.get("/v1/billing/auto-topup"))["lastAttemptAt"] is not None
        delivered(http, mark, "payment_intent.succeeded", len(fired))  # each auto-topup's own webhook
    finally:
        stop = http.post(f"/v1/rentals/{rid}/stop")
        assert stop.status_code in (200, 409), stop.text
        advance(http, 5)
        for _ in range(3):
            if ok(http.get(f"/v1/rentals/{rid}"))["status"] == "stopped":
                break
            advance(http, 60)
    assert ok(http.get(f"/v1/rentals/{rid}"))["status"] == "stopped"

    # 7. The ledger: each credit exactly once, and it adds up to the balance.
    time.sleep(1.5)  # any late webhook has landed
    rows = assert_ledger_adds_up(http)
    topups, autos = of_type(rows, "stripe_topup"), of_type(rows, "auto_topup")
    assert sorted(r["amountCents"] for r in topups) == [2000, 3000], topups
    assert len(autos) >= 1 and all(r["amountCents"] == 2000 for r in autos), autos
    charges = [r["stripeChargeId"] for r in topups + autos]
    assert all(c and c.startswith("ch_") for c in charges) and len(set(charges)) == len(charges), charges
    assert {r["type"] for r in rows} <= {"stripe_topup", "auto_topup", "rental_charge"}, rows
    bal = balance(http)
    assert bal["reservedCents"] == 0
    assert bal["totalCents"] == 5000 + 2000 * len(autos) + sum(r["amountCents"] for r in of_type(rows, "rental_charge"))
    # One email per credit (sent by the timer function from the outbox, within a moment).
    until("one email per credit", lambda: (
        len(mails(http, email, "Top-up of $20.00 received")) == 1
        and len(mails(http, email, "Top-up of $30.00 received")) == 1
        and len(mails(http, email, "Auto-topup of $20.00 received")) == len(autos)) or None)


def test_a_card_declined_at_setup_saves_nothing(http: httpx.Client) -> None:
    sign_in(http, new_email("declined"))
    start = len(stripe_events(http))
    si_id, r = add_card(http, DECLINED)
    assert r.status_code == 402, r.text
    err = r.json()["error"]
    assert (err["type"], err["code"], err["decline_code"]) == ("card_error", "card_declined", "generic_decline"), err
    time.sleep(1.5)  # anything localstripe might send would land in about a second
    assert ok(http.get("/v1/billing/card")) == NO_CARD
    assert not [e for e in stripe_events(http)[start:] if e["type"] == "setup_intent.succeeded"]
    # With no card on file, auto-topup is refused and a top-up goes through Checkout, charging nothing.
    body = error(http.put("/v1/billing/auto-topup",
                          json={"enabled": True, "thresholdCents": 500, "topupAmountCents": 2000}),
                 400, "validation_failed")
    assert "card" in body["details"]
    session = ok(http.post("/v1/billing/checkout", json={"amountCents": 1000}))
    assert session["sessionId"].startswith("cs_") and session["checkoutUrl"], session
    assert balance(http)["totalCents"] == 0 and ledger(http) == []
    # The same SetupIntent still takes a good card afterwards.
    r = http.post(f"/dev/stripe/setup-intents/{si_id}/confirm", json={"card": CARD})
    assert r.status_code == 200, r.text
    card = until("the card on file", lambda: (c := ok(http.get("/v1/billing/card")))["pmId"] and c)
    assert card["last4"] == "4242"
