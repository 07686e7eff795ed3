"""How fast the dashboard is usable on the local stack, in Debian's Chromium.

Starts `make dev`'s stack (DynamoDB Local) on a free port, signs a funded person in, and loads
each page N times in a fresh browser context (cold HTTP cache: every byte is fetched again),
timing from the navigation's start until the page can be used:

- /login: the email field has focus;
- /app: the GPU cards show prices (catalog, families, facets and the listings query answered);
- /app/rentals: the table (or its empty state) is there;
- /app/billing: the balance figures are there.

Also what the first page downloads (JavaScript and CSS, gzipped, from the Resource Timing API).
Prints medians and maxima; never judges them. Needs `make web` and `make browser` first.

    .venv/bin/python bench/dashboard.py [--loads 5]
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import start_stack  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
READY = {
    "/login": "document.activeElement && document.activeElement.id === 'email'",
    "/app": "/\\$/.test(document.querySelector('.family-price')?.textContent || '')",
    "/app/rentals": "!!(document.querySelector('table') || document.querySelector('.empty'))",
    "/app/billing": "/\\$\\d/.test(document.querySelector('.kpi-value')?.textContent || '')",
}


def sign_in(base: str, email: str) -> httpx.Client:
    c = httpx.Client(base_url=base, timeout=60)
    assert c.post("/v1/auth/request-code", json={"email": email}).status_code == 200
    mail = next(m for m in c.get("/dev/mailbox").json() if m["to"] == email)
    code = re.search(r"\b(\d{6})\b", mail["body"])
    assert code
    assert c.post("/v1/auth/verify-code", json={"email": email, "code": code.group(1)}).status_code == 200
    return c


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    if not (ROOT / "web" / "dist" / "index.html").exists():
        raise SystemExit("web/dist is missing: run `make web`")
    from playwright.sync_api import sync_playwright

    proc, base = start_stack(None)
    try:
        user = sign_in(base, "bench-dashboard@example.com")
        admin = sign_in(base, "admin@localhost")
        admin.post("/v1/admin/adjustments", json={"email": "bench-dashboard@example.com", "amountCents": 5000,
                                                  "reason": "bench"})
        for path in ("/v1/catalog/families", "/v1/templates", "/v1/catalog/facets", "/v1/rentals",
                     "/v1/billing/balance", "/v1/billing/ledger"):
            user.get(path)  # warm: each function's first call imports it (a cold start, measured elsewhere)
        sid = str(user.cookies["sid"])
        timings: dict[str, list[float]] = {path: [] for path in READY}
        first_load: dict[str, int] = {}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            for _ in range(args.loads):
                for path, ready in READY.items():
                    context = browser.new_context(viewport={"width": 1440, "height": 900})
                    if path != "/login":
                        context.add_cookies([{"name": "sid", "value": sid, "url": base}])
                    page = context.new_page()
                    page.goto(base + path)
                    # Polled from here: wait_for_function would eval a string, which the page's CSP forbids.
                    probe = f"() => ({ready}) ? performance.now() : null"
                    deadline = time.monotonic() + 30
                    while (at := page.evaluate(probe)) is None and time.monotonic() < deadline:
                        time.sleep(0.005)
                    if at is None:
                        raise SystemExit(f"{path} never became usable")
                    timings[path].append(float(at))
                    if path == "/login" and not first_load:
                        for entry in page.evaluate("performance.getEntriesByType('resource').map(e => e.toJSON())"):
                            kind = "js" if entry["name"].endswith(".js") else "css" if entry["name"].endswith(
                                ".css") else None
                            if kind:
                                first_load[kind] = first_load.get(kind, 0) + int(entry["transferSize"])
                    context.close()
            browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except Exception:
            proc.kill()

    print(f"Dashboard on the local stack, {args.loads} cold loads per page (ms from navigation start to usable):")
    print(f"  {'page':<14}{'median':>9}{'max':>9}")
    for path, values in timings.items():
        print(f"  {path:<14}{statistics.median(values):>9.0f}{max(values):>9.0f}")
    js, css = first_load.get("js", 0), first_load.get("css", 0)
    print(f"  /login downloads {js / 1024:.1f} KB of JavaScript and {css / 1024:.1f} KB of CSS (gzip, with headers)")
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"  ({time.monotonic() - started:.0f} s in all)")
    sys.exit(code)
