"""`make dev` without a terminal: the sign-in page points to the local mailbox, and every /app
page has the local stack's bar, whose buttons move the test clock (what the README does with
`POST /dev/clock/advance`): the pod boots, the meter and the balance pill move."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e.browser.conftest import ADVANCE_TIMEOUT_MS, Tab, cents, sid_of

pytestmark = pytest.mark.e2e


def test_the_test_clock_and_the_mailbox_from_the_page(open_tab: Callable[..., Tab], http: httpx.Client,
                                                      admin_api: httpx.Client, email: str) -> None:
    tab = open_tab()
    page = tab.go("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Email me a code").click()
    hint = page.get_by_test_id("local-mailbox")
    expect(hint).to_contain_text("No email leaves this machine")
    mailbox = hint.get_by_role("link", name="local mailbox")
    assert mailbox.get_attribute("href") == "/dev/mailbox"
    # The mailbox as a person opens it from there: the code is in it.
    with page.context.expect_page() as opened:
        mailbox.click()
    box = opened.value
    box.wait_for_load_state()
    mails = json.loads(box.locator("pre").first.inner_text())
    mail = next(m for m in mails if m["to"] == email)  # newest first
    code = re.search(r"\b(\d{6})\b", mail["body"])
    assert code, mail
    box.close()
    page.get_by_label("6-digit code").fill(code.group(1))
    page.wait_for_url(re.compile(r"/app$"))

    assert admin_api.post("/v1/admin/adjustments", json={"email": email, "amountCents": 5000,
                                                         "reason": "local bar"}).status_code == 200
    me = httpx.Client(base_url=tab.base, cookies={"sid": sid_of(tab)}, timeout=30)
    launched = me.post("/v1/rentals", json={"familyId": "rtx-4090", "gpuCount": 1, "name": "clock-demo"})
    assert launched.status_code == 200, launched.text
    rental_id = launched.json()["id"]
    page.goto(tab.base + "/app/rentals")
    bar = page.get_by_role("contentinfo", name="Local stack")
    clock = bar.get_by_test_id("local-clock")
    expect(clock).not_to_be_empty()
    row = page.locator(f'tr[data-rental="{rental_id}"]')
    expect(row).to_have_attribute("data-status", "provisioning")

    # A minute: the simulated machine (20 s to boot) is running.
    before = http.get("/dev/clock").json()["epoch"]
    bar.get_by_role("button", name="Move the test clock 1 min ahead").click()
    expect(page.get_by_text("Test clock moved 1 min")).to_be_visible(timeout=ADVANCE_TIMEOUT_MS)
    assert http.get("/dev/clock").json()["epoch"] >= before + 60
    expect(row).to_have_attribute("data-status", "running")

    # An hour: the meter and the pill move, and agree with the API.
    pill = page.get_by_test_id("balance-pill")
    meter = row.get_by_test_id("meter")
    expect(meter).to_contain_text("$")
    before_pill, before_meter = pill.inner_text(), meter.inner_text()
    shown = clock.inner_text()
    bar.get_by_role("button", name="Move the test clock 1 h ahead").click()
    # The hour's sweeps and reconcile passes run before the page hears back: wait for its answer
    # as long as a client of /dev/clock/advance would (how fast the stack is is not what this tests).
    expect(page.get_by_text("Test clock moved 1 h")).to_be_visible(timeout=ADVANCE_TIMEOUT_MS)
    expect(clock).not_to_have_text(shown)
    expect(meter).not_to_have_text(before_meter)
    expect(pill).not_to_have_text(before_pill)
    charged = me.get(f"/v1/rentals/{rental_id}").json()["totalChargedCents"]
    rate = launched.json()["pricePerHourCents"]
    assert charged >= rate  # an hour and a minute of use, at least an hour's price
    expect(meter).to_contain_text(f"${charged // 100}.{charged % 100:02d}")
    available = me.get("/v1/billing/balance").json()["availableCents"]
    expect(pill).to_contain_text(f"${available // 100}.{available % 100:02d}")
    assert cents(pill.inner_text()) == available
    assert me.post(f"/v1/rentals/{rental_id}/stop").status_code == 200
