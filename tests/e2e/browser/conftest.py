"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against the
`make dev` stack of tests/e2e/conftest.py (one stack per session, one browser per module; a
fresh context, so a fresh profile and cookie jar, per test).

The browser is launched headless with a throwaway profile and everything that would
reach the network switched off; `make browser` installs it on a fresh machine."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize, expect, sync_playwright

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDE: ViewportSize = {"width": 1440, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
TIMEOUT_MS = 25_000  # the local stack on a shared 2-core machine: generous, never a pass/fail on speed
# A test-clock move runs every sweep and pass on the way: wait as long as a client of the API does.
ADVANCE_TIMEOUT_MS = 180_000
ADMIN_EMAIL = "admin@localhost"

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Per module, not per session: Playwright's sync API keeps its asyncio loop running on the
    main thread while it is started, so every other test on this xdist worker that calls
    `asyncio.run` (the provider adapters, the catalog refresh) would fail after the browser
    tests. The browser tests are one xdist group, so their modules run one after the other and
    the loop is gone as soon as the last one ends."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `make browser` (apt-get install -y chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def http(stack: str) -> Iterator[httpx.Client]:
    """For the dev routes (mailbox, clock, local Stripe) and for reading what the API says."""
    with httpx.Client(base_url=stack, timeout=30) as client:
        yield client


def latest_code(http: httpx.Client, email: str) -> str:
    mail = next(m for m in http.get("/dev/mailbox").json() if m["to"] == email)
    found = re.search(r"\b(\d{6})\b", mail["body"])
    assert found, mail
    return found.group(1)


def api_sign_in(base: str, email: str) -> httpx.Client:
    """A signed-in API client (for setting the scene and checking the dashboard's numbers)."""
    client = httpx.Client(base_url=base, timeout=30)
    r = client.post("/v1/auth/request-code", json={"email": email})
    assert r.status_code == 200, r.text
    r = client.post("/v1/auth/verify-code", json={"email": email, "code": latest_code(client, email)})
    assert r.status_code == 200, r.text
    return client


@pytest.fixture(scope="session")
def admin_api(stack: str) -> Iterator[httpx.Client]:
    """admin@localhost (ADMIN_EMAILS of `make dev`), signed in once: a code per 30 s per email."""
    client = api_sign_in(stack, ADMIN_EMAIL)
    yield client
    client.close()


_seq = iter(range(1, 10_000))


@pytest.fixture
def email(request: pytest.FixtureRequest) -> str:
    """A new person per test (the code limit is per email)."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    return f"{name}-{next(_seq)}-{os.getpid()}@example.com"


@dataclass
class Tab:
    """A page on the stack, with what went wrong in it."""

    page: Page
    base: str
    errors: list[str] = field(default_factory=list)

    def go(self, path: str) -> Page:
        self.page.goto(self.base + path)
        return self.page


@pytest.fixture
def open_tab(browser: Browser, stack: str, request: pytest.FixtureRequest,
             tmp_path: Path) -> Iterator[Callable[..., Tab]]:
    """open_tab(viewport=WIDE, sid=None): a fresh context (profile) and page; JavaScript errors
    and CSP violations fail the test; a screenshot is kept when it fails."""
    contexts: list[tuple[BrowserContext, Tab]] = []

    def make(viewport: ViewportSize = WIDE, sid: str | None = None) -> Tab:
        context = browser.new_context(viewport=viewport, base_url=stack, accept_downloads=True,
                                      locale="en-US", timezone_id="Europe/Berlin")
        context.set_default_timeout(TIMEOUT_MS)
        if sid:
            context.add_cookies([{"name": "sid", "value": sid, "url": stack}])
        page = context.new_page()
        tab = Tab(page, stack)
        page.on("pageerror", lambda e: tab.errors.append(f"uncaught: {e}"))
        page.on("console", lambda m: tab.errors.append(f"console: {m.text}")
                if m.type == "error" and "Content Security Policy" in m.text else None)
        contexts.append((context, tab))
        return tab

    yield make
    failed = getattr(request.node, "rep_call", None)
    for i, (context, _tab) in enumerate(contexts):
        if failed is not None and failed.failed:
            for j, p in enumerate(context.pages):
                try:
                    p.screenshot(path=str(tmp_path / f"failure-{i}-{j}.png"), full_page=True)
                except Exception:  # best effort: the test has failed already
                    pass
        context.close()
    for _, tab in contexts:
        assert not tab.errors, tab.errors


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


def sign_in(tab: Tab, http: httpx.Client, email: str, next_path: str = "/app") -> None:
    """The sign-in page as a person uses it: email, then the mailed code (pasted)."""
    page = tab.go("/login" if next_path == "/app" else f"/login?next={next_path}")
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Email me a code").click()
    code_box = page.get_by_label("6-digit code")
    expect(code_box).to_be_focused()
    code_box.fill(latest_code(http, email))  # six digits: it signs in by itself
    page.wait_for_url(re.compile(re.escape(tab.base + next_path.split("?")[0]) + r"(\?.*)?$"))


def sid_of(tab: Tab) -> str:
    return next(c["value"] for c in tab.page.context.cookies() if c["name"] == "sid")


def advance(http: httpx.Client, seconds: float) -> None:
    # Every sweep, reconcile, timer and catalog refresh on the way runs: long jumps take a while.
    r = http.post("/dev/clock/advance", json={"seconds": seconds}, timeout=180)
    assert r.status_code == 200, r.text


def cents(text: str) -> int:
    """"$1,234.56" (or "−$0.05") as integer cents."""
    m = re.search(r"([\u2212-])?\$([\d,]+)\.(\d\d)", text)
    assert m, text
    value = int(m.group(2).replace(",", "")) * 100 + int(m.group(3))
    return -value if m.group(1) else value
