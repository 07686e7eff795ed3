"""A listing: one upstream offer at our price, and how placement picks one (pure, no I/O).

A listing's id is stable for the same upstream offer (`listing_id`); its price is our
cost plus margin, rounded up to a cent (`with_margin`). The catalog (`gpurent.catalog`)
reads the live ones; `store/catalog.py` converts them to and from their items.

Selection (`spec/decisions.md`): among the live listings of exactly the family, the GPU
count (and the region, when one is asked for), the cheapest first; ties go to the
listing seen most recently, then by id. A launch tries the first few in that order
(`rentals.launching`), never one dearer than the price it quoted.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gpurent import regions
from gpurent.providers.base import Offer

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


@dataclass(frozen=True)
class Listing:
    id: str  # "lst_…", stable for the same upstream offer
    provider: str  # a provider code of `providers.registry`
    offer_key: str  # the provider's own identity of the offer (`Offer.offer_key`)
    gpu_name: str  # the provider's raw GPU name
    family: str  # a family id of `gpurent.families`
    model: str  # the family's canonical model code
    vram_gb: int  # per GPU
    gpu_count: int
    cost_cents_per_hour: int  # what the provider charges us for the whole offer, cents/h rounded up
    price_per_hour_cents: int  # what users pay: cost plus margin, cents/h
    region: str  # label, "US-West"
    region_code: str  # ISO-3166 alpha-2
    interconnect: str | None = None  # "NVLink" | "PCIe"
    updated_at: float | None = None  # the refresh that last wrote it (epoch seconds)
    first_seen_at: float | None = None  # the refresh that first saw it
    seen_at: float = 0.0  # its provider's last good refresh (set when read, never stored)

    def same_offer(self, other: Listing) -> bool:
        """The same upstream offer at the same price (what the refresh rewrites on change)."""
        return self.offer_fields() == other.offer_fields()

    def offer_fields(self) -> tuple[Any, ...]:
        return (self.provider, self.offer_key, self.gpu_name, self.family, self.model, self.vram_gb, self.gpu_count,
                self.cost_cents_per_hour, self.price_per_hour_cents, self.region, self.region_code, self.interconnect)

    def snapshot(self) -> Listing:
        """The listing as a rental keeps it (the offer it was placed on, without refresh times)."""
        return Listing(self.id, self.provider, self.offer_key, self.gpu_name, self.family, self.model, self.vram_gb,
                       self.gpu_count, self.cost_cents_per_hour, self.price_per_hour_cents, self.region,
                       self.region_code, self.interconnect)

    def to_offer(self) -> Offer:
        """The offer to allocate at its provider."""
        return Offer(provider=self.provider, offer_key=self.offer_key, gpu_name=self.gpu_name, family=self.family,
                     model=self.model, vram_gb=self.vram_gb, gpu_count=self.gpu_count,
                     price_cents_per_hour=self.cost_cents_per_hour, region=self.region, region_code=self.region_code,
                     interconnect=self.interconnect)


@functools.lru_cache(maxsize=16_384)
def listing_id(provider: str, offer_key: str) -> str:
    """A stable `lst_` id for the same upstream offer (26 Crockford characters of a hash).
    Kept for the process's life: a warm refresh meets the same offers again each minute."""
    value = int.from_bytes(hashlib.sha256(f"{provider}\x00{offer_key}".encode()).digest()[:16], "big") >> 2
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "lst_" + "".join(reversed(chars))


def with_margin(cost_cents: int, margin_bps: int) -> int:
    """Our price: cost plus margin (basis points), rounded up to a whole cent."""
    return -(-cost_cents * (10_000 + margin_bps) // 10_000)


def from_offer(offer: Offer, margin_bps: int, now: float) -> Listing:
    """The listing of a provider's offer at our price, as a refresh at `now` writes it."""
    return Listing(
        id=listing_id(offer.provider, offer.offer_key), provider=offer.provider, offer_key=offer.offer_key,
        gpu_name=offer.gpu_name, family=offer.family, model=offer.model, vram_gb=offer.vram_gb,
        gpu_count=offer.gpu_count, cost_cents_per_hour=offer.price_cents_per_hour,
        price_per_hour_cents=with_margin(offer.price_cents_per_hour, margin_bps), region=offer.region,
        region_code=offer.region_code, interconnect=offer.interconnect, updated_at=now,
    )


def select(listings: Iterable[Listing], family_id: str, gpu_count: int, region: str | None) -> list[Listing]:
    """Listings of exactly this family and GPU count (and region), in selection order."""
    out = [
        li for li in listings
        if li.family == family_id and li.gpu_count == gpu_count
        and (region is None or regions.region_matches(region, li.region_code))
    ]
    out.sort(key=lambda li: (li.price_per_hour_cents, -li.seen_at, li.id))
    return out


def failover(candidates: Iterable[Listing], ceiling_cents: int, attempts: int) -> list[Listing]:
    """The listings a launch tries, in order: never dearer than its ceiling (the quote, or the
    launch's `maxPricePerHourCents`), at most `attempts`."""
    return [li for li in candidates if li.price_per_hour_cents <= ceiling_cents][:attempts]
