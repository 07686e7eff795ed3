"""`GET /v1/admin/audit` (an extension for the dashboard's admin page): what admins did
in a month, newest first, paged, with the emails of the admin and the user concerned."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from gpurent import clock as clock_module
from gpurent import config
from tests.conftest import Api
from tests.integration.helpers import envelope, snapshot

ADMIN = "admin@gpurent.test"


@pytest.fixture
def admin(aws, clock) -> Api:
    a = Api(source_ip="198.51.100.201")
    a.sign_in(ADMIN)
    clock.advance(31)
    return a


def test_the_audit_lists_every_admin_act_newest_first(api: Api, user, admin: Api, clock) -> None:
    assert admin.post("/v1/admin/adjustments", {"userId": user["id"], "amountCents": 2500,
                                                "reason": "welcome"}).status == 200
    clock.advance(2)
    inv = admin.post("/v1/admin/invoices", {"email": user["email"], "amountCents": 1200, "description": "wire"})
    assert inv.status == 200, inv.body
    clock.advance(2)
    assert admin.post(f"/v1/admin/invoices/{inv.json()['id']}/void").status == 200

    r = admin.get("/v1/admin/audit")
    assert r.status == 200, r.body
    body = r.json()
    assert body["month"] == clock_module.iso(clock.now())[:7] and body["nextCursor"] is None
    assert [e["action"] for e in body["entries"]] == ["invoice_void", "invoice", "adjustment"]
    void, issued, adjusted = body["entries"]
    assert adjusted["amountCents"] == 2500 and adjusted["reason"] == "welcome"
    assert issued["invoiceId"] == void["invoiceId"] == inv.json()["id"] and issued["amountCents"] == 1200
    assert {e["userEmail"] for e in body["entries"]} == {user["email"]}
    assert {e["adminEmail"] for e in body["entries"]} == {ADMIN}
    assert all(e["id"].startswith("aud_") and e["createdAt"].endswith("Z") for e in body["entries"])


def test_the_audit_pages_by_cursor_and_by_month(api: Api, user, admin: Api, clock) -> None:
    for i in range(3):
        assert admin.post("/v1/admin/adjustments", {"userId": user["id"], "amountCents": 100 + i,
                                                    "reason": f"r{i}"}).status == 200
        clock.advance(1)
    first = admin.get("/v1/admin/audit?pageSize=2").json()
    assert [e["amountCents"] for e in first["entries"]] == [102, 101] and first["nextCursor"]
    second = admin.get(f"/v1/admin/audit?pageSize=2&cursor={first['nextCursor']}").json()
    assert [e["amountCents"] for e in second["entries"]] == [100] and second["nextCursor"] is None
    assert admin.get("/v1/admin/audit?month=1999-01").json() == {"month": "1999-01", "entries": [],
                                                                   "nextCursor": None}
    # A cursor belongs to its month (and admin): it cannot be replayed on another.
    envelope(admin.get(f"/v1/admin/audit?month=1999-01&cursor={first['nextCursor']}"), 400, "validation_failed")


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "26-01", "abcd-ef", "2026-00"])
def test_a_bad_month_is_refused(admin: Api, month: str) -> None:
    envelope(admin.get(f"/v1/admin/audit?month={month}"), 400, "validation_failed")


def test_only_admins_read_the_audit(api: Api, user) -> None:
    before = snapshot()
    envelope(api.get("/v1/admin/audit"), 403, "forbidden")
    assert snapshot() == before


def test_forged_and_foreign_cursors_are_refused(api: Api, user, admin: Api, clock, monkeypatch) -> None:
    for i in range(2):
        assert admin.post("/v1/admin/adjustments", {"userId": user["id"], "amountCents": 100 + i,
                                                    "reason": "r"}).status == 200
    cursor = admin.get("/v1/admin/audit?pageSize=1").json()["nextCursor"]
    body, _ = cursor.split(".")
    for bad in ("garbage", ".", cursor + ".x", body + "." + "A" * 22, "A" + cursor[1:], "é" * 10, "x" * 3000):
        err = envelope(admin.get("/v1/admin/audit?" + urlencode({"pageSize": 1, "cursor": bad})), 400,
                       "validation_failed")
        assert "cursor" in err.get("details", {}), (bad, err)
    # Another admin's cursor is not theirs to use.
    monkeypatch.setenv("ADMIN_EMAILS", f"{ADMIN},second-admin@gpurent.test")
    config.reset()
    other = Api(source_ip="198.51.100.202")
    other.sign_in("second-admin@gpurent.test")
    assert other.get("/v1/admin/audit?pageSize=1").status == 200
    envelope(other.get("/v1/admin/audit?" + urlencode({"pageSize": 1, "cursor": cursor})), 400, "validation_failed")
    monkeypatch.undo()
    config.reset()


@pytest.mark.parametrize("month", ["２０２６-０１", "2026-01\n", " 2026-01", "2026-01 "])
def test_only_ascii_months(admin: Api, month: str) -> None:
    from urllib.parse import quote

    envelope(admin.get(f"/v1/admin/audit?month={quote(month)}"), 400, "validation_failed")


def test_an_empty_month_means_this_month(admin: Api, clock) -> None:
    assert admin.get("/v1/admin/audit?month=").json()["month"] == clock_module.iso(clock.now())[:7]
