"""The concurrent money attacks, over HTTP against `make dev`'s default store
(DynamoDB Local, started by the stack itself).

On the embedded moto server these corrupted money: one +1000 adjustment sent
20 times with one key left the wallet at 3100; 20 parallel deliveries of one
Stripe event credited it three times; 16 of 20 parallel debits answered 500.
Each attack here fires its requests at once from a thread pool, then checks
the money: the answers (no 5xx), the wallet, and the ledger, which must add
up to the balance row by row."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from infra.local import journey
from infra.local.stripe_local import DEFAULT_WEBHOOK_SECRET, SECRET_KEY, sign

pytestmark = pytest.mark.e2e

N = 20
CARD = "4242424242424242"


@pytest.fixture
def admin(stack: str) -> Iterator[httpx.Client]:
    c = journey.sign_in(stack, journey.LOCAL_ADMIN)
    yield c
    c.close()


@pytest.fixture
def member(stack: str) -> Iterator[tuple[str, httpx.Client]]:
    email = journey.new_email("race")
    c = journey.sign_in(stack, email)
    yield email, c
    c.close()


def at_once(n: int, fn: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, range(n)))


def no_server_errors(answers: list[httpx.Response]) -> Counter[int]:
    statuses = Counter(r.status_code for r in answers)
    assert all(s < 500 for s in statuses), [(r.status_code, r.text) for r in answers if r.status_code >= 500]
    return statuses


def reconciled(http: httpx.Client) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The balance and the ledger (oldest first), checked against each other."""
    bal = journey.balance(http)
    rows = list(reversed(journey.ledger(http)))
    assert bal["availableCents"] >= 0 and bal["reservedCents"] >= 0
    assert bal["availableCents"] + bal["reservedCents"] == bal["totalCents"], bal
    assert sum(r["amountCents"] for r in rows) == bal["totalCents"], (bal, rows)
    running = 0
    for row in rows:
        running += row["amountCents"]
        assert row["balanceAfterCents"] == running, rows
    return bal, rows


def test_one_adjustment_sent_twenty_times_with_one_key_credits_once(admin: httpx.Client, member) -> None:
    email, http = member
    key = f"race-{uuid.uuid4().hex}"
    answers = at_once(N, lambda _: journey.fund(admin, email, 1000, key=key))
    statuses = no_server_errors(answers)
    ok = [r.json() for r in answers if r.status_code == 200]
    assert ok, statuses
    assert len({a["entry"]["id"] for a in ok}) == 1  # every success is the same entry
    bal, rows = reconciled(http)
    assert bal["totalCents"] == 1000
    assert [r["type"] for r in rows] == ["adjustment"]


def test_twenty_parallel_debits_never_overdraw(admin: httpx.Client, member) -> None:
    email, http = member
    assert journey.fund(admin, email, 1000).status_code == 200
    answers = at_once(N, lambda _: journey.fund(admin, email, -100))
    statuses = no_server_errors(answers)
    taken = statuses[200]
    assert 1 <= taken <= 10, statuses
    for r in answers:
        if r.status_code != 200:
            assert r.json()["error"] in ("insufficient_balance", "conflict", "operation_in_progress"), r.text
    bal, rows = reconciled(http)
    assert bal["totalCents"] == 1000 - 100 * taken
    assert Counter(r["amountCents"] for r in rows) == Counter({1000: 1, -100: taken})


def _stripe_event(http: httpx.Client, type_: str, object_id: str) -> dict[str, Any]:
    """The full event local Stripe delivered for this object (from its API)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listing = http.get("/dev/stripe/events").json()
        for d in reversed(listing["data"]):
            if d["type"] != type_:
                continue
            event = httpx.get(f"{listing['apiBase']}/v1/events/{d['id']}",
                              headers={"authorization": f"Bearer {SECRET_KEY}"}, timeout=10).json()
            if event.get("data", {}).get("object", {}).get("id") == object_id:
                return dict(event)
        time.sleep(0.3)
    raise AssertionError(f"no {type_} event for {object_id}")


def _deliver(stack: str, event: dict[str, Any]) -> httpx.Response:
    body = json.dumps(event).encode()
    headers = {"content-type": "application/json", "stripe-signature": sign(DEFAULT_WEBHOOK_SECRET, body)}
    return httpx.post(f"{stack}/v1/webhooks/stripe", content=body, timeout=600, headers=headers)


def test_twenty_parallel_deliveries_of_one_stripe_event_credit_once(stack: str, member) -> None:
    _, http = member
    # A saved card, then a top-up charged to it: local Stripe delivers payment_intent.succeeded.
    secret = http.post("/v1/billing/setup-intent").json()["clientSecret"]
    r = http.post(f"/dev/stripe/setup-intents/{secret.split('_secret_')[0]}/confirm", json={"card": CARD})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while http.get("/v1/billing/card").json().get("last4") != "4242":
        assert time.monotonic() < deadline, "the card was never saved"
        time.sleep(0.3)
    topup = http.post("/v1/billing/checkout", json={"amountCents": 2500})
    assert topup.status_code == 200 and topup.json()["status"] == "succeeded", topup.text
    delivered = _stripe_event(http, "payment_intent.succeeded", topup.json()["paymentIntentId"])

    # The same event again, twenty times at once (its marker is there: all duplicates) ...
    answers = at_once(N, lambda _: _deliver(stack, delivered))
    no_server_errors(answers)
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    # ... and a never-seen event of the same payment, twenty times at once: they race for the
    # one credit of that payment.
    fresh = {**delivered, "id": "evt_" + uuid.uuid4().hex[:24]}
    answers = at_once(N, lambda _: _deliver(stack, fresh))
    no_server_errors(answers)
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]

    bal, rows = reconciled(http)
    assert bal["totalCents"] == 2500
    assert [r["type"] for r in rows] == ["stripe_topup"]


def test_parallel_launches_reserve_once_each_and_one_key_launches_once(admin: httpx.Client, member) -> None:
    email, http = member
    assert journey.fund(admin, email, 100_000).status_code == 200
    key = f"race-launch-{uuid.uuid4().hex}"
    same = at_once(6, lambda _: journey.launch(http, "rtx-4090", key=key))
    no_server_errors(same)
    ids = {r.json().get("id") or r.json().get("details", {}).get("rentalId") for r in same}
    assert len(ids) == 1, [r.text for r in same]
    different = at_once(8, lambda n: journey.launch(http, ("rtx-4090", "a100-80gb", "h100-80gb")[n % 3]))
    no_server_errors(different)
    answered = {r.json().get("id") or r.json().get("details", {}).get("rentalId") for r in different} | ids
    try:
        listing = http.get("/v1/rentals", params={"pageSize": "100"}).json()["rentals"]
        assert {r["id"] for r in listing} == answered - {None}  # one rental per launch, as answered
        live = [r for r in listing if r["status"] in ("provisioning", "running")]
        bal, _ = reconciled(http)
        assert bal["reservedCents"] == sum(r["pricePerHourCents"] for r in live), (bal, live)
    finally:
        for r in http.get("/v1/rentals", params={"pageSize": "100"}).json()["rentals"]:
            if r["status"] in ("provisioning", "running"):
                http.post(f"/v1/rentals/{r['id']}/stop")
    reconciled(http)
