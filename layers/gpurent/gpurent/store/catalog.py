"""Catalog records: one item per listing under its provider's partition
(`P#<provider>`, sk = listing id), one status item per provider (`STATUS`, sk = provider)
and one digest item per provider (`DIGEST`, sk = provider): each of its listings' offer
hash and first-seen time, so a refresh diffs against one item instead of reading every
listing."""

from __future__ import annotations

import contextvars
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gpurent.config import settings
from gpurent.listing import Listing
from gpurent.store.dynamo import client, from_item, key, to_item, to_values


def listing_from_item(item: dict[str, Any]) -> Listing:
    """A listing item (or a rental's snapshot of one) → Listing."""
    g = item.get
    updated, first = g("updatedAt"), g("firstSeenAt")
    return Listing(
        id=str(item["id"]), provider=str(item["provider"]), offer_key=str(item["offerKey"]),
        gpu_name=str(item["gpuName"]), family=str(item["family"]), model=str(item["model"]),
        vram_gb=int(item["vramGb"]), gpu_count=int(item["gpuCount"]),
        cost_cents_per_hour=int(item["costCentsPerHour"]), price_per_hour_cents=int(item["pricePerHourCents"]),
        region=str(item["region"]), region_code=str(item["regionCode"]),
        interconnect=str(g("interconnect")) if g("interconnect") is not None else None,
        updated_at=float(updated) if updated is not None else None,
        first_seen_at=float(first) if first is not None else None,
    )


def listing_item(li: Listing) -> dict[str, Any]:
    """A listing's attributes (a snapshot has no refresh times: those are left out)."""
    out: dict[str, Any] = {
        "id": li.id, "provider": li.provider, "offerKey": li.offer_key, "gpuName": li.gpu_name,
        "family": li.family, "model": li.model, "vramGb": li.vram_gb, "gpuCount": li.gpu_count,
        "costCentsPerHour": li.cost_cents_per_hour, "pricePerHourCents": li.price_per_hour_cents,
        "region": li.region, "regionCode": li.region_code, "interconnect": li.interconnect,
    }
    if li.updated_at is not None:
        out["updatedAt"] = li.updated_at
    if li.first_seen_at is not None:
        out["firstSeenAt"] = li.first_seen_at
    return out


def _table() -> str:
    return settings().catalog_table


def provider_listings(provider: str) -> list[Listing]:
    items: list[Listing] = []
    kwargs: dict[str, Any] = {
        "TableName": _table(),
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": to_values({":pk": f"P#{provider}"}),
    }
    while True:
        r = client().query(**kwargs)
        items.extend(listing_from_item(i) for i in (from_item(x) for x in r.get("Items", [])) if i is not None)
        if "LastEvaluatedKey" not in r:
            return items
        kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]


WRITERS = 8  # batch writes of one refresh in flight at once


def _write_batch(batch: list[dict[str, Any]]) -> int:
    """One BatchWriteItem of ≤ 25, re-sending unprocessed items with backoff. Returns request count."""
    calls, attempt = 0, 0
    pending: dict[str, Any] = {_table(): batch}
    while pending:
        calls += 1
        r = client().batch_write_item(RequestItems=pending)
        pending = r.get("UnprocessedItems") or {}
        if pending:
            attempt += 1
            if attempt > 8:
                raise RuntimeError("catalog batch write kept coming back unprocessed")
            time.sleep(min(1.0, 0.05 * 2**attempt))
    return calls


def _batch(requests: list[dict[str, Any]]) -> int:
    """BatchWriteItem in chunks of 25, `WRITERS` at once. Returns the request count."""
    batches = [requests[start:start + 25] for start in range(0, len(requests), 25)]
    if len(batches) <= 1:
        return sum(_write_batch(b) for b in batches)
    with ThreadPoolExecutor(max_workers=min(WRITERS, len(batches)), thread_name_prefix="catalog-write") as pool:
        # Each batch in a copy of this context, taken here (the caller's: which function is running).
        return sum(f.result() for f in [pool.submit(contextvars.copy_context().run, _write_batch, b)
                                        for b in batches])


def write_listings(provider: str, puts: list[Listing], deletes: list[str]) -> int:
    requests: list[dict[str, Any]] = [
        {"PutRequest": {"Item": to_item({"pk": f"P#{provider}", "sk": li.id, **listing_item(li)})}} for li in puts
    ]
    requests += [{"DeleteRequest": {"Key": key(f"P#{provider}", lid)}} for lid in deletes]
    return _batch(requests)


def get_statuses() -> dict[str, dict[str, Any]]:
    r = client().query(
        TableName=_table(),
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues=to_values({":pk": "STATUS"}),
        ConsistentRead=True,
    )
    out: dict[str, dict[str, Any]] = {}
    for raw in r.get("Items", []):
        item = from_item(raw)
        if item is not None:
            out[str(item["sk"])] = item
    return out


def put_status(provider: str, record: dict[str, Any]) -> None:
    item = {k: v for k, v in record.items() if k not in ("pk", "sk")}
    client().put_item(TableName=_table(), Item=to_item({"pk": "STATUS", "sk": provider, **item}))


# A provider's digest: listing id → (offer hash, first seen). One item holding one string (a line
# per listing: ~50 bytes), so up to about 7,000 listings; a larger one is not kept (the refresh
# reads the listings). One string, not a map: a map of 1,000 entries costs the client far more to
# build and to parse.
Digest = dict[str, tuple[str, float | None]]
DIGEST_MAX_BYTES = 350_000


def get_digest(provider: str) -> Digest | None:
    r = client().get_item(TableName=_table(), Key=key("DIGEST", provider), ConsistentRead=True)
    raw = r.get("Item", {}).get("entries")
    if raw is None:
        return None
    out: Digest = {}
    for line in raw["S"].splitlines():
        if not line.strip():
            continue  # an empty digest is stored as " " (no listings)
        lid, digest, first = line.split(" ")
        out[lid] = (digest, float(first) if first != "-" else None)
    return out


def put_digest(provider: str, digest: Digest) -> None:
    text = "\n".join(f"{lid} {h} {'-' if first is None else repr(first)}" for lid, (h, first) in digest.items())
    if len(text) > DIGEST_MAX_BYTES:
        client().put_item(TableName=_table(), Item={**key("DIGEST", provider), "tooLarge": {"BOOL": True}})
        return
    client().put_item(TableName=_table(), Item={**key("DIGEST", provider), "entries": {"S": text or " "}})
