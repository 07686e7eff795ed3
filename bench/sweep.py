"""What one metering sweep costs: N running rentals across U wallets, metered
by `gpurent.sweep.start()` against moto in-process, for two sizes so the
growth is visible. Prints figures; asserts nothing about time.

    .venv/bin/python bench/sweep.py                      # N=1,000/U=100 and N=10,000/U=1,000
    .venv/bin/python bench/sweep.py --sizes 5000:500     # any N:U pairs
    .venv/bin/python bench/sweep.py --quick              # a tiny run (seconds)
    .venv/bin/python bench/sweep.py --sizes 1000:1000,1000:100   # write units at 1 and 10 rentals per wallet

Per size: one real rental is launched and turned `running` through
`rentals.launch` / `rentals.advance` (provider simulators on loopback), and its
stored item is the template of N rentals seeded straight into the store: per
wallet one money transaction (`wallet.apply`) that funds it, takes each
rental's one-hour reserve and puts the rental rows (`store.rentals.put_item`,
so they sit in the sparse `ActiveIndex` as `running`) and their owner rows, as
`launch` + `mark_running` would have left them. Then a `ManualClock` advances
`--interval` seconds and the sweep runs (tick 1), and again (tick 2, steady
state).

Figures per tick: DynamoDB requests by operation (botocore `before-call`
hooks on `gpurent.store.dynamo.client()`), items per transaction, item sizes
and the write units they cost (an estimate: a transactional write costs 2 WCU
per started KB of the item; an update is priced on the item after it), the
write units **counted per request** (`WriteUnits`: each written item read from
moto before and after its request, the table write and every index write it
causes priced by DynamoDB's rules; DynamoDB Local and moto report no consumed
capacity), and from them the write units of one rental-hour (60 steady-state
ticks, plus the reconciler's share; target ≤ 300), read
units of the index pages and wallet reads, ledger rows per rental-hour, wall
time and rentals/s on moto, and an extrapolation to DynamoDB and a Lambda of
the template's memory size (stated assumptions, below). Then the CPU cost of
`predict_exhaustion` / `arm_next` per wallet. A sample of wallets is checked
for consistency (reserved == Σ reserves of its rentals, Σ ledger == total,
each charge == the formula for its billed seconds) before and after the ticks.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import math
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "gpurent")]
os.environ.update({"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1",
                   "STAGE": "test", "MAIL_MODE": "console", "POWERTOOLS_LOG_LEVEL": "ERROR",
                   "POWERTOOLS_METRICS_DISABLED": "1",
                   "ACTIVE_SHARDS": "8", "OUTBOX_SHARDS": "8"})  # as deployed (the test stage has 2)

from moto import mock_aws  # noqa: E402

from gpurent import catalog_refresh, clock, config, ids, metering, rentals, sweep, timers, wallet  # noqa: E402
from gpurent.bodies import Launch  # noqa: E402
from gpurent.money import charge_for_seconds  # noqa: E402
from gpurent.providers import registry  # noqa: E402
from gpurent.providers.registry import build_adapters  # noqa: E402
from gpurent.records import Rental  # noqa: E402
from gpurent.rentals import meters  # noqa: E402
from gpurent.store import dynamo, rental_items  # noqa: E402
from gpurent.store import money as money_store  # noqa: E402
from gpurent.store import rentals as rental_store  # noqa: E402
from infra.local import template  # noqa: E402
from infra.simulators import start_simulators  # noqa: E402

DEFAULT_SIZES = "1000:100,10000:1000"
QUICK_SIZES = "60:6,240:24"
PRICES = (59, 89, 149, 199, 249, 329, 449, 899, 1299, 2499)  # cents per hour, cycled over the rentals
FUNDED_HOURS = 8  # each wallet holds its rentals' reserves plus this many hours of their burn
SEED_CHUNK = 40  # rentals per seeding transaction: 2 items each + wallet + marker + one credit row
CHECK_WALLETS = 20
SIZE_SAMPLE = 200  # updated items read back (not counted) to measure their size

# Assumptions for the extrapolation to AWS (moto is far slower than DynamoDB per request).
ASSUMED_MS = {"TransactWriteItems": 10.0, "GetItem": 3.0, "Query": 25.0, "BatchGetItem": 10.0}  # in-region
LAMBDA_TIMEOUT_S = 50.0  # MeteringSweepFunction's Timeout in template.yaml
LAMBDA_MEMORY_MB = 1024  # Globals.Function.MemorySize: Lambda gives 1 vCPU at 1,769 MB
CPU_FACTOR = 1769 / LAMBDA_MEMORY_MB  # this machine's core ≈ one Lambda vCPU, scaled to the memory share
TARGET_ROWS_PER_HOUR = 60
TARGET_WCU_PER_RENTAL_HOUR = 300
PROVIDERS = 3  # the reconciler's pass records: one per provider per minute


# ---------------------------------------------------------------- moto, made usable at this size

def item_level_rollback() -> None:
    """moto's `transact_write_items` deep-copies every table it touches, once per item of the
    transaction, so it can roll back: O(table size) per request (about 1.5 s per 22-item
    transaction with only 240 rentals stored), which makes 10,000 rentals unmeasurable. Here the
    snapshot is item-level instead: the previous version of each item the transaction names is
    kept and put back if it is cancelled. Same all-or-nothing semantics; far less copying. It
    changes moto's speed only, not what the sweep asks of it."""
    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    class _Copy:
        def __getattr__(self, name: str) -> Any:
            return getattr(copy, name)

        @staticmethod
        def deepcopy(x: Any, memo: Any = None) -> Any:
            return x if isinstance(x, Table) else copy.deepcopy(x, memo)

    setattr(models, "copy", _Copy())  # noqa: B010 (the module's `copy`, which mypy sees as a module)
    original = models.DynamoDBBackend.transact_write_items

    def transact(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        for it in transact_items:
            op_type, op = next(iter(it.items()))
            table = self.tables.get(op.get("TableName"))
            src = op.get("Item" if op_type == "Put" else "Key") or {}
            if table is None or table.hash_key_attr not in src:
                continue
            attrs = [a for a in (table.hash_key_attr, table.range_key_attr) if a]
            key = {a: src[a] for a in attrs if a in src}
            try:
                current = self.get_item(table.name, key)
            except Exception:
                continue
            saved.append((table.name, key, copy.deepcopy(current.to_json()["Attributes"]) if current else None))
        try:
            original(self, transact_items)
        except Exception:
            for name, key, before in reversed(saved):
                if before is None:
                    if self.get_item(name, key) is not None:
                        self.delete_item(name, key)
                else:
                    self.put_item(name, before, overwrite=True)
            raise

    models.DynamoDBBackend.transact_write_items = transact  # type: ignore[method-assign]


# ---------------------------------------------------------------- DynamoDB accounting

def attr_size(v: dict[str, Any]) -> int:
    """Bytes of one attribute value by DynamoDB's item-size rules (numbers approximated)."""
    (t, x), = v.items()
    if t == "S":
        return len(x.encode())
    if t == "N":
        digits = x.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1 + (1 if x.startswith("-") else 0)
    if t == "B":
        return len(x)
    if t in ("BOOL", "NULL"):
        return 1
    if t == "M":
        return 3 + sum(len(k.encode()) + attr_size(e) + 1 for k, e in x.items())
    if t == "L":
        return 3 + sum(attr_size(e) + 1 for e in x)
    if t == "SS":
        return sum(len(e.encode()) for e in x)
    if t == "NS":
        return sum(attr_size({"N": e}) for e in x)
    if t == "BS":
        return sum(len(e) for e in x)
    raise ValueError(t)


def item_size(item: dict[str, Any]) -> int:
    return sum(len(k.encode()) + attr_size(v) for k, v in item.items())


def kind_of(table: str, k: dict[str, Any]) -> str:
    if table == config.settings().ledger_table:
        return "ledger row"
    pk, sk = k["pk"]["S"], k["sk"]["S"]
    if pk.startswith("OP#"):
        return "op marker"
    if sk == "WALLET":
        return "wallet"
    if sk.startswith("RENTAL#"):
        return "rental"
    if sk == "OWNER":
        return "owner"
    return "other"


@dataclass
class Meter:
    """DynamoDB requests, their time in moto, and what they wrote and read."""

    on: bool = True
    calls: Counter[str] = field(default_factory=Counter)
    ms: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # sending a request → moto's answer
    moto_cpu: float = 0.0  # CPU time of this thread in the same windows (moto runs in-process)
    hook_s: float = 0.0  # this bench's own bookkeeping, subtracted from the wall time
    hook_cpu: float = 0.0
    tx_sizes: list[int] = field(default_factory=list)  # items per TransactWriteItems
    items: Counter[str] = field(default_factory=Counter)  # items written, by kind
    put_bytes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    updated: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=lambda: defaultdict(list))
    read_units: float = 0.0
    items_read: int = 0
    bytes_read: int = 0
    _start: float = 0.0
    _start_cpu: float = 0.0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def build(self, event_name: str, params: dict[str, Any], **kwargs: Any) -> None:
        if not self.on or not event_name.endswith("TransactWriteItems"):
            return
        t, c = time.perf_counter(), time.thread_time()
        items = params["TransactItems"]
        self.tx_sizes.append(len(items))
        for it in items:
            (op, body), = it.items()
            if op == "Put":
                k = kind_of(body["TableName"], body["Item"])
                self.put_bytes[k].append(item_size(body["Item"]))
            else:
                k = kind_of(body["TableName"], body["Key"])
                self.updated[k].append((body["TableName"], body["Key"]))
            self.items[k] += 1
        self.hook_s += time.perf_counter() - t
        self.hook_cpu += time.thread_time() - c

    def before(self, event_name: str, **kwargs: Any) -> None:
        if self.on:
            self.calls[event_name.rsplit(".", 1)[-1]] += 1
            self._start, self._start_cpu = time.perf_counter(), time.thread_time()

    def answered(self, event_name: str, **kwargs: Any) -> None:
        """moto has answered (before botocore parses the answer, which is ours to pay on AWS too)."""
        if self.on:
            self.ms[event_name.rsplit(".", 1)[-1]] += (time.perf_counter() - self._start) * 1000
            self.moto_cpu += time.thread_time() - self._start_cpu

    def after(self, event_name: str, parsed: dict[str, Any], **kwargs: Any) -> None:
        if not self.on:
            return
        t, c = time.perf_counter(), time.thread_time()
        op = event_name.rsplit(".", 1)[-1]
        if op == "Query":
            size = sum(item_size(i) for i in parsed.get("Items", []))
            self.items_read += len(parsed.get("Items", []))
            self.bytes_read += size
            self.read_units += math.ceil(size / 4096) * 0.5  # eventually consistent (the index)
        elif op == "GetItem":
            size = item_size(parsed["Item"]) if parsed.get("Item") else 0
            self.bytes_read += size
            self.read_units += max(1, math.ceil(size / 4096))  # strongly consistent
        elif op == "BatchGetItem":  # the rentals the keys-only index named, strongly consistent
            for items in parsed.get("Responses", {}).values():
                self.items_read += len(items)
                for i in items:
                    size = item_size(i)
                    self.bytes_read += size
                    self.read_units += max(1, math.ceil(size / 4096))
        self.hook_s += time.perf_counter() - t
        self.hook_cpu += time.thread_time() - c

    def paused(self) -> _Paused:
        return _Paused(self)


class _Paused:
    def __init__(self, m: Meter) -> None:
        self.m = m

    def __enter__(self) -> None:
        self.m.on = False

    def __exit__(self, *exc: object) -> None:
        self.m.on = True


def quiet() -> contextlib.redirect_stdout[io.StringIO]:
    """The product's metrics (EMF lines on stdout, as in Lambda) are emitted, but not onto this report."""
    return contextlib.redirect_stdout(io.StringIO())


def wcu(size: int) -> int:
    return 2 * max(1, math.ceil(size / 1024))


def units(size: int) -> int:
    """Write units of one standard write of an item (or index entry) of `size` bytes."""
    return max(1, math.ceil(size / 1024))


@dataclass
class WriteUnits:
    """Write units counted per request, as DynamoDB meters them: each item a request writes is
    read from moto just before and just after the request (not counted as requests), and

    - the table write costs 1 unit per started KB of the larger of the two versions (an update is
      priced on the larger, a put on the new item, a delete on the old one), twice that inside
      a `TransactWriteItems`;
    - each global secondary index costs 1 unit per started KB of the index entry (its keys, the
      table's keys and its projected attributes) when the write changes that entry: a put when
      the item enters the index, a delete when it leaves, both when its index keys change, one
      write when only a projected attribute changes, nothing otherwise.

    A request that fails (a cancelled transaction, a failed condition) is not counted."""

    on: bool = True
    table: Counter[str] = field(default_factory=Counter)  # units by item kind
    index: Counter[str] = field(default_factory=Counter)  # units by index name
    _indexes: dict[str, list[tuple[str, list[str], list[str] | None]]] = field(default_factory=dict)
    _pending: list[tuple[str, dict[str, Any], bool, dict[str, Any] | None]] = field(default_factory=list)

    def reset(self) -> None:
        self.table.clear()
        self.index.clear()
        self._pending.clear()

    @property
    def total(self) -> int:
        return sum(self.table.values()) + sum(self.index.values())

    def _backend(self) -> Any:
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends

        return dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]

    def _item(self, table: str, k: dict[str, Any]) -> dict[str, Any] | None:
        found = self._backend().get_item(table, k)
        return copy.deepcopy(found.to_json()["Attributes"]) if found is not None else None

    def _gsis(self, table: str) -> list[tuple[str, list[str], list[str] | None]]:
        """(index name, key attributes with the table's, projected attributes or None for ALL)."""
        if table not in self._indexes:
            t = self._backend().get_table(table)
            keys = [a for a in (t.hash_key_attr, t.range_key_attr) if a]
            out = []
            for g in t.global_indexes:
                proj = g.projection or {}
                kind = proj.get("ProjectionType", "ALL")
                extra = None if kind == "ALL" else (list(proj.get("NonKeyAttributes", [])) if kind == "INCLUDE"
                                                    else [])
                out.append((g.name, [*keys, *g.schema_key_attrs], extra))
            self._indexes[table] = out
        return self._indexes[table]

    def build(self, event_name: str, params: dict[str, Any], **kwargs: Any) -> None:
        if not self.on:
            return
        op = event_name.rsplit(".", 1)[-1]
        if op == "TransactWriteItems":
            for it in params["TransactItems"]:
                (kind, body), = it.items()
                if kind != "ConditionCheck":
                    self._note(body, True)
        elif op in ("PutItem", "UpdateItem", "DeleteItem"):
            self._note(params, False)
        elif op == "BatchWriteItem":
            for table, reqs in params["RequestItems"].items():
                for r in reqs:
                    (kind, body), = r.items()
                    self._note({"TableName": table, **body}, False)

    def _note(self, body: dict[str, Any], transactional: bool) -> None:
        table = body["TableName"]
        t = self._backend().get_table(table)
        src = body.get("Key") or body["Item"]
        k = {a: src[a] for a in (t.hash_key_attr, t.range_key_attr) if a}
        self._pending.append((table, k, transactional, self._item(table, k)))

    def after(self, event_name: str, parsed: dict[str, Any], **kwargs: Any) -> None:
        pending, self._pending = self._pending, []
        if not self.on or "Error" in parsed:
            return
        for table, k, transactional, old in pending:
            new = self._item(table, k)
            kind = kind_of(table, k)
            size = max(item_size(old) if old else 0, item_size(new) if new else 0)
            self.table[kind] += units(size) * (2 if transactional else 1)
            for name, keys, projected in self._gsis(table):
                self.index[name] += self._index_units(keys, projected, old, new)

    @staticmethod
    def _index_units(keys: list[str], projected: list[str] | None, old: dict[str, Any] | None,
                     new: dict[str, Any] | None) -> int:
        def entry(item: dict[str, Any] | None) -> dict[str, Any] | None:
            if item is None or any(a not in item for a in keys):
                return None
            names = item.keys() if projected is None else [*keys, *projected]
            return {a: item[a] for a in names if a in item}

        before, after = entry(old), entry(new)
        if before == after:
            return 0
        if before is None or after is None:
            return units(item_size(before or after or {}))
        if any(before[a] != after[a] for a in keys):
            return units(item_size(before)) + units(item_size(after))
        return units(item_size(after))


# ---------------------------------------------------------------- seeding

def template_rental(manual: clock.ManualClock) -> Rental:
    """One rental launched and turned running through the real code paths, as stored."""
    sims = start_simulators(now=clock.now, boot_seconds=5)
    try:
        adapters = build_adapters({**sims.settings(), "PROVIDERS": "lambda"})
        catalog_refresh.refresh(adapters)
        registry.set_adapters(adapters)
        user = ids.new_id("usr")
        wallet.credit(user, 10**6, "adjustment", "bench-template")
        answer, status = rentals.launch(user, Launch(familyId="rtx-4090", gpuCount=1), None)
        assert status == 200, answer
        manual.advance(6)
        found = rental_store.get(user, answer["id"])
        assert found is not None
        running = rentals.advance(found)
        assert running.status == "running", running
        rentals.stop(user, running.id)  # out of the running set (it only served as a template)
        return running
    finally:
        registry.set_adapters(None)
        sims.shutdown()


def clone(tpl: Rental, user: str, price: int, started: float) -> Rental:
    """A running rental as `launch` + `mark_running` leave it (a user with an SSH key on file)."""
    rid = ids.new_id("rent")
    answer = tpl.launch_answer  # rentals stored before the answer moved to the launch's marker
    return replace(
        tpl, id=rid, user_id=user, price_per_hour_cents=price, reserve_cents=price, charged_cents=0,
        billed_seconds=0, overage_cents=0, refunded_cents=0, ssh_key_count=1, created_at=started - 6,
        allocating_until=started + 54, last_checked_at=started, running_at=started, metered_until=started,
        last_healthy_at=started, instance_id=uuid.uuid4().hex,
        offer=replace(tpl.offer, price_per_hour_cents=price) if tpl.offer else None,
        launch_answer={**answer, "id": rid, "pricePerHourCents": price, "startedAt": clock.iso(started - 6),
                       "warnings": []} if answer else None,
    )


def seed(tpl: Rental, n: int, u: int) -> dict[str, list[Rental]]:
    """n running rentals over u wallets (as evenly as they divide), each wallet funded consistently."""
    now = clock.now()
    users = [ids.new_id("usr") for _ in range(u)]
    out: dict[str, list[Rental]] = {}
    j = 0
    for i, user in enumerate(users):
        k = n // u + (1 if i < n % u else 0)
        recs = []
        for _ in range(k):
            recs.append(clone(tpl, user, PRICES[j % len(PRICES)], now - (j * 7) % 60))
            j += 1
        out[user] = recs
        burn = sum(r.price_per_hour_cents for r in recs)
        fund = burn * (1 + FUNDED_HOURS)
        for c in range(0, max(1, len(recs)), SEED_CHUNK):
            chunk = recs[c:c + SEED_CHUNK]

            def planner(w: wallet.Wallet, chunk: list[Rental] = chunk, first: bool = c == 0,
                        user: str = user, fund: int = fund) -> list[Any]:
                steps = []
                cur = w
                if first:
                    steps.append(wallet.plan_credit(cur, fund, "adjustment", {"description": "bench funding"}))
                    cur = wallet.Wallet(user, cur.available + fund, cur.reserved)
                for r in chunk:
                    s = wallet.plan_reserve(cur, r.reserve_cents)
                    steps.append(wallet.with_step_info(s, rentalId=r.id))
                    cur = wallet.Wallet(user, cur.available + s.available_delta, cur.reserved + s.reserved_delta)
                return steps

            def extras(w: wallet.Wallet, steps: Any, chunk: list[Rental] = chunk,
                       user: str = user) -> list[Any]:
                items = []
                for r in chunk:
                    items += [rental_store.put_item(r), rental_store.owner_item(r.id, user)]
                return items

            wallet.apply(user, f"bench-seed:{user}:{c}", {"op": "bench-seed", "chunk": c}, planner, extras)
    return out


def check(users: list[str]) -> str:
    """The invariants on a sample of wallets; raises if one does not hold."""
    for user in users:
        w = wallet.get(user)
        running = [meters.of(w, r) for r in rental_store.live_for_user(user, "running")]  # meters: on the wallet
        reserves = sum(r.reserve_cents for r in running)
        assert w.reserved == reserves, (user, w, reserves)
        ledger = sum(int(r["amountCents"]) for r in money_store.all_ledger(user))
        assert ledger == w.total, (user, w, ledger)
        assert w.available >= 0 and w.reserved >= 0
        for r in running:
            assert r.charged_cents == charge_for_seconds(r.billed_seconds, r.price_per_hour_cents), r
    return f"ok ({len(users)} wallets: reserved == Σ rental reserves, Σ ledger == total, charge == formula)"


# ---------------------------------------------------------------- a tick

@dataclass
class Tick:
    label: str
    n: int
    u: int
    report: dict[str, int]
    wall: float
    cpu: float  # this thread's CPU time over the sweep
    meter: Meter
    sizes: dict[str, list[int]]  # bytes per item kind (puts exact, updates sampled)
    timers_armed: int
    arm_next_s: float
    arm_next_calls: int
    counted: WriteUnits = field(default_factory=WriteUnits)

    @property
    def requests(self) -> int:
        return sum(self.meter.calls.values())

    @property
    def in_requests_s(self) -> float:
        return sum(self.meter.ms.values()) / 1000

    @property
    def ours_s(self) -> float:
        return max(0.0, self.wall - self.in_requests_s - self.meter.hook_s)

    @property
    def ours_cpu(self) -> float:
        """CPU time of the product code and botocore (not moto, not this bench): the machine's load
        does not inflate it, as it does the wall time."""
        return max(0.0, self.cpu - self.meter.moto_cpu - self.meter.hook_cpu)

    @property
    def ledger_rows(self) -> int:
        return self.meter.items["ledger row"]

    def write_units(self) -> int:
        total = 0
        for kind, count in self.meter.items.items():
            sizes = self.sizes.get(kind)
            if not sizes:
                continue
            if kind in self.meter.put_bytes:
                total += sum(wcu(s) for s in self.meter.put_bytes[kind])
            else:
                total += round(count * statistics.mean(wcu(s) for s in sizes))
        return total

    def estimate_s(self) -> float:
        io = sum(c * ASSUMED_MS.get(op, 10.0) for op, c in self.meter.calls.items()) / 1000
        return self.ours_cpu * CPU_FACTOR + io


def sizes_of(m: Meter) -> dict[str, list[int]]:
    out = {k: list(v) for k, v in m.put_bytes.items()}
    rng = random.Random(1)
    with m.paused():
        for kind, keys in m.updated.items():
            for table, k in rng.sample(keys, min(SIZE_SAMPLE, len(keys))):
                got = dynamo.client().get_item(TableName=table, Key=k, ConsistentRead=True).get("Item")
                if got:
                    out.setdefault(kind, []).append(item_size(got))
    return out


captured: list[tuple[str, int, list[Rental], float]] = []


def run_tick(label: str, n: int, u: int, manual: clock.ManualClock, interval: float, m: Meter,
             w: WriteUnits) -> Tick:
    timers.clear()
    manual.advance(interval)
    original = metering.arm_next
    spent = [0.0, 0]

    def timed(user_id: str, available: int, running: list[Rental], now: float,
              held_until: float | None = None) -> float | None:
        captured.append((user_id, available, list(running), now))
        t = time.perf_counter()
        try:
            return original(user_id, available, running, now, held_until)
        finally:
            spent[0] += time.perf_counter() - t
            spent[1] += 1

    captured.clear()
    metering.arm_next = timed
    m.reset()
    w.reset()
    t, c = time.perf_counter(), time.thread_time()
    try:
        with quiet():
            report = sweep.start().as_dict()
    finally:
        wall = time.perf_counter() - t
        cpu = time.thread_time() - c
        metering.arm_next = original
    armed = len(timers._pending)
    timers.clear()
    counted = WriteUnits(table=Counter(w.table), index=Counter(w.index))
    return Tick(label, n, u, report, wall, cpu, m, sizes_of(m), armed, spent[0], int(spent[1]), counted)


def show_tick(t: Tick, interval: float) -> None:
    m = t.meter
    rep = t.report
    print(f"\n  {t.label}: {rep['rentals']:,} rentals metered in {rep['wallets']:,} wallets, "
          f"{rep['chargedCents']:,} cents charged, conflicts {rep['conflicts']}, exhausted {rep['exhausted']}, "
          f"timers armed {t.timers_armed}")
    detail = ", ".join(f"{k} {v:,}" for k, v in sorted(m.calls.items()))
    pages = m.calls["Query"]
    print(f"    DynamoDB requests   {t.requests:,}  ({detail});  wallets + pages = {t.u + pages:,}, "
          f"rentals = {t.n:,}; requests per rental {t.requests / max(1, t.n):.3f}")
    per_op = ", ".join(f"{op} {m.ms[op] / c:.1f} ms" for op, c in sorted(m.calls.items()))
    print(f"    in moto, per request {per_op}")
    txs = Counter(m.tx_sizes)
    print("    items/transaction   " + ", ".join(f"{k} items × {v:,}" for k, v in sorted(txs.items()))
          + f"  (max {max(m.tx_sizes, default=0)}, limit 100)")
    kinds = []
    for kind, count in sorted(m.items.items()):
        sizes = t.sizes.get(kind, [])
        how = "put" if kind in m.put_bytes else "update, sampled"
        if sizes:
            kinds.append(f"{kind} {count:,} × {statistics.mean(sizes):,.0f} B "
                         f"(max {max(sizes):,}; {how}) → {statistics.mean(wcu(s) for s in sizes):.1f} WCU")
    print("    items written       " + "\n                        ".join(kinds))
    units = t.write_units()
    metered = max(1, rep["rentals"])
    per_hour = 3600 / interval
    print(f"    write units (sizes) {units:,} WCU this tick = {units / metered:.1f} per rental per tick "
          f"= {units / metered * per_hour:,.0f} per rental-hour (table items only, from sampled sizes)")
    w = t.counted
    parts = [f"{k} {v:,}" for k, v in sorted(w.table.items())]
    parts += [f"index {k} {v:,}" for k, v in sorted(w.index.items()) if v]
    print(f"    write units counted {w.total:,} WCU this tick ({', '.join(parts) or 'none'})\n"
          f"                        = {w.total / metered:.2f} per rental per tick = "
          f"{w.total / metered * per_hour:,.0f} per rental-hour from the sweep")
    print(f"    read units (est.)   {m.read_units:,.0f} RCU ({m.items_read:,} items read by Query/BatchGetItem, "
          f"{m.bytes_read / 1e6:.1f} MB read) = {m.read_units / metered * per_hour:.1f} per rental-hour")
    rows = t.ledger_rows
    print(f"    ledger rows         {rows:,} = {rows / metered:.2f} per rental per tick = "
          f"{rows / metered * per_hour:.0f} per rental-hour (target ≤ {TARGET_ROWS_PER_HOUR})")
    print(f"    wall (moto)         {t.wall:.2f} s = {metered / t.wall:,.0f} rentals/s  "
          f"[waiting on moto {t.in_requests_s:.2f} s, our code + botocore {t.ours_s:.2f} s "
          f"({t.ours_cpu:.2f} s CPU = {t.ours_cpu / metered * 1000:.2f} ms per rental), "
          f"bench hooks {m.hook_s:.2f} s]")
    print(f"    arm_next in sweep   {t.arm_next_calls:,} calls, {t.arm_next_s * 1000:.1f} ms "
          f"({t.arm_next_s / max(1, t.arm_next_calls) * 1e6:.0f} µs per wallet)")
    est = t.estimate_s()
    print(f"    on AWS (estimate)   {est:.1f} s = our CPU × {CPU_FACTOR:.2f} + requests at "
          f"{', '.join(f'{k} {v:g} ms' for k, v in ASSUMED_MS.items())} → "
          f"{est / LAMBDA_TIMEOUT_S:.0%} of the {LAMBDA_TIMEOUT_S:.0f} s timeout")


# ---------------------------------------------------------------- predict_exhaustion / arm_next (CPU)

def drying(available: int, running: list[Rental], now: float, at: float) -> list[Rental]:
    """The same rentals with reserves that run out `at` seconds from now (available is 0)."""
    out = []
    for r in running:
        _, delta = metering._delta(r, now + at)
        out.append(replace(r, reserve_cents=max(1, delta)))
    return out


def per_call_us(fn: Callable[[], Any], calls: int, budget: float = 0.5) -> float:
    """µs per call of `fn()`, which makes `calls` calls; repeated for about `budget` seconds."""
    reps = 0
    t = time.perf_counter()
    with quiet():
        while reps == 0 or time.perf_counter() - t < budget:
            fn()
            reps += 1
    return (time.perf_counter() - t) / (reps * calls) * 1e6


def cpu_costs(wallets: list[tuple[str, int, list[Rental], float]]) -> list[str]:
    lines = []
    k = statistics.mean(len(w[2]) for w in wallets)
    funded = per_call_us(lambda: [metering.predict_exhaustion(a, rs, now, timers.WINDOW)
                                  for _, a, rs, now in wallets], len(wallets))
    dry = [(u, 0, drying(a, rs, now, 45), now) for u, a, rs, now in wallets]
    assert all(metering.predict_exhaustion(0, rs, now, timers.WINDOW) is not None for _, _, rs, now in dry[:5])
    dry_us = per_call_us(lambda: [metering.predict_exhaustion(0, rs, now, timers.WINDOW)
                                  for _, _, rs, now in dry], len(dry))
    arm_us = per_call_us(lambda: [metering.arm_next(u, 0, rs, now) for u, _, rs, now in dry], len(dry))
    timers.clear()
    lines.append(f"    {len(wallets):,} wallets × {k:.0f} rentals: predict_exhaustion {funded:.0f} µs/wallet funded "
                 f"(no exhaustion within {timers.WINDOW:.0f} s), {dry_us:.0f} µs/wallet running dry "
                 f"(binary search); arm_next {arm_us:.0f} µs/wallet running dry "
                 f"→ {dry_us * len(wallets) / 1e6:.2f} s per sweep if every wallet were running dry")
    return lines


def one_wallet_scaling(sample: list[Rental], now: float) -> list[str]:
    out = []
    for k in (10, 100, 1000):
        rs = [replace(sample[i % len(sample)], id=f"rent_{i}") for i in range(k)]
        dry = drying(0, rs, now, 45)

        def funded_run(rs: list[Rental] = rs) -> Any:
            return metering.predict_exhaustion(10**9, rs, now, timers.WINDOW)

        def dry_run(dry: list[Rental] = dry) -> Any:
            return metering.predict_exhaustion(0, dry, now, timers.WINDOW)

        funded = per_call_us(funded_run, 1)
        dry_us = per_call_us(dry_run, 1)
        out.append(f"    one wallet × {k:>5,} rentals: predict_exhaustion {funded:,.0f} µs funded, "
                   f"{dry_us:,.0f} µs running dry ({dry_us / k:.1f} µs per rental)")
    return out


# ---------------------------------------------------------------- main

def run_size(n: int, u: int, interval: float, ticks: int) -> list[Tick]:
    manual = clock.ManualClock()
    clock.set_clock(manual)
    timers.clear()
    with mock_aws():
        names = template.default_table_names("bench")
        os.environ.update({template.TABLE_ENV[k]: v for k, v in names.items()})
        config.reset()
        dynamo.reset_client()
        template.create_tables(dynamo.client(), names)
        with quiet():
            tpl = template_rental(manual)
        timers.clear()
        t = time.perf_counter()
        with quiet():
            seeded = seed(tpl, n, u)
        seed_s = time.perf_counter() - t
        sample_users = random.Random(7).sample(list(seeded), min(CHECK_WALLETS, len(seeded)))
        print(f"\n== N={n:,} running rentals across U={u:,} wallets "
              f"({n / u:.1f} per wallet; template item from a real launch: {tpl.family_id}, "
              f"{item_size(dynamo.to_item(rental_items.rental_item(tpl))):,} B)")
        print(f"  seeded in {seed_s:.1f} s; consistency before: {check(sample_users)}")
        m = Meter()
        w = WriteUnits()
        events = dynamo.client().meta.events
        events.register("before-parameter-build.dynamodb.*", w.build)
        events.register("after-call.dynamodb.*", w.after)
        events.register("before-parameter-build.dynamodb.*", m.build)
        events.register("before-call.dynamodb.*", m.before)
        events.register("before-parse.dynamodb.*", m.answered)
        events.register("after-call.dynamodb.*", m.after)
        out = []
        for i in range(ticks):
            label = f"tick {i + 1} (+{interval:g} s)" + (" — steady state" if i else " — first after launch")
            tick = run_tick(label, n, u, manual, interval, m, w)
            show_tick(tick, interval)
            out.append(tick)
            last = list(captured)
        w.on = False
        with m.paused():
            print(f"\n  consistency after: {check(sample_users)}")
        print("\n  predict_exhaustion / arm_next, pure CPU, on the wallets of the last tick:")
        for line in cpu_costs(last):
            print(line)
        for line in one_wallet_scaling(last[0][2], last[0][3]):
            print(line)
        for ev, fn in (("before-parameter-build", m.build), ("before-call", m.before),
                       ("before-parse", m.answered), ("after-call", m.after), ("before-parameter-build", w.build),
                       ("after-call", w.after)):
            events.unregister(f"{ev}.dynamodb.*", fn)
        dynamo.reset_client()
    return out


def summary(results: list[Tick], interval: float) -> None:
    per_hour = 3600 / interval
    print("\n== Growth (steady-state tick of each size)")
    print(f"{'N':>7} {'U':>6} {'requests':>9} {'TWI':>6} {'GetItem':>8} {'Query':>6} {'req/rental':>10} "
          f"{'WCU/rental-h':>12} {'rows/rental-h':>13} {'wall moto':>10} {'rentals/s':>10} {'AWS est.':>9}")
    counted = []
    for t in results:
        c = t.meter.calls
        metered = max(1, t.report["rentals"])
        print(f"{t.n:>7,} {t.u:>6,} {t.requests:>9,} {c['TransactWriteItems']:>6,} {c['GetItem']:>8,} "
              f"{c['Query']:>6,} {t.requests / metered:>10.3f} {t.write_units() / metered * per_hour:>12,.0f} "
              f"{t.ledger_rows / metered * per_hour:>13.0f} {t.wall:>9.1f}s {metered / t.wall:>10,.0f} "
              f"{t.estimate_s():>8.1f}s")
        counted.append(t)
    print("\n== Write units of one rental-hour, counted per request (steady-state tick × 60, index writes included)")
    print(f"{'N':>7} {'U':>6} {'per wallet':>10} {'sweep':>7} {'reconcile':>9} {'total':>7}   "
          "by item (per rental-hour)")
    for t in counted:
        metered = max(1, t.report["rentals"])
        w = t.counted
        sweep_h = w.total / metered * per_hour
        # The reconciler writes nothing for a healthy running rental (`lastHealthyAt` only on a
        # change): per pass it puts one record per provider (`put_pass`, an item under 1 KB).
        reconcile_h = PROVIDERS * per_hour / t.n
        parts = [f"{k} {v / metered * per_hour:.0f}" for k, v in sorted(w.table.items())]
        parts += [f"index {k} {v / metered * per_hour:.0f}" for k, v in sorted(w.index.items()) if v]
        print(f"{t.n:>7,} {t.u:>6,} {t.n / t.u:>10.1f} {sweep_h:>7.0f} {reconcile_h:>9.2f} "
              f"{sweep_h + reconcile_h:>7.0f}   {', '.join(parts)}  (target ≤ {TARGET_WCU_PER_RENTAL_HOUR}: "
              f"{'met' if sweep_h + reconcile_h <= TARGET_WCU_PER_RENTAL_HOUR else 'not met'})")
    print("\nTargets: requests ≈ wallets + pages (not rentals × k); ≤ 60 ledger rows per rental-hour; "
          f"a 10,000-rental sweep well inside one invocation ({LAMBDA_TIMEOUT_S:.0f} s timeout).")
    print("Assumptions of the AWS estimate: " + ", ".join(f"{k} {v:g} ms" for k, v in ASSUMED_MS.items())
          + f" per request (sequential, as the sweep issues them); our code's CPU time here "
          f"(product code and botocore, not moto) × {CPU_FACTOR:.2f} "
          f"(a {LAMBDA_MEMORY_MB} MB Lambda gets {LAMBDA_MEMORY_MB / 1769:.2f} vCPU). "
          "Write units: 2 WCU per started KB per transactional item (an update priced on the item after it).")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=DEFAULT_SIZES, help=f"N:U pairs, comma-separated (default {DEFAULT_SIZES})")
    p.add_argument("--quick", action="store_true", help=f"a tiny run ({QUICK_SIZES})")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between ticks (the schedule: 60)")
    p.add_argument("--ticks", type=int, default=2)
    a = p.parse_args()
    item_level_rollback()
    sizes = [tuple(int(x) for x in s.split(":")) for s in (QUICK_SIZES if a.quick else a.sizes).split(",")]
    steady: list[Tick] = []
    for n, u in sizes:
        ticks = run_size(n, u, a.interval, a.ticks)
        steady.append(ticks[-1])
    summary(steady, a.interval)


if __name__ == "__main__":
    main()
