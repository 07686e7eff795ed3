"""The catalog refresh (`gpurent.catalog_refresh.refresh` and the scheduled
function `functions/refresh/app.py`) against the three provider simulators and
against in-memory adapters: what lands in the store, what it costs in DynamoDB
writes, what a failing provider leaves behind, the margin, and concurrency.
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from gpurent import catalog, catalog_refresh, config
from gpurent import clock as clock_mod
from gpurent.providers.base import ProviderError
from gpurent.providers.registry import build_adapters
from gpurent.store import catalog as store
from gpurent.store import dynamo
from infra.local.events import schedule_event
from infra.local.functions import load_handler
from infra.simulators import Simulators, start_simulators
from tests.conftest import Api
from tests.integration.test_catalog import PROVIDERS, FakeAdapter, fakes, offer, walk

STALE = catalog.STALE_AFTER


@pytest.fixture(autouse=True)
def roomy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", "100000")
    monkeypatch.setenv("RATE_LIMIT_PER_HOUR", "1000000")
    monkeypatch.delenv("CATALOG_MARGIN_BPS", raising=False)
    config.reset()
    catalog.invalidate()
    yield
    catalog.invalidate()
    config.reset()


@pytest.fixture(scope="module")
def sims() -> Iterator[Simulators]:
    s = start_simulators(now=clock_mod.now, boot_seconds=5.0)
    yield s
    s.shutdown()


@pytest.fixture
def fresh_sims(sims: Simulators) -> Iterator[Simulators]:
    sims.reset()
    yield sims
    sims.reset()


class Requests:
    """DynamoDB requests by operation, and the listing ids each BatchWriteItem puts or deletes."""

    def __init__(self) -> None:
        self.ops: Counter[str] = Counter()
        self.puts: list[str] = []
        self.deletes: list[str] = []
        self.batch_sizes: list[int] = []

    def clear(self) -> None:
        self.ops.clear()
        self.puts.clear()
        self.deletes.clear()
        self.batch_sizes.clear()

    def __call__(self, event_name: str, params: dict[str, Any], **kwargs: Any) -> None:
        op = event_name.rsplit(".", 1)[-1]
        self.ops[op] += 1
        if op != "BatchWriteItem":
            return
        body = json.loads(params["body"])
        for requests in body["RequestItems"].values():
            self.batch_sizes.append(len(requests))
            for r in requests:
                if "PutRequest" in r:
                    self.puts.append(r["PutRequest"]["Item"]["sk"]["S"])
                else:
                    self.deletes.append(r["DeleteRequest"]["Key"]["sk"]["S"])


@pytest.fixture
def ddb(aws: None) -> Requests:
    counter = Requests()
    dynamo.client().meta.events.register("before-call.dynamodb.*", counter)
    return counter


def stored(provider: str) -> dict[str, dict[str, Any]]:
    """The provider's listing items, by id (as stored: `store.listing_item`)."""
    return {i.id: store.listing_item(i) for i in store.provider_listings(provider)}


def by_offer(provider: str) -> dict[str, dict[str, Any]]:
    return {i.offer_key: store.listing_item(i) for i in store.provider_listings(provider)}


def shown(api: Api) -> dict[str, dict[str, Any]]:
    catalog.invalidate()
    return {li["id"]: li for li in walk(api)}


def outcome(report: catalog_refresh.RefreshReport, provider: str) -> catalog_refresh.ProviderOutcome:
    (o,) = [o for o in report.outcomes if o.provider == provider]
    return o


# --------------------------------------------------------------------------- with the simulators


def test_one_refresh_lists_all_three_providers(api: Api, user, fresh_sims: Simulators, ddb: Requests) -> None:
    ddb.clear()
    report = catalog_refresh.refresh(build_adapters(fresh_sims.settings()))
    assert [o.provider for o in report.outcomes] == list(PROVIDERS)
    assert all(o.ok and o.listings > 0 and o.written == o.listings and o.deleted == 0 for o in report.outcomes)
    total = sum(o.listings for o in report.outcomes)
    for o in report.outcomes:
        assert len(stored(o.provider)) == o.listings
    assert sorted(ddb.puts) == sorted(i for p in PROVIDERS for i in stored(p))
    assert len(ddb.puts) == total and ddb.deletes == []
    assert max(ddb.batch_sizes) <= 25
    assert ddb.ops["BatchWriteItem"] == sum(math.ceil(o.listings / 25) for o in report.outcomes)
    # Per provider: its status marked `writing` (while it fetches), its digest, its status.
    assert ddb.ops["PutItem"] == 9
    items = walk(api)
    assert len(items) == total
    assert Counter(li["providerCode"] for li in items) == {o.provider: o.listings for o in report.outcomes}
    statuses = store.get_statuses()
    for p in PROVIDERS:
        assert statuses[p].get("lastError") is None and int(statuses[p]["consecutiveFailures"]) == 0
        assert int(statuses[p]["listingCount"]) == outcome(report, p).listings


def test_ids_are_stable_and_an_unchanged_refresh_writes_no_listings(
        api: Api, user, fresh_sims: Simulators, ddb: Requests, clock) -> None:
    adapters = build_adapters(fresh_sims.settings())
    catalog_refresh.refresh(adapters)
    first = shown(api)
    clock.advance(60)
    ddb.clear()
    report = catalog_refresh.refresh(adapters)
    assert ddb.ops["BatchWriteItem"] == 0 and ddb.puts == [] and ddb.deletes == []
    assert all(o.ok and o.written == 0 and o.deleted == 0 for o in report.outcomes)
    # The stored listings are known from each provider's digest (one GetItem), not read (the one
    # Query is of the status items); nothing changed, so no digest is written.
    assert (ddb.ops["GetItem"], ddb.ops["Query"], ddb.ops["PutItem"]) == (3, 1, 6)
    assert shown(api) == first
    # Re-seeded simulators (same offers) and newly built adapters: the same lst_ ids.
    fresh_sims.reset()
    clock.advance(60)
    catalog_refresh.refresh(build_adapters(fresh_sims.settings()))
    assert shown(api) == first


def test_a_price_change_rewrites_only_that_listing(api: Api, user, fresh_sims: Simulators, ddb: Requests,
                                                   clock) -> None:
    adapters = build_adapters(fresh_sims.settings())
    catalog_refresh.refresh(adapters)
    before = shown(api)
    target = next(i for i in by_offer("vast").values() if i["family"] == "h100-80gb")
    with fresh_sims.vast.lock:
        fresh_sims.vast.offers[int(target["offerKey"])]["dph_base"] += 0.5
    clock.advance(60)
    ddb.clear()
    report = catalog_refresh.refresh(adapters)
    assert ddb.puts == [target["id"]] and ddb.deletes == []
    assert ddb.ops["BatchWriteItem"] == 1
    assert (outcome(report, "vast").written, outcome(report, "runpod").written, outcome(report, "lambda").written) \
        == (1, 0, 0)
    after = shown(api)
    assert set(after) == set(before), "the listing keeps its id"
    assert after[target["id"]]["pricePerHourCents"] - int(target["pricePerHourCents"]) in (49, 50, 51)  # +$0.50/h
    assert {k: v for k, v in after.items() if k != target["id"]} == \
        {k: v for k, v in before.items() if k != target["id"]}
    assert stored("vast")[target["id"]]["firstSeenAt"] == target["firstSeenAt"]


def _a_vast_price_raised(fresh_sims: Simulators, clock: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A refreshed catalog, then one vast.ai H100 offer 0.5 $/h dearer a minute later:
    (the adapters, that listing as stored, the simulator's offer)."""
    adapters = build_adapters(fresh_sims.settings())
    catalog_refresh.refresh(adapters)
    target = next(i for i in by_offer("vast").values() if i["family"] == "h100-80gb")
    offers = fresh_sims.vast.offers[int(target["offerKey"])]
    with fresh_sims.vast.lock:
        offers["dph_base"] += 0.5
    clock.advance(60)
    return adapters, target, offers


def test_a_refresh_that_died_while_writing_is_not_trusted_by_the_next_one(
        api: Api, user, fresh_sims: Simulators, ddb: Requests, clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refresh wrote a new price and died before its digest: the next refresh finds the status
    still marked `writing`, so it diffs against the listings themselves, and the price that went
    back to what the old digest says is written back (trusting the digest would skip it)."""
    adapters, target, offers = _a_vast_price_raised(fresh_sims, clock)

    def dies(provider: str, digest: Any) -> None:
        raise RuntimeError("the Lambda timed out here")

    real = store.put_digest
    monkeypatch.setattr(store, "put_digest", dies)
    with pytest.raises(RuntimeError):
        catalog_refresh.refresh(adapters)
    monkeypatch.setattr(store, "put_digest", real)
    assert stored("vast")[target["id"]]["pricePerHourCents"] != target["pricePerHourCents"]  # written
    assert store.get_statuses()["vast"].get("writing") is not None  # … and the mark left behind
    with fresh_sims.vast.lock:
        offers["dph_base"] -= 0.5  # back to the price the old digest holds
    clock.advance(60)
    ddb.clear()
    report = catalog_refresh.refresh(adapters)
    assert outcome(report, "vast").written == 1 and ddb.puts == [target["id"]]
    assert stored("vast")[target["id"]]["pricePerHourCents"] == target["pricePerHourCents"]
    assert store.get_statuses()["vast"].get("writing") is None
    clock.advance(60)
    ddb.clear()
    catalog_refresh.refresh(adapters)
    assert ddb.puts == [] and ddb.ops["GetItem"] == 3  # the digest is trusted again


def test_a_refresh_whose_listings_failed_beside_its_digest_is_not_trusted_by_the_next_one(
        api: Api, user, fresh_sims: Simulators, ddb: Requests, clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The digest is written beside the listings: when the listings' write dies and the digest's
    lands, the digest holds a price the table does not. The mark is left, so the next refresh
    diffs against the listings themselves and writes the new price (trusting the new digest
    would skip it)."""
    adapters, target, _ = _a_vast_price_raised(fresh_sims, clock)
    real = store.write_listings

    def dies(provider: str, puts: Any, deletes: Any) -> int:
        if provider == "vast":
            raise RuntimeError("the Lambda timed out here")
        return real(provider, puts, deletes)

    monkeypatch.setattr(store, "write_listings", dies)
    with pytest.raises(RuntimeError):
        catalog_refresh.refresh(adapters)
    monkeypatch.setattr(store, "write_listings", real)
    assert stored("vast")[target["id"]]["pricePerHourCents"] == target["pricePerHourCents"]  # not written
    assert store.get_digest("vast") is not None and store.get_statuses()["vast"].get("writing") is not None
    clock.advance(60)
    ddb.clear()
    report = catalog_refresh.refresh(adapters)
    assert outcome(report, "vast").written == 1 and ddb.puts == [target["id"]]
    assert stored("vast")[target["id"]]["pricePerHourCents"] > target["pricePerHourCents"]
    assert store.get_statuses()["vast"].get("writing") is None


def test_a_vanished_offer_disappears(api: Api, user, fresh_sims: Simulators, ddb: Requests, clock) -> None:
    adapters = build_adapters(fresh_sims.settings())
    catalog_refresh.refresh(adapters)
    before = shown(api)
    gone_vast = next(iter(by_offer("vast").values()))
    gone_lambda = by_offer("lambda")["gpu_1x_h100_sxm5|us-east-1"]
    with fresh_sims.vast.lock:
        del fresh_sims.vast.offers[int(gone_vast["offerKey"])]
    with fresh_sims.lambdacloud.lock:
        fresh_sims.lambdacloud.capacity["gpu_1x_h100_sxm5"].remove("us-east-1")
    clock.advance(60)
    ddb.clear()
    report = catalog_refresh.refresh(adapters)
    assert sorted(ddb.deletes) == sorted([gone_vast["id"], gone_lambda["id"]]) and ddb.puts == []
    assert outcome(report, "vast").deleted == 1 and outcome(report, "lambda").deleted == 1
    after = shown(api)
    assert set(after) == set(before) - {gone_vast["id"], gone_lambda["id"]}
    assert gone_vast["id"] not in stored("vast") and gone_lambda["id"] not in stored("lambda")


def test_a_failing_provider_keeps_its_listings_until_they_are_stale(
        api: Api, user, fresh_sims: Simulators, ddb: Requests, clock) -> None:
    adapters = build_adapters(fresh_sims.settings())
    catalog_refresh.refresh(adapters)
    t0 = clock_mod.now()
    runpod_ids = set(stored("runpod"))
    assert runpod_ids
    everything = set(shown(api))

    fresh_sims.runpod.set_knobs(list_offers="error")
    clock.advance(60)
    ddb.clear()
    report = catalog_refresh.refresh(adapters)
    failed = outcome(report, "runpod")
    assert not failed.ok and failed.error and failed.error.startswith("transient")
    assert outcome(report, "vast").ok and outcome(report, "lambda").ok
    assert ddb.deletes == [] and ddb.puts == []
    status = store.get_statuses()["runpod"]
    assert float(status["lastSuccessAt"]) == t0
    assert status["lastError"].startswith("transient") and float(status["lastErrorAt"]) == t0 + 60
    assert int(status["consecutiveFailures"]) == 1
    assert set(shown(api)) == everything

    clock.set(t0 + STALE - 1)
    catalog_refresh.refresh(adapters)
    assert int(store.get_statuses()["runpod"]["consecutiveFailures"]) == 2
    assert set(stored("runpod")) == runpod_ids
    assert set(shown(api)) == everything, "not yet stale: still listed"

    clock.set(t0 + STALE + 1)
    listed = shown(api)
    assert set(listed) == everything - runpod_ids, "stale: no longer listed"
    assert "runpod" not in {e["code"] for e in api.get("/v1/catalog/facets").json()["providers"]}
    assert set(stored("runpod")) == runpod_ids, "hidden, but not deleted before the next refresh"

    ddb.clear()
    report = catalog_refresh.refresh(adapters)
    assert outcome(report, "runpod").deleted == len(runpod_ids)
    assert sorted(ddb.deletes) == sorted(runpod_ids) and ddb.puts == []
    assert stored("runpod") == {}
    status = store.get_statuses()["runpod"]
    assert int(status["listingCount"]) == 0 and int(status["consecutiveFailures"]) == 3

    fresh_sims.runpod.set_knobs(list_offers=None)
    clock.advance(60)
    report = catalog_refresh.refresh(adapters)
    assert outcome(report, "runpod").ok and outcome(report, "runpod").written == len(runpod_ids)
    assert set(shown(api)) == everything, "back, with the same ids"
    status = store.get_statuses()["runpod"]
    assert status.get("lastError") is None and int(status["consecutiveFailures"]) == 0


def test_a_provider_that_times_out_is_recorded_and_the_rest_refresh(
        api: Api, user, fresh_sims: Simulators, clock) -> None:
    adapters = build_adapters(fresh_sims.settings())  # the default timeouts: a busy machine is no timeout
    catalog_refresh.refresh(adapters)
    vast_ids = set(stored("vast"))
    assert vast_ids
    # vast.ai's adapter with a short read timeout and one attempt; its answer held back 10 s.
    quick = build_adapters({**fresh_sims.settings(), "PROVIDER_READ_TIMEOUT_SECONDS": "0.3",
                            "PROVIDER_MAX_ATTEMPTS": "1"})["vast"]
    fresh_sims.vast.set_knobs(list_offers="timeout", hang_seconds=10.0)
    clock.advance(60)
    report = catalog_refresh.refresh({**adapters, "vast": quick})
    assert not outcome(report, "vast").ok
    assert outcome(report, "runpod").ok and outcome(report, "lambda").ok
    assert report.fetch_seconds < 5, "a hanging provider costs its timeout (0.3 s), not its hang (10 s)"
    status = store.get_statuses()["vast"]
    assert status["lastError"].startswith("transient")
    assert set(stored("vast")) == vast_ids
    assert {li["providerCode"] for li in walk(api)} == set(PROVIDERS)


def test_the_providers_are_fetched_at_the_same_time(fresh_sims: Simulators, aws,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The refresh takes about as long as the slowest provider, not the sum: every provider has a
    request in flight at the same moment. Checked on the order of what the simulators saw (each
    request's start and end), never on wall-clock time."""
    adapters = build_adapters(fresh_sims.settings())
    catalog_refresh.refresh(adapters)  # warm-up: imports, connections, first writes
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    for sim in fresh_sims.all():
        original = sim.dispatch

        def traced(req: Any, code: str = sim.code, original: Any = original) -> Any:
            if req.path.startswith("/_sim/"):
                return original(req)
            with lock:
                events.append((code, "start"))
            try:
                return original(req)
            finally:
                with lock:
                    events.append((code, "end"))

        monkeypatch.setattr(sim, "dispatch", traced)
        # A pause in each answer, so requests that are sent concurrently are seen to overlap.
        sim.set_knobs(latency_seconds=0.3)
    report = catalog_refresh.refresh(adapters)
    assert all(o.ok for o in report.outcomes)
    open_now: dict[str, int] = {}
    most = 0
    for code, what in events:
        open_now[code] = open_now.get(code, 0) + (1 if what == "start" else -1)
        most = max(most, sum(1 for n in open_now.values() if n > 0))
    assert {code for code, _ in events} == {s.code for s in fresh_sims.all()}
    assert most == len(fresh_sims.all()), events  # a sequential refresh would never exceed 1


def test_the_scheduled_function_refreshes_from_the_simulators(
        api: Api, user, fresh_sims: Simulators, monkeypatch: pytest.MonkeyPatch, clock) -> None:
    for name in ("PROVIDERS", "VAST_API_KEY_PARAM", "RUNPOD_API_KEY_PARAM", "LAMBDA_API_KEY_PARAM"):
        monkeypatch.delenv(name, raising=False)
    for name, value in fresh_sims.settings().items():
        monkeypatch.setenv(name, value)
    handler = load_handler("functions/refresh/")
    result = handler(schedule_event("arn:aws:events:us-east-1:123456789012:rule/test-refresh"), None)
    assert set(result) == {"fetchSeconds", "seconds", "providers"}
    assert [p["provider"] for p in result["providers"]] == list(PROVIDERS)
    assert all(p["ok"] and p["listings"] > 0 for p in result["providers"]), result
    json.dumps(result)  # what the function returns is JSON
    items = walk(api)
    assert {li["providerCode"] for li in items} == set(PROVIDERS)
    assert len(items) == sum(p["listings"] for p in result["providers"])

    fresh_sims.lambdacloud.set_knobs(list_offers="error")
    clock.advance(60)
    result = handler(schedule_event(), None)
    assert [p["ok"] for p in result["providers"]] == [True, True, False]
    assert result["providers"][2]["error"].startswith("transient")
    assert store.get_statuses()["lambda"]["lastError"].startswith("transient")


# --------------------------------------------------------------------------- with in-memory adapters


def test_concurrency_three_slow_providers_take_as_long_as_one(aws, clock) -> None:
    adapters = {
        code: FakeAdapter(code, [offer(code, f"{code}-1", "h100-80gb", 1, 250 + n, "US", "TX")], delay=0.3)
        for n, code in enumerate(PROVIDERS)
    }
    report = catalog_refresh.refresh(adapters)  # type: ignore[arg-type]
    assert all(o.ok for o in report.outcomes)
    assert all(a.calls == 1 for a in adapters.values())
    assert 0.3 <= report.fetch_seconds < 0.6, report.fetch_seconds


def test_a_provider_error_is_recorded_on_its_status(api: Api, user, clock) -> None:
    adapters = fakes([("vast", "v1", "h100-80gb", 1, 100, "US", "TX"),
                      ("runpod", "r1", "h100-80gb", 1, 200, "US", "GA"),
                      ("lambda", "l1", "h100-80gb", 1, 300, "US", "VA")])
    catalog_refresh.refresh(adapters)  # type: ignore[arg-type]
    t0 = clock_mod.now()
    adapters["vast"].error = ProviderError("vast", "auth", "key refused")

    def cheapest() -> dict[str, Any]:
        catalog.invalidate()
        r = api.post("/v1/rentals/preview", {"familyId": "h100-80gb", "gpuCount": 1})
        assert r.status == 200, r.body
        return dict(r.json())

    clock.advance(120)
    report = catalog_refresh.refresh(adapters)  # type: ignore[arg-type]
    assert outcome(report, "vast").error == "auth: key refused"
    status = store.get_statuses()["vast"]
    assert status["lastError"] == "auth: key refused" and float(status["lastSuccessAt"]) == t0
    assert cheapest()["matchedListing"]["providerCode"] == "vast", "its last good listing still counts"
    clock.set(t0 + STALE + 31)
    assert cheapest()["matchedListing"]["providerCode"] == "runpod", "stale listings are never selected"
    assert cheapest()["pricePerHourCents"] == 200


def test_a_provider_that_never_answered_has_no_listings(api: Api, user, clock) -> None:
    adapters = fakes([("runpod", "r1", "h100-80gb", 1, 200, "US", "GA")])
    adapters["vast"].error = ProviderError("vast", "transient", "connection refused")
    report = catalog_refresh.refresh(adapters)  # type: ignore[arg-type]
    assert not outcome(report, "vast").ok and outcome(report, "runpod").ok and outcome(report, "lambda").ok
    status = store.get_statuses()["vast"]
    assert status.get("lastSuccessAt") is None and status["lastError"] == "transient: connection refused"
    assert [li["providerCode"] for li in walk(api)] == ["runpod"]


@pytest.mark.parametrize(
    ("bps", "costs", "prices"),
    [
        (0, [100, 101, 1, 999], [100, 101, 1, 999]),
        (1000, [100, 101, 1, 999], [110, 112, 2, 1099]),
        (1500, [280, 33, 7], [322, 38, 9]),
        (1, [100, 10_000], [101, 10_001]),
    ],
)
def test_the_margin_is_added_and_rounded_up(api: Api, user, monkeypatch: pytest.MonkeyPatch, bps: int,
                                            costs: list[int], prices: list[int]) -> None:
    monkeypatch.setenv("CATALOG_MARGIN_BPS", str(bps))
    config.reset()
    rows = [("vast", f"m{n}", "rtx-4090", 1, cost, "US", "TX") for n, cost in enumerate(costs)]
    catalog_refresh.refresh(fakes(rows))  # type: ignore[arg-type]
    got = by_offer("vast")
    for n, (cost, price) in enumerate(zip(costs, prices, strict=True)):
        assert int(got[f"m{n}"]["costCentsPerHour"]) == cost
        assert int(got[f"m{n}"]["pricePerHourCents"]) == price
    assert sorted(li["pricePerHourCents"] for li in walk(api)) == sorted(prices)
    cheapest = min(prices)
    r = api.post("/v1/rentals/preview", {"familyId": "rtx-4090", "gpuCount": 1})
    assert r.json()["pricePerHourCents"] == cheapest
    assert [li["pricePerHourCents"] for li in walk(api, f"maxPricePerHourCents={cheapest}")] == [cheapest]


def test_a_margin_change_rewrites_the_prices(api: Api, user, ddb: Requests, monkeypatch: pytest.MonkeyPatch,
                                              clock) -> None:
    adapters = fakes([("vast", "a", "rtx-4090", 1, 100, "US", "TX"), ("lambda", "b", "b200", 8, 4000, "US", "TX")])
    catalog_refresh.refresh(adapters)  # type: ignore[arg-type]
    monkeypatch.setenv("CATALOG_MARGIN_BPS", "2000")
    config.reset()
    clock.advance(60)
    ddb.clear()
    catalog_refresh.refresh(adapters)  # type: ignore[arg-type]
    assert len(ddb.puts) == 2
    assert sorted(li["pricePerHourCents"] for li in walk(api)) == [120, 4800]


def test_the_same_offer_twice_is_one_listing_at_the_lower_price(api: Api, user) -> None:
    adapters = fakes([("vast", "dup", "rtx-4090", 1, 50, "US", "TX"), ("vast", "dup", "rtx-4090", 1, 45, "US", "TX")])
    report = catalog_refresh.refresh(adapters)  # type: ignore[arg-type]
    assert outcome(report, "vast").listings == 1
    assert [li["pricePerHourCents"] for li in walk(api)] == [45]
