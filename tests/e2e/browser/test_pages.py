"""Every page of the dashboard, with real data, at 1440 px and at 390 px: no serious or
critical axe violation, nothing wider than the screen, the page's own content in place (no
endless spinner). Screenshots go to docs/screenshots with UPDATE_SCREENSHOTS=1
(`make screenshots`), else to the test's temporary directory.

Also measured (printed, never a pass/fail): how long /login takes to become usable."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import Page, ViewportSize, expect

from tests.e2e.browser.conftest import PHONE, WIDE, Tab, advance, api_sign_in

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[3]
SHOTS = ROOT / "docs" / "screenshots"
BLOCKING = ("serious", "critical")
VIEWPORTS = [pytest.param(WIDE, id="1440px"), pytest.param(PHONE, id="390px")]
PAGES = [
    ("login", "/login", "Sign in"),
    ("create", "/app", "Launch a GPU"),
    ("rentals", "/app/rentals", "Rentals"),
    ("billing", "/app/billing", "Billing"),
    ("settings", "/app/settings", "Settings"),
    ("admin", "/app/admin", "Admin"),
]


def public_key(comment: str) -> str:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{raw.decode()} {comment}"


@dataclass
class Scene:
    email: str
    user_sid: str
    admin_sid: str


def _ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, (r.request.url.path, r.status_code, r.text)
    return dict(r.json())


@pytest.fixture(scope="module")
def scene(stack: str, admin_api: httpx.Client) -> Iterator[Scene]:
    """A person with some history: money in and out, a running, a stopped and a failed pod,
    an SSH key, a token, an open invoice."""
    email = f"screens-{os.getpid()}@example.com"
    http = httpx.Client(base_url=stack, timeout=30)
    me = api_sign_in(stack, email)
    _ok(admin_api.post("/v1/admin/adjustments", json={"email": email, "amountCents": 10_000,
                                                      "reason": "Welcome credit"}))
    _ok(me.post("/v1/ssh-keys", json={"name": "laptop", "publicKey": public_key("me@laptop")}))
    _ok(me.post("/v1/auth/tokens", json={"name": "ci-scripts"}))
    stopped = _ok(me.post("/v1/rentals", json={"familyId": "a100-80gb", "gpuCount": 1, "name": "finetune-7b"}))
    advance(http, 25)
    _ok(me.get(f"/v1/rentals/{stopped['id']}"))
    advance(http, 420)
    _ok(me.post(f"/v1/rentals/{stopped['id']}/stop"))
    # A pod whose provider fails it: every simulator refuses, then behaves again.
    sims = _ok(http.get("/dev/providers"))
    for base in sims.values():
        _ok(httpx.post(f"{base}/_sim/knobs", json={"allocate": "error"}))
    try:
        me.post("/v1/rentals", json={"familyId": "h100-80gb", "gpuCount": 1, "name": "h100-try"})
    finally:
        for base in sims.values():
            _ok(httpx.post(f"{base}/_sim/knobs", json={"allocate": None}))
    running = _ok(me.post("/v1/rentals", json={"familyId": "rtx-4090", "gpuCount": 1, "name": "notebook",
                                               "autoStopAfterHours": 8}))
    advance(http, 25)
    _ok(me.get(f"/v1/rentals/{running['id']}"))
    advance(http, 120)
    _ok(admin_api.post("/v1/admin/invoices", json={"email": email, "amountCents": 1850,
                                                   "description": "Support session"}))
    yield Scene(email, str(me.cookies["sid"]), str(admin_api.cookies["sid"]))
    for r in me.get("/v1/rentals", params={"status": "running"}).json()["rentals"]:
        me.post(f"/v1/rentals/{r['id']}/stop")
    me.close()
    http.close()


def _wait_for_content(tab: Tab, heading: str) -> None:
    page = tab.page
    expect(page.get_by_role("heading", name=heading, level=1)).to_be_visible()
    expect(page.get_by_text(re.compile(r"^Loading "))).to_have_count(0)
    if heading != "Sign in":
        expect(page.get_by_test_id("balance-pill")).to_contain_text("$")
        expect(page.get_by_test_id("local-clock")).not_to_be_empty()  # make dev's bar, in the checks and the images


@pytest.mark.parametrize("viewport", VIEWPORTS)
@pytest.mark.parametrize(("name", "path", "heading"), PAGES, ids=[p[0] for p in PAGES])
def test_every_page_passes_axe_and_fits_the_screen(open_tab: Callable[..., Tab], scene: Scene, name: str,
                                                   path: str, heading: str, viewport: ViewportSize,
                                                   tmp_path: Path) -> None:
    sid = None if name == "login" else scene.admin_sid if name == "admin" else scene.user_sid
    tab = open_tab(viewport, sid=sid)
    page = tab.go(path)
    _wait_for_content(tab, heading)
    if name == "rentals":
        expect(page.locator('tr[data-status="running"]')).to_have_count(1)
        expect(page.get_by_text(re.compile("Provision failed"))).to_be_visible()
    if name == "billing":
        expect(page.get_by_test_id("invoice-banner")).to_be_visible()
        expect(page.get_by_role("region", name="Ledger table")).to_be_visible()

    _axe_clean(page)

    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{path} is {overflow}px wider than a {viewport['width']}px screen"

    out = SHOTS if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / f"{name}-{viewport['width']}.png"), full_page=True)


def test_the_sign_in_page_is_usable_quickly(open_tab: Callable[..., Tab]) -> None:
    """Printed for docs/performance.md, not asserted: time until the email field takes input."""
    tab = open_tab()
    timings = []
    for _ in range(3):
        page = tab.go("/login")
        expect(page.get_by_label("Email")).to_be_focused()
        timings.append(page.evaluate("performance.now()"))
    nav = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0].toJSON())")
    print(f"\n/login usable after {min(timings):.0f}-{max(timings):.0f} ms (3 loads); navigation {nav[:200]}")
    assert timings


def _axe_clean(page: Page) -> None:
    results = Axe().run(page)
    blocking = [v for v in results.response["violations"] if v.get("impact") in BLOCKING]
    assert not blocking, "\n".join(
        f"{v['impact']} {v['id']}: {v['help']} ({[n['target'] for n in v['nodes']][:5]})" for v in blocking)


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_the_confirmation_dialogs_pass_axe(open_tab: Callable[..., Tab], scene: Scene,
                                           viewport: ViewportSize) -> None:
    """Open on top of their page (focus trapped in the dialog): stopping a pod, signing out
    everywhere else."""
    tab = open_tab(viewport, sid=scene.user_sid)
    page = tab.go("/app/rentals")
    _wait_for_content(tab, "Rentals")
    page.locator('tr[data-status="running"]').get_by_role("button", name=re.compile("^Stop ")).click()
    dialog = page.get_by_role("dialog", name="Stop this pod?")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    _axe_clean(page)
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()

    page = tab.go("/app/settings")
    _wait_for_content(tab, "Settings")
    page.get_by_role("button", name="Sign out all other sessions").click()
    dialog = page.get_by_role("dialog", name="Sign out everywhere else?")
    expect(dialog.get_by_label("Also revoke every API token")).to_be_visible()
    _axe_clean(page)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
