"""The metering sweep, fanned out: every running rental charged each minute, however many.

One worker charging one wallet after another does not scale: at one rental per
wallet (the common case) 10,000 rentals are 20,000 sequential requests, far
past a Lambda's timeout, and a sweep that times out starves the same tail
wallets every minute. So the minute's schedule starts a **coordinator** that
reads nothing: it hands each `ActiveIndex` shard to its own **worker** (a
message on the sweep queue; without a queue, each part runs in this process).
A worker reads its shard's running rentals (one paged query of the keys-only index, then
the rentals of the wallets its part covers, 100 a request), groups them by
wallet and charges `sweep_concurrency` wallets at once (`metering.meter_wallet`:
charge, stop what is due, arm the next deadline's timer).

**No wallet is always last.** A worker takes its wallets in an order drawn
afresh each minute: by `sha256(tick:user)`, so a wallet's place is random and
independent of its id, and the hand-off below can name "where it stopped" by
that key, which stays right when wallets come and go.

**A worker that runs out of time hands its remainder on** (a message naming
the shard, the tick and the first order key it did not start) instead of
dropping it. Nothing here is exactly-once, and nothing needs to be: metering a
wallet charges up to now under a condition on the wallet's version (its running
rentals' meters are on it: `gpurent.rentals.meters`), so a
redelivered part, a hand-off racing the next minute's worker, or a worker
killed halfway charges nothing twice; a lost part or hand-off only means its
wallets wait for the next minute, whose fresh order puts them anywhere.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from itertools import groupby
from typing import Any

from gpurent import clock, metering
from gpurent.config import settings
from gpurent.records import Rental, WalletItem, active_shards
from gpurent.store import money as money_store
from gpurent.store import rentals as store
from gpurent.store import timers as queue
from gpurent.store.dynamo import BATCH_GET
from gpurent.telemetry import count, logger

KIND = "sweep"
# A worker stops starting wallets when less than this is left of its invocation, hands the rest
# on, and still has time to finish the wallets in flight (each a few requests, one may stop pods).
HAND_OFF_MARGIN_SECONDS = 15.0
MAX_HOPS = 5  # a remainder handed on more often than this waits for the next minute's part
# A worker keeps at most this many wallets and hands the rest of its shard out at once, as
# parts of their own (order-key ranges), so a crowded shard is charged by several workers at
# the same time: at ~6 ms of CPU per wallet on a 1,024 MB Lambda, 2,000 wallets fit in 35 s.
WALLETS_PER_WORKER = 2000


@dataclass(frozen=True)
class Part:
    """A shard's wallets for one tick whose order key is in [after, before) ("": unbounded)."""

    shard: int
    tick: float
    after: str = ""
    hops: int = 0
    before: str = ""

    def body(self) -> dict[str, Any]:
        return {"kind": KIND, "shard": self.shard, "tick": self.tick, "after": self.after, "hops": self.hops,
                "before": self.before}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Part:
        shard = int(body["shard"])
        if not 0 <= shard < active_shards():
            raise ValueError(f"no shard {shard}")
        return cls(shard, float(body["tick"]), str(body.get("after", "")), int(body.get("hops", 0)),
                   str(body.get("before", "")))

    def covers(self, key: str) -> bool:
        return key >= self.after and (not self.before or key < self.before)


@dataclass
class Report:
    parts: int = 0
    wallets: int = 0
    rentals: int = 0
    charged_cents: int = 0
    conflicts: int = 0
    exhausted: int = 0
    failed: int = 0
    handed_off: int = 0

    def add(self, other: Report) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {
            "parts": self.parts, "wallets": self.wallets, "rentals": self.rentals,
            "chargedCents": self.charged_cents, "conflicts": self.conflicts, "exhausted": self.exhausted,
            "failed": self.failed, "handedOff": self.handed_off,
        }


def order_key(tick: float, user_id: str) -> str:
    """The wallet's place in this tick's order (a fresh random permutation each minute)."""
    return hashlib.sha256(f"{int(tick)}:{user_id}".encode()).hexdigest()


def start(tick: float | None = None) -> Report:
    """The minute's coordinator: one part per shard, to the queue or (no queue) run here."""
    tick = clock.now() if tick is None else tick
    shards = active_shards()
    parts = [Part(n, tick) for n in range(shards)]
    # Rotate which shard goes first too, for the in-process run (the queue has no order).
    first = int(order_key(tick, "")[:8], 16) % shards
    parts = parts[first:] + parts[:first]
    url = settings().sweep_queue_url
    report = Report()
    if url:
        for part in parts:
            queue.send(url, part.body(), 0)
        report.parts = len(parts)
        return report
    for part in parts:
        report.add(run_part(part))
    count("RentalsMetered", report.rentals)
    return report


Keys = list[tuple[str, str]]  # (user, rental id), as the keys-only `ActiveIndex` names rentals


def covered(part: Part) -> list[tuple[str, str, Keys]]:
    """The part's wallets as (order key, user, its running rentals' keys), in this tick's
    order: the index alone, no rental read yet."""
    by_user: dict[str, Keys] = {}
    for k in store.live_keys_in_shard(part.shard, "running"):
        by_user.setdefault(k[0], []).append(k)
    wallets = [(order_key(part.tick, user_id), user_id, keys) for user_id, keys in by_user.items()]
    return sorted((w for w in wallets if part.covers(w[0])), key=lambda w: w[0])


def read(wallets: list[tuple[str, str, Keys]]) -> list[tuple[str, str, list[Rental]]]:
    """Those wallets' running rentals, read whole (100 a request), in the same order."""
    running = [r for r in store.get_many([k for _, _, keys in wallets for k in keys])
               if r.status == "running" and r.running_at is not None]
    by_user = {user_id: list(rs) for user_id, rs in groupby(sorted(running, key=lambda r: r.user_id),
                                                             key=lambda r: r.user_id)}
    return [(k, user_id, by_user[user_id]) for k, user_id, _ in wallets if user_id in by_user]


def with_items(
        wallets: list[tuple[str, str, list[Rental]]]) -> Iterator[tuple[str, str, list[Rental], WalletItem | None]]:
    """Those wallets with their wallet items, read 100 at a time (one `BatchGetItem`) as the
    pass reaches them: a wallet is charged on the item read a moment before, not one `GetItem`
    each (a stale item costs a re-plan, never money: `wallet.apply`)."""
    for start in range(0, len(wallets), BATCH_GET):
        chunk = wallets[start:start + BATCH_GET]
        items = money_store.get_wallets([user_id for _, user_id, _ in chunk])
        for k, user_id, rs in chunk:
            yield k, user_id, rs, items.get(user_id)


def wallets_of(part: Part) -> list[tuple[str, str, list[Rental]]]:
    """The part's wallets as (order key, user, running rentals), in this tick's order."""
    return read(covered(part))


def run_part(part: Part, time_left: Callable[[], float] | None = None) -> Report:
    """Charge the part's wallets, `sweep_concurrency` at once. `time_left` (seconds of the
    invocation left; None: no limit) decides when to stop starting wallets and hand on."""
    report = Report(parts=1)
    mine = covered(part)
    url = settings().sweep_queue_url
    if url and len(mine) > WALLETS_PER_WORKER:
        mine = split(part, mine, url)  # before reading them: the other slices' rentals are theirs to read
    wallets = read(mine)
    concurrency = settings().sweep_concurrency
    now = clock.now()

    def one(user_id: str, rs: list[Rental], item: WalletItem | None) -> metering.Charged:
        return metering.meter_wallet(user_id, rs, now, item)

    def record(user_id: str, outcome: Callable[[], metering.Charged]) -> None:
        report.wallets += 1
        try:
            out = outcome()
        except Exception:
            # One wallet's failure must not starve the others; the next tick charges it.
            report.failed += 1
            logger.exception("metering a wallet failed", extra={"userId": user_id})
            return
        report.rentals += len(out.rentals)
        report.charged_cents += out.charged
        report.conflicts += out.conflicts
        report.exhausted += int(out.exhausted)

    def out_of_time() -> bool:
        return time_left is not None and time_left() < HAND_OFF_MARGIN_SECONDS

    stopped_at: str | None = None
    if concurrency == 1:
        for k, user_id, rs, item in with_items(wallets):
            if out_of_time():
                stopped_at = k
                break
            record(user_id, partial(one, user_id, rs, item))
    else:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sweep") as pool:
            in_flight: dict[Future[metering.Charged], str] = {}
            for k, user_id, rs, item in with_items(wallets):
                if out_of_time():
                    stopped_at = k
                    break
                if len(in_flight) >= concurrency:
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for f in done:
                        record(in_flight.pop(f), f.result)
                in_flight[pool.submit(one, user_id, rs, item)] = user_id
            for f in list(in_flight):
                record(in_flight.pop(f), f.result)
    if stopped_at is not None:
        hand_off(Part(part.shard, part.tick, stopped_at, part.hops + 1, part.before))
        report.handed_off = 1
    return report


def split(part: Part, wallets: list[tuple[str, str, Keys]], url: str) -> list[tuple[str, str, Keys]]:
    """Keep the first WALLETS_PER_WORKER wallets; send each further slice of the order as a
    part of its own (its key range), so the queue starts a worker for each at once."""
    starts = [wallets[i][0] for i in range(WALLETS_PER_WORKER, len(wallets), WALLETS_PER_WORKER)]
    bounds = [*starts, part.before]
    for lo, hi in zip(starts, bounds[1:], strict=True):
        queue.send(url, Part(part.shard, part.tick, lo, part.hops, hi).body(), 0)
    count("SweepSplits", len(starts))
    return wallets[:WALLETS_PER_WORKER]


def hand_off(part: Part) -> None:
    """Send a part's remainder on (to the queue; without one, run it here, at once)."""
    count("SweepHandOffs")
    logger.info("sweep hand-off", extra=part.body())
    if part.hops > MAX_HOPS:
        logger.warning("sweep remainder dropped after too many hand-offs; the next minute covers it",
                       extra=part.body())
        return
    url = settings().sweep_queue_url
    if url:
        queue.send(url, part.body(), 0)
    else:
        run_part(part)


def time_left_of(context: Any) -> Callable[[], float] | None:
    """Seconds left of a Lambda invocation, from its context (None when there is no limit)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    began, millis = time.monotonic(), float(remaining())
    return lambda: millis / 1000.0 - (time.monotonic() - began)
