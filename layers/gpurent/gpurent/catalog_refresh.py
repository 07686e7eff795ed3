"""The scheduled catalog refresh: every provider fetched concurrently, each provider's
diff written as soon as its own fetch ends (the refresh takes about as long as the slowest
provider, not the sum, and its writes hide behind the other providers' fetches): offers
normalised into listings with stable `lst_` ids and our margin, written with batch writes
(only what changed, several batches at once), vanished listings deleted, and one status
item per provider.

What a provider's listings are is read while its offers are fetched, from its digest (one
item: each listing's offer hash and first-seen time) rather than the listings themselves.
The digest is written beside the listings, and the status after both; each refresh marks the
status `writing` first, so a refresh that died before both were written (either one) leaves
the mark and the next one reads the listings themselves instead of trusting the digest.

A provider that fails keeps its last good listings until they are
`catalog.STALE_AFTER` old; readers stop showing them then, and the next
refresh deletes them.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from gpurent import catalog, clock
from gpurent.config import settings
from gpurent.listing import Listing, from_offer
from gpurent.providers.base import Offer, ProviderAdapter, ProviderError
from gpurent.providers.http import pooled
from gpurent.store import catalog as store
from gpurent.store.catalog import Digest
from gpurent.telemetry import count, logger


@dataclass
class ProviderOutcome:
    provider: str
    ok: bool
    listings: int = 0
    written: int = 0
    deleted: int = 0
    error: str | None = None


@dataclass
class RefreshReport:
    outcomes: list[ProviderOutcome] = field(default_factory=list)
    fetch_seconds: float = 0.0  # the slowest provider's fetch: the least a refresh can take
    seconds: float = 0.0  # the whole refresh

    @property
    def efficiency(self) -> float:
        """The slowest fetch over the whole refresh (1.0: the writes cost no time of their own)."""
        return self.fetch_seconds / self.seconds if self.seconds else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {"fetchSeconds": round(self.fetch_seconds, 3), "seconds": round(self.seconds, 3),
                "providers": [o.__dict__ for o in self.outcomes]}


async def _fetch(adapter: ProviderAdapter) -> list[Offer] | ProviderError:
    try:
        return await adapter.list_offers()
    except ProviderError as exc:
        return exc


def offer_hash(li: Listing) -> str:
    """What decides whether a listing must be written again (`Listing.offer_fields`)."""
    return hashlib.blake2b(repr(li.offer_fields()).encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class Stored:
    """What the table holds for a provider, as its digest says (or its listings, read)."""

    entries: Digest
    from_digest: bool


def _stored(provider: str, status: dict[str, Any] | None, now: float) -> Stored:
    """Read what is stored (the digest, unless there is none or the last refresh died while
    writing), then mark the status `writing` for this refresh."""
    digest = store.get_digest(provider) if status is not None and status.get("writing") is None else None
    stored = Stored(digest, True) if digest is not None else Stored(
        {li.id: (offer_hash(li), li.first_seen_at) for li in store.provider_listings(provider)}, False)
    store.put_status(provider, {**(status or {}), "writing": now})
    return stored


def _apply(provider: str, offers: list[Offer], now: float, stored: Stored) -> ProviderOutcome:
    margin = settings().catalog_margin_bps
    fresh: dict[str, Listing] = {}
    for offer in offers:
        li = from_offer(offer, margin, now)
        if li.id not in fresh or li.price_per_hour_cents < fresh[li.id].price_per_hour_cents:
            fresh[li.id] = li
    digest: Digest = {}
    puts: list[Listing] = []
    for lid, li in fresh.items():
        h, previous = offer_hash(li), stored.entries.get(lid)
        first = now if previous is None or previous[1] is None else previous[1]
        digest[lid] = (h, first)
        if previous is None or previous[0] != h:
            puts.append(replace(li, first_seen_at=first))
    deletes = [lid for lid in stored.entries if lid not in fresh]
    if puts or deletes or not stored.from_digest:
        # The digest beside the listings (one round trip after the fetch, not two): what says
        # the two agree is the status, written after both.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog-digest") as pool:
            digest_written = pool.submit(contextvars.copy_context().run, store.put_digest, provider, digest)
            try:
                store.write_listings(provider, puts, deletes)
            finally:
                digest_written.result()
    store.put_status(provider, {"lastSuccessAt": now, "listingCount": len(fresh), "lastError": None,
                                "consecutiveFailures": 0})
    return ProviderOutcome(provider, True, len(fresh), len(puts), len(deletes))


def _failed(provider: str, error: ProviderError, status: dict[str, Any] | None, now: float,
            stored: Stored) -> ProviderOutcome:
    previous = status or {}
    last_ok = previous.get("lastSuccessAt")
    deleted = 0
    if last_ok is None or now - float(last_ok) > catalog.STALE_AFTER:
        stale = list(stored.entries)
        if stale:
            store.write_listings(provider, [], stale)
            deleted = len(stale)
        if stale or not stored.from_digest:
            store.put_digest(provider, {})
    store.put_status(provider, {
        "lastSuccessAt": last_ok,
        "listingCount": 0 if deleted else previous.get("listingCount", 0),
        "lastError": f"{error.kind}: {error.message}"[:500],
        "lastErrorAt": now,
        "consecutiveFailures": int(previous.get("consecutiveFailures", 0)) + 1,
    })
    return ProviderOutcome(provider, False, 0, 0, deleted, f"{error.kind}: {error.message}"[:500])


def refresh(adapters: dict[str, ProviderAdapter]) -> RefreshReport:
    """One refresh pass over every configured provider."""
    now = clock.now()
    fetched: dict[str, float] = {}

    async def one(code: str, adapter: ProviderAdapter,
                  statuses: asyncio.Future[dict[str, dict[str, Any]]]) -> ProviderOutcome:
        began = time.perf_counter()
        fetch = asyncio.ensure_future(_fetch(adapter))
        previous = await statuses
        stored = asyncio.ensure_future(asyncio.to_thread(_stored, code, previous.get(code), now))  # while it fetches
        result = await fetch
        fetched[code] = time.perf_counter() - began
        if isinstance(result, ProviderError):
            logger.warning("provider refresh failed", extra={"provider": code, "kind": result.kind})
            count("ProviderRefreshFailures")
            return await asyncio.to_thread(_failed, code, result, previous.get(code), now, await stored)
        outcome = await asyncio.to_thread(_apply, code, result, now, await stored)
        count("ListingsRefreshed", outcome.listings)
        return outcome

    async def every() -> list[ProviderOutcome]:
        async with pooled():  # one client: connections reused across a provider's many requests
            statuses = asyncio.ensure_future(asyncio.to_thread(store.get_statuses))
            return list(await asyncio.gather(*(one(c, a, statuses) for c, a in adapters.items())))

    t0 = time.perf_counter()
    outcomes = asyncio.run(every())
    report = RefreshReport(outcomes, max(fetched.values(), default=0.0), time.perf_counter() - t0)
    catalog.invalidate()
    return report
