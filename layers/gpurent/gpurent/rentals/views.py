"""What a rental looks like to its owner: its answers, its meter, its list, and what it cost."""

from __future__ import annotations

from typing import Any

from gpurent import clock, ids
from gpurent.errors import ApiError
from gpurent.money import charge_for_seconds, whole_seconds
from gpurent.records import STATUSES, LaunchAnswer, Rental, RentalStatus
from gpurent.store import rentals as store


def metered_cents(r: Rental) -> int:
    """What the rental's usage has been metered at so far: taken from the wallet plus overage."""
    return r.charged_cents + r.overage_cents


def usage_cents(r: Rental) -> int:
    """A settled rental's cost to the user: charged net of refunds, plus the invoiced overage."""
    return metered_cents(r) - r.refunded_cents


def charged_now(r: Rental, now: float) -> tuple[int, int]:
    """(billed seconds, total charged cents) as of `now`: live while running."""
    if r.status == "running" and r.running_at is not None:
        seconds = whole_seconds(now - r.running_at)
        return seconds, charge_for_seconds(seconds, r.price_per_hour_cents)
    return r.billed_seconds, usage_cents(r)


def _number(value: float | None) -> float | int | None:
    """A stored number as the API has always shown it: whole numbers without a fraction."""
    return int(value) if value is not None and float(value).is_integer() else value


def public(r: Rental, full: bool = True) -> dict[str, Any]:
    _, charged = charged_now(r, clock.now())
    out = {
        "id": r.id,
        "name": r.name,
        "status": r.status,
        "familyId": r.family_id,
        "gpuCount": r.gpu_count,
        "pricePerHourCents": r.price_per_hour_cents,
        "host": r.host,
        "port": r.port,
        "region": r.region,
        "startedAt": clock.iso(r.created_at),
        "stoppedAt": clock.iso(r.stopped_at) if r.stopped_at else None,
        "totalChargedCents": charged,
        # extensions
        "templateId": r.template_id,
        "runningAt": clock.iso(r.running_at) if r.running_at else None,
        "autoStopAfterHours": _number(r.auto_stop_after_hours),
        "maxTotalCents": r.max_total_cents,
        "stopReason": r.stop_reason,
    }
    if full:
        out["provider"] = r.provider
        out["error"] = r.error
    return out


def launch_answer(r: Rental, warnings: list[str]) -> LaunchAnswer:
    return {
        "id": r.id,
        "status": r.status,
        "host": r.host,
        "port": r.port,
        "pricePerHourCents": r.price_per_hour_cents,
        "startedAt": clock.iso(r.created_at),
        "warnings": warnings,
        "quotedPricePerHourCents": r.quoted_price_per_hour_cents or r.price_per_hour_cents,
    }


def get_owned(user_id: str, rental_id: str) -> Rental:
    """The caller's rental, or 404 `rental_not_found` (never a 403, never a leak)."""
    if not ids.is_id(rental_id, "rent"):
        raise ApiError("rental_not_found", "No rental with that id")
    r = store.get(user_id, rental_id)
    if r is None:
        raise ApiError("rental_not_found", "No rental with that id")
    return r


def _status(status: str | None) -> RentalStatus | None:
    for known in STATUSES:
        if status == known:
            return known
    if status is not None:
        raise ApiError("validation_failed", f"status must be one of {', '.join(STATUSES)}",
                       {"status": f"must be one of {', '.join(STATUSES)}"})
    return None


def list_page(user_id: str, status: str | None, raw_cursor: str | None, page_size: int) -> dict[str, Any]:
    from gpurent import cursor

    wanted = _status(status)
    before = None
    if raw_cursor:
        before = cursor.decode("rentals", user_id, raw_cursor).get("before")
        if not ids.is_id(before, "rent"):
            raise ApiError("validation_failed", "cursor is not valid", {"cursor": "not a cursor this list issued"})
    rows, more = store.list_for_user(user_id, before, page_size, wanted)
    next_cursor = cursor.encode("rentals", user_id, {"before": rows[-1].id}) if more and rows else None
    return {"rentals": [public(r, full=False) for r in rows], "nextCursor": next_cursor}


def meter(r: Rental) -> dict[str, Any]:
    seconds, charged = charged_now(r, clock.now())
    if r.status != "running":
        charged = metered_cents(r)  # the formula's charge for its seconds (before any refund)
    last = clock.now() if r.status == "running" else None
    return {
        "rentalId": r.id,
        "ratePerHour": r.price_per_hour_cents / 100,
        "secondsBilled": seconds,
        "currentChargeCents": charged,
        "lastHeartbeatAt": clock.iso(last) if last else None,
    }
