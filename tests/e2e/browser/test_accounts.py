"""The account's own safety in the browser: the sign-in sessions listed in Settings, one
signed out by its row, every other one (and every API token) by "sign out all other
sessions", this browser last; and sign-in by code paused after too many wrong codes for
an address (the API's 429 `rate_limited` with a Retry-After of hours), on the code step
and on the email step, while another address still gets its code."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e.browser.conftest import Tab, advance, api_sign_in, latest_code, sid_of, sign_in

pytestmark = pytest.mark.e2e


def test_sessions_listed_one_signed_out_then_every_other_with_the_tokens(
        open_tab: Callable[..., Tab], http: httpx.Client, email: str) -> None:
    here = open_tab()
    sign_in(here, http, email, next_path="/app/settings")
    advance(http, 31)  # one code per 30 s per address
    script = api_sign_in(here.base, email)  # a script's session ("Python")
    advance(http, 31)
    there = open_tab()
    sign_in(there, http, email, next_path="/app/rentals")
    me = httpx.Client(base_url=here.base, cookies={"sid": sid_of(here)}, timeout=30)
    assert me.post("/v1/auth/tokens", json={"name": "nightly"}).status_code == 200

    page = here.page
    page.reload()
    table = page.get_by_role("region", name="Sessions table")
    expect(table.get_by_role("row")).to_have_count(4)  # header + 3
    listed = me.get("/v1/auth/sessions").json()["sessions"]
    current = next(s for s in listed if s["current"])
    expect(table.locator(f'tr[data-session="{current["id"]}"]')).to_contain_text("This browser")
    assert sorted(str(s["client"]) for s in listed) == ["Chrome on Linux", "Chrome on Linux", "Python"]
    elsewhere = next(s for s in listed if not s["current"] and s["client"] == "Chrome on Linux")
    expect(table.locator(f'tr[data-session="{elsewhere["id"]}"]')).to_contain_text("Chrome on Linux")

    # The script's session, by its row: it is signed out at once.
    scripted = next(s for s in listed if s["client"] == "Python")
    table.locator(f'tr[data-session="{scripted["id"]}"]').get_by_role("button", name=re.compile("^Sign out")).click()
    page.get_by_role("dialog", name="Sign out this session?").get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("Signed out Python.")).to_be_visible()
    expect(table.get_by_role("row")).to_have_count(3)
    assert script.get("/v1/auth/me").status_code == 401

    # Every other session, and the tokens with them.
    expect(page.get_by_role("region", name="API tokens table").get_by_text("nightly")).to_be_visible()
    page.get_by_role("button", name="Sign out all other sessions").click()
    dialog = page.get_by_role("dialog", name="Sign out everywhere else?")
    expect(dialog).to_contain_text("1 other session will be signed out")
    dialog.get_by_label("Also revoke every API token").check()
    dialog.get_by_role("button", name="Sign out others").click()
    expect(page.get_by_text("1 other session signed out, 1 API token revoked.")).to_be_visible()
    expect(table.get_by_role("row")).to_have_count(2)
    expect(page.get_by_text("No API tokens")).to_be_visible()
    assert me.get("/v1/auth/tokens").json()["tokens"] == []
    there.page.goto(there.base + "/app/billing")  # the other browser is sent to sign in again
    there.page.wait_for_url(re.compile(r"/login\?next=%2Fapp%2Fbilling$"))

    # This browser, last: back to the sign-in page, and signed out for real.
    table.locator(f'tr[data-session="{current["id"]}"]').get_by_role("button", name="Sign out this browser").click()
    page.get_by_role("dialog", name="Sign out this browser?").get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login$"))
    assert me.get("/v1/auth/me").status_code == 401


def wrong_guesses(http: httpx.Client, email: str, codes: int, guesses: int) -> None:
    """`codes` fresh codes for `email`, each met with `guesses` wrong ones (a code dies at 5)."""
    for _ in range(codes):
        advance(http, 31)
        assert http.post("/v1/auth/request-code", json={"email": email}).status_code == 200
        right = latest_code(http, email)
        wrong = f"{(int(right) + 1) % 1_000_000:06d}"
        for _ in range(guesses):
            r = http.post("/v1/auth/verify-code", json={"email": email, "code": wrong})
            assert r.status_code == 401 and r.json()["error"] == "code_invalid", r.text


def test_too_many_wrong_codes_pause_code_sign_in_for_the_address(
        open_tab: Callable[..., Tab], http: httpx.Client, email: str) -> None:
    # 19 wrong codes in a day for this address (20 are allowed): the next code is the last chance.
    wrong_guesses(http, email, codes=3, guesses=5)
    wrong_guesses(http, email, codes=1, guesses=4)
    advance(http, 31)
    page = open_tab().go("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Email me a code").click()
    box = page.get_by_label("6-digit code")
    right = latest_code(http, email)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    box.fill(wrong)  # the 20th wrong code
    expect(page.get_by_role("alert")).to_contain_text("incorrect")
    box.fill(wrong)  # one too many: paused for about a day, even for the right code
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Too many wrong codes for this address")
    expect(alert).to_contain_text(re.compile(r"paused until .+ \(in about 2[34] h\)"))
    expect(box).to_be_disabled()
    expect(page.get_by_role("button", name=re.compile(r"^Paused for 2[34] h$"))).to_be_disabled()
    r = http.post("/v1/auth/verify-code", json={"email": email, "code": right})
    assert r.status_code == 429 and r.json()["error"] == "rate_limited" and int(r.headers["retry-after"]) > 3600

    # The email step says the same for this address (no code is mailed) ...
    advance(http, 31)
    page.get_by_role("button", name="Use another email").click()
    expect(page.get_by_role("button", name=re.compile(r"^Paused for 2[34] h$"))).to_be_disabled()
    page.reload()
    mails = len(http.get("/dev/mailbox").json())
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Email me a code").click()
    expect(page.get_by_role("alert")).to_contain_text("Too many wrong codes for this address")
    expect(page.get_by_role("button", name=re.compile(r"^Paused for 2[34] h$"))).to_be_disabled()
    assert len(http.get("/dev/mailbox").json()) == mails

    # ... and another address is not affected.
    other = "other-" + email
    page.get_by_label("Email").fill(other)
    page.get_by_role("button", name="Email me a code").click()
    expect(page.get_by_text(f"We sent a 6-digit code to {other}")).to_be_visible()
    page.get_by_label("6-digit code").fill(latest_code(http, other))
    page.wait_for_url(re.compile(r"/app$"))
