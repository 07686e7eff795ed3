"""The catalog endpoints through the real handlers (spec §3.3, §3.4.3): listings,
filters, cursors, facets and their 30 s cache, families, templates and the
launch preview.

The catalog is seeded by the real refresh (`gpurent.catalog_refresh.refresh`):
against the three provider simulators for the realistic cases, and against
tiny in-memory adapters (`FakeAdapter`) where a case needs exact prices,
regions or ties. Expected answers for the in-memory world are worked out
here from the table `WORLD`, not from the product's own filter code.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import quote

import pytest

from gpurent import catalog, catalog_refresh, config, cursor, families, regions
from gpurent import clock as clock_mod
from gpurent.providers.base import AllocateRequest, Instance, Offer, ProviderError
from gpurent.providers.registry import build_adapters
from infra.simulators import Simulators, start_simulators
from tests.conftest import Api
from tests.integration.helpers import envelope, snapshot

LISTINGS = "/v1/catalog/listings"
PREVIEW = "/v1/rentals/preview"
PROVIDERS = ("vast", "runpod", "lambda")
LISTING_KEYS = {"id", "model", "family", "vramGb", "gpuCount", "pricePerHourCents", "providerCode", "region",
                "regionCode", "interconnect"}
LST_ID = re.compile(r"lst_[0-9A-HJKMNP-TV-Z]{26}")
TEMPLATE_IDS = ["ubuntu-24-04", "pytorch", "vllm", "ollama", "a1111", "text-gen-webui"]

# Broad region groups as spec §4.11 / regions.py describe them, for the countries used here.
EU = {"DE", "NL", "SE", "RO", "CZ", "GB", "FR"}
APAC = {"JP", "SG", "IN", "AU", "KR"}


# --------------------------------------------------------------------------- in-memory providers


class FakeAdapter:
    """A `ProviderAdapter` whose offers are whatever the test says (catalog side only)."""

    def __init__(self, code: str, offers: Iterable[Offer] = (), *, delay: float = 0.0,
                 error: ProviderError | None = None) -> None:
        self.code = code
        self.offers = list(offers)
        self.delay = delay
        self.error = error
        self.calls = 0

    async def list_offers(self) -> list[Offer]:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return list(self.offers)

    async def allocate(self, req: AllocateRequest) -> str:
        raise NotImplementedError

    async def get_instance(self, instance_id: str) -> Instance | None:
        raise NotImplementedError

    async def terminate(self, instance_id: str) -> None:
        raise NotImplementedError

    async def list_instances(self, expected: Sequence[str] = ()) -> list[Instance]:
        raise NotImplementedError

    async def find_by_label(self, label: str) -> Instance | None:
        raise NotImplementedError


def offer(provider: str, key: str, family_id: str, count: int, cents: int, country: str,
          state: str | None = None) -> Offer:
    fam = families.get_family(family_id)
    region = regions.region_for_country(country, state)
    assert fam is not None and region is not None
    return Offer(provider=provider, offer_key=key, gpu_name=fam.display_name, family=fam.id, model=fam.model,
                 vram_gb=fam.vram_gb, gpu_count=count, price_cents_per_hour=cents, region=region.label,
                 region_code=region.code, interconnect=families.interconnect_for(fam, count))


Row = tuple[str, str, str, int, int, str, str | None]  # provider, key, family, count, cents, country, state

# Every price is distinct, so a listing is known by its price.
WORLD: list[Row] = [
    ("vast", "v1", "rtx-4090", 1, 40, "US", "TX"),
    ("vast", "v2", "rtx-4090", 2, 85, "DE", None),
    ("vast", "v3", "h100-80gb", 1, 250, "US", "OR"),
    ("vast", "v4", "h100-80gb", 8, 2000, "JP", None),
    ("vast", "v5", "a100-80gb", 1, 150, "NL", None),
    ("vast", "v6", "b200", 1, 500, "SG", None),
    ("runpod", "r1", "rtx-4090", 1, 38, "SE", None),
    ("runpod", "r2", "h100-80gb", 1, 270, "DE", None),
    ("runpod", "r3", "rtx-5090", 4, 300, "CA", None),
    ("runpod", "r4", "b300", 8, 5000, "US", "GA"),
    ("runpod", "r5", "a100-80gb", 2, 290, "IN", None),
    ("lambda", "l1", "h100-80gb", 1, 329, "US", "VA"),
    ("lambda", "l2", "rtx-4090", 1, 59, "JP", None),
    ("lambda", "l3", "b200", 8, 3992, "US", "TX"),
    ("lambda", "l4", "h100-80gb", 2, 638, "DE", None),
]
VRAM = {f.id: f.vram_gb for f in families.FAMILIES}
MODEL = {f.id: f.model for f in families.FAMILIES}


def fakes(rows: Iterable[Row], providers: Iterable[str] = PROVIDERS) -> dict[str, FakeAdapter]:
    out = {code: FakeAdapter(code) for code in providers}
    for provider, key, fam, count, cents, country, state in rows:
        out[provider].offers.append(offer(provider, key, fam, count, cents, country, state))
    return out


def in_region(country: str, region: str) -> bool:
    r = region.lower()
    if r == "eu":
        return country in EU
    if r == "apac":
        return country in APAC
    return country.lower() == r  # "us" is the United States either way


def expected_prices(rows: Iterable[Row], *, family: Iterable[str] | None = None, min_vram: float | None = None,
                    count: int | None = None, region: str | None = None, max_price: int | None = None) -> list[int]:
    fams = set(family) if family is not None else None
    out = [cents for _p, _k, fam, n, cents, country, _s in rows
           if (fams is None or fam in fams) and (min_vram is None or VRAM[fam] >= min_vram)
           and (count is None or n == count) and (region is None or in_region(country, region))
           and (max_price is None or cents <= max_price)]
    return sorted(out)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def roomy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Room for many requests per test, and no catalog cache carried between tests."""
    monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", "100000")
    monkeypatch.setenv("RATE_LIMIT_PER_HOUR", "1000000")
    config.reset()
    catalog.invalidate()
    yield
    catalog.invalidate()
    config.reset()


@pytest.fixture
def world(aws: None, clock: clock_mod.ManualClock) -> dict[str, FakeAdapter]:
    adapters = fakes(WORLD)
    report = catalog_refresh.refresh(adapters)  # type: ignore[arg-type]
    assert all(o.ok for o in report.outcomes), report.as_dict()
    return adapters


@pytest.fixture(scope="module")
def sims() -> Iterator[Simulators]:
    # The simulators read whichever clock the test installed.
    s = start_simulators(now=clock_mod.now, boot_seconds=5.0)
    yield s
    s.shutdown()


@pytest.fixture
def simulated(sims: Simulators, aws: None, clock: clock_mod.ManualClock) -> dict[str, Any]:
    sims.reset()
    adapters = build_adapters(sims.settings())
    report = catalog_refresh.refresh(adapters)
    assert [o.provider for o in report.outcomes if o.ok] == list(PROVIDERS), report.as_dict()
    return adapters


def listings(api: Api, query: str = "") -> dict[str, Any]:
    r = api.get(f"{LISTINGS}?{query}" if query else LISTINGS)
    assert r.status == 200, r.body
    body = r.json()
    assert set(body) == {"listings", "nextCursor"}
    return dict(body)


def walk(api: Api, query: str = "", page_size: int = 200) -> list[dict[str, Any]]:
    """Every listing of a query, page by page."""
    out: list[dict[str, Any]] = []
    cur: str | None = None
    for _ in range(1000):
        q = f"{query}&pageSize={page_size}" if query else f"pageSize={page_size}"
        if cur:
            q += f"&cursor={quote(cur)}"
        page = listings(api, q)
        assert len(page["listings"]) <= page_size
        out.extend(page["listings"])
        cur = page["nextCursor"]
        if cur is None:
            return out
        assert len(page["listings"]) == page_size, "a page before the last one is full"
    raise AssertionError("pagination does not end")


def prices(items: list[dict[str, Any]]) -> list[int]:
    return [li["pricePerHourCents"] for li in items]


def preview(api: Api, body: Any) -> Any:
    return api.post(PREVIEW, body)


def refresh_elsewhere(adapters: dict[str, FakeAdapter], monkeypatch: pytest.MonkeyPatch) -> None:
    """The refresh as the deployed one runs: in another Lambda, so it cannot clear this process's cache."""
    with monkeypatch.context() as m:
        m.setattr(catalog, "invalidate", lambda: None)
        catalog_refresh.refresh(adapters)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- listings


def test_a_listing_has_exactly_the_documented_fields(api: Api, user, world) -> None:
    items = walk(api)
    assert len(items) == len(WORLD)
    for li in items:
        assert set(li) == LISTING_KEYS, li
        assert LST_ID.fullmatch(li["id"]), li
        assert li["providerCode"] in PROVIDERS
        assert li["gpuCount"] in (1, 2, 4, 8)
        assert isinstance(li["pricePerHourCents"], int) and li["pricePerHourCents"] > 0
        assert isinstance(li["vramGb"], int) and re.fullmatch(r"[A-Z]{2}", li["regionCode"])
    (h100,) = [li for li in items if li["pricePerHourCents"] == 250]
    assert h100 == {"id": h100["id"], "model": "H100_SXM_80GB", "family": "h100-80gb", "vramGb": 80, "gpuCount": 1,
                    "pricePerHourCents": 250, "providerCode": "vast", "region": "US-West", "regionCode": "US",
                    "interconnect": h100["interconnect"]}
    assert len({li["id"] for li in items}) == len(items)


def test_listings_are_cheapest_first_with_the_default_page(api: Api, user, world) -> None:
    body = listings(api)
    assert prices(body["listings"]) == expected_prices(WORLD)
    assert body["nextCursor"] is None
    assert [li["providerCode"] for li in body["listings"]][:3] == ["runpod", "vast", "lambda"]  # 38, 40, 59


def test_simulated_listings_come_from_all_three_providers_cheapest_first(api: Api, user, simulated) -> None:
    items = walk(api)
    assert {li["providerCode"] for li in items} == set(PROVIDERS)
    assert prices(items) == sorted(prices(items))
    assert len({li["id"] for li in items}) == len(items)
    for li in items:
        assert set(li) == LISTING_KEYS
        fam = families.get_family(li["family"])
        assert fam is not None and li["model"] == fam.model and li["vramGb"] == fam.vram_gb


def test_sxm_listings_report_nvlink(api: Api, user, simulated) -> None:
    """Spec §3.3.1's example listing is one H100 SXM GPU (`gpuCount` 1) with `interconnect` `NVLink`:
    the interconnect of an SXM board is NVLink whatever the count; RTX cards are PCIe."""
    items = walk(api)
    for li in items:
        fam = families.get_family(li["family"])
        assert fam is not None
        want = "NVLink" if fam.sxm else "PCIe"
        assert li["interconnect"] == want, li


@pytest.mark.parametrize(
    ("query", "expect"),
    [
        ("model=H100_SXM_80GB", {"family": ["h100-80gb"]}),
        ("model=H100", {"family": ["h100-80gb"]}),
        ("model=RTX_4090", {"family": ["rtx-4090"]}),
        ("model=RTX", {"family": ["rtx-4090", "rtx-5090"]}),
        ("model=B200", {"family": ["b200"]}),
        ("model=A100_SXM_80GB", {"family": ["a100-80gb"]}),
        ("model=V100", {"family": []}),
        ("minVramGb=80", {"min_vram": 80}),
        ("minVramGb=24", {"min_vram": 24}),
        ("minVramGb=32.5", {"min_vram": 32.5}),
        ("minVramGb=181", {"min_vram": 181}),
        ("minVramGb=0", {}),
        ("gpuCount=1", {"count": 1}),
        ("gpuCount=2", {"count": 2}),
        ("gpuCount=4", {"count": 4}),
        ("gpuCount=8", {"count": 8}),
        ("region=US", {"region": "US"}),
        ("region=DE", {"region": "DE"}),
        ("region=JP", {"region": "JP"}),
        ("region=CA", {"region": "CA"}),
        ("region=us", {"region": "us"}),
        ("region=eu", {"region": "eu"}),
        ("region=apac", {"region": "apac"}),
        ("region=FR", {"region": "FR"}),
        ("maxPricePerHourCents=250", {"max_price": 250}),
        ("maxPricePerHourCents=249", {"max_price": 249}),
        ("maxPricePerHourCents=0", {"max_price": 0}),
        ("model=H100&region=eu", {"family": ["h100-80gb"], "region": "eu"}),
        ("model=H100&gpuCount=1&region=eu&maxPricePerHourCents=300",
         {"family": ["h100-80gb"], "count": 1, "region": "eu", "max_price": 300}),
        ("minVramGb=80&gpuCount=8&region=us", {"min_vram": 80, "count": 8, "region": "us"}),
        ("model=RTX_4090&maxPricePerHourCents=60", {"family": ["rtx-4090"], "max_price": 60}),
        ("gpuCount=1&region=apac&minVramGb=80", {"count": 1, "region": "apac", "min_vram": 80}),
        ("region=us&maxPricePerHourCents=400&gpuCount=1", {"region": "us", "max_price": 400, "count": 1}),
    ],
)
def test_every_filter_and_combination(api: Api, user, world, query: str, expect: dict[str, Any]) -> None:
    items = walk(api, query)
    assert prices(items) == expected_prices(WORLD, **expect), query
    assert listings(api, query)["listings"] == items[:50]


def test_the_us_group_is_the_united_states_only(api: Api, user, world) -> None:
    codes = {li["regionCode"] for li in walk(api, "region=us")}
    assert codes == {"US"}
    assert {li["regionCode"] for li in walk(api, "region=eu")} == {"DE", "NL", "SE"}
    assert {li["regionCode"] for li in walk(api, "region=apac")} == {"JP", "SG", "IN"}


def test_filters_on_simulated_listings(api: Api, user, simulated) -> None:
    everything = walk(api)
    for region in ("US", "us", "eu", "apac", "JP", "DE", "NL", "CA"):
        for count in (None, 1, 8):
            query = f"region={region}" + (f"&gpuCount={count}" if count else "")
            got = walk(api, query)
            want = [li for li in everything
                    if in_region(li["regionCode"], region) and (count is None or li["gpuCount"] == count)]
            assert sorted(li["id"] for li in got) == sorted(li["id"] for li in want), query
            assert prices(got) == sorted(prices(got)), query
            h100 = walk(api, query + "&model=H100&minVramGb=80&maxPricePerHourCents=2500")
            assert sorted(li["id"] for li in h100) == sorted(
                li["id"] for li in want if li["family"] == "h100-80gb" and li["pricePerHourCents"] <= 2500), query
    assert walk(api, "region=eu") and walk(api, "region=apac") and walk(api, "region=us")


def test_min_vram_80_leaves_out_smaller_cards(api: Api, user, simulated) -> None:
    got = walk(api, "minVramGb=80")
    assert got and {li["family"] for li in got} == {"a100-80gb", "h100-80gb", "b200", "b300"}
    assert all(li["vramGb"] >= 80 for li in got)


# --------------------------------------------------------------------------- pagination


def test_pages_cover_every_listing_once_in_order(api: Api, user, simulated) -> None:
    everything = walk(api, page_size=200)
    assert len(everything) > 200  # the simulators offer a few hundred
    for size in (50, 37, 1):
        query = "" if size != 1 else "model=B300"
        want = everything if size != 1 else [li for li in everything if li["model"] == "B300"]
        got = walk(api, query, page_size=size)
        ids = [li["id"] for li in got]
        assert len(ids) == len(set(ids)), "no duplicates"
        assert ids == [li["id"] for li in want], f"no gaps, same order (pageSize {size})"
    first = listings(api, "pageSize=50")
    assert len(first["listings"]) == 50 and isinstance(first["nextCursor"], str)
    assert listings(api)["listings"] == first["listings"], "the default page size is 50"


def test_the_last_page_has_no_cursor(api: Api, user, world) -> None:
    body = listings(api, f"pageSize={len(WORLD)}")
    assert len(body["listings"]) == len(WORLD) and body["nextCursor"] is None
    body = listings(api, f"pageSize={len(WORLD) - 1}")
    assert body["nextCursor"] is not None
    last = listings(api, f"pageSize={len(WORLD) - 1}&cursor={quote(body['nextCursor'])}")
    assert len(last["listings"]) == 1 and last["nextCursor"] is None
    assert last["listings"][0]["pricePerHourCents"] == max(expected_prices(WORLD))
    assert listings(api, "pageSize=200")["nextCursor"] is None
    assert len(listings(api, "pageSize=1")["listings"]) == 1


def test_forged_and_foreign_cursors_are_refused(api: Api, user, world, clock) -> None:
    real = listings(api, "pageSize=2")["nextCursor"]
    assert real
    body, mac = real.split(".") if "." in real else (real, "")
    spec_style = base64.b64encode(json.dumps({"lastId": "lst_01H8E3ABCDEFGHJKMNPQRSTVWX"}).encode()).decode()
    flipped = ("A" if body[0] != "A" else "B") + body[1:]
    forged = [
        "garbage", spec_style, "x" * 3000, f"{flipped}.{mac}" if mac else flipped + "x",
        cursor.encode("ledger", user["id"], {"p": 40, "i": "lst_00000000000000000000000000"}),
        cursor.encode("listings", user["id"], {"lastId": "lst_00000000000000000000000000"}),
    ]
    for bad in forged:
        err = envelope(api.get(f"{LISTINGS}?pageSize=2&cursor={quote(bad)}"), 400, "validation_failed")
        assert "cursor" in err.get("details", {}), err
    bob = Api(source_ip="198.51.100.8")
    bob.sign_in("bob@example.com")
    clock.advance(1)
    bobs = listings(bob, "pageSize=2")["nextCursor"]
    assert bobs
    envelope(api.get(f"{LISTINGS}?pageSize=2&cursor={quote(bobs)}"), 400, "validation_failed")
    assert listings(bob, f"pageSize=2&cursor={quote(bobs)}")["listings"]
    assert listings(api, f"pageSize=2&cursor={quote(real)}")["listings"]


@pytest.mark.parametrize(
    ("query", "code", "param"),
    [
        ("pageSize=0", "validation_failed", "pageSize"),
        ("pageSize=201", "validation_failed", "pageSize"),
        ("pageSize=abc", "validation_failed", "pageSize"),
        ("pageSize=-5", "validation_failed", "pageSize"),
        ("pageSize=2.5", "validation_failed", "pageSize"),
        ("gpuCount=3", "invalid_count", "gpuCount"),
        ("gpuCount=0", "invalid_count", "gpuCount"),
        ("gpuCount=16", "invalid_count", "gpuCount"),
        ("minVramGb=-1", "validation_failed", "minVramGb"),
        ("minVramGb=NaN", "validation_failed", "minVramGb"),
        ("minVramGb=nan", "validation_failed", "minVramGb"),
        ("minVramGb=inf", "validation_failed", "minVramGb"),
        ("minVramGb=eighty", "validation_failed", "minVramGb"),
        ("maxPricePerHourCents=-1", "validation_failed", "maxPricePerHourCents"),
        ("maxPricePerHourCents=NaN", "validation_failed", "maxPricePerHourCents"),
        ("maxPricePerHourCents=cheap", "validation_failed", "maxPricePerHourCents"),
        ("region=europe", "validation_failed", "region"),
        ("region=USA", "validation_failed", "region"),
        ("region=U", "validation_failed", "region"),
        ("region=us-east", "validation_failed", "region"),
        ("region=1A", "validation_failed", "region"),
        (f"region={quote('u s')}", "validation_failed", "region"),
        (f"model={quote('H100;DROP')}", "validation_failed", "model"),
        ("model=" + "H" * 65, "validation_failed", "model"),
    ],
)
def test_bad_query_values_are_a_400_envelope(api: Api, user, world, query: str, code: str, param: str) -> None:
    err = envelope(api.get(f"{LISTINGS}?{query}"), 400, code)
    assert param in err.get("details", {}), err


@pytest.mark.parametrize("query", ["gpuCount=abc", "gpuCount=-1", "gpuCount=1.5", "gpuCount=NaN"])
def test_a_non_numeric_gpu_count_is_refused(api: Api, user, world, query: str) -> None:
    r = api.get(f"{LISTINGS}?{query}")
    assert r.status == 400, r.body
    assert r.json()["error"] in ("validation_failed", "invalid_count"), r.body


def test_an_empty_catalog_answers_empty(api: Api, user) -> None:
    assert listings(api) == {"listings": [], "nextCursor": None}
    body = api.get("/v1/catalog/facets").json()
    assert body["models"] == [] and body["regions"] == [] and body["providers"] == []
    assert body["priceRange"] == {"minCents": None, "maxCents": None}
    envelope(preview(api, {"familyId": "h100-80gb", "gpuCount": 1}), 400, "model_unavailable")


# --------------------------------------------------------------------------- facets


def check_facets(facets: dict[str, Any], items: list[dict[str, Any]]) -> None:
    assert set(facets) == {"models", "regions", "providers", "priceRange"}
    for name, field in (("models", "model"), ("regions", "regionCode"), ("providers", "providerCode")):
        for entry in facets[name]:
            assert set(entry) == {"code", "count"} and isinstance(entry["count"], int)
        got = {e["code"]: e["count"] for e in facets[name]}
        assert len(got) == len(facets[name]), f"{name}: one entry per code"
        assert got == dict(Counter(li[field] for li in items)), name
    assert facets["priceRange"] == {"minCents": min(prices(items)), "maxCents": max(prices(items))}


def test_facets_count_what_the_listings_show(api: Api, user, world) -> None:
    r = api.get("/v1/catalog/facets")
    assert r.status == 200, r.body
    check_facets(r.json(), walk(api))
    assert r.json()["priceRange"] == {"minCents": 38, "maxCents": 5000}
    assert {e["code"]: e["count"] for e in r.json()["providers"]} == {"vast": 6, "runpod": 5, "lambda": 4}


def test_simulated_facets_match_the_listings(api: Api, user, simulated) -> None:
    facets = api.get("/v1/catalog/facets").json()
    check_facets(facets, walk(api))
    assert {e["code"] for e in facets["providers"]} == set(PROVIDERS)


def test_listings_and_facets_are_cached_for_30_seconds(api: Api, user, world, clock, monkeypatch) -> None:
    facets0 = api.get("/v1/catalog/facets").json()
    list0 = walk(api)
    preview0 = preview(api, {"familyId": "h100-80gb", "gpuCount": 1}).json()
    assert preview0["pricePerHourCents"] == 250

    # The scheduled refresh (another Lambda) sees every price go up by 7 cents.
    dearer = fakes([(p, k, f, n, c + 7, cc, s) for p, k, f, n, c, cc, s in WORLD])
    clock.advance(10)
    refresh_elsewhere(dearer, monkeypatch)
    clock.advance(19)  # 29 s after the first read
    assert api.get("/v1/catalog/facets").json() == facets0
    assert walk(api) == list0
    assert preview(api, {"familyId": "h100-80gb", "gpuCount": 1}).json() == preview0

    clock.advance(2)  # 31 s after the first read
    facets1 = api.get("/v1/catalog/facets").json()
    assert facets1["priceRange"] == {"minCents": 45, "maxCents": 5007}
    list1 = walk(api)
    assert prices(list1) == [p + 7 for p in prices(list0)]
    assert [li["id"] for li in list1] == [li["id"] for li in list0]
    check_facets(facets1, list1)
    assert preview(api, {"familyId": "h100-80gb", "gpuCount": 1}).json()["pricePerHourCents"] == 257


# --------------------------------------------------------------------------- families, templates


def test_families_describe_the_six_families_with_their_listings(api: Api, user, world) -> None:
    r = api.get("/v1/catalog/families")
    assert r.status == 200, r.body
    body = r.json()
    assert set(body) == {"families"}
    got = body["families"]
    assert [f["id"] for f in got] == ["rtx-4090", "rtx-5090", "a100-80gb", "h100-80gb", "b200", "b300"]
    items = walk(api)
    for fam in got:
        assert {"id", "model", "vramGb"} <= set(fam)
        assert fam["model"] == MODEL[fam["id"]] and fam["vramGb"] == VRAM[fam["id"]]
        mine = [li for li in items if li["family"] == fam["id"]]
        if "listingCount" in fam:
            assert fam["listingCount"] == len(mine), fam
        if "gpuCounts" in fam:
            assert fam["gpuCounts"] == sorted({li["gpuCount"] for li in mine}), fam
        singles = [li["pricePerHourCents"] for li in mine if li["gpuCount"] == 1]
        if "fromPricePerHourCents" in fam and singles:
            assert fam["fromPricePerHourCents"] == min(singles), fam
    by_id = {f["id"]: f for f in got}
    assert by_id["rtx-4090"]["fromPricePerHourCents"] == 38
    assert by_id["h100-80gb"]["gpuCounts"] == [1, 2, 8]


def test_templates_are_the_six_documented_ones(api: Api, user) -> None:
    r = api.get("/v1/templates")
    assert r.status == 200, r.body
    body = r.json()
    assert set(body) == {"templates"}
    assert [t["id"] for t in body["templates"]] == TEMPLATE_IDS
    assert [t["id"] for t in body["templates"] if t.get("default")] == ["ubuntu-24-04"]
    for t in body["templates"]:
        assert isinstance(t["name"], str) and t["name"]
        assert isinstance(t.get("description"), str) and t["description"]
    ports = {t["id"]: t.get("ports") for t in body["templates"]}
    assert 11434 in ports["ollama"] and 7860 in ports["a1111"] and 7860 in ports["text-gen-webui"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", LISTINGS), ("GET", "/v1/catalog/facets"), ("GET", "/v1/catalog/families"), ("GET", "/v1/templates"),
     ("POST", PREVIEW)],
)
def test_catalog_routes_need_a_session(aws, world, method: str, path: str) -> None:
    anon = Api()
    body = {"familyId": "h100-80gb", "gpuCount": 1} if method == "POST" else None
    err = envelope(anon.call(method, path, body), 401, "unauthorized")
    assert err["message"] == "Not signed in"


# --------------------------------------------------------------------------- preview


def check_preview(body: dict[str, Any]) -> None:
    assert set(body) == {"pricePerHourCents", "estimatedProvisionSeconds", "matchedListing"}, body
    assert set(body["matchedListing"]) == {"id", "providerCode", "region", "model"}, body
    assert isinstance(body["pricePerHourCents"], int) and body["pricePerHourCents"] > 0
    assert isinstance(body["estimatedProvisionSeconds"], int) and body["estimatedProvisionSeconds"] > 0
    assert LST_ID.fullmatch(body["matchedListing"]["id"])


def test_preview_answers_the_cheapest_matching_listing(api: Api, user, world) -> None:
    r = preview(api, {"familyId": "h100-80gb", "gpuCount": 1})
    assert r.status == 200, r.body
    body = r.json()
    check_preview(body)
    (v3,) = [li for li in walk(api) if li["pricePerHourCents"] == 250]
    assert body["pricePerHourCents"] == 250
    assert body["matchedListing"] == {"id": v3["id"], "providerCode": "vast", "region": "US-West",
                                      "model": "H100_SXM_80GB"}


@pytest.mark.parametrize(
    ("body", "want"),
    [
        ({"familyId": "h100-80gb", "gpuCount": 1, "region": "eu"}, 270),
        ({"familyId": "h100-80gb", "gpuCount": 1, "region": "DE"}, 270),
        ({"familyId": "h100-80gb", "gpuCount": 1, "region": "us"}, 250),
        ({"familyId": "h100-80gb", "gpuCount": 1, "region": "US"}, 250),
        ({"familyId": "h100-80gb", "gpuCount": 2}, 638),
        ({"familyId": "h100-80gb", "gpuCount": 8, "region": "apac"}, 2000),
        ({"familyId": "rtx-4090", "gpuCount": 1}, 38),
        ({"familyId": "rtx-4090", "gpuCount": 1, "region": "us"}, 40),
        ({"familyId": "rtx-4090", "gpuCount": 1, "region": "apac"}, 59),
        ({"familyId": "rtx-4090", "gpuCount": 2, "region": "eu", "templateId": "pytorch"}, 85),
        ({"familyId": "b200", "gpuCount": 8, "templateId": "vllm", "region": None}, 3992),
        ({"familyId": "a100-80gb", "gpuCount": 2, "region": "IN"}, 290),
    ],
)
def test_preview_honours_the_region(api: Api, user, world, body: dict[str, Any], want: int) -> None:
    r = preview(api, body)
    assert r.status == 200, r.body
    check_preview(r.json())
    assert r.json()["pricePerHourCents"] == want
    query = f"model={MODEL[body['familyId']]}&gpuCount={body['gpuCount']}"
    if body.get("region"):
        query += f"&region={body['region']}"
    first = listings(api, query + "&pageSize=1")["listings"][0]
    assert r.json()["matchedListing"] == {k: first[k2] for k, k2 in
                                          (("id", "id"), ("providerCode", "providerCode"), ("region", "region"),
                                           ("model", "model"))}


@pytest.mark.parametrize(
    "body",
    [
        {"familyId": "h100-80gb", "gpuCount": 1, "region": "apac"},
        {"familyId": "h100-80gb", "gpuCount": 1, "region": "JP"},
        {"familyId": "h100-80gb", "gpuCount": 4},
        {"familyId": "rtx-5090", "gpuCount": 1},
        {"familyId": "b300", "gpuCount": 1},
        {"familyId": "rtx-5090", "gpuCount": 4, "region": "us"},
    ],
)
def test_preview_without_a_match_is_model_unavailable(api: Api, user, world, body: dict[str, Any]) -> None:
    envelope(preview(api, body), 400, "model_unavailable")


def test_preview_is_the_first_listing_of_the_same_query(api: Api, user, simulated) -> None:
    matched = 0
    for fam in families.FAMILIES:
        for count in (1, 2, 4, 8):
            for region in (None, "us", "eu", "apac", "JP", "SE"):
                body: dict[str, Any] = {"familyId": fam.id, "gpuCount": count}
                query = f"model={fam.model}&gpuCount={count}&pageSize=1"
                if region:
                    body["region"] = region
                    query += f"&region={region}"
                first = listings(api, query)["listings"]
                r = preview(api, body)
                if not first:
                    envelope(r, 400, "model_unavailable")
                    continue
                assert r.status == 200, (body, r.body)
                got = r.json()
                check_preview(got)
                assert got["pricePerHourCents"] == first[0]["pricePerHourCents"], body
                assert got["matchedListing"] == {"id": first[0]["id"], "providerCode": first[0]["providerCode"],
                                                 "region": first[0]["region"], "model": first[0]["model"]}, body
                matched += 1
    assert matched > 40


def test_preview_ties_go_to_the_most_recent_refresh_then_the_id(api: Api, user, clock) -> None:
    rows: list[Row] = [
        ("vast", "tie-a", "h100-80gb", 1, 200, "US", "TX"),
        ("runpod", "tie-b", "h100-80gb", 1, 200, "US", "GA"),
        ("lambda", "same-1", "b200", 1, 400, "US", "VA"),
        ("lambda", "same-2", "b200", 1, 400, "US", "TX"),
        ("lambda", "dear", "h100-80gb", 1, 201, "US", "VA"),
    ]
    adapters = fakes(rows)
    catalog_refresh.refresh(adapters)  # type: ignore[arg-type]
    tied = [li for li in walk(api, "model=H100&gpuCount=1") if li["pricePerHourCents"] == 200]
    assert {li["providerCode"] for li in tied} == {"vast", "runpod"}
    low, high = sorted(tied, key=lambda li: li["id"])

    def winner(family: str = "h100-80gb") -> dict[str, Any]:
        r = preview(api, {"familyId": family, "gpuCount": 1})
        assert r.status == 200, r.body
        return dict(r.json()["matchedListing"])

    assert winner()["id"] == low["id"], "seen at the same time: the lower id"
    same = sorted(li["id"] for li in walk(api, "model=B200&gpuCount=1"))
    assert len(same) == 2 and winner("b200")["id"] == same[0], "one provider, same price: the lower id"

    clock.advance(5)
    catalog_refresh.refresh({high["providerCode"]: adapters[high["providerCode"]]})
    assert winner() == {"id": high["id"], "providerCode": high["providerCode"], "region": high["region"],
                        "model": "H100_SXM_80GB"}, "refreshed most recently wins"
    clock.advance(5)
    catalog_refresh.refresh({low["providerCode"]: adapters[low["providerCode"]]})
    assert winner()["id"] == low["id"]
    assert preview(api, {"familyId": "h100-80gb", "gpuCount": 1}).json()["pricePerHourCents"] == 200


@pytest.mark.parametrize("count", [3, 0, 16, 5, -1])
def test_preview_with_a_bad_count_is_invalid_count(api: Api, user, world, count: int) -> None:
    err = envelope(preview(api, {"familyId": "h100-80gb", "gpuCount": count}), 400, "invalid_count")
    assert "gpuCount" in err.get("details", {}), err


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"familyId": "h100", "gpuCount": 1}, "familyId"),
        ({"familyId": "H100_SXM_80GB", "gpuCount": 1}, "familyId"),
        ({"familyId": "a100-40gb", "gpuCount": 1}, "familyId"),
        ({"familyId": "", "gpuCount": 1}, "familyId"),
        ({"familyId": "h100-80gb", "gpuCount": 1, "templateId": "windows"}, "templateId"),
        ({"familyId": "h100-80gb", "gpuCount": 1, "templateId": ""}, "templateId"),
        ({"familyId": "h100-80gb", "gpuCount": 1, "colour": "blue"}, "colour"),
        ({"familyId": "h100-80gb", "gpuCount": 1, "name": "x"}, "name"),
        ({"familyId": "h100-80gb", "gpuCount": "1"}, "gpuCount"),
        ({"familyId": "h100-80gb", "gpuCount": 1.5}, "gpuCount"),
        ({"familyId": "h100-80gb", "gpuCount": True}, "gpuCount"),
        ({"familyId": "h100-80gb", "gpuCount": None}, "gpuCount"),
        ({"familyId": 7, "gpuCount": 1}, "familyId"),
        ({"familyId": ["h100-80gb"], "gpuCount": 1}, "familyId"),
        ({"gpuCount": 1}, "familyId"),
        ({"familyId": "h100-80gb"}, "gpuCount"),
        ({"familyId": "h100-80gb", "gpuCount": 1, "region": "europe"}, "region"),
        ({"familyId": "h100-80gb", "gpuCount": 1, "region": 5}, "region"),
        ({"familyId": "h100-80gb", "gpuCount": 1, "templateId": 3}, "templateId"),
        ({"familyId": "nope", "gpuCount": 3}, "familyId"),
    ],
)
def test_preview_validation(api: Api, user, world, body: dict[str, Any], field: str) -> None:
    err = envelope(preview(api, body), 400, "validation_failed")
    assert field in err.get("details", {}), err


@pytest.mark.parametrize("raw", [b"[]", b"not json", b'"h100-80gb"', b"null"])
def test_preview_needs_a_json_object(api: Api, user, world, raw: bytes) -> None:
    envelope(api.call("POST", PREVIEW, raw=raw, headers={"content-type": "application/json"}), 400,
             "validation_failed")


@pytest.mark.parametrize("template", TEMPLATE_IDS)
def test_preview_accepts_every_template(api: Api, user, world, template: str) -> None:
    r = preview(api, {"familyId": "rtx-4090", "gpuCount": 1, "templateId": template})
    assert r.status == 200, r.body
    assert r.json()["pricePerHourCents"] == 38


def test_preview_writes_nothing(api: Api, user, world) -> None:
    preview(api, {"familyId": "h100-80gb", "gpuCount": 1})  # warm the session and the cache
    before = snapshot()
    for body in ({"familyId": "h100-80gb", "gpuCount": 1}, {"familyId": "b200", "gpuCount": 8, "region": "us"},
                 {"familyId": "rtx-5090", "gpuCount": 1}, {"familyId": "h100-80gb", "gpuCount": 3},
                 {"familyId": "nope", "gpuCount": 1}):
        preview(api, body)
    assert snapshot() == before
