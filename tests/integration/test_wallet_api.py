"""Balance, ledger and admin adjustments through the real handlers."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import pytest

from tests.conftest import Api, run_timers, sent_mail
from tests.integration.helpers import envelope, snapshot

ADMIN = "admin@gpurent.test"


@pytest.fixture
def admin(aws, clock) -> Api:
    a = Api(source_ip="198.51.100.200")
    a.sign_in(ADMIN)
    clock.advance(31)
    return a


def adjust(admin: Api, user_id: str, cents: int, reason: str = "test", key: str | None = None):
    headers = {"idempotency-key": key} if key else {}
    return admin.post("/v1/admin/adjustments", {"userId": user_id, "amountCents": cents, "reason": reason},
                      headers=headers)


def test_a_new_wallet_is_empty(api: Api, user) -> None:
    r = api.get("/v1/billing/balance")
    assert r.status == 200
    assert r.json() == {"availableCents": 0, "reservedCents": 0, "totalCents": 0, "openInvoicesCents": 0,
                        "openInvoiceCount": 0, "updatedAt": None}
    assert api.get("/v1/billing/ledger").json() == {"entries": [], "balanceCents": 0, "nextCursor": None}


def test_admin_adjustments_fund_a_wallet_and_are_ledgered(api: Api, user, admin: Api, clock) -> None:
    r = adjust(admin, user["id"], 5000, "welcome credit")
    assert r.status == 200, r.body
    body = r.json()
    assert body["availableCents"] == 5000 and body["totalCents"] == 5000
    entry = body["entry"]
    assert entry["type"] == "adjustment" and entry["amountCents"] == 5000 and entry["balanceAfterCents"] == 5000
    assert entry["id"].startswith("led_") and entry["description"] == "welcome credit"
    run_timers()  # the email is an outbox effect, sent by the timer function
    assert sent_mail()[-1].destinations["ToAddresses"] == ["alice@example.com"]
    clock.advance(5)
    r = admin.post("/v1/admin/adjustments", {"email": "ALICE@example.com", "amountCents": -1200, "reason": "fix"})
    assert r.status == 200, r.body
    bal = api.get("/v1/billing/balance").json()
    assert bal["availableCents"] == 3800 and bal["totalCents"] == 3800
    assert bal["updatedAt"] == r.json()["entry"]["createdAt"]
    led = api.get("/v1/billing/ledger").json()
    assert [e["amountCents"] for e in led["entries"]] == [-1200, 5000]
    assert [e["balanceAfterCents"] for e in led["entries"]] == [3800, 5000]
    assert led["balanceCents"] == 3800


def test_adjustment_replay_with_the_same_key_applies_once(api: Api, user, admin: Api) -> None:
    first = adjust(admin, user["id"], 700, key="k-1")
    again = adjust(admin, user["id"], 700, key="k-1")
    assert first.status == again.status == 200
    assert first.json() == again.json()
    assert api.get("/v1/billing/balance").json()["totalCents"] == 700
    run_timers()
    mails = [m for m in sent_mail() if m.destinations["ToAddresses"] == ["alice@example.com"]
             and "adjustment" in m.subject]
    assert len(mails) == 1
    before = snapshot()
    envelope(adjust(admin, user["id"], 701, key="k-1"), 400, "validation_failed")
    assert snapshot() == before


def test_adjustment_rules(api: Api, user, admin: Api) -> None:
    adjust(admin, user["id"], 100)
    before = snapshot()
    envelope(adjust(admin, user["id"], -101), 403, "insufficient_balance")
    envelope(adjust(admin, user["id"], 0), 400, "validation_failed")
    envelope(adjust(admin, user["id"], 10, reason=""), 400, "validation_failed")
    envelope(adjust(admin, "usr_01JAAAAAAAAAAAAAAAAAAAAAAA", 10), 404, "user_not_found")
    envelope(admin.post("/v1/admin/adjustments", {"email": "nobody@example.com", "amountCents": 1, "reason": "x"}),
             404, "user_not_found")
    envelope(admin.post("/v1/admin/adjustments", {"amountCents": 1, "reason": "x"}), 400, "validation_failed")
    envelope(admin.post("/v1/admin/adjustments", {"userId": user["id"], "amountCents": "5", "reason": "x"}),
             400, "validation_failed")
    envelope(admin.post("/v1/admin/adjustments", {"userId": user["id"], "amountCents": 1.5, "reason": "x"}),
             400, "validation_failed")
    envelope(admin.post("/v1/admin/adjustments", {"userId": user["id"], "amountCents": 10**12, "reason": "x"}),
             400, "validation_failed")
    envelope(adjust(admin, user["id"], 10, key="x" * 300), 400, "validation_failed")
    assert snapshot() == before


def test_non_admins_are_forbidden(api: Api, user) -> None:
    before = snapshot()
    envelope(adjust(api, user["id"], 100), 403, "forbidden")
    envelope(Api().post("/v1/admin/adjustments", {"userId": user["id"], "amountCents": 1, "reason": "x"}),
             401, "unauthorized")
    assert snapshot() == before


def test_ledger_pages_reconcile_across_pages(api: Api, user, admin: Api, clock) -> None:
    amounts = [300, -50, 1000, -200, 75, -25, 10]
    for a in amounts:
        assert adjust(admin, user["id"], a).status == 200
        clock.advance(1)
    seen = []
    url = "/v1/billing/ledger?pageSize=3"
    while url:
        page = api.get(url).json()
        seen.extend(page["entries"])
        assert len(page["entries"]) <= 3
        url = f"/v1/billing/ledger?pageSize=3&cursor={page['nextCursor']}" if page["nextCursor"] else ""
    assert [e["amountCents"] for e in seen] == list(reversed(amounts))
    for newer, older in itertools.pairwise(seen):
        assert newer["balanceAfterCents"] == newer["amountCents"] + older["balanceAfterCents"]
    assert seen[-1]["balanceAfterCents"] == seen[-1]["amountCents"]
    total = api.get("/v1/billing/balance").json()["totalCents"]
    assert sum(e["amountCents"] for e in seen) == total == seen[0]["balanceAfterCents"]


def test_ledger_type_filter(api: Api, user, admin: Api) -> None:
    adjust(admin, user["id"], 300)
    page = api.get("/v1/billing/ledger?type=adjustment").json()
    assert len(page["entries"]) == 1
    assert api.get("/v1/billing/ledger?type=refund").json()["entries"] == []


@pytest.mark.parametrize("query", ["pageSize=0", "pageSize=201", "pageSize=abc", "pageSize=-1", "type=bonus",
                                   "cursor=garbage", "cursor=eyJhZnRlciI6ImxlZF8wMSJ9.AAAA"])
def test_bad_ledger_queries(api: Api, user, query: str) -> None:
    envelope(api.get(f"/v1/billing/ledger?{query}"), 400, "validation_failed")


def test_cursors_cannot_be_edited_or_used_by_someone_else(api: Api, user, admin: Api, clock) -> None:
    for a in (1, 2, 3):
        adjust(admin, user["id"], a)
    cursor = api.get("/v1/billing/ledger?pageSize=1").json()["nextCursor"]
    body, mac = cursor.split(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["after"] = "led_7ZZZZZZZZZZZZZZZZZZZZZZZZZ"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=") + "." + mac
    envelope(api.get(f"/v1/billing/ledger?cursor={forged}"), 400, "validation_failed")
    mallory = Api()
    clock.advance(31)
    mallory.sign_in("mallory@example.com")
    envelope(mallory.get(f"/v1/billing/ledger?cursor={cursor}"), 400, "validation_failed")
    assert api.get(f"/v1/billing/ledger?pageSize=1&cursor={cursor}").status == 200


def test_billing_requires_sign_in(aws) -> None:
    envelope(Api().get("/v1/billing/balance"), 401, "unauthorized")
    envelope(Api().get("/v1/billing/ledger"), 401, "unauthorized")


def test_a_request_that_keeps_losing_to_other_writers_answers_503_with_retry_after(
        api: Api, user, admin: Api, monkeypatch) -> None:
    """Regression (issue 15, item 4): a user request whose money transaction keeps losing to
    concurrent writers answered 500 internal_error ("please retry" after nothing was done,
    indistinguishable from a bug). It is 503 `service_unavailable` with `Retry-After`, and
    nothing was written."""
    from gpurent.store import money as money_store

    adjust(admin, user["id"], 100)
    before = snapshot()
    real = money_store.transact

    def always_conflicts(items, token=None):
        raise money_store.TransactionConflict()

    monkeypatch.setattr(money_store, "transact", always_conflicts)
    monkeypatch.setattr("time.sleep", lambda s: None)  # the backoff's pauses, not the subject here
    r = adjust(admin, user["id"], 250)
    monkeypatch.setattr(money_store, "transact", real)
    envelope(r, 503, "service_unavailable")
    assert int(r.headers["retry-after"]) >= 1
    assert snapshot() == before


def test_a_failing_email_after_an_adjustment_does_not_fail_the_request(
        api: Api, user, admin: Api, monkeypatch, clock) -> None:
    """Regression (issue 15, item 5): the adjustment's email failed after the money moved and the
    admin was told "please retry" (a retry without a key adjusts twice). The email is an outbox
    effect of the adjustment's transaction, sent by the timer function."""
    from gpurent import notify

    real_send = notify.send

    def ses_down(to: str, subject: str, body: str) -> None:
        raise RuntimeError("SES is down")

    monkeypatch.setattr(notify, "send", ses_down)
    r = adjust(admin, user["id"], 900, "goodwill")
    assert r.status == 200, r.body
    assert api.get("/v1/billing/balance").json()["totalCents"] == 900
    run_timers()
    monkeypatch.setattr(notify, "send", real_send)
    clock.advance(120)
    run_timers()
    mails = [m for m in sent_mail() if m.destinations["ToAddresses"] == ["alice@example.com"]
             and "adjustment" in m.subject]
    assert len(mails) == 1 and "goodwill" in mails[0].body


# ---------------------------------------------------------------- filtered ledger pages (issue 15, item 11)

def _rows(user_id: str, types: list[str]) -> None:
    """Ledger rows straight into the table, oldest first (the filter's cost is the subject here)."""
    from gpurent import ids
    from gpurent.store import money as money_store

    items, last, total = [], None, 0
    for i, t in enumerate(types):
        last = ids.next_ulid_after(last, 1_780_000_000.0 + i)
        amount = -1 if t == "rental_charge" else 1
        total += amount
        items.append(money_store.ledger_put(user_id, {"id": f"led_{last}", "type": t, "amountCents": amount,
                                                      "balanceAfterCents": total, "createdAt": 1_780_000_000.0 + i,
                                                      "opKey": f"seed:{i}"}))
        if len(items) == 25:
            _batch(items)
            items = []
    if items:
        _batch(items)


def _batch(items: list[dict[str, Any]]) -> None:
    """BatchWriteItem (moto copies the whole table inside every transaction: thousands of rows
    written by transactions would take minutes)."""
    from gpurent.store import dynamo

    table = items[0]["Put"]["TableName"]
    dynamo.client().batch_write_item(RequestItems={table: [{"PutRequest": {"Item": i["Put"]["Item"]}} for i in items]})


def _queries(api: Api, url: str) -> tuple[int, dict[str, Any]]:
    from gpurent.store import dynamo

    calls: list[str] = []
    hook = lambda **kw: calls.append("q")  # noqa: E731
    dynamo.client().meta.events.register("before-call.dynamodb.Query", hook)
    try:
        body = api.get(url).json()
    finally:
        dynamo.client().meta.events.unregister("before-call.dynamodb.Query", hook)
    return len(calls), body


def test_a_filtered_ledger_page_costs_a_bounded_number_of_reads(api: Api, user) -> None:
    """Regression: `?type=` filtered the whole partition in one request (~850 queries for a month
    of one pod). A rare type reads its own index; the common `rental_charge` a bounded budget."""
    types = ["adjustment"] + ["rental_charge"] * 2000 + ["adjustment"] * 3
    _rows(user["id"], types)
    n, page = _queries(api, "/v1/billing/ledger?type=adjustment&pageSize=2")
    assert n <= 2, n
    assert [e["type"] for e in page["entries"]] == ["adjustment", "adjustment"] and page["nextCursor"]
    seen = list(page["entries"])
    cursor = page["nextCursor"]
    while cursor:
        n, page = _queries(api, f"/v1/billing/ledger?type=adjustment&pageSize=2&cursor={cursor}")
        assert n <= 2, n
        seen += page["entries"]
        cursor = page["nextCursor"]
    assert len(seen) == 4 and all(e["type"] == "adjustment" for e in seen)
    assert [e["id"] for e in seen] == sorted((e["id"] for e in seen), reverse=True)


def test_a_sparse_common_type_is_paged_with_a_bounded_budget(api: Api, user) -> None:
    types = ["rental_charge"] + ["adjustment"] * 1500 + ["rental_charge"] * 2
    _rows(user["id"], types)
    seen: list[dict[str, Any]] = []
    cursor, pages = None, 0
    while True:
        url = "/v1/billing/ledger?type=rental_charge&pageSize=50" + (f"&cursor={cursor}" if cursor else "")
        n, page = _queries(api, url)
        assert n <= 4, n  # the scan's budget per page
        seen += page["entries"]
        pages += 1
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert len(seen) == 3 and all(e["type"] == "rental_charge" for e in seen)
    assert pages > 1
