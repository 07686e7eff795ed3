"""The reconciler: every minute, every live rental compared with what its provider says, and
moved on only where the two disagree (`rentals.lifecycle` moves one rental).

The pass scales out by provider:

- the schedule runs the coordinator (`dispatch`): one hand-off per provider on the reconcile
  queue, nothing else (no table, no provider, no secret);
- each hand-off runs `reconcile_provider` on a worker: one list of the provider's instances
  (one call per page), one read of its live rentals (the `ProviderIndex`, narrow: no
  attribute a metering tick writes), and a comparison in memory. A rental the list shows
  as the store has it costs nothing: no provider call, no read of the whole rental, no write.
  Only *changed* rentals are read whole and moved on (`lifecycle.advance`), with a bounded pool
  of threads sharing one event loop and one pooled HTTP client (`instances.provider_loop`);
- beyond `LOCAL_WORK` changed rentals a worker hands the rest on in chunks of `CHUNK`
  (`advance_chunk`: the same move, asking the provider about each rental of the chunk).

So a pass over N live rentals costs O(providers + pages + changed rentals) provider calls
and writes, and each provider's share runs on its own worker.

Faults lose no machine: nothing is decided from the absence of work. A worker that dies
halfway, a provider that times out, a hand-off that is lost or late (a hand-off older than
`STALE_AFTER` is dropped): the rentals it did not move still disagree with their provider
next minute, and the next pass moves them. Every move is a conditional write on the state
it saw, so two passes at once (a late hand-off and the next one) cannot both move a rental.

`lastHealthyAt` is written only when it means something (docs/decisions.md "Reconciler"):
a healthy running pod costs no write. Each complete pass records when its list was fetched
(`PassRecord`, one item per provider); a pod the next pass finds bad or gone was healthy at
that moment, so before its health is judged its `lastHealthyAt` is pinned to it (with
`unhealthySince`, which takes it out of later records) and billing still ends at the last
moment a check saw it running.

Without a queue (the local stack, the tests) hand-offs wait in this process
(`pending`) for whoever plays SQS (`infra.local.scheduler`), and `run_all` (the rentals
package's `reconcile()`) runs every provider's pass at once, in this process.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gpurent import clock, ids
from gpurent.config import settings
from gpurent.providers import registry
from gpurent.providers.base import Instance, ProviderError
from gpurent.records import LiveRental, PassRecord, Rental
from gpurent.rentals import instances, lifecycle, settlement
from gpurent.store import rentals as store
from gpurent.telemetry import count, logger

R = TypeVar("R")

# A rental that became running this shortly before a pass read the index may not show as
# running in it yet (the index is eventually consistent): its health is judged next pass.
INDEX_LAG = 10.0
STALE_AFTER = 60.0  # a hand-off older than this is dropped: the next minute's pass does its work
LOCAL_WORK = 200  # changed rentals a worker moves itself; the rest go back on the queue …
CHUNK = 50  # … this many to a hand-off
TIME_MARGIN = 5.0  # seconds of an invocation kept back: no new move starts this close to its end

Counts = Counter[str]


# ---------------------------------------------------------------- hand-offs

_pending: list[dict[str, Any]] = []
_pending_lock = threading.Lock()


def send(body: dict[str, Any]) -> None:
    """Hand work to a worker: a message on the reconcile queue, or in process without one."""
    url = settings().reconcile_queue_url
    if url:
        from gpurent.store import timers as queue  # the one SQS sender (no delay here)

        queue.send(url, body, 0)
        return
    if settings().stage not in ("local", "test"):
        raise RuntimeError("RECONCILE_QUEUE_URL is not set: a deployment hands each provider to a worker")
    with _pending_lock:
        _pending.append(body)


def pending() -> list[dict[str, Any]]:
    """Pop the hand-offs waiting in this process (no queue), oldest first."""
    with _pending_lock:
        out = list(_pending)
        _pending.clear()
    return out


def dispatch() -> Counts:
    """The coordinator (every minute): one hand-off per provider. A provider that turns out
    to be off on this deployment costs its worker one look at its settings."""
    now = clock.now()
    counts: Counts = Counter()
    for code in registry.wanted_codes():
        send({"provider": code, "at": now})
        counts["handedOff"] += 1
    return counts


def handle(body: dict[str, Any], seconds_left: float | None = None) -> Counts:
    """A worker's hand-off: a provider's pass, or a chunk of its changed rentals."""
    code = str(body["provider"])
    age = clock.now() - float(body["at"])
    if age > STALE_AFTER:
        logger.warning("stale reconcile hand-off dropped", extra={"provider": code, "ageSeconds": round(age)})
        return Counter(stale=1)
    deadline = time.monotonic() + seconds_left - TIME_MARGIN if seconds_left is not None else None
    if "rentals" in body:
        return advance_chunk(code, [(str(u), str(r)) for u, r in body["rentals"]], deadline)
    return reconcile_provider(code, deadline)


def run_all() -> Counts:
    """Every configured provider's pass, one after another, in this process."""
    totals: Counts = Counter()
    for code in registry.adapters():
        totals.update(reconcile_provider(code))
    return totals


# ---------------------------------------------------------------- one provider's pass

def reconcile_provider(code: str, deadline: float | None = None) -> Counts:
    """One provider's pass (see the module doc). `deadline`: a `time.monotonic()` after which
    no new move starts (the rest is left to the next pass)."""
    counts: Counts = Counter()
    adapter = registry.adapters().get(code)
    if adapter is None:
        return counts  # off on this deployment
    with instances.provider_loop():
        read_at = clock.now()
        previous, live = _record_and_live(code)
        listed_at = clock.now()
        found: list[Instance] | None
        try:
            found = instances.run(adapter.list_instances([v.instance_id for v in live if v.instance_id]))
        except ProviderError as exc:
            found = None
            counts["errors"] += 1
            logger.warning("listing instances failed", extra={"provider": code, "kind": exc.kind})
        listed = instances.index(found) if found is not None else None
        cover_from = read_at - INDEX_LAG
        changed = [v for v in live if needs_work(v, listed, cover_from, listed_at)]
        counts["checked"] += len(live)
        counts["changed"] += len(changed)

        # Read each changed rental whole; pin the health of a running one its list does not
        # show running, before this pass's record claims anything.
        prepared, failed = _each(lambda v: _prepare(v, listed, previous, cover_from, listed_at), changed,
                                 deadline)
        rows = [r for r in prepared.values() if r is not None]
        counts["pinned"] += sum(1 for v in changed if _was_pinned(prepared.get(v.id), v))
        counts["errors"] += failed
        if listed is not None and len(prepared) == len(changed) and any(v.status == "running" for v in live):
            # Every rental this pass found not running has its health written: the record
            # may say the others were seen running at `listed_at` (nothing to say: no write).
            store.put_pass(PassRecord(code, listed_at, cover_from))

        local, later = _split(rows)
        # (A rental that moved to another provider since the index was read is asked about directly.)
        moved, failed = _each(lambda r: lifecycle.advance(r, listed if r.provider == code else None), local,
                              deadline)
        counts["advanced"] += len(moved)
        counts["errors"] += failed
        counts["deferred"] += len(local) - len(moved) - failed
        for start in range(0, len(later), CHUNK):
            part = later[start:start + CHUNK]
            send({"provider": code, "at": listed_at, "rentals": [[r.user_id, r.id] for r in part]})
            counts["handedOff"] += len(part)
        if found is not None:
            terminated, failed = _terminate_orphans(adapter.code, found, live)
            counts["orphansTerminated"] += terminated
            counts["errors"] += failed
    return counts


_side: ThreadPoolExecutor | None = None
_side_lock = threading.Lock()


def _record_and_live(code: str) -> tuple[PassRecord | None, list[LiveRental]]:
    """The previous pass's record and the provider's live rentals: two reads at once (one
    round trip, not two) unless `RECONCILE_CONCURRENCY` is 1 (in order: the crash points count
    the calls). The record may be read after the index: it is still true (a record is written
    only after its pass pinned every rental it found bad), and each rental is read whole
    after both."""
    global _side
    if settings().reconcile_concurrency == 1:
        return store.get_pass(code), store.provider_live(code)
    with _side_lock:
        if _side is None:
            _side = ThreadPoolExecutor(max_workers=4, thread_name_prefix="reconcile-read")
    # In a copy of this context, as `_each` runs its items (which function is running).
    record = _side.submit(contextvars.copy_context().run, store.get_pass, code)
    live = store.provider_live(code)
    return record.result(), live


def advance_chunk(code: str, pairs: Sequence[tuple[str, str]], deadline: float | None = None) -> Counts:
    """Move on rentals a worker handed on (asking the provider about each one)."""
    counts: Counts = Counter()

    def one(pair: tuple[str, str]) -> Rental | None:
        r = store.get(*pair)
        if r is None or not r.is_live or r.provider != code:
            return None
        return lifecycle.advance(r)

    with instances.provider_loop():
        moved, failed = _each(one, pairs, deadline)
    counts["advanced"] += sum(1 for r in moved.values() if r is not None)
    counts["errors"] += failed
    return counts


def needs_work(v: LiveRental, listed: instances.Listed | None, cover_from: float, now: float) -> bool:
    """Whether this live rental disagrees with its provider's list (None: the list failed)."""
    if v.status == "stopping":
        return True  # terminate until the provider confirms
    if v.status == "provisioning":
        if v.instance_id is None:
            # A launch still holding its lease is calling the provider; a launch that died is
            # finished from the list (found by label), so not while the list is missing.
            return now >= v.allocating_until and listed is not None
        if listed is None:
            return True  # one get each: few, and they must not wait for the list
        inst = listed.get(v.instance_id)
        if inst is not None and inst.status == "provisioning":
            return now - v.created_at > registry.provision_deadline(v.provider)
        return True
    due = settlement.limit_deadline(v)
    if due is not None and now >= due[0]:
        return True
    if listed is None or v.running_at is None or v.running_at >= cover_from:
        return False  # no list (an API error is not a bad check), or too new to judge
    inst = listed.get(v.instance_id) if v.instance_id else None
    healthy = inst is not None and inst.status == "running"
    return not (healthy and v.bad_checks == 0 and v.unhealthy_since is None)


def last_healthy(r: Rental, record: PassRecord | None) -> float:
    """The last moment a check saw this running rental running: its own `lastHealthyAt`, or
    the previous pass's list if that pass saw it (it was running before the pass read the
    index, and no bad check has been recorded on it since)."""
    own = r.last_healthy_at if r.last_healthy_at is not None else (r.running_at or 0.0)
    if (record is not None and r.running_at is not None and r.running_at < record.cover_from
            and r.bad_checks == 0 and r.unhealthy_since is None):
        return max(own, record.listed_at)
    return own


def _prepare(v: LiveRental, listed: instances.Listed | None, previous: PassRecord | None, cover_from: float,
             now: float) -> Rental | None:
    r = store.get(v.user_id, v.id)
    if r is None or not r.is_live:
        return None
    if (r.status != "running" or listed is None or r.running_at is None or r.running_at >= cover_from
            or r.bad_checks or r.unhealthy_since is not None):
        return r
    inst = listed.get(r.instance_id) if r.instance_id else None
    if inst is not None and inst.status == "running":
        return r
    due = settlement.limit_deadline(r)
    if due is not None and now >= due[0]:
        return r  # stopped at its limit: billed to the limit, whatever its health
    try:
        return store.update(r.user_id, r.id, {"last_healthy_at": last_healthy(r, previous), "unhealthy_since": now},
                            ("running",), r.version)
    except store.StaleRental as exc:
        return exc.current


def _was_pinned(r: Rental | None, v: LiveRental) -> bool:
    return r is not None and r.status == "running" and v.unhealthy_since is None and r.unhealthy_since is not None


def _split(rows: list[Rental]) -> tuple[list[Rental], list[Rental]]:
    """(moved by this worker, handed on): without a queue, or within `LOCAL_WORK`, this worker
    moves them; a rental whose move needs the list (found by label) always stays here."""
    if not settings().reconcile_queue_url or len(rows) <= LOCAL_WORK:
        return rows, []
    by_label = [r for r in rows if not r.instance_id]
    rest = [r for r in rows if r.instance_id]
    room = max(0, LOCAL_WORK - len(by_label))
    return by_label + rest[:room], rest[room:]


def _terminate_orphans(code: str, found: Iterable[Instance], live: Sequence[LiveRental]) -> tuple[int, int]:
    """Terminate the labelled instances that are no live rental's machine: (terminated, failed).

    An instance is a live rental's machine when its label names the rental and the rental has
    recorded no other one. A rental records its machine (provider and instance id) once and
    never changes it, so a second instance under its label is a leftover: a create that took
    effect though its answer was a refusal and the destroy that followed failed, or one that
    surfaced only after the launch had allocated elsewhere. It is terminated now, not kept
    (and paid for) until the rental ends. A rental that has recorded no machine yet keeps
    every instance under its label: its launch may be about to record one of them."""
    terminated = failed = 0
    adapter = registry.adapter(code)
    machines = {v.id: v.instance_id for v in live}
    for inst in found:
        if not inst.label or inst.status == "terminated":
            continue
        if inst.label in machines:
            owned = True
            keep = machines[inst.label] in (None, inst.instance_id)
        else:
            owner = _owner_of(inst.label)  # live after our read (the index lags), or moved to this provider
            owned = owner is not None and owner.is_live
            keep = owner is not None and owner.is_live and (
                owner.instance_id is None or (owner.provider == code and owner.instance_id == inst.instance_id))
        if keep:
            continue
        if owned:
            logger.warning("a second instance under a live rental's label",
                           extra={"provider": code, "instanceId": inst.instance_id, "rentalId": inst.label})
        try:
            instances.run(adapter.terminate(inst.instance_id))
            terminated += 1
            count("OrphansTerminated")
        except ProviderError:
            failed += 1
    return terminated, failed


def _owner_of(label: str) -> Rental | None:
    """The rental a label names, wherever its owner is (labels are rental ids)."""
    if not ids.is_id(label, "rent"):
        return None
    return store.find_by_id(label)


# ---------------------------------------------------------------- a bounded pool

def _each(fn: Callable[[Any], R], items: Sequence[Any], deadline: float | None) -> tuple[dict[str, R], int]:
    """fn over items, `RECONCILE_CONCURRENCY` at a time (1: in order, in this thread), each in
    a copy of this context (the invocation's provider loop). Answers ({id: result} of the items
    that ran without an exception, how many raised one: logged). Items not started by
    `deadline` are left out of both."""
    out: dict[str, R] = {}
    failed = 0
    lock = threading.Lock()

    def one(item: Any) -> None:
        nonlocal failed
        if deadline is not None and time.monotonic() > deadline:
            return
        try:
            result = fn(item)
        except Exception:
            logger.exception("reconcile failed for a rental", extra={"rentalId": _id_of(item)})
            with lock:
                failed += 1
            return
        with lock:
            out[_id_of(item)] = result

    workers = max(1, settings().reconcile_concurrency)
    if workers == 1 or len(items) <= 1:
        for item in items:
            one(item)
        return out, failed
    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="reconcile") as pool:
        for f in [pool.submit(contextvars.copy_context().run, one, item) for item in items]:
            f.result()
    return out, failed


def _id_of(item: Any) -> str:
    if isinstance(item, tuple):
        return str(item[1])
    return str(item.id)
