"""The reconciler at scale (`bench/rentals.py --scale [N]`): N running rentals on DynamoDB
Local and the provider simulators, each provider's pass as its worker runs it, and a model
of 100,000 live rentals on AWS. Prints figures; asserts nothing.

Seeding (not measured): a third of the rentals at each provider, 10 to a wallet; each
wallet is funded and takes its rentals' one-hour reserves and rows in one money
transaction (as launches would have); each rental's instance is a clone of one instance
allocated through its provider's adapter, labelled with the rental id, booted long ago.
"""

from __future__ import annotations

import copy
import json
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "gpurent")]

from gpurent import catalog, catalog_refresh, clock, config, ids, reconciler, wallet  # noqa: E402
from gpurent.listing import Listing  # noqa: E402
from gpurent.providers import registry, vast, vast_wire  # noqa: E402
from gpurent.providers.base import AllocateRequest  # noqa: E402
from gpurent.providers.registry import build_adapters  # noqa: E402
from gpurent.records import Rental  # noqa: E402
from gpurent.rentals import instances  # noqa: E402
from gpurent.store import dynamo  # noqa: E402
from gpurent.store import rentals as rental_store  # noqa: E402
from gpurent.store.money import TransactItem  # noqa: E402
from infra.local import dynamodb_local, template  # noqa: E402
from infra.simulators import Simulators, start_simulators  # noqa: E402

PER_WALLET = 10
CHANGED = 0.01  # the share of rentals the "changed" pass finds changed
WRITES = ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem")
READS = ("GetItem", "Query", "BatchGetItem", "Scan")

# ---- the model's assumptions (AWS, in-region; not measured here) ------------------------------
AWS_QUERY_PAGE_S = 0.030  # one 1 MB Query page of the ProviderIndex
AWS_REQUEST_S = {"GetItem": 0.004, "PutItem": 0.006, "UpdateItem": 0.006, "TransactWriteItems": 0.012,
                 "Query": 0.010}
LAMBDA_CPU_SHARE = 1.0  # the worker has 1,769 MB: one whole vCPU (template.yaml)
PROVIDER_CALL_S = {"vast": 0.20, "runpod": 0.30, "lambda": 0.25}  # one request, answered (its own latency)
LIST_BYTES_PER_INSTANCE = {"vast": 1900, "runpod": 1000, "lambda": 900}  # what one listed instance weighs
# (vast's is measured from the simulator's rows, as its list asks for them: `vast.LIST_COLUMNS`)
# Every vast.ai list page also carries `label_counts`, one entry per instance its filter matches
# (counted over the page's id range, as the simulator does: vast.ai's reference does not say).
LABEL_COUNT_BYTES = {"vast": 45}
PROVIDER_BYTES_PER_S = 20e6  # a list answer streaming in (20 MB/s)

calls: Counter[str] = Counter()
query_bytes: Counter[str] = Counter()


def count(event_name: str, **kwargs: Any) -> None:
    calls[event_name.rsplit(".", 1)[-1]] += 1


def weigh(http_response: Any, parsed: dict[str, Any], model: Any, **kwargs: Any) -> None:
    if model.name == "Query" and "ScannedCount" in parsed:
        query_bytes["bytes"] += len(http_response.content or b"")
        query_bytes["items"] += int(parsed.get("Count", 0))


def provider_calls(sims: Simulators) -> Counter[str]:
    out: Counter[str] = Counter()
    for s in sims.all():
        with s.lock:
            for method, _path in s.requests:
                out[f"{s.code} {method}"] += 1
    return out


@contextmanager
def dynamodb() -> Iterator[str]:
    db = dynamodb_local.start(memory_mb=2048)
    os.environ["DYNAMODB_ENDPOINT"] = db.endpoint
    try:
        yield f"DynamoDB Local (started in {db.started_seconds:.1f} s)"
    finally:
        db.stop()
        os.environ.pop("DYNAMODB_ENDPOINT", None)


# ---------------------------------------------------------------- seeding


@dataclass
class Seeded:
    rentals: list[Rental]
    by_provider: dict[str, list[Rental]]


def template_instance(sims: Simulators, code: str, listing: Listing) -> Any:
    """One instance allocated through the adapter: what every clone's row is built from."""
    adapter = registry.adapter(code)
    iid = instances.run(adapter.allocate(AllocateRequest(
        rental_id=ids.new_id("rent"), offer=listing.to_offer(), image="ubuntu:24.04", start_command=None,
        ssh_public_keys=())))
    return sims[code].instances[iid]


def seed(n: int, sims: Simulators) -> Seeded:
    now = clock.now()
    codes = registry.codes()
    listings = {code: next(li for li in catalog.live_listings() if li.provider == code) for code in codes}
    templates = {code: template_instance(sims, code, listings[code]) for code in codes}
    for sim in sims.all():
        with sim.lock:
            sim.instances.clear()
    rentals: list[Rental] = []
    for i in range(n):
        code = codes[i % len(codes)]
        li = listings[code]
        iid = {"vast": str(5_000_000 + i), "runpod": f"bench{i:07d}", "lambda": f"{i:032x}"}[code]
        r = Rental(
            id=ids.new_id("rent"), user_id="", status="running", family_id=li.family, gpu_count=li.gpu_count,
            template_id="ubuntu-24-04", price_per_hour_cents=li.price_per_hour_cents, listing_id=li.id,
            provider=code, region=li.region, region_code=li.region_code, model=li.model, offer=li.snapshot(),
            created_at=now - 1000, reserve_cents=li.price_per_hour_cents, running_at=now - 900,
            metered_until=now - 900, last_healthy_at=now - 900, instance_id=iid, host="203.0.113.9", port=22,
        )
        rentals.append(r)
        inst = copy.copy(templates[code])
        inst.id, inst.label, inst.created_at = iid, r.id, now - 1000
        inst.details = dict(inst.details)
        with sims[code].lock:
            sims[code].instances[iid] = inst
    out: list[Rental] = []
    began = time.perf_counter()
    for w in range(0, n, PER_WALLET):
        user = ids.new_id("usr")
        mine = [replace(r, user_id=user) for r in rentals[w:w + PER_WALLET]]
        wallet.credit(user, 10**8, "adjustment", f"bench-fund:{user}", {"description": "bench"})

        def extras(w_: wallet.Wallet, steps: Sequence[wallet.Step], mine: list[Rental] = mine) -> list[TransactItem]:
            return [x for r in mine for x in (rental_store.put_item(r), rental_store.owner_item(r.id, r.user_id))]

        wallet.reserve(user, sum(r.reserve_cents for r in mine), f"bench-reserve:{user}", extras=extras)
        out += mine
        if (w // PER_WALLET) % 200 == 199:
            print(f"  seeded {len(out):,} rentals ({time.perf_counter() - began:.0f} s)", flush=True)
    by_provider: dict[str, list[Rental]] = {c: [r for r in out if r.provider == c] for c in codes}
    return Seeded(out, by_provider)


# ---------------------------------------------------------------- measuring


@dataclass
class PassFigures:
    provider: str
    wall: float
    cpu: float
    loop_cpu: float  # of it, the provider loop's thread: provider requests sent, answers parsed
    counts: Counter[str]
    ddb: Counter[str]
    http: Counter[str]
    query_bytes: int
    query_items: int


def _loop_thread_cpu() -> float:
    """The CPU so far of the process's provider loop thread (its provider calls: requests
    sent, answers parsed): with the calling thread's, that is the worker's own CPU, without
    the simulators' (threads of this process too)."""
    ident = instances.shared_loop()._thread.ident
    return time.clock_gettime(time.pthread_getcpuclockid(ident)) if ident is not None else 0.0


def one_pass(sims: Simulators, code: str) -> PassFigures:
    calls.clear()
    query_bytes.clear()
    loop_before = _loop_thread_cpu()
    before = provider_calls(sims)
    cpu, t = time.thread_time(), time.perf_counter()
    counts = reconciler.reconcile_provider(code)
    loop_cpu = _loop_thread_cpu() - loop_before
    wall, cpu = time.perf_counter() - t, time.thread_time() - cpu + loop_cpu
    return PassFigures(code, wall, cpu, loop_cpu, Counter(counts), Counter(calls), provider_calls(sims) - before,
                       query_bytes["bytes"], query_bytes["items"])


def detail(c: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "-"


def print_pass(f: PassFigures) -> None:
    reads = sum(v for k, v in f.ddb.items() if k in READS)
    writes = sum(v for k, v in f.ddb.items() if k in WRITES)
    print(f"  {f.provider:<7} {f.counts['checked']:>7,} {f.counts['changed']:>6,} {f.wall:8.2f} s "
          f"{f.cpu:7.2f} s {reads:>6} {writes:>6} {sum(f.http.values()):>5}   "
          f"{detail(f.ddb)} | {detail(f.http)}", flush=True)


def header(title: str) -> None:
    print(f"\n{title}")
    print(f"  {'worker':<7} {'checked':>7} {'changed':>6} {'wall':>10} {'cpu':>9} {'reads':>6} {'writes':>6} "
          f"{'calls':>5}   DynamoDB requests | provider calls")


def change(seeded: Seeded, sims: Simulators, share: float, rng: random.Random) -> dict[str, int]:
    """Make `share` of the rentals disagree with their provider: half the changed pods are gone
    (preempted at Lambda, vanished elsewhere: settled), half stopped by their users (stopping:
    terminated and confirmed). Returns what was changed."""
    from gpurent import rentals

    made: Counter[str] = Counter()
    for code, mine in seeded.by_provider.items():
        k = max(2, int(len(mine) * share))
        picked = rng.sample(mine, k)
        for r in picked[: k // 2]:
            assert r.instance_id
            if code == "lambda":
                sims[code].set_status(r.instance_id, "preempted")
            else:
                sims[code].vanish(r.instance_id)
            made["gone"] += 1
        for r in picked[k // 2:]:
            rentals.stop(r.user_id, r.id)
            made["stopped"] += 1
    return dict(made)


def run(n: int) -> None:
    manual = clock.ManualClock(time.time())  # DynamoDB Local expires items (TTL) by the wall clock
    clock.set_clock(manual)
    os.environ.update({"RECONCILE_CONCURRENCY": "8", "MAIL_MODE": "console"})
    sims = start_simulators(now=clock.now, boot_seconds=20.0)
    try:
        with dynamodb() as where:
            names = template.default_table_names(f"bench{random.randrange(10**6)}")
            os.environ.update({template.TABLE_ENV[k]: v for k, v in names.items()})
            config.reset()
            dynamo.reset_client()
            template.create_tables(dynamo.client(), names)
            every = build_adapters(sims.settings())
            registry.set_adapters(every)
            catalog_refresh.refresh(every)
            print(f"\nThe reconciler at {n:,} running rentals ({where}; simulators on loopback, in this process)")
            t = time.perf_counter()
            seeded = seed(n, sims)
            print(f"  seeded in {time.perf_counter() - t:.0f} s: " + ", ".join(
                f"{c} {len(v):,}" for c, v in seeded.by_provider.items()), flush=True)
            events = dynamo.client().meta.events
            events.register("before-call.dynamodb.*", count)
            events.register("after-call.dynamodb.Query", weigh)
            measure(seeded, sims, manual, n)
    finally:
        registry.set_adapters(None)
        sims.shutdown()


def vast_row_bytes(sims: Simulators) -> None:
    """What a vast.ai list page weighs on the wire (from the simulator): a row, whole and as the
    adapter asks for it (`vast.LIST_COLUMNS`), and an entry of the `label_counts` every page
    carries (one per instance the page's filter matches: our labels are rental ids)."""
    sim = sims["vast"]

    def page(**extra: str) -> dict[str, Any]:
        r = httpx.get(f"{sim.base_url}/api/v1/instances/", headers={"Authorization": f"Bearer {sim.api_key}"},
                      params={"limit": str(vast.LIST_PAGE), **extra}, timeout=10)
        return dict(r.json())

    def per_row(answer: dict[str, Any]) -> int:
        return len(json.dumps(answer["instances"], separators=(",", ":"))) // max(1, len(answer["instances"]))

    whole, asked = page(), page(select_cols=json.dumps(vast.LIST_COLUMNS))
    labels = asked["label_counts"]
    LIST_BYTES_PER_INSTANCE["vast"] = per_row(asked)
    LABEL_COUNT_BYTES["vast"] = len(json.dumps(labels, separators=(",", ":"))) // max(1, len(labels))
    print(f"  a vast.ai list row on the simulator: {per_row(whole)} B whole, {per_row(asked)} B with select_cols "
          f"({len(vast.LIST_COLUMNS)} columns); a label_counts entry {LABEL_COUNT_BYTES['vast']} B")


def measure(seeded: Seeded, sims: Simulators, manual: clock.ManualClock, n: int) -> None:
    codes = list(seeded.by_provider)
    vast_row_bytes(sims)
    steady: dict[str, list[PassFigures]] = {c: [] for c in codes}
    for i in range(3):
        manual.advance(60)
        header(f"steady state, pass {i + 1}: every pod healthy (one worker per provider, one after another)")
        for c in codes:
            f = one_pass(sims, c)
            steady[c].append(f)
            print_pass(f)
    manual.advance(60)
    header("steady state: the three workers at once (threads of one process: they share its CPU)")
    t = time.perf_counter()
    threads = [threading.Thread(target=reconciler.reconcile_provider, args=(c,)) for c in codes]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(f"  all three {time.perf_counter() - t:8.2f} s", flush=True)

    made = change(seeded, sims, CHANGED, random.Random(17))
    manual.advance(60)
    header(f"{CHANGED:.0%} changed: {made['gone']} pods gone (settled), {made['stopped']} stopped by their users "
           "(terminated, confirmed)")
    changed = {c: one_pass(sims, c) for c in codes}
    for c in codes:
        print_pass(changed[c])
    manual.advance(60)
    header("the pass after: steady again")
    for c in codes:
        print_pass(one_pass(sims, c))
    model(seeded, steady, changed, n)


def model(seeded: Seeded, steady: dict[str, list[PassFigures]], changed: dict[str, PassFigures], n: int) -> None:
    """100,000 live rentals on AWS, a third at each provider (and all of them at one)."""
    target = 100_000
    print(f"\nModel: {target:,} live rentals on AWS (assumptions: a 1 MB ProviderIndex page "
          f"{AWS_QUERY_PAGE_S * 1000:.0f} ms; DynamoDB requests " + ", ".join(
              f"{k} {v * 1000:.0f} ms" for k, v in AWS_REQUEST_S.items())
          + f"; a 1,769 MB worker has {LAMBDA_CPU_SHARE:.2f} vCPU, CPU per rental as measured here "
          "(the worker's own threads); provider requests " + ", ".join(
              f"{k} {v:.2f} s" for k, v in PROVIDER_CALL_S.items())
          + f", list answers streaming at {PROVIDER_BYTES_PER_S / 1e6:.0f} MB/s (a vast.ai row "
          f"{LIST_BYTES_PER_INSTANCE['vast']} B as asked, and each page's label_counts "
          f"{LABEL_COUNT_BYTES['vast']} B per instance of its range, measured on the simulator); vast.ai lists "
          f"{vast.LIST_PAGE} instances a page, in id ranges of {vast.LIST_RANGE} listed {vast.LIST_CONCURRENCY} "
          "requests at a time (a page parsed while the others wait: the list's CPU overlaps its waits), which "
          "its per-endpoint rate limit for our key must allow (not published; "
          "'vast, one chain' is the list before: one page after another); "
          f"{CHANGED:.0%} of the rentals changed each minute, moved "
          f"{reconciler.LOCAL_WORK} per worker 8 at a time and the rest in chunks of {reconciler.CHUNK} on "
          "other workers)")
    print(f"  {'worker':<7} {'rentals':>8} {'index':>7} {'list':>8} {'cpu':>7} {'changed':>8} {'minute':>8}   "
          "provider calls, DynamoDB requests")
    for share, label in ((1 / 3, "a third each"), (1.0, "all at one provider")):
        print(f"  -- {label}")
        for c, ranged in [(c, True) for c in seeded.by_provider] + [("vast", False)]:
            here = len(seeded.by_provider[c])
            r = int(target * share)
            best = min(steady[c], key=lambda f: f.cpu)
            bytes_per_item = best.query_bytes / max(1, best.query_items)
            index_pages = -(-int(r * bytes_per_item) // 1_000_000)
            index_s = index_pages * AWS_QUERY_PAGE_S
            list_bytes = r * LIST_BYTES_PER_INSTANCE[c]
            if c != "vast":
                pages, list_s, rate = 1, PROVIDER_CALL_S[c] + list_bytes / PROVIDER_BYTES_PER_S, ""
            else:
                ranges = len(vast_wire.id_ranges([str(i) for i in range(r)], vast.LIST_RANGE)) if ranged else 1
                per_range = -(-r // ranges)
                pages = ranges * -(-per_range // vast.LIST_PAGE)
                list_bytes += pages * per_range * LABEL_COUNT_BYTES[c]  # each page's label_counts
                # the pages of a range come one after another; the ranges' pages interleave, 32 at once
                rounds = max(-(-pages // vast.LIST_CONCURRENCY), -(-per_range // vast.LIST_PAGE)) if ranged else pages
                list_s = rounds * PROVIDER_CALL_S[c] + list_bytes / PROVIDER_BYTES_PER_S
                rate = f" at {pages / list_s:,.0f} list requests/s, {list_bytes / 1e9:,.2f} GB"
            cpu_s = best.cpu / here * r / LAMBDA_CPU_SHARE
            loop_cpu_s = best.loop_cpu / here * r / LAMBDA_CPU_SHARE
            ch = changed[c]
            per_change_calls = sum(ch.http.values()) - sum(best.http.values())
            per_change_ddb = {k: v - best.ddb.get(k, 0) for k, v in ch.ddb.items()}
            moved = max(1, ch.counts["changed"])
            changes = int(r * CHANGED)
            one_change_s = (sum(AWS_REQUEST_S.get(k, 0.006) * v for k, v in per_change_ddb.items())
                            + per_change_calls * PROVIDER_CALL_S[c]) / moved
            local = min(changes, reconciler.LOCAL_WORK)
            change_s = local * one_change_s / 8
            if c == "vast" and ranged:  # a page is parsed while the other requests in flight wait
                minute = index_s + max(list_s, loop_cpu_s) + (cpu_s - loop_cpu_s) + change_s
            else:
                minute = index_s + list_s + cpu_s + change_s
            writes = sum(v for k, v in per_change_ddb.items() if k in WRITES) / moved * changes + 1
            reads = index_pages + 1 + sum(v for k, v in per_change_ddb.items() if k in READS) / moved * changes
            name = c if ranged else "vast, one chain"
            print(f"  {name:<7} {r:>8,} {index_s:6.1f}s {list_s:7.1f}s {cpu_s:6.1f}s {change_s:7.1f}s "
                  f"{minute:7.1f}s   {pages + round(per_change_calls / moved * changes)} calls "
                  f"({pages} list page{'s' if pages > 1 else ''}{rate}; of the cpu, {loop_cpu_s:.1f} s the "
                  f"provider loop's), {round(reads)} reads, "
                  f"{round(writes)} writes"
                  + (f"; {changes - local:,} changes on {-(-(changes - local) // reconciler.CHUNK)} chunk workers"
                     if changes > local else ""))
    old = target
    print(f"  before (one get and one lastHealthyAt write per running rental, one after another): {old:,} "
          f"provider calls and {old:,} writes a minute; at 0.1 s a call, {old * 0.1 / 60:,.0f} minutes a pass")
    print(f"  measured here at {n:,}: "
          + "; ".join(f"{c} {statistics.median(f.wall for f in steady[c]):.2f} s wall" for c in steady))

