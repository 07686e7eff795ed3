"""What a catalog refresh costs for 3 providers × 1,000 offers, and what a listings
request reads, against DynamoDB Local (or moto in-process: `--moto`). Prints figures;
asserts nothing.

The providers are in-memory adapters whose `list_offers` waits 0.2, 0.5 and 0.8 s
(their simulated upstream latency) and then returns 1,000 offers each: a spread of
families, GPU counts, regions and prices like the simulators'.

A refresh's efficiency is the slowest provider's fetch over the whole refresh: 1.0 when
reading and writing the catalog costs no time of its own (it all happens while some
provider is still being fetched).

    .venv/bin/python bench/catalog.py            # DynamoDB Local
    .venv/bin/python bench/catalog.py --moto     # moto in-process (its Query is slow: see docs)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import random
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "gpurent")]
os.environ.update({"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1",
                   "STAGE": "test", "MAIL_MODE": "console", "POWERTOOLS_LOG_LEVEL": "ERROR",
                   "POWERTOOLS_METRICS_DISABLED": "1", "RATE_LIMIT_PER_MINUTE": "100000",
                   "RATE_LIMIT_PER_HOUR": "1000000"})

from moto import mock_aws  # noqa: E402

from gpurent import catalog, catalog_refresh, clock, config, families, notify, regions  # noqa: E402
from gpurent.money import dollars_to_cents_up  # noqa: E402
from gpurent.providers.base import Offer  # noqa: E402
from gpurent.store import dynamo  # noqa: E402
from infra.local import template  # noqa: E402
from infra.local.client import invoke  # noqa: E402

OFFERS_PER_PROVIDER = 1_000
LATENCY = {"vast": 0.2, "runpod": 0.5, "lambda": 0.8}
CHANGED_FRACTION = 0.10
REFRESH_RUNS = 5
RUNS = 30
COLD_RUNS = 3  # a cold read queries 3,000 items, which moto serializes slowly (see docs/performance.md)
READS = ("GetItem", "Query", "BatchGetItem", "Scan")

# family → (per-GPU $/h low, high, GPU counts offered), after the simulators' price bands
SPREAD: dict[str, tuple[float, float, tuple[int, ...]]] = {
    "rtx-4090": (0.28, 0.69, (1, 2, 4, 8)),
    "rtx-5090": (0.42, 0.94, (1, 2, 4, 8)),
    "a100-80gb": (0.80, 1.79, (1, 2, 4, 8)),
    "h100-80gb": (1.85, 3.29, (1, 2, 4, 8)),
    "b200": (3.90, 5.99, (1, 2, 8)),
    "b300": (5.10, 6.49, (1, 8)),
}
PLACES = [("US", "OR"), ("US", "TX"), ("US", "VA"), ("US", "CA"), ("US", "GA"), ("CA", None), ("DE", None),
          ("NL", None), ("RO", None), ("SE", None), ("CZ", None), ("JP", None), ("SG", None), ("IN", None)]

calls: Counter[str] = Counter()
read: Counter[str] = Counter()  # items and response bytes of Query answers


def count(event_name: str, **kwargs: Any) -> None:
    calls[event_name.rsplit(".", 1)[-1]] += 1


def query_size(http_response: Any, parsed: dict[str, Any], **kwargs: Any) -> None:
    read["items"] += int(parsed.get("Count", 0))
    read["bytes"] += len(http_response.content or b"")


def make_offers(provider: str, rng: random.Random) -> list[Offer]:
    out = []
    fams = [f for f in families.FAMILIES]
    for n in range(OFFERS_PER_PROVIDER):
        fam = rng.choices(fams, weights=(30, 20, 15, 20, 10, 5))[0]
        low, high, counts = SPREAD[fam.id]
        gpus = rng.choice(counts)
        country, state = rng.choice(PLACES)
        region = regions.region_for_country(country, state)
        assert region is not None
        cents = dollars_to_cents_up(round(rng.uniform(low, high), 4) * gpus)
        out.append(Offer(provider=provider, offer_key=f"{provider}-{n:05d}", gpu_name=fam.display_name,
                         family=fam.id, model=fam.model, vram_gb=fam.vram_gb, gpu_count=gpus,
                         price_cents_per_hour=cents, region=region.label, region_code=region.code,
                         interconnect=families.interconnect_for(fam, gpus)))
    return out


class SlowProvider:
    """A provider adapter (catalog side only) that answers after its latency."""

    def __init__(self, code: str, offers: list[Offer], latency: float) -> None:
        self.code = code
        self.offers = offers
        self.latency = latency

    async def list_offers(self) -> list[Offer]:
        await asyncio.sleep(self.latency)
        return list(self.offers)


def detail(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"


def refresh_row(name: str, adapters: dict[str, Any]) -> float:
    calls.clear()
    t = time.perf_counter()
    report = catalog_refresh.refresh(adapters)
    wall = time.perf_counter() - t
    written = sum(o.written for o in report.outcomes)
    deleted = sum(o.deleted for o in report.outcomes)
    efficiency = report.fetch_seconds / wall  # the slowest fetch over the whole refresh
    print(f"{name:<28} {wall:7.2f} s {report.fetch_seconds:7.2f} s {efficiency:10.2f} {written:>7} "
          f"{deleted:>7}   {detail(calls)}", flush=True)
    return efficiency


def round_trip() -> float:
    """The store's round trip now (median of 20 small reads): what each write after the slowest
    fetch costs the refresh on this machine."""
    times = []
    for _ in range(20):
        t = time.perf_counter()
        dynamo.client().get_item(TableName=os.environ["CATALOG_TABLE"], Key={"pk": {"S": "STATUS"},
                                                                           "sk": {"S": "vast"}})
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def change_prices(adapters: dict[str, Any], rng: random.Random) -> None:
    for a in adapters.values():
        for i in rng.sample(range(len(a.offers)), int(len(a.offers) * CHANGED_FRACTION)):
            o = a.offers[i]
            a.offers[i] = dataclasses.replace(o, price_cents_per_hour=o.price_cents_per_hour + rng.randint(1, 25))


def read_row(name: str, fn: Callable[[], Any], cold: bool) -> None:
    times = []
    per_call: list[tuple[Counter[str], Counter[str]]] = []
    for _ in range(COLD_RUNS if cold else RUNS):
        if cold:
            catalog.invalidate()
        calls.clear()
        read.clear()
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
        per_call.append((Counter(calls), Counter(read)))
    typical, size = per_call[len(per_call) // 2]
    reads = sum(v for k, v in typical.items() if k in READS)
    writes = sum(v for k, v in typical.items() if k not in READS)
    print(f"{name:<44} {reads:>5} {writes:>6} {size['items']:>6} {size['bytes'] / 1024:>7.0f} KB "
          f"{statistics.median(times):8.2f} ms   {detail(typical)}")


@contextlib.contextmanager
def store(use_moto: bool) -> Iterator[str]:
    """The tables, on DynamoDB Local (started here) or moto."""
    if use_moto:
        with mock_aws():
            yield "moto in-process"
        return
    from infra.local import dynamodb_local

    db = dynamodb_local.start()
    os.environ["DYNAMODB_ENDPOINT"] = db.endpoint
    try:
        yield f"DynamoDB Local (started in {db.started_seconds:.1f} s)"
    finally:
        db.stop()


def main() -> None:
    use_moto = "--moto" in sys.argv[1:]
    with store(use_moto) as where:
        print(f"store: {where}")
        names = template.default_table_names(f"bench{random.randrange(10**6)}")
        os.environ.update({template.TABLE_ENV[k]: v for k, v in names.items()})
        config.reset()
        dynamo.reset_client()
        template.create_tables(dynamo.client(), names)
        dynamo.client().meta.events.register("before-call.dynamodb.*", count)
        dynamo.client().meta.events.register("after-call.dynamodb.Query", query_size)
        manual = clock.ManualClock(time.time())  # DynamoDB Local expires items (TTL) by the wall clock
        clock.set_clock(manual)

        rng = random.Random(2026)
        adapters = {code: SlowProvider(code, make_offers(code, rng), latency) for code, latency in LATENCY.items()}
        print(f"{len(adapters)} providers × {OFFERS_PER_PROVIDER:,} offers; fetch latency "
              + ", ".join(f"{c} {s} s" for c, s in LATENCY.items()))
        print(f"{'refresh':<28} {'wall':>9} {'fetch':>9} {'efficiency':>10} {'written':>7} {'deleted':>7}   "
              "DynamoDB requests")
        refresh_row("first (all new)", adapters)
        unchanged, changed, trips = [], [], []
        for _ in range(REFRESH_RUNS):
            manual.advance(60)
            trips.append(round_trip())
            unchanged.append(refresh_row("unchanged", adapters))
            manual.advance(60)
            change_prices(adapters, rng)
            changed.append(refresh_row(f"{CHANGED_FRACTION:.0%} of prices changed", adapters))
        rt = statistics.median(trips)
        slowest = max(LATENCY.values())
        per_provider = int(OFFERS_PER_PROVIDER * CHANGED_FRACTION)
        batches = -(-per_provider // 25)
        # After the slowest provider's fetch: its status (unchanged); its batch writes (8 at once) with
        # its digest beside them, then its status (changed). Everything else happens while some
        # provider is still fetched.
        after = {"unchanged": 1, "changed": -(-batches // 8) + 1}
        print(f"\nefficiency, median of {REFRESH_RUNS}: unchanged {statistics.median(unchanged):.2f} "
              f"({min(unchanged):.2f}-{max(unchanged):.2f}), {CHANGED_FRACTION:.0%} changed "
              f"{statistics.median(changed):.2f} ({min(changed):.2f}-{max(changed):.2f}); "
              f"a round trip to the store here: {rt * 1000:.0f} ms (median)")
        print("model: the slowest fetch over itself plus the round trips after it "
              f"({after['unchanged']} unchanged, {after['changed']} changed): "
              + ", ".join(f"at {ms} ms a round trip {slowest / (slowest + after['unchanged'] * ms / 1000):.2f} / "
                          f"{slowest / (slowest + after['changed'] * ms / 1000):.2f}"
                          for ms in (10, 25, round(rt * 1000))))

        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            invoke("POST", "/v1/auth/request-code", body={"email": "bench@bench.test"})
        code = re.search(r"\d{6}", notify.mailbox()[0]["body"]).group()  # type: ignore[union-attr]
        r = invoke("POST", "/v1/auth/verify-code", body={"email": "bench@bench.test", "code": code})
        sid = r.cookies[0].split(";")[0].split("=", 1)[1]

        def get(path: str) -> Callable[[], Any]:
            def call() -> Any:
                reply = invoke("GET", path, cookies={"sid": sid})
                assert reply.status == 200, reply.body
            return call

        def post_preview() -> Any:
            reply = invoke("POST", "/v1/rentals/preview", body={"familyId": "h100-80gb", "gpuCount": 1},
                           cookies={"sid": sid})
            assert reply.status == 200, reply.body

        print(f"\n{'endpoint (3,000 listings)':<44} {'reads':>5} {'writes':>6} {'items':>6} {'queried':>10} "
              f"{'median':>11}   requests")
        read_row("GET /v1/catalog/listings (cold cache)", get("/v1/catalog/listings"), cold=True)
        read_row("GET /v1/catalog/listings (warm cache)", get("/v1/catalog/listings"), cold=False)
        read_row("GET /v1/catalog/listings?model=H100&region=eu", get("/v1/catalog/listings?model=H100&region=eu"),
                 cold=False)
        read_row("GET /v1/catalog/facets (cold cache)", get("/v1/catalog/facets"), cold=True)
        read_row("GET /v1/catalog/facets (warm cache)", get("/v1/catalog/facets"), cold=False)
        read_row("POST /v1/rentals/preview (warm cache)", post_preview, cold=False)
        print(f"\nMedian of {RUNS} runs ({COLD_RUNS} for a cold cache). API requests include the session read "
              "(GetItem) and the rate-limit count (UpdateItem).")


if __name__ == "__main__":
    main()
