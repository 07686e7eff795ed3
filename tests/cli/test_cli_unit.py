"""The `gpurent` CLI against a mocked API (respx): argument handling, money
formatting, tables, CSV, exit codes, credentials and the 429 retry."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from gpurent_cli import client as client_mod
from gpurent_cli import main as main_mod
from gpurent_cli.config import DEFAULT_API, Credential, Store, config_dir, resolve_api
from gpurent_cli.output import dollars_value, ledger_csv, money, parse_dollars, plain_dollars, table

API = "http://api.test"
RID = "rent_01M8EGZ747T73NGNG26NCRER3A"


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cfg"
    monkeypatch.setenv("GPURENT_CONFIG_DIR", str(d))
    monkeypatch.setenv("GPURENT_API", API)
    monkeypatch.delenv("GPURENT_TOKEN", raising=False)
    return d


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waited: list[float] = []
    monkeypatch.setattr(client_mod, "sleep", waited.append)
    return waited


@pytest.fixture
def run(cfg: Path, sleeps: list[float], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    def go(*argv: str, stdin: str = "") -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main_mod.main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return go


@pytest.fixture
def signed_in(cfg: Path) -> Credential:
    cred = Credential("session", "sid-123", "me@example.com")
    Store().put(API, cred, make_default=False)
    return cred


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=API, assert_all_called=False) as mock:
        yield mock


def err_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"error": code, "message": message}
    if details is not None:
        out["details"] = details
    return out


def rental(status: str = "running", **extra: Any) -> dict[str, Any]:
    r = {"id": RID, "name": "demo", "status": status, "familyId": "rtx-4090", "gpuCount": 1,
         "pricePerHourCents": 65, "host": "203.0.113.12" if status == "running" else None,
         "port": 22001 if status == "running" else None, "region": "US-East", "startedAt": "2026-06-07T08:14:22Z",
         "stoppedAt": None, "totalChargedCents": 375, "templateId": "ubuntu-24-04", "runningAt": None,
         "autoStopAfterHours": None, "maxTotalCents": None, "stopReason": None, "provider": "vast", "error": None}
    r.update(extra)
    return r


# ---------------------------------------------------------------- formatting

def test_money_is_dollars_with_two_decimals() -> None:
    assert money(0) == "$0.00"
    assert money(5) == "$0.05"
    assert money(65) == "$0.65"
    assert money(5000) == "$50.00"
    assert money(-47) == "-$0.47"
    assert money(123456) == "$1,234.56"
    assert money(None) == "-"
    assert plain_dollars(-47) == "-0.47"
    assert plain_dollars(123456) == "1234.56"
    assert plain_dollars(None) == ""
    assert dollars_value(2.8) == "$2.80"
    assert dollars_value(0.005) == "$0.01"  # half up
    assert dollars_value(None) == "-"


@pytest.mark.parametrize(("text", "cents"), [("25", 2500), ("25.5", 2550), ("$1,000.00", 100000), ("0.01", 1),
                                             (" 10 ", 1000)])
def test_parse_dollars(text: str, cents: int) -> None:
    assert parse_dollars(text) == cents


@pytest.mark.parametrize("text", ["abc", "0", "-5", "0.015", "nan", "inf", "", "1e400x"])
def test_parse_dollars_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_dollars(text)


def test_table_pads_columns_and_right_aligns_money() -> None:
    out = table(("A", "PRICE"), [("x", "$0.65"), ("longer", "$10.00"), ("n", None)], right=(1,))
    assert out.splitlines() == ["A        PRICE", "x        $0.65", "longer  $10.00", "n            -"]


def test_ledger_csv_columns_and_formula_guard() -> None:
    text = ledger_csv([
        {"id": "led_2", "createdAt": "2026-01-02T00:00:00Z", "type": "rental_charge", "amountCents": -47,
         "balanceAfterCents": 4953, "rentalId": RID, "stripeChargeId": None, "invoiceId": None, "description": None},
        {"id": "led_1", "createdAt": "2026-01-01T00:00:00Z", "type": "adjustment", "amountCents": 5000,
         "balanceAfterCents": 5000, "description": "=HYPERLINK(\"x\")"},
    ])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["amount"] == "-0.47" and rows[0]["amountCents"] == "-47" and rows[0]["rentalId"] == RID
    assert rows[0]["balanceAfter"] == "49.53"
    assert rows[1]["description"].startswith("'=")


# ---------------------------------------------------------------- config

def test_config_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GPURENT_CONFIG_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_dir() == tmp_path / "xdg" / "gpurent"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config_dir() == tmp_path / "home" / ".config" / "gpurent"
    monkeypatch.setenv("GPURENT_CONFIG_DIR", str(tmp_path / "x"))
    assert config_dir() == tmp_path / "x"


def test_api_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    store = Store(tmp_path)
    monkeypatch.delenv("GPURENT_API", raising=False)
    assert resolve_api(None, store) == DEFAULT_API == "http://127.0.0.1:3000"
    store.put("https://saved.example/", Credential("token", "gpr_x"), make_default=True)
    assert resolve_api(None, store) == "https://saved.example"
    monkeypatch.setenv("GPURENT_API", "http://env.example")
    assert resolve_api(None, store) == "http://env.example"
    assert resolve_api("http://flag.example/", store) == "http://flag.example"


# ---------------------------------------------------------------- sign-in

def test_login_prompts_for_the_code_and_stores_the_session_0600(
        run: Callable[..., Result], api: respx.MockRouter, cfg: Path) -> None:
    req = api.post("/v1/auth/request-code").respond(200, json={"ok": True, "created": True})
    verify = api.post("/v1/auth/verify-code").respond(
        200, json={"user": {"id": "usr_1", "email": "me@example.com", "createdAt": "2026-01-01T00:00:00Z"},
                   "expiresAt": "2026-02-01T00:00:00Z"},
        headers={"set-cookie": "sid=s3cret; HttpOnly; SameSite=Lax; Path=/; Max-Age=2592000"})
    r = run("login", "me@example.com", stdin="123456\n")
    assert r.code == 0, r.err
    assert json.loads(req.calls.last.request.content) == {"email": "me@example.com"}
    assert json.loads(verify.calls.last.request.content) == {"email": "me@example.com", "code": "123456"}
    assert "Code:" in r.err and r.out == ""  # the prompt is on stderr
    path = cfg / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o700
    assert Store().get(API) == Credential("session", "s3cret", "me@example.com")

    me = api.get("/v1/auth/me").respond(200, json={"user": {"id": "usr_1", "email": "me@example.com"},
                                                   "expiresAt": None})
    assert run("whoami").code == 0
    assert me.calls.last.request.headers["cookie"] == "sid=s3cret"
    assert "authorization" not in me.calls.last.request.headers


def test_login_with_a_wrong_code_is_exit_3_with_the_message_verbatim(
        run: Callable[..., Result], api: respx.MockRouter) -> None:
    api.post("/v1/auth/request-code").respond(200, json={"ok": True, "created": False})
    api.post("/v1/auth/verify-code").respond(401, json=err_body("code_invalid", "Code is incorrect or expired"))
    r = run("login", "me@example.com", "--code", "000000")
    assert r.code == 3
    assert "Code is incorrect or expired" in r.err
    assert Store().get(API) is None


def test_login_with_a_code_uses_it_without_asking_for_a_new_one(
        run: Callable[..., Result], api: respx.MockRouter) -> None:
    """Regression: `--code C` used to request a new code first, which invalidated C."""
    req = api.post("/v1/auth/request-code").respond(200, json={"ok": True, "created": False})
    verify = api.post("/v1/auth/verify-code").respond(
        200, json={"user": {"id": "usr_1", "email": "me@example.com"}, "expiresAt": "2026-02-01T00:00:00Z"},
        headers={"set-cookie": "sid=s3cret; HttpOnly; SameSite=Lax; Path=/; Max-Age=2592000"})
    r = run("login", "me@example.com", "--code", "654321")
    assert r.code == 0, r.err
    assert not req.called
    assert json.loads(verify.calls.last.request.content) == {"email": "me@example.com", "code": "654321"}
    assert "emailed" not in r.err
    assert Store().get(API) == Credential("session", "s3cret", "me@example.com")


def test_login_with_a_token_sends_it_as_bearer(run: Callable[..., Result], api: respx.MockRouter) -> None:
    me = api.get("/v1/auth/me").respond(200, json={"user": {"id": "usr_1", "email": "bot@example.com"},
                                                   "expiresAt": None})
    r = run("login", "--token", "-", stdin="gpr_abc\n")
    assert r.code == 0, r.err
    assert me.calls.last.request.headers["authorization"] == "Bearer gpr_abc"
    assert "cookie" not in me.calls.last.request.headers
    assert Store().get(API) == Credential("token", "gpr_abc", "bot@example.com")
    bal = api.get("/v1/billing/balance").respond(200, json={"availableCents": 1})
    run("balance")
    assert bal.calls.last.request.headers["authorization"] == "Bearer gpr_abc"


def test_a_bad_token_is_not_stored(run: Callable[..., Result], api: respx.MockRouter) -> None:
    api.get("/v1/auth/me").respond(401, json=err_body("unauthorized", "Not signed in"))
    r = run("login", "--token", "gpr_wrong")
    assert r.code == 3 and "Not signed in" in r.err
    assert Store().get(API) is None


def test_env_token_overrides_stored_credentials(run: Callable[..., Result], api: respx.MockRouter,
                                                signed_in: Credential, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPURENT_TOKEN", "gpr_env")
    me = api.get("/v1/auth/me").respond(200, json={"user": {"email": "x@example.com"}, "expiresAt": None})
    assert run("whoami").code == 0
    assert me.calls.last.request.headers["authorization"] == "Bearer gpr_env"


def test_logout_ends_the_session_and_forgets_it(run: Callable[..., Result], api: respx.MockRouter,
                                                signed_in: Credential) -> None:
    out = api.post("/v1/auth/logout").respond(200, json={"ok": True})
    r = run("logout")
    assert r.code == 0 and out.called
    assert out.calls.last.request.headers["cookie"] == "sid=sid-123"
    assert Store().get(API) is None
    r = run("balance")
    assert r.code == 3 and "gpurent login" in r.err


def test_logout_of_an_expired_session_still_forgets_it(run: Callable[..., Result], api: respx.MockRouter,
                                                       signed_in: Credential) -> None:
    api.post("/v1/auth/logout").respond(401, json=err_body("unauthorized", "Not signed in"))
    assert run("logout").code == 0
    assert Store().get(API) is None


def test_not_signed_in_is_exit_3_without_a_request(run: Callable[..., Result], api: respx.MockRouter) -> None:
    r = run("ls")
    assert r.code == 3
    assert "Not signed in to http://api.test" in r.err
    assert not api.calls


def test_credentials_are_kept_per_api(run: Callable[..., Result], api: respx.MockRouter,
                                      signed_in: Credential) -> None:
    r = run("balance", "--api", "http://other.test")
    assert r.code == 3 and "http://other.test" in r.err


# ---------------------------------------------------------------- exit codes and errors

@pytest.mark.parametrize(("status", "code", "message", "exit_code"), [
    (400, "validation_failed", "name: String should have at most 64 characters", 1),
    (403, "insufficient_balance", "Available balance is below the 1-hour reserve", 1),
    (409, "already_stopped", "This rental is already in a terminal state", 1),
    (401, "unauthorized", "Not signed in", 3),
    (404, "rental_not_found", "No rental with that id", 4),
    (500, "internal_error", "Internal error, please retry", 5),
])
def test_api_errors_map_to_exit_codes_with_the_message_verbatim(
        run: Callable[..., Result], api: respx.MockRouter, signed_in: Credential,
        status: int, code: str, message: str, exit_code: int) -> None:
    api.get(f"/v1/rentals/{RID}").respond(status, json=err_body(code, message))
    r = run("show", RID)
    assert r.code == exit_code
    assert message in r.err and f"[{code}]" in r.err
    assert r.out == ""


def test_json_mode_prints_the_error_envelope_on_stderr(run: Callable[..., Result], api: respx.MockRouter,
                                                       signed_in: Credential) -> None:
    body = err_body("invalid_count", "gpuCount must be 1, 2, 4 or 8", {"gpuCount": "must be 1, 2, 4 or 8"})
    api.post("/v1/rentals").respond(400, json=body)
    r = run("launch", "rtx-4090", "-n", "3", "--json")
    assert r.code == 1 and r.out == ""
    assert json.loads(r.err) == body


def test_error_details_are_shown(run: Callable[..., Result], api: respx.MockRouter, signed_in: Credential) -> None:
    api.post("/v1/rentals").respond(400, json=err_body("model_unavailable", "Provision failed: out of stock",
                                                       {"rentalId": RID}))
    r = run("launch", "rtx-4090")
    assert r.code == 1
    assert "Provision failed: out of stock" in r.err and f"rentalId: {RID}" in r.err


def test_a_non_json_error_page_is_reported(run: Callable[..., Result], api: respx.MockRouter,
                                           signed_in: Credential) -> None:
    api.get("/v1/billing/balance").respond(502, text="<html>Bad gateway</html>")
    r = run("balance")
    assert r.code == 5 and "HTTP 502" in r.err


def test_network_failure_is_exit_5(run: Callable[..., Result], api: respx.MockRouter, signed_in: Credential) -> None:
    api.get("/v1/billing/balance").mock(side_effect=httpx.ConnectError("connection refused"))
    r = run("balance")
    assert r.code == 5 and "Cannot reach http://api.test" in r.err


@pytest.mark.parametrize("argv", [
    ["topup", "abc"], ["topup", "0.001"], ["nope"], [], ["launch"], ["stop"], ["stop", RID, "--all"],
    ["auto-topup", "--enable", "--threshold", "5"], ["auto-topup", "--enable", "--disable"],
    ["auto-topup", "--threshold", "5"], ["ledger", "--type", "bogus"], ["launch", "rtx-4090", "--auto-stop", "-1"],
    ["ssh-keys"], ["catalog", "--limit", "0"],
])
def test_usage_errors_are_exit_2_without_a_request(run: Callable[..., Result], api: respx.MockRouter,
                                                   signed_in: Credential, argv: list[str]) -> None:
    r = run(*argv)
    assert r.code == 2, (argv, r)
    assert r.err
    assert not api.calls


def test_help_is_exit_0_and_lists_exit_codes(run: Callable[..., Result]) -> None:
    r = run("--help")
    assert r.code == 0
    assert "exit codes:" in r.out and "launch" in r.out


# ---------------------------------------------------------------- 429

def test_429_is_retried_after_retry_after(run: Callable[..., Result], api: respx.MockRouter,
                                          signed_in: Credential, sleeps: list[float]) -> None:
    limited = httpx.Response(429, json=err_body("rate_limited", "Too many requests. Retry after 2 seconds."),
                             headers={"retry-after": "2"})
    route = api.get("/v1/billing/balance").mock(side_effect=[limited, limited, httpx.Response(
        200, json={"availableCents": 5000, "reservedCents": 0, "totalCents": 5000})])
    r = run("balance")
    assert r.code == 0, r.err
    assert route.call_count == 3
    assert sleeps == [2.0, 2.0]
    assert "$50.00" in r.out
    # Each wait says what it waits for, for how long, and which retry follows (stderr).
    waits = [line for line in r.err.splitlines() if line.startswith("Rate limited")]
    assert waits == ["Rate limited on GET /v1/billing/balance: waiting 2 s (Retry-After) before retry 1 of 3…",
                     "Rate limited on GET /v1/billing/balance: waiting 2 s (Retry-After) before retry 2 of 3…"]


def test_429_retries_are_bounded(run: Callable[..., Result], api: respx.MockRouter,
                                 signed_in: Credential, sleeps: list[float]) -> None:
    route = api.get("/v1/billing/balance").respond(
        429, json=err_body("rate_limited", "Too many requests. Retry after 1 seconds."), headers={"retry-after": "1"})
    r = run("balance")
    assert r.code == 5
    assert route.call_count == 4  # one try and three retries
    assert sleeps == [1.0, 1.0, 1.0]
    assert "Too many requests. Retry after 1 seconds." in r.err


def test_429_without_retry_after_waits_the_documented_30s(run: Callable[..., Result], api: respx.MockRouter,
                                                           signed_in: Credential, sleeps: list[float]) -> None:
    api.get("/v1/billing/balance").mock(side_effect=[
        httpx.Response(429, json=err_body("rate_limited", "Too many requests")),
        httpx.Response(200, json={"availableCents": 1})])
    r = run("balance")
    assert r.code == 0
    assert sleeps == [30.0]
    assert "waiting 30 s (no Retry-After given)" in r.err


def test_429_asking_for_an_hour_is_not_waited_for(run: Callable[..., Result], api: respx.MockRouter,
                                                  signed_in: Credential, sleeps: list[float]) -> None:
    route = api.get("/v1/billing/balance").respond(
        429, json=err_body("rate_limited", "Too many requests. Retry after 3000 seconds."),
        headers={"retry-after": "3000"})
    r = run("balance")
    assert r.code == 5 and route.call_count == 1 and sleeps == []
    assert "Retry after 3000 seconds." in r.err


def test_a_retried_launch_keeps_its_idempotency_key(run: Callable[..., Result], api: respx.MockRouter,
                                                    signed_in: Credential) -> None:
    route = api.post("/v1/rentals").mock(side_effect=[
        httpx.Response(429, json=err_body("rate_limited", "Too many requests"), headers={"retry-after": "1"}),
        httpx.Response(200, json={"id": RID, "status": "provisioning", "host": None, "port": None,
                                  "pricePerHourCents": 65, "startedAt": "2026-01-01T00:00:00Z", "warnings": []})])
    assert run("launch", "rtx-4090").code == 0
    keys = [c.request.headers["idempotency-key"] for c in route.calls]
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0].startswith("cli-")


# ---------------------------------------------------------------- wallet and billing

def test_balance_text_and_json(run: Callable[..., Result], api: respx.MockRouter, signed_in: Credential) -> None:
    body = {"availableCents": 4953, "reservedCents": 65, "totalCents": 5018, "openInvoicesCents": 10000,
            "openInvoiceCount": 1, "updatedAt": "2026-01-01T00:00:00Z"}
    api.get("/v1/billing/balance").respond(200, json=body)
    r = run("balance")
    assert r.out.splitlines() == ["Available      $49.53", "Reserved       $0.65", "Total          $50.18",
                                  "Open invoices  $100.00 (1)"]
    assert json.loads(run("balance", "--json").out) == body
    assert json.loads(run("--json", "balance").out) == body  # before or after the command


def ledger_page(ids: range, cursor: str | None) -> dict[str, Any]:
    return {"entries": [{"id": f"led_{i}", "type": "rental_charge", "amountCents": -1, "balanceAfterCents": 100 - i,
                         "createdAt": "2026-01-01T00:00:00Z", "rentalId": RID, "stripeChargeId": None,
                         "invoiceId": None, "description": None} for i in ids],
            "balanceCents": 99, "nextCursor": cursor}


def test_ledger_follows_every_page(run: Callable[..., Result], api: respx.MockRouter, signed_in: Credential) -> None:
    route = api.get("/v1/billing/ledger").mock(side_effect=[
        httpx.Response(200, json=ledger_page(range(1, 3), "c1")),
        httpx.Response(200, json=ledger_page(range(3, 5), "c2")),
        httpx.Response(200, json=ledger_page(range(5, 6), None))])
    r = run("ledger", "--csv", "--type", "rental_charge")
    assert r.code == 0, r.err
    params = [dict(c.request.url.params) for c in route.calls]
    assert params == [{"pageSize": "200", "type": "rental_charge"},
                      {"pageSize": "200", "type": "rental_charge", "cursor": "c1"},
                      {"pageSize": "200", "type": "rental_charge", "cursor": "c2"}]
    rows = list(csv.DictReader(io.StringIO(r.out)))
    assert [row["id"] for row in rows] == [f"led_{i}" for i in range(1, 6)]
    assert rows[0]["amount"] == "-0.01" and rows[0]["balanceAfter"] == "0.99"


def test_ledger_json_is_all_entries(run: Callable[..., Result], api: respx.MockRouter, signed_in: Credential) -> None:
    api.get("/v1/billing/ledger").mock(side_effect=[
        httpx.Response(200, json=ledger_page(range(1, 3), "c1")),
        httpx.Response(200, json=ledger_page(range(3, 4), None))])
    data = json.loads(run("ledger", "--json").out)
    assert [e["id"] for e in data["entries"]] == ["led_1", "led_2", "led_3"]
    assert data["nextCursor"] is None and data["balanceCents"] == 99


def test_ledger_table(run: Callable[..., Result], api: respx.MockRouter, signed_in: Credential) -> None:
    api.get("/v1/billing/ledger").respond(200, json={"entries": [
        {"id": "led_1", "type": "adjustment", "amountCents": 5000, "balanceAfterCents": 5000,
         "createdAt": "2026-01-01T10:00:00Z", "description": "welcome credit"}], "balanceCents": 5000,
        "nextCursor": None})
    lines = run("ledger").out.splitlines()
    assert lines[0].split() == ["CREATED", "(UTC)", "TYPE", "AMOUNT", "BALANCE", "REFERENCE", "ID"]
    assert "2026-01-01 10:00:00  adjustment  $50.00   $50.00  welcome credit  led_1" in lines[1]
    assert lines[-1] == "Balance $50.00 · 1 entry"


def test_topup_prints_the_checkout_url(run: Callable[..., Result], api: respx.MockRouter,
                                       signed_in: Credential) -> None:
    route = api.post("/v1/billing/checkout").respond(
        200, json={"checkoutUrl": "https://checkout.stripe.com/c/pay/cs_test_1", "sessionId": "cs_test_1"})
    r = run("topup", "25")
    assert r.code == 0
    assert r.out.strip() == "https://checkout.stripe.com/c/pay/cs_test_1"
    assert json.loads(route.calls.last.request.content) == {"amountCents": 2500}
    assert route.calls.last.request.headers["idempotency-key"].startswith("cli-")
    run("topup", "$10.50", "--checkout")
    assert json.loads(route.calls.last.request.content) == {"amountCents": 1050, "useCheckout": True}


def test_topup_with_a_saved_card_prints_the_payment_status(run: Callable[..., Result], api: respx.MockRouter,
                                                           signed_in: Credential) -> None:
    api.post("/v1/billing/checkout").respond(200, json={"checkoutUrl": None, "sessionId": None,
                                                        "paymentIntentId": "pi_1", "status": "succeeded"})
    r = run("topup", "100")
    assert r.code == 0
    assert r.out.strip() == "Charged $100.00 to your saved card: succeeded (pi_1)"


def test_topup_declined_is_verbatim(run: Callable[..., Result], api: respx.MockRouter, signed_in: Credential) -> None:
    api.post("/v1/billing/checkout").respond(400, json=err_body("card_declined", "Card declined",
                                                                {"declineCode": "insufficient_funds"}))
    r = run("topup", "100")
    assert r.code == 1 and "Card declined" in r.err and "insufficient_funds" in r.err


def test_card_show_none_and_rm(run: Callable[..., Result], api: respx.MockRouter, signed_in: Credential) -> None:
    api.get("/v1/billing/card").mock(side_effect=[
        httpx.Response(200, json={"brand": "visa", "last4": "4242", "expMonth": 3, "expYear": 2030, "pmId": "pm_1"}),
        httpx.Response(200, json={"brand": None, "last4": None, "expMonth": None, "expYear": None, "pmId": None})])
    assert run("card").out.strip() == "Visa ending 4242, expires 03/2030"
    assert run("card").out.startswith("No card on file.")
    rm = api.delete("/v1/billing/card").respond(200, json={"ok": True})
    r = run("card", "rm")
    assert r.code == 0 and rm.called and "Card removed" in r.out


def test_sessions_list_and_sign_out_everywhere(run: Callable[..., Result], api: respx.MockRouter,
                                              signed_in: Credential) -> None:
    api.get("/v1/auth/sessions").respond(200, json={"sessions": [
        {"id": "ses_2", "current": False, "createdAt": "2026-06-07T08:00:00Z", "lastUsedAt": "2026-06-07T09:00:00Z",
         "expiresAt": "2026-07-07T09:00:00Z", "client": "Safari on iOS", "ipPrefix": "203.0.113.0/24"},
        {"id": "ses_1", "current": True, "createdAt": "2026-06-01T08:00:00Z", "lastUsedAt": "2026-06-07T10:00:00Z",
         "expiresAt": "2026-07-07T10:00:00Z", "client": None, "ipPrefix": None}]})
    r = run("sessions")
    assert r.code == 0
    lines = r.out.splitlines()
    assert lines[0].split() == ["ID", "CLIENT", "FROM", "SIGNED", "IN", "(UTC)", "LAST", "USED", "(UTC)"]
    assert "Safari on iOS" in lines[1] and "203.0.113.0/24" in lines[1] and "this one" not in lines[1]
    assert lines[2].startswith("ses_1") and "unknown" in lines[2] and lines[2].rstrip().endswith("this one")
    assert json.loads(run("sessions", "--json").out)["sessions"][1]["current"] is True
    revoke = api.post("/v1/auth/sessions/revoke-others").mock(side_effect=lambda req: httpx.Response(
        200, json={"ok": True, "sessionsEnded": 1,
                   "tokensRevoked": 2 if json.loads(req.content)["tokens"] else 0}))
    r = run("sessions", "revoke-others")
    assert r.code == 0 and json.loads(revoke.calls.last.request.content) == {"tokens": False}
    assert r.out.strip() == "Signed out 1 other session(s). This one stays signed in."
    r = run("sessions", "revoke-others", "--tokens")
    assert json.loads(revoke.calls.last.request.content) == {"tokens": True}
    assert "and revoked 2 API token(s)" in r.out
    calls = len(api.calls)
    assert run("sessions", "--tokens").code == 2 and len(api.calls) == calls  # --tokens only revokes


def test_sessions_with_a_token_is_the_apis_403(run: Callable[..., Result], api: respx.MockRouter,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPURENT_TOKEN", "gpr_x")
    api.get("/v1/auth/sessions").respond(403, json=err_body(
        "forbidden", "Only a signed-in session can manage sessions and API tokens, not an API token"))
    r = run("sessions")
    assert r.code == 1 and "Only a signed-in session" in r.err and "[forbidden]" in r.err


def test_auto_topup_show_enable_disable(run: Callable[..., Result], api: respx.MockRouter,
                                        signed_in: Credential) -> None:
    api.get("/v1/billing/auto-topup").respond(200, json={"enabled": False, "thresholdCents": None,
                                                         "topupAmountCents": None})
    assert run("auto-topup").out.strip() == "Auto-topup is off."
    put = api.put("/v1/billing/auto-topup").mock(side_effect=lambda req: httpx.Response(200, json={
        "enabled": True, "thresholdCents": 500, "topupAmountCents": 2500} | json.loads(req.content)))
    r = run("auto-topup", "--enable", "--threshold", "5", "--amount", "25")
    assert r.code == 0
    assert json.loads(put.calls.last.request.content) == {"enabled": True, "thresholdCents": 500,
                                                          "topupAmountCents": 2500}
    assert "below $5.00" in r.out and "$25.00" in r.out
    r = run("auto-topup", "--disable")
    assert json.loads(put.calls.last.request.content) == {"enabled": False}
    assert r.out.startswith("Auto-topup is off (threshold $5.00, amount $25.00)")


def test_invoices_table(run: Callable[..., Result], api: respx.MockRouter, signed_in: Credential) -> None:
    route = api.get("/v1/billing/invoices").respond(200, json={"data": [
        {"id": "inv_1", "status": "open", "reason": "topup_failed", "amountCents": 10000,
         "createdAt": "2026-01-01T00:00:00Z", "dueAt": "2026-01-08T00:00:00Z",
         "hostedInvoiceUrl": "https://invoice.stripe.com/i/x", "receiptUrl": None}]})
    r = run("invoices", "--status", "open", "--limit", "10")
    assert dict(route.calls.last.request.url.params) == {"status": "open", "limit": "10"}
    assert "inv_1" in r.out and "$100.00" in r.out and "https://invoice.stripe.com/i/x" in r.out


# ---------------------------------------------------------------- catalog

def test_catalog_filters_and_cheapest_first(run: Callable[..., Result], api: respx.MockRouter,
                                            signed_in: Credential) -> None:
    def listing(i: int, price: int) -> dict[str, Any]:
        return {"id": f"lst_{i}", "model": "H100_SXM_80GB", "family": "h100-80gb", "vramGb": 80, "gpuCount": 1,
                "pricePerHourCents": price, "providerCode": "vast", "region": "EU-North", "regionCode": "SE",
                "interconnect": "NVLink"}

    route = api.get("/v1/catalog/listings").respond(200, json={"listings": [listing(2, 280), listing(1, 207)],
                                                               "nextCursor": None})
    r = run("catalog", "--model", "H100", "--region", "eu", "-n", "1", "--min-vram", "80", "--max-price", "3")
    assert r.code == 0, r.err
    assert dict(route.calls.last.request.url.params) == {
        "model": "H100", "region": "eu", "gpuCount": "1", "minVramGb": "80.0", "maxPricePerHourCents": "300",
        "pageSize": "50"}
    lines = r.out.splitlines()
    assert lines[0].split()[:5] == ["MODEL", "FAMILY", "GPUS", "VRAM", "PRICE"]
    assert "$2.07/hr" in lines[1] and "lst_1" in lines[1]
    assert "$2.80/hr" in lines[2]


def test_preview(run: Callable[..., Result], api: respx.MockRouter, signed_in: Credential) -> None:
    route = api.post("/v1/rentals/preview").respond(200, json={
        "pricePerHourCents": 207, "estimatedProvisionSeconds": 60,
        "matchedListing": {"id": "lst_1", "providerCode": "vast", "region": "EU-North", "model": "H100_SXM_80GB"}})
    r = run("preview", "h100-80gb", "-n", "2", "--region", "eu")
    assert json.loads(route.calls.last.request.content) == {"familyId": "h100-80gb", "gpuCount": 2, "region": "eu"}
    assert "$2.07/hr on vast in EU-North" in r.out


# ---------------------------------------------------------------- rentals

LAUNCHED: dict[str, Any] = {"id": RID, "status": "provisioning", "host": None, "port": None, "pricePerHourCents": 65,
            "startedAt": "2026-01-01T00:00:00Z", "warnings": []}


def test_launch_maps_options_to_the_body(run: Callable[..., Result], api: respx.MockRouter,
                                         signed_in: Credential) -> None:
    route = api.post("/v1/rentals").respond(200, json=LAUNCHED | {"warnings": ["No SSH key on file"]})
    r = run("launch", "rtx-4090", "-n", "2", "--template", "pytorch", "--name", "exp-42", "--region", "us",
            "--auto-stop", "1.5", "--max-spend", "12.34")
    assert r.code == 0
    assert json.loads(route.calls.last.request.content) == {
        "familyId": "rtx-4090", "gpuCount": 2, "templateId": "pytorch", "name": "exp-42", "region": "us",
        "autoStopAfterHours": 1.5, "maxTotalCents": 1234}
    assert "warning: No SSH key on file" in r.err
    assert RID in r.out and "$0.65/hr" in r.out


def test_launch_and_preview_offer_a_price_tolerance(run: Callable[..., Result], api: respx.MockRouter,
                                                    signed_in: Credential) -> None:
    placed = LAUNCHED | {"pricePerHourCents": 72, "quotedPricePerHourCents": 65,
                         "warnings": ["Placed at 72 cents per hour instead of the quoted 65"]}
    route = api.post("/v1/rentals").respond(200, json=placed)
    r = run("launch", "rtx-4090", "--max-price", "0.80")
    assert r.code == 0
    assert json.loads(route.calls.last.request.content) == {"familyId": "rtx-4090", "gpuCount": 1,
                                                           "maxPricePerHourCents": 80}
    assert "instead of the quoted 65" in r.err and "$0.72/hr" in r.out
    preview = api.post("/v1/rentals/preview").respond(200, json={
        "pricePerHourCents": 65, "estimatedProvisionSeconds": 60,
        "matchedListing": {"id": "lst_x", "providerCode": "vast", "region": "US-West", "model": "RTX_4090"}})
    assert run("preview", "rtx-4090", "--max-price", "1").code == 0
    assert json.loads(preview.calls.last.request.content)["maxPricePerHourCents"] == 100


def test_launch_wait_polls_until_running_then_prints_ssh(run: Callable[..., Result], api: respx.MockRouter,
                                                         signed_in: Credential, sleeps: list[float]) -> None:
    api.post("/v1/rentals").respond(200, json=LAUNCHED)
    get = api.get(f"/v1/rentals/{RID}").mock(side_effect=[
        httpx.Response(200, json=rental("provisioning")), httpx.Response(200, json=rental("provisioning")),
        httpx.Response(200, json=rental("running"))])
    r = run("launch", "rtx-4090", "--wait")
    assert r.code == 0, r.err
    assert get.call_count == 3 and sleeps == [2.0, 2.0]
    assert r.out.strip() == "ssh -p 22001 root@203.0.113.12"
    assert "provisioning" in r.err and "running" in r.err
    assert f"Waiting up to 600 s for {RID} to be running (checking every 2 s" in r.err


def test_launch_wait_json_prints_the_rental(run: Callable[..., Result], api: respx.MockRouter,
                                            signed_in: Credential) -> None:
    api.post("/v1/rentals").respond(200, json=LAUNCHED)
    api.get(f"/v1/rentals/{RID}").respond(200, json=rental("running"))
    assert json.loads(run("launch", "rtx-4090", "--wait", "--json").out) == rental("running")


def test_launch_wait_on_a_failed_rental_is_exit_6(run: Callable[..., Result], api: respx.MockRouter,
                                                  signed_in: Credential) -> None:
    api.post("/v1/rentals").respond(200, json=LAUNCHED)
    api.get(f"/v1/rentals/{RID}").respond(200, json=rental("failed", error="Provision failed: boot error"))
    r = run("launch", "rtx-4090", "--wait")
    assert r.code == 6
    assert "Provision failed: boot error" in r.err and r.out == ""


def test_launch_wait_gives_up_after_the_timeout(run: Callable[..., Result], api: respx.MockRouter,
                                                signed_in: Credential, monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter(range(0, 1000, 5))
    monkeypatch.setattr(main_mod, "monotonic", lambda: float(next(ticks)))
    api.post("/v1/rentals").respond(200, json=LAUNCHED)
    get = api.get(f"/v1/rentals/{RID}").respond(200, json=rental("provisioning"))
    r = run("launch", "rtx-4090", "--wait", "--timeout", "20")
    assert r.code == 6 and "still provisioning after 20 s" in r.err
    assert get.call_count == 4  # at 5, 10, 15 and 20 s


def test_ls_all_pages_and_status(run: Callable[..., Result], api: respx.MockRouter, signed_in: Credential) -> None:
    route = api.get("/v1/rentals").mock(side_effect=[
        httpx.Response(200, json={"rentals": [rental()], "nextCursor": "c1"}),
        httpx.Response(200, json={"rentals": [rental("running", id="rent_2", name=None)], "nextCursor": None})])
    r = run("ls", "--status", "running")
    assert r.code == 0
    assert [dict(c.request.url.params) for c in route.calls] == [
        {"pageSize": "200", "status": "running"}, {"pageSize": "200", "status": "running", "cursor": "c1"}]
    lines = r.out.splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "STATUS"]
    assert RID in lines[1] and "$3.75" in lines[1] and "$0.65/hr" in lines[1] and "rtx-4090 ×1" in lines[1]
    assert "rent_2" in lines[2]


def test_show_metered(run: Callable[..., Result], api: respx.MockRouter, signed_in: Credential) -> None:
    api.get(f"/v1/rentals/{RID}").respond(200, json=rental(pricePerHourCents=280))
    meter = {"rentalId": RID, "ratePerHour": 2.8, "secondsBilled": 4827, "currentChargeCents": 375,
             "lastHeartbeatAt": "2026-06-07T09:35:00Z"}
    api.get(f"/v1/rentals/{RID}/meter").respond(200, json=meter)
    out = run("show", RID, "--metered").out
    assert "Seconds billed  4827" in out and "Rate            $2.80/hr" in out
    assert "Current charge  $3.75" in out and "ssh -p 22001 root@203.0.113.12" in out
    data = json.loads(run("show", RID, "--metered", "--json").out)
    assert data == {"rental": rental(pricePerHourCents=280), "meter": meter}
    assert json.loads(run("show", RID, "--json").out) == rental(pricePerHourCents=280)


def test_stop_one(run: Callable[..., Result], api: respx.MockRouter, signed_in: Credential) -> None:
    answer = {"id": RID, "status": "stopping", "finalChargedCents": 375, "refundedCents": 0}
    api.post(f"/v1/rentals/{RID}/stop").respond(200, json=answer)
    r = run("stop", RID)
    assert r.code == 0 and r.out.strip() == f"{RID} stopping: charged $3.75"
    assert json.loads(run("stop", RID, "--json").out) == answer


def test_stop_all_keeps_going_past_an_error(run: Callable[..., Result], api: respx.MockRouter,
                                            signed_in: Credential) -> None:
    def listed(req: httpx.Request) -> httpx.Response:
        status = req.url.params["status"]
        rid = "rent_run" if status == "running" else "rent_prov"
        return httpx.Response(200, json={"rentals": [rental(status, id=rid)], "nextCursor": None})

    api.get("/v1/rentals").mock(side_effect=listed)
    api.post("/v1/rentals/rent_run/stop").respond(409, json=err_body("already_stopped", "Already stopped"))
    prov = api.post("/v1/rentals/rent_prov/stop").respond(200, json={
        "id": "rent_prov", "status": "stopping", "finalChargedCents": 0, "refundedCents": 0})
    r = run("stop", "--all")
    assert prov.called
    assert r.code == 1
    assert "rent_run: Already stopped" in r.err and "rent_prov stopping" in r.out


def test_ssh_execs_ssh_with_the_pod_address(run: Callable[..., Result], api: respx.MockRouter,
                                            signed_in: Credential, monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[list[str]] = []

    class Exec(Exception):
        pass

    def fake_exec(file: str, argv: list[str]) -> None:
        called.append([file, *argv])
        raise Exec

    monkeypatch.setattr(main_mod, "execvp", fake_exec)
    api.get(f"/v1/rentals/{RID}").respond(200, json=rental())
    with pytest.raises(Exec):
        run("ssh", RID, "--", "-L", "8888:localhost:8888")
    assert called == [["ssh", "ssh", "-p", "22001", "root@203.0.113.12", "-L", "8888:localhost:8888"]]


def test_ssh_into_a_provisioning_pod_is_refused(run: Callable[..., Result], api: respx.MockRouter,
                                                signed_in: Credential) -> None:
    api.get(f"/v1/rentals/{RID}").respond(200, json=rental("provisioning"))
    r = run("ssh", RID)
    assert r.code == 1 and "provisioning" in r.err


# ---------------------------------------------------------------- ssh keys

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample laptop@home"


def test_ssh_keys_add_names_the_key_by_its_comment(run: Callable[..., Result], api: respx.MockRouter,
                                                   signed_in: Credential, tmp_path: Path) -> None:
    f = tmp_path / "id.pub"
    f.write_text("# comment\n" + PUB + "\n")
    route = api.post("/v1/ssh-keys").respond(200, json={"id": "key_1", "name": "laptop@home",
                                                        "fingerprint": "SHA256:x", "algorithm": "ssh-ed25519",
                                                        "createdAt": "2026-01-01T00:00:00Z"})
    r = run("ssh-keys", "add", str(f))
    assert r.code == 0, r.err
    assert json.loads(route.calls.last.request.content) == {"name": "laptop@home", "publicKey": PUB}
    run("ssh-keys", "add", str(f), "--name", "work")
    assert json.loads(route.calls.last.request.content)["name"] == "work"


def test_ssh_keys_add_refuses_a_private_key(run: Callable[..., Result], api: respx.MockRouter,
                                            signed_in: Credential, tmp_path: Path) -> None:
    f = tmp_path / "id"
    f.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n")
    r = run("ssh-keys", "add", str(f))
    assert r.code == 2 and "private key" in r.err
    assert not api.calls
    assert run("ssh-keys", "add", str(tmp_path / "missing.pub")).code == 2


def test_ssh_keys_ls_and_rm(run: Callable[..., Result], api: respx.MockRouter, signed_in: Credential) -> None:
    api.get("/v1/ssh-keys").respond(200, json={"keys": [{"id": "key_1", "name": "laptop", "fingerprint": "SHA256:x",
                                                         "algorithm": "ssh-ed25519",
                                                         "createdAt": "2026-01-01T00:00:00Z"}]})
    lines = run("ssh-keys", "ls").out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "ALGORITHM", "FINGERPRINT", "ADDED", "(UTC)"]
    assert lines[1].split()[:4] == ["key_1", "laptop", "ssh-ed25519", "SHA256:x"]
    rm = api.delete("/v1/ssh-keys/key_1").respond(200, json={"ok": True})
    assert run("ssh-keys", "rm", "key_1").code == 0 and rm.called
    api.delete("/v1/ssh-keys/key_2").respond(404, json=err_body("key_not_found", "No such key"))
    r = run("ssh-keys", "rm", "key_2")
    assert r.code == 4 and "No such key" in r.err


def test_the_credentials_file_is_never_group_or_world_readable(cfg: Path) -> None:
    old = os.umask(0)
    try:
        Store().put(API, Credential("session", "x"), make_default=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((cfg / "credentials.json").stat().st_mode) == 0o600
