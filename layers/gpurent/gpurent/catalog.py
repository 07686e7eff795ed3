"""The catalog as users and placement read it: live listings, filters,
cheapest-first order, facets, and the selection rule of `spec/decisions.md`.

Listings are read from the store at most once per 30 s per process (the
documented cache window), then filtered in memory. A provider whose last good
refresh is older than `STALE_AFTER` contributes nothing: a price we cannot
vouch for is not shown.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, replace
from typing import Any

from gpurent import clock, cursor, families, regions
from gpurent.config import settings
from gpurent.errors import ApiError
from gpurent.listing import Listing, select
from gpurent.providers import registry
from gpurent.store import catalog as store

CACHE_SECONDS = 30.0
STALE_AFTER = 600.0  # a failing provider's last good listings stay this long, then drop
GPU_COUNTS = (1, 2, 4, 8)


def public(listing: Listing) -> dict[str, Any]:
    return {
        "id": listing.id,
        "model": listing.model,
        "family": listing.family,
        "vramGb": listing.vram_gb,
        "gpuCount": listing.gpu_count,
        "pricePerHourCents": listing.price_per_hour_cents,
        "providerCode": listing.provider,
        "region": listing.region,
        "regionCode": listing.region_code,
        "interconnect": listing.interconnect,
    }


# ---------------------------------------------------------------- the live set (cached)

@dataclass
class _Cache:
    at: float = -1e18
    listings: tuple[Listing, ...] = ()
    facets: dict[str, Any] | None = None


_cache = _Cache()
_lock = threading.Lock()


def invalidate() -> None:
    global _cache
    with _lock:
        _cache = _Cache()


def live_listings() -> tuple[Listing, ...]:
    """Every listing of every provider whose last good refresh is fresh enough, cheapest first."""
    global _cache
    now = clock.now()
    with _lock:
        if now - _cache.at < CACHE_SECONDS and _cache.at <= now:
            return _cache.listings
    statuses = store.get_statuses()
    out: list[Listing] = []
    for provider, status in sorted(statuses.items()):
        seen = status.get("lastSuccessAt")
        if seen is None or now - float(seen) > STALE_AFTER:
            continue
        for item in store.provider_listings(provider):
            out.append(replace(item, seen_at=float(seen)))
    out.sort(key=lambda li: (li.price_per_hour_cents, li.id))
    with _lock:
        _cache = _Cache(now, tuple(out))
    return _cache.listings


# ---------------------------------------------------------------- filters

# A country code or a group (us, eu: two letters too; apac), any case: the contract states it
# (`regions.REGION_PATTERN`, JSON Schema and pydantic), so a request it allows is never refused here.
_REGION_RE = re.compile(r"^([A-Za-z]{2}|apac)\Z", re.IGNORECASE)


def check_region(region: str | None) -> str | None:
    if region is None:
        return None
    if not _REGION_RE.match(region):
        raise ApiError("validation_failed", "region must be an ISO country code (US, DE, JP…) or us, eu, apac",
                       {"region": "must be an ISO country code or us, eu, apac"})
    return region


def check_gpu_count(count: int) -> int:
    if count not in GPU_COUNTS:
        raise ApiError("invalid_count", "gpuCount must be 1, 2, 4 or 8", {"gpuCount": "must be 1, 2, 4 or 8"})
    return count


@dataclass(frozen=True)
class Filters:
    model: str | None = None
    min_vram_gb: float | None = None
    gpu_count: int | None = None
    region: str | None = None
    max_price_cents: float | None = None

    def matches(self, li: Listing) -> bool:
        if self.model:
            m = self.model.upper()
            if not (li.model == m or li.model.startswith(m + "_") or li.family == self.model.lower()):
                return False
        if self.min_vram_gb is not None and li.vram_gb < self.min_vram_gb:
            return False
        if self.gpu_count is not None and li.gpu_count != self.gpu_count:
            return False
        if self.region and not regions.region_matches(self.region, li.region_code):
            return False
        return self.max_price_cents is None or li.price_per_hour_cents <= self.max_price_cents


def listings_page(user_id: str, filters: Filters, raw_cursor: str | None, page_size: int) -> dict[str, Any]:
    after: tuple[int, str] | None = None
    if raw_cursor:
        data = cursor.decode("listings", user_id, raw_cursor)
        if not isinstance(data.get("p"), int) or not isinstance(data.get("i"), str):
            raise ApiError("validation_failed", "cursor is not valid", {"cursor": "not a cursor this list issued"})
        after = (data["p"], data["i"])
    matched = [li for li in live_listings() if filters.matches(li)]
    if after is not None:
        matched = [li for li in matched if (li.price_per_hour_cents, li.id) > after]
    page = matched[:page_size]
    next_cursor = None
    if len(matched) > page_size:
        last = page[-1]
        next_cursor = cursor.encode("listings", user_id, {"p": last.price_per_hour_cents, "i": last.id})
    return {"listings": [public(li) for li in page], "nextCursor": next_cursor}


def facets() -> dict[str, Any]:
    """Counts per model, region and provider, and the price range (same 30 s cache)."""
    listings = live_listings()
    with _lock:
        if _cache.facets is not None and _cache.listings is listings:
            return _cache.facets

    def counts(values: list[str]) -> list[dict[str, Any]]:
        tally: dict[str, int] = {}
        for v in values:
            tally[v] = tally.get(v, 0) + 1
        return [{"code": k, "count": v} for k, v in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))]

    prices = [li.price_per_hour_cents for li in listings]
    out = {
        "models": counts([li.model for li in listings]),
        "regions": counts([li.region_code for li in listings]),
        "providers": counts([li.provider for li in listings]),
        "priceRange": {"minCents": min(prices) if prices else None, "maxCents": max(prices) if prices else None},
    }
    with _lock:
        if _cache.listings is listings:
            _cache.facets = out
    return out


def families_public() -> list[dict[str, Any]]:
    listings = live_listings()
    out = []
    for fam in families.FAMILIES:
        mine = [li for li in listings if li.family == fam.id]
        out.append({
            "id": fam.id,
            "model": fam.model,
            "vramGb": fam.vram_gb,
            "displayName": fam.display_name,
            "gpuCounts": sorted({li.gpu_count for li in mine}),
            "listingCount": len(mine),
            "fromPricePerHourCents": min((li.price_per_hour_cents for li in mine if li.gpu_count == 1),
                                         default=None),
        })
    return out


# ---------------------------------------------------------------- selection

def candidates(family_id: str, gpu_count: int, region: str | None) -> list[Listing]:
    """Live listings with exactly this family and GPU count (and region), in selection order
    (`listing.select`: cheapest first; ties to the listing seen most recently, then by id)."""
    return select(live_listings(), family_id, gpu_count, region)


def check_family(family_id: str) -> families.Family:
    fam = families.get_family(family_id)
    if fam is None:
        ids = ", ".join(f.id for f in families.FAMILIES)
        raise ApiError("validation_failed", f"familyId must be one of {ids}", {"familyId": f"must be one of {ids}"})
    return fam


def preview(family_id: str, gpu_count: int, region: str | None, max_price: int | None = None) -> dict[str, Any]:
    found = candidates(family_id, gpu_count, region)
    if not found:
        raise ApiError("model_unavailable", "No provider available for this config. Try again in 30 s, "
                       "another region or another family.")
    best = found[0]
    if max_price is not None and max_price < best.price_per_hour_cents:
        raise ApiError("model_unavailable", f"No listing at or below maxPricePerHourCents ({max_price}); the "
                       f"cheapest is {best.price_per_hour_cents} cents per hour.",
                       {"cheapestPricePerHourCents": best.price_per_hour_cents})
    return {
        "pricePerHourCents": best.price_per_hour_cents,
        "estimatedProvisionSeconds": registry.provision_seconds(best.provider),
        "matchedListing": {"id": best.id, "providerCode": best.provider, "region": best.region,
                           "model": best.model},
    }


def margin_bps() -> int:
    return settings().catalog_margin_bps
