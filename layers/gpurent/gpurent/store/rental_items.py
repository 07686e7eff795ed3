"""A rental as its item in the money table and back: `Rental` ↔ item (the camelCase
attributes the rows always had), the changes of an update, and a `ProviderIndex` item
→ `LiveRental`. No I/O: `store/rentals.py` reads and writes the items."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, cast

from gpurent.listing import Listing
from gpurent.records import LaunchAnswer, LiveRental, Rental, RentalChanges, RentalStatus, ShortRunRefund, StopReason
from gpurent.store.catalog import listing_from_item, listing_item

Item = dict[str, Any]


def camel(name: str) -> str:
    """A field's attribute name: `price_per_hour_cents` → `pricePerHourCents`."""
    head, *rest = name.split("_")
    return head + "".join(w.capitalize() for w in rest)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _short_run(value: Any) -> ShortRunRefund | None:
    if not value:
        return None
    return {"refunded": bool(value["refunded"]), "remaining": int(value["remaining"]), "limit": int(value["limit"]),
            "windowHours": int(value["windowHours"])}


def rental_from_item(item: Mapping[str, Any]) -> Rental:
    """A rental item (as `dynamo.from_item` gives it) → Rental."""
    g = item.get
    answer = g("launchAnswer")
    return Rental(
        id=str(item["id"]), user_id=str(item["userId"]), status=cast(RentalStatus, item["status"]),
        family_id=str(item["familyId"]), gpu_count=int(item["gpuCount"]), template_id=str(item["templateId"]),
        price_per_hour_cents=int(item["pricePerHourCents"]), listing_id=str(item["listingId"]),
        provider=str(item["provider"]), region=str(item["region"]), region_code=str(item["regionCode"]),
        model=str(item["model"]), offer=listing_from_item(item["offer"]) if g("offer") else None,
        created_at=float(item["createdAt"]),
        version=int(g("version", 1)), name=_opt_str(g("name")), region_filter=_opt_str(g("regionFilter")),
        idempotency_key=_opt_str(g("idempotencyKey")), ssh_key_count=int(g("sshKeyCount", 0)),
        reserve_cents=int(g("reserveCents", 0)), charged_cents=int(g("chargedCents", 0)),
        overage_cents=int(g("overageCents", 0)), refunded_cents=int(g("refundedCents", 0)),
        billed_seconds=int(g("billedSeconds", 0)), metered_until=_opt_float(g("meteredUntil")),
        overage_invoice_id=_opt_str(g("overageInvoiceId")), short_run_refund=_short_run(g("shortRunRefund")),
        auto_stop_after_hours=_opt_float(g("autoStopAfterHours")), max_total_cents=_opt_int(g("maxTotalCents")),
        attempts=tuple(str(a) for a in g("attempts") or ()), allocating_until=float(g("allocatingUntil", 0)),
        allocation_uncertain=bool(g("allocationUncertain")), instance_id=_opt_str(g("instanceId")),
        launch_answer=cast(LaunchAnswer, dict(answer)) if answer else None,
        host=_opt_str(g("host")), port=_opt_int(g("port")), running_at=_opt_float(g("runningAt")),
        last_checked_at=_opt_float(g("lastCheckedAt")), last_healthy_at=_opt_float(g("lastHealthyAt")),
        unhealthy_since=_opt_float(g("unhealthySince")), bad_checks=int(g("badChecks") or 0),
        provider_cost_cents_per_hour=_opt_int(g("providerCostCentsPerHour")),
        max_price_per_hour_cents=_opt_int(g("maxPricePerHourCents")),
        quoted_price_per_hour_cents=_opt_int(g("quotedPricePerHourCents")),
        stopped_at=_opt_float(g("stoppedAt")), stop_reason=cast(StopReason | None, g("stopReason")),
        error=_opt_str(g("error")), terminated_at=_opt_float(g("terminatedAt")),
    )


def _attribute(value: Any) -> Any:
    """A field's value as the item stores it (None: absent)."""
    if value is False:
        return None  # a flag (allocationUncertain) is stored only while it is set
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Listing):  # the listing a rental was placed on
        return listing_item(value.snapshot())
    if isinstance(value, dict):
        return dict(value)
    return value


# Counters stored only while they are not zero (a healthy rental carries no `badChecks`).
_ZERO_IS_ABSENT = frozenset({"badChecks"})


def _stored(name: str, value: Any) -> Any:
    return None if name in _ZERO_IS_ABSENT and value == 0 else _attribute(value)


def changes_item(changes: RentalChanges) -> Item:
    """The changed fields as the item's attributes (None: remove the attribute)."""
    return {camel(k): _stored(camel(k), v) for k, v in changes.items()}


def rental_item(r: Rental) -> Item:
    """The whole rental as its item's attributes (None values are left out when written)."""
    return {camel(f.name): _stored(camel(f.name), getattr(r, f.name)) for f in fields(Rental)}


def live_rental_from_item(item: Mapping[str, Any]) -> LiveRental:
    """A `ProviderIndex` item (keys + `LIVE_PROJECTION`) → LiveRental."""
    g = item.get
    status = str(item["activeSort"]).split("#", 1)[0]
    return LiveRental(
        id=str(item["sk"]).removeprefix("RENTAL#"), user_id=str(item["pk"]).removeprefix("USER#"),
        status=cast(RentalStatus, status), provider=str(item["provider"]), created_at=float(item["createdAt"]),
        instance_id=_opt_str(g("instanceId")), allocating_until=float(g("allocatingUntil", 0)),
        allocation_uncertain=bool(g("allocationUncertain")), running_at=_opt_float(g("runningAt")),
        last_healthy_at=_opt_float(g("lastHealthyAt")), unhealthy_since=_opt_float(g("unhealthySince")),
        bad_checks=int(g("badChecks") or 0), auto_stop_after_hours=_opt_float(g("autoStopAfterHours")),
        max_total_cents=_opt_int(g("maxTotalCents")), price_per_hour_cents=int(g("pricePerHourCents", 0)),
    )
