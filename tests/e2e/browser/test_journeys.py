"""What a person does in the dashboard, in a real browser against `make dev`, at 1440 px and
at 390 px: sign in with the mailed code; get funded from the admin page; launch from Create
and watch the pod reach running; move the test clock and watch the pill and the meter move
(without the layout shifting); stop it; top up through Checkout and with a saved card; switch
auto-topup on; an open invoice raises the banner and paying it clears it; export the ledger
as CSV and check it adds up to the balance. Every number on screen is checked against the API."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, ViewportSize, expect

from tests.e2e.browser.conftest import (
    PHONE,
    WIDE,
    Tab,
    advance,
    cents,
    latest_code,
    sid_of,
    sign_in,
)

pytestmark = pytest.mark.e2e

VIEWPORTS = [pytest.param(WIDE, id="1440px"), pytest.param(PHONE, id="390px")]

# Cumulative layout shift of the page, collected from the first paint (the meter and the pill
# update while the person watches: tabular figures and fixed widths keep them in place).
CLS_OBSERVER = """
window.__cls = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if (!e.hadRecentInput) window.__cls += e.value;
}).observe({type: 'layout-shift', buffered: true});
"""


def pill(page: Page):
    return page.get_by_test_id("balance-pill")


def balance(client: httpx.Client) -> dict[str, Any]:
    r = client.get("/v1/billing/balance")
    assert r.status_code == 200, r.text
    return dict(r.json())


def fund_from_admin_page(admin: Tab, email: str, dollars: str, reason: str) -> None:
    page = admin.go("/app/admin")
    form = page.get_by_role("form", name="Adjust a wallet")
    form.get_by_label("User (email or usr_… id)").fill(email)
    form.get_by_label("Amount ($, negative to take)").fill(dollars)
    form.get_by_label("Reason (the user sees it)").fill(reason)
    form.get_by_role("button", name="Apply adjustment").click()
    expect(page.get_by_text(re.compile(rf"for {re.escape(email)}: their balance is now"))).to_be_visible()
    # The audit log shows it (its own poll, or the next visit).
    page.reload()
    expect(page.get_by_role("region", name="Audit table").get_by_text(email).first).to_be_visible()


# ---------------------------------------------------------------- launch, run, stop


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_funded_by_the_admin_page_launch_watch_and_stop(open_tab: Callable[..., Tab], http: httpx.Client,
                                                         admin_api: httpx.Client, email: str,
                                                         viewport: ViewportSize) -> None:
    user = open_tab(viewport)
    sign_in(user, http, email)
    page = user.page
    expect(pill(page)).to_have_attribute("data-tone", "yellow")  # $0.00 is below $5

    fund_from_admin_page(open_tab(viewport, sid=admin_api.cookies["sid"]), email, "50", "welcome credit")
    me = httpx.Client(base_url=user.base, cookies={"sid": sid_of(user)}, timeout=30)
    assert balance(me)["availableCents"] == 5000

    page.add_init_script(CLS_OBSERVER)
    page.goto(user.base + "/app")
    expect(pill(page)).to_contain_text("$50.00")
    expect(pill(page)).to_have_attribute("data-tone", "ok")

    # Create: a family card, the live preview with what the one-hour reserve holds, Launch.
    page.locator('[data-family="rtx-4090"]').click()
    expect(page.get_by_test_id("preview-price")).to_have_text(re.compile(r"^\$\d+\.\d\d/h$"))
    preview = me.post("/v1/rentals/preview", json={"familyId": "rtx-4090", "gpuCount": 1}).json()
    rate = preview["pricePerHourCents"]
    expect(page.get_by_test_id("preview-reserve")).to_have_text(f"${rate // 100}.{rate % 100:02d}")
    page.get_by_label("Name (optional)").fill("browser-demo")
    page.get_by_role("button", name="Launch", exact=True).click()

    # Rentals: provisioning, then running once the provider's boot time has passed.
    page.wait_for_url(re.compile(r"/app/rentals\?launched=rent_"))
    rental_id = page.url.split("launched=")[1]
    row = page.locator(f'tr[data-rental="{rental_id}"]')
    expect(row).to_have_attribute("data-status", "provisioning")
    advance(http, 25)  # the simulated machine boots in 20 s of test-clock time
    expect(row).to_have_attribute("data-status", "running")
    expect(page.get_by_test_id("launch-status")).to_contain_text("is running")
    got = me.get(f"/v1/rentals/{rental_id}").json()
    expect(row.locator("code")).to_have_text(f"ssh root@{got['host']} -p {got['port']}")
    assert got["name"] == "browser-demo" and got["pricePerHourCents"] == rate
    expect(pill(page)).to_contain_text(f"${(5000 - rate) // 100}.{(5000 - rate) % 100:02d}")  # the hour held

    # Five minutes pass: the meter and the pill move, and agree with the API.
    meter = row.get_by_test_id("meter")
    before_meter, before_pill = meter.inner_text(), pill(page).inner_text()
    page.evaluate("window.__cls = 0")
    advance(http, 300)
    expect(meter).not_to_have_text(before_meter)
    expect(pill(page)).not_to_have_text(before_pill)
    charged = me.get(f"/v1/rentals/{rental_id}").json()["totalChargedCents"]
    assert charged > 0
    expect(meter).to_contain_text(f"${charged // 100}.{charged % 100:02d}")
    assert page.evaluate("window.__cls") == 0  # nothing moved while the numbers changed

    # Stop, with its confirmation; the follow-up confirms termination.
    row.get_by_role("button", name="Stop browser-demo").click()
    dialog = page.get_by_role("dialog", name="Stop this pod?")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Stop pod").click()
    expect(page.get_by_text(re.compile(r"Stopped 1 pod: charged \$"))).to_be_visible()
    advance(http, 5)
    expect(row).to_have_attribute("data-status", "stopped")
    final = balance(me)
    assert final["reservedCents"] == 0
    expect(pill(page)).to_contain_text(f"${final['availableCents'] // 100}.{final['availableCents'] % 100:02d}")


# ---------------------------------------------------------------- billing


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_top_up_save_a_card_auto_topup_pay_an_invoice_and_export_the_ledger(
        open_tab: Callable[..., Tab], http: httpx.Client, admin_api: httpx.Client, email: str,
        viewport: ViewportSize) -> None:
    user = open_tab(viewport)
    sign_in(user, http, email, next_path="/app/billing")
    page = user.page
    me = httpx.Client(base_url=user.base, cookies={"sid": sid_of(user)}, timeout=30)

    # Checkout: the hosted page, then back to the success page; the webhook credits the wallet.
    page.get_by_role("button", name="$25", exact=True).click()
    page.get_by_role("button", name=re.compile(r"Continue to Checkout \(\$25\.00\)")).click()
    page.wait_for_url(re.compile(r"/hosted/checkout/cs_"))
    page.get_by_label("Save card").uncheck()
    page.get_by_role("button", name=re.compile("Pay 25.00")).click()
    page.wait_for_url(re.compile(r"/app/billing\?session=success$"))
    expect(page.get_by_test_id("checkout-return")).to_contain_text("Payment received")
    expect(pill(page)).to_contain_text("$25.00")
    assert balance(me)["availableCents"] == 2500

    # A card on file, through the local test-card form (Stripe Elements in production).
    page.get_by_role("button", name="Add a card").click()
    form = page.get_by_role("form", name="Add a card")
    expect(form.get_by_text("Local test card")).to_be_visible()
    expect(form.get_by_label("Test card number")).to_have_value("4242424242424242")
    form.get_by_role("button", name="Save card").click()
    expect(page.get_by_test_id("card-on-file")).to_contain_text("VISA •••• 4242")
    assert me.get("/v1/billing/card").json()["last4"] == "4242"

    # The saved card: charged at once, no redirect.
    page.get_by_role("button", name="$10", exact=True).click()
    page.get_by_role("button", name=re.compile(r"Charge \$10\.00 to card •••• 4242")).click()
    expect(page.get_by_text("Added $10.00 to your wallet.")).to_be_visible()
    expect(pill(page)).to_contain_text("$35.00")
    assert balance(me)["availableCents"] == 3500

    # Auto-topup on.
    auto = page.get_by_role("form", name="Auto top-up")
    auto.get_by_label("Top up automatically when my balance runs low").check()
    auto.get_by_label("When available drops below ($)").fill("10")
    auto.get_by_label("Add ($)").fill("25")
    auto.get_by_role("button", name="Save auto top-up").click()
    expect(auto.get_by_text("On", exact=True)).to_be_visible()
    assert me.get("/v1/billing/auto-topup").json()["enabled"] is True

    # An open invoice raises the banner (and turns the pill red); paying it on Stripe's page clears both.
    r = admin_api.post("/v1/admin/invoices", json={"email": email, "amountCents": 1234,
                                                   "description": "GPU hours beyond the balance"})
    assert r.status_code == 200, r.text
    page.reload()
    expect(page.get_by_test_id("invoice-banner")).to_contain_text("$12.34 outstanding")
    expect(pill(page)).to_have_attribute("data-tone", "red")
    invoice_row = page.locator(f'tr[data-invoice="{r.json()["id"]}"]')
    expect(invoice_row).to_have_attribute("data-status", "open")
    with page.context.expect_page() as opened:
        invoice_row.get_by_role("button", name="Pay ↗").click()
    stripe_page = opened.value
    stripe_page.wait_for_url(re.compile(r"/hosted/invoices/in_"))
    stripe_page.get_by_role("button", name=re.compile("Pay 12.34")).click()
    expect(stripe_page.get_by_text("Invoice paid.")).to_be_visible()
    stripe_page.close()
    page.bring_to_front()
    expect(page.get_by_test_id("invoice-banner")).to_have_count(0)
    expect(invoice_row).to_have_attribute("data-status", "paid")
    expect(invoice_row.get_by_role("link", name="Receipt ↗")).to_be_visible()
    expect(pill(page)).to_have_attribute("data-tone", "ok")
    assert balance(me)["openInvoiceCount"] == 0

    # The whole ledger as CSV: it adds up to the balance.
    page.get_by_role("combobox", name="Entry type").select_option("rental_charge")
    expect(page.get_by_text("No entries of this type")).to_be_visible()
    page.get_by_role("combobox", name="Entry type").select_option("")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export all (CSV)").click()
    assert re.fullmatch(r"gpurent-ledger-\d{4}-\d\d-\d\d\.csv", download.value.suggested_filename)
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    ledger = me.get("/v1/billing/ledger", params={"pageSize": 200}).json()
    total = balance(me)["totalCents"]
    assert sum(int(row["amountCents"]) for row in rows) == ledger["balanceCents"] == total == 3500
    assert int(rows[-1]["balanceAfterCents"]) == total  # oldest first: the last row is now
    assert [row["id"] for row in rows] == [e["id"] for e in reversed(ledger["entries"])]
    assert {row["type"] for row in rows} == {"stripe_topup"}


# ---------------------------------------------------------------- session and limits


def test_an_expired_session_goes_to_login_and_back(open_tab: Callable[..., Tab], http: httpx.Client,
                                                    email: str) -> None:
    tab = open_tab()
    sign_in(tab, http, email, next_path="/app/billing")
    page = tab.page
    expect(page.get_by_role("heading", name="Billing")).to_be_visible()
    # The session ends elsewhere (sign out from a script with the same cookie).
    r = httpx.post(tab.base + "/v1/auth/logout", cookies={"sid": sid_of(tab)})
    assert r.status_code == 200
    page.goto(tab.base + "/app/settings?tab=keys")
    page.wait_for_url(re.compile(r"/login\?next=%2Fapp%2Fsettings%3Ftab%3Dkeys$"))
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Email me a code").click()
    expect(page.get_by_text(f"We sent a 6-digit code to {email}")).to_be_visible()
    # Asking again at once: one code per 30 s, so the page says so and counts down (Retry-After);
    # the code already mailed still works.
    page.get_by_role("button", name="Use another email").click()
    page.get_by_role("button", name="Email me a code").click()
    expect(page.get_by_text(f"A code was sent to {email} moments ago")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile(r"Resend code in \d+ s"))).to_be_disabled()
    page.get_by_label("6-digit code").fill("000000")
    expect(page.get_by_role("alert")).to_contain_text("incorrect")
    page.get_by_label("6-digit code").fill(latest_code(http, email))
    page.wait_for_url(tab.base + "/app/settings?tab=keys")
    expect(page.get_by_role("heading", name="Settings")).to_be_visible()


def test_too_many_wrong_codes_lock_the_code(open_tab: Callable[..., Tab], http: httpx.Client,
                                            email: str) -> None:
    page = open_tab().go("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Email me a code").click()
    box = page.get_by_label("6-digit code")
    for _ in range(5):
        expect(box).to_be_enabled()
        box.fill("000000")
        expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("Too many wrong attempts")


def test_oauth_errors_are_explained_and_unconfigured_buttons_hidden(open_tab: Callable[..., Tab]) -> None:
    page = open_tab().go("/login?error=oauth_no_email")
    expect(page.get_by_role("alert")).to_contain_text("couldn't read a verified email")
    expect(page.get_by_role("link", name=re.compile("Continue with"))).to_have_count(0)  # none configured


def test_a_429_is_retried_after_retry_after(open_tab: Callable[..., Tab], http: httpx.Client, email: str) -> None:
    tab = open_tab()
    sign_in(tab, http, email)
    page = tab.page
    hits: list[str] = []

    def limited_once(route) -> None:
        hits.append(route.request.url)
        if len(hits) == 1:
            route.fulfill(status=429, headers={"retry-after": "2", "content-type": "application/json"},
                          body='{"error":"rate_limited","message":"Too many requests. Retry after 2 seconds."}')
        else:
            route.continue_()

    page.route("**/v1/ssh-keys", limited_once)
    page.goto(tab.base + "/app/settings")
    expect(page.get_by_text("Too many requests: retrying in 2 s.")).to_be_visible()
    expect(page.get_by_text("No SSH keys yet")).to_be_visible()
    assert len(hits) == 2


def test_keyboard_only_sign_in_and_launch(open_tab: Callable[..., Tab], http: httpx.Client,
                                          admin_api: httpx.Client, email: str) -> None:
    r = admin_api.post("/v1/auth/request-code", json={"email": email})  # the account exists
    assert r.status_code == 200
    advance(http, 31)
    assert admin_api.post("/v1/admin/adjustments", json={"email": email, "amountCents": 2000,
                                                         "reason": "keyboard test"}).status_code == 200
    tab = open_tab()
    page = tab.go("/login")
    kb = page.keyboard
    expect(page.get_by_label("Email")).to_be_focused()
    kb.type(email)
    kb.press("Enter")
    expect(page.get_by_label("6-digit code")).to_be_focused()
    kb.type(latest_code(http, email))
    page.wait_for_url(tab.base + "/app")

    def focus_until(predicate: str, limit: int = 60) -> None:
        for _ in range(limit):
            kb.press("Tab")
            if page.evaluate(predicate):
                return
        raise AssertionError(f"never focused: {predicate}")

    def focus_is_visible() -> bool:
        return bool(page.evaluate("""() => {
            const s = getComputedStyle(document.activeElement);
            return s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2;
        }"""))

    expect(page.locator('[data-family="rtx-4090"]')).to_be_enabled()
    focus_until("document.activeElement.dataset.family === 'rtx-4090'")
    assert focus_is_visible()
    kb.press("Enter")
    expect(page.locator('[data-family="rtx-4090"]')).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_test_id("preview-price")).to_have_text(re.compile(r"^\$"))
    focus_until("document.activeElement.textContent === 'Launch'")
    assert focus_is_visible()
    kb.press("Enter")
    page.wait_for_url(re.compile(r"/app/rentals\?launched=rent_"))
    rental_id = page.url.split("launched=")[1]
    # Stop it again from the keyboard: the row's Stop button, then the dialog's.
    row = page.locator(f'tr[data-rental="{rental_id}"]')
    expect(row).to_be_visible()
    focus_until(f"document.activeElement.closest('tr')?.dataset.rental === '{rental_id}' && "
                "document.activeElement.textContent === 'Stop'")
    kb.press("Enter")
    dialog = page.get_by_role("dialog", name="Stop this pod?")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    kb.press("Tab")
    expect(dialog.get_by_role("button", name="Stop pod")).to_be_focused()
    kb.press("Enter")
    expect(row).to_have_attribute("data-status", re.compile("stopping|stopped"))


def test_double_click_and_lost_answer_make_one_pod(open_tab: Callable[..., Tab], http: httpx.Client,
                                                   admin_api: httpx.Client, email: str) -> None:
    tab = open_tab()
    sign_in(tab, http, email)
    assert admin_api.post("/v1/admin/adjustments", json={"email": email, "amountCents": 3000,
                                                         "reason": "double click"}).status_code == 200
    page = tab.page
    page.reload()
    page.locator('[data-family="rtx-4090"]').click()
    expect(page.get_by_test_id("preview-price")).to_have_text(re.compile(r"^\$"))
    launch = page.get_by_role("button", name="Launch", exact=True)
    keys: list[str] = []
    lost: list[bool] = []

    def lose_the_first_answer(route) -> None:
        keys.append(route.request.headers.get("idempotency-key", ""))
        if not lost:
            lost.append(True)
            route.fetch()  # the API launches the pod ...
            route.abort("connectionreset")  # ... and its answer never arrives
        else:
            route.continue_()

    page.route("**/v1/rentals", lose_the_first_answer)
    launch.evaluate("b => { b.click(); b.click(); }")  # two clicks before the page can react
    expect(page.get_by_role("alert").filter(has_text="Network error")).to_be_visible()
    assert len(keys) == 1  # the second click sent nothing
    launch.click()  # try again: the same launch, so the same key; the API answers the first result
    page.wait_for_url(re.compile(r"/app/rentals\?launched=rent_"))
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0].startswith("launch-"), keys
    me = api_sign_in_as(tab)
    rentals = me.get("/v1/rentals").json()["rentals"]
    assert [r["id"] for r in rentals] == [page.url.split("launched=")[1]]
    for r in rentals:
        me.post(f"/v1/rentals/{r['id']}/stop")


def test_insufficient_balance_offers_a_top_up(open_tab: Callable[..., Tab], http: httpx.Client, email: str) -> None:
    tab = open_tab()
    sign_in(tab, http, email)
    page = tab.page
    page.locator('[data-family="rtx-4090"]').click()
    expect(page.get_by_text(re.compile("Launching holds one hour"))).to_be_visible()
    page.get_by_role("button", name="Launch", exact=True).click()
    alert = page.get_by_role("alert").filter(has_text="below the one-hour reserve")
    expect(alert).to_be_visible()
    alert.get_by_role("link", name="Top up your wallet").click()
    page.wait_for_url(re.compile(r"/app/billing\?topup=\d+$"))
    expect(page.get_by_label("Other amount ($1 – $5,000)")).not_to_have_value("")
    assert cents(pill(page).inner_text()) == 0


def api_sign_in_as(tab: Tab) -> httpx.Client:
    return httpx.Client(base_url=tab.base, cookies={"sid": sid_of(tab)}, timeout=30)

