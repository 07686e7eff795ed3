"""The scheduled catalog refresh: every provider fetched concurrently (the
refresh takes about as long as the slowest provider, not the sum), offers
normalised into listings with stable `lst_` ids and our margin, written with
batch writes (only what changed), vanished listings deleted, and one status
item per provider.

A provider that fails keeps its last good listings until they are
`catalog.STALE_AFTER` old; readers stop showing them then, and the next
refresh deletes them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from typing import Any

from gpurent import catalog, clock
from gpurent.config import settings
from gpurent.listing import Listing, from_offer
from gpurent.providers.base import Offer, ProviderAdapter, ProviderError
from gpurent.store import catalog as store
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
    fetch_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"fetchSeconds": round(self.fetch_seconds, 3),
                "providers": [o.__dict__ for o in self.outcomes]}


async def _fetch(adapter: ProviderAdapter) -> list[Offer] | ProviderError:
    try:
        return await adapter.list_offers()
    except ProviderError as exc:
        return exc


def _apply(provider: str, offers: list[Offer], now: float) -> ProviderOutcome:
    margin = settings().catalog_margin_bps
    fresh: dict[str, Listing] = {}
    for offer in offers:
        li = from_offer(offer, margin, now)
        if li.id not in fresh or li.price_per_hour_cents < fresh[li.id].price_per_hour_cents:
            fresh[li.id] = li
    existing = {i.id: i for i in store.provider_listings(provider)}
    puts = [replace(li, first_seen_at=_first_seen(existing.get(lid), now))
            for lid, li in fresh.items() if lid not in existing or not existing[lid].same_offer(li)]
    deletes = [lid for lid in existing if lid not in fresh]
    store.write_listings(provider, puts, deletes)
    store.put_status(provider, {"lastSuccessAt": now, "listingCount": len(fresh), "lastError": None,
                                "consecutiveFailures": 0})
    return ProviderOutcome(provider, True, len(fresh), len(puts), len(deletes))


def _first_seen(previous: Listing | None, now: float) -> float:
    if previous is None or previous.first_seen_at is None:
        return now
    return previous.first_seen_at


def _failed(provider: str, error: ProviderError, status: dict[str, Any] | None, now: float) -> ProviderOutcome:
    previous = status or {}
    last_ok = previous.get("lastSuccessAt")
    deleted = 0
    if last_ok is None or now - float(last_ok) > catalog.STALE_AFTER:
        stale = [i.id for i in store.provider_listings(provider)]
        if stale:
            store.write_listings(provider, [], stale)
            deleted = len(stale)
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
    statuses = store.get_statuses()

    async def fetch_all() -> list[list[Offer] | ProviderError]:
        return list(await asyncio.gather(*(_fetch(a) for a in adapters.values())))

    t0 = time.perf_counter()
    results = asyncio.run(fetch_all())
    report = RefreshReport(fetch_seconds=time.perf_counter() - t0)
    for (code, _adapter), result in zip(adapters.items(), results, strict=True):
        if isinstance(result, ProviderError):
            logger.warning("provider refresh failed", extra={"provider": code, "kind": result.kind})
            count("ProviderRefreshFailures")
            report.outcomes.append(_failed(code, result, statuses.get(code), now))
        else:
            report.outcomes.append(_apply(code, result, now))
            count("ListingsRefreshed", report.outcomes[-1].listings)
    catalog.invalidate()
    return report
