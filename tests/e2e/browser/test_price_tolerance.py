"""The launch's price tolerance on the Create page (`maxPricePerHourCents`): a max price below
the cheapest offer is explained (with that price) and cannot be launched; within it, when the
quoted offer's provider has no capacity, the pod is placed on the next offer and the Rentals
page says at which rate (the one charged and reserved) instead of the quote."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e.browser.conftest import Tab, sid_of, sign_in

pytestmark = pytest.mark.e2e


def rate(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}/h"


def all_listings(me: httpx.Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        query: dict[str, Any] = {"gpuCount": 1, "pageSize": 200, **({"cursor": cursor} if cursor else {})}
        r = me.get("/v1/catalog/listings", params=query)
        assert r.status_code == 200, r.text
        out += r.json()["listings"]
        cursor = r.json()["nextCursor"]
        if not cursor:
            return out


def failover_case(me: httpx.Client, budget: int) -> tuple[str, str, int, int]:
    """(family, provider of the quote, quoted price, the next provider's price): a family whose
    cheapest offer is on one provider and whose next offer elsewhere is dearer, reached within
    the launch's three attempts."""
    by_family: dict[str, list[dict[str, Any]]] = {}
    for li in all_listings(me):
        by_family.setdefault(li["family"], []).append(li)
    for family, found in sorted(by_family.items()):
        found.sort(key=lambda li: li["pricePerHourCents"])
        quote = found[0]
        other = next((li for li in found if li["providerCode"] != quote["providerCode"]), None)
        if other is None or other["pricePerHourCents"] <= quote["pricePerHourCents"] or \
                other["pricePerHourCents"] > budget:
            continue
        same = [li for li in found if li["providerCode"] == quote["providerCode"]
                and li["pricePerHourCents"] <= other["pricePerHourCents"]]
        preview = me.post("/v1/rentals/preview", json={"familyId": family, "gpuCount": 1}).json()
        if len(same) <= 2 and preview.get("pricePerHourCents") == quote["pricePerHourCents"] and \
                preview["matchedListing"]["providerCode"] == quote["providerCode"]:
            return family, quote["providerCode"], quote["pricePerHourCents"], other["pricePerHourCents"]
    pytest.fail("no family in the simulated catalog has a dearer offer on another provider")


@pytest.fixture
def knobs(http: httpx.Client) -> Iterator[Callable[[str, dict[str, Any]], None]]:
    """Set a simulator's fault switches by provider code; every switch is off again afterwards."""
    bases: dict[str, str] = http.get("/dev/providers").json()  # provider name → its base URL
    touched: list[str] = []

    def base_of(code: str) -> str:
        return next(url for name, url in bases.items() if name == code or name.startswith(code))

    def set_knobs(code: str, changes: dict[str, Any]) -> None:
        touched.append(base_of(code))
        assert httpx.post(f"{base_of(code)}/_sim/knobs", json=changes).status_code == 200

    yield set_knobs
    for base in touched:
        httpx.post(f"{base}/_sim/knobs", json={"allocate": None})


def test_a_max_price_is_checked_then_lets_failover_place_the_pod_above_the_quote(
        open_tab: Callable[..., Tab], http: httpx.Client, admin_api: httpx.Client, email: str,
        knobs: Callable[[str, dict[str, Any]], None]) -> None:
    tab = open_tab()
    sign_in(tab, http, email)
    assert admin_api.post("/v1/admin/adjustments", json={"email": email, "amountCents": 20_000,
                                                         "reason": "tolerance"}).status_code == 200
    me = httpx.Client(base_url=tab.base, cookies={"sid": sid_of(tab)}, timeout=30)
    family, provider, quoted, dearer = failover_case(me, budget=20_000)
    page = tab.page
    page.reload()
    page.locator(f'[data-family="{family}"]').click()
    expect(page.get_by_test_id("preview-price")).to_have_text(rate(quoted))
    launch = page.get_by_role("button", name="Launch", exact=True)

    # Below the cheapest offer: said on the field and in the summary, and no launch.
    low = quoted - 1
    page.get_by_label("Accept up to ($/h)").fill(f"{low // 100}.{low % 100:02d}")
    expect(page.locator("#max-price-hint")).to_have_text(f"Below the cheapest offer ({rate(quoted)}): raise it or "
                                                         "leave it empty")
    expect(page.get_by_text(f"No offer at or below your max price of {rate(low)}: the cheapest is "
                            f"{rate(quoted)}.")).to_be_visible()
    expect(launch).to_be_disabled()

    # Up to the next provider's price: the quote stays the quote, the max price is shown.
    page.get_by_label("Accept up to ($/h)").fill(f"{dearer // 100}.{dearer % 100:02d}")
    expect(page.get_by_test_id("preview-max-price")).to_have_text(rate(dearer))
    expect(page.get_by_test_id("preview-price")).to_have_text(rate(quoted))
    expect(page.get_by_test_id("preview-reserve")).to_have_text(rate(quoted).removesuffix("/h"))

    # The quoted provider has no capacity: the launch fails over, within the max price.
    knobs(provider, {"allocate": "capacity"})
    expect(launch).to_be_enabled()
    launch.click()
    page.wait_for_url(re.compile(r"/app/rentals\?launched=rent_\w+&quoted=\d+$"))
    rental_id = re.search(r"launched=(rent_\w+)", page.url).group(1)  # type: ignore[union-attr]
    note = page.get_by_test_id("repriced")
    expect(note).to_contain_text(f"The quoted offer ({rate(quoted)}) was taken first")
    expect(note).to_contain_text(f"{rate(dearer)} is the rate charged and reserved")
    got = me.get(f"/v1/rentals/{rental_id}").json()
    assert got["pricePerHourCents"] == dearer and got["provider"] != provider, got
    assert me.get("/v1/billing/balance").json()["reservedCents"] == dearer
    expect(page.locator(f'tr[data-rental="{rental_id}"]')).to_contain_text(rate(dearer))
    assert me.post(f"/v1/rentals/{rental_id}/stop").status_code == 200
