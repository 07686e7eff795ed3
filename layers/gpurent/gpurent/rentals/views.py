"""What a rental looks like to its owner: its answers, its meter, its list, and what it cost."""

from __future__ import annotations

from typing import Any

from gpurent import clock, ids
from gpurent.errors import ApiError
from gpurent.money import charge_for_seconds, whole_seconds
from gpurent.store import rentals as store

STATUSES = ("provisioning", "running", "stopping", "stopped", "failed")


def metered_cents(r: dict[str, Any]) -> int:
    """What the rental's usage has been metered at so far: taken from the wallet plus overage."""
    return int(r.get("chargedCents", 0)) + int(r.get("overageCents", 0))


def usage_cents(r: dict[str, Any]) -> int:
    """A settled rental's cost to the user: charged net of refunds, plus the invoiced overage."""
    return metered_cents(r) - int(r.get("refundedCents", 0))


def charged_now(r: dict[str, Any], now: float) -> tuple[int, int]:
    """(billed seconds, total charged cents) as of `now`: live while running."""
    if r["status"] == "running" and r.get("runningAt") is not None:
        seconds = whole_seconds(now - float(r["runningAt"]))
        return seconds, charge_for_seconds(seconds, int(r["pricePerHourCents"]))
    return int(r.get("billedSeconds", 0)), usage_cents(r)


def public(r: dict[str, Any], full: bool = True) -> dict[str, Any]:
    _, charged = charged_now(r, clock.now())
    out = {
        "id": r["id"],
        "name": r.get("name"),
        "status": r["status"],
        "familyId": r["familyId"],
        "gpuCount": int(r["gpuCount"]),
        "pricePerHourCents": int(r["pricePerHourCents"]),
        "host": r.get("host"),
        "port": r.get("port"),
        "region": r["region"],
        "startedAt": clock.iso(r["createdAt"]),
        "stoppedAt": clock.iso(r["stoppedAt"]) if r.get("stoppedAt") else None,
        "totalChargedCents": charged,
        # extensions
        "templateId": r["templateId"],
        "runningAt": clock.iso(r["runningAt"]) if r.get("runningAt") else None,
        "autoStopAfterHours": r.get("autoStopAfterHours"),
        "maxTotalCents": r.get("maxTotalCents"),
        "stopReason": r.get("stopReason"),
    }
    if full:
        out["provider"] = r["provider"]
        out["error"] = r.get("error")
    return out


def launch_answer(r: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "status": r["status"],
        "host": r.get("host"),
        "port": r.get("port"),
        "pricePerHourCents": int(r["pricePerHourCents"]),
        "startedAt": clock.iso(r["createdAt"]),
        "warnings": warnings,
    }


def get_owned(user_id: str, rental_id: str) -> dict[str, Any]:
    """The caller's rental, or 404 `rental_not_found` (never a 403, never a leak)."""
    if not ids.is_id(rental_id, "rent"):
        raise ApiError("rental_not_found", "No rental with that id")
    r = store.get(user_id, rental_id)
    if r is None:
        raise ApiError("rental_not_found", "No rental with that id")
    return r


def list_page(user_id: str, status: str | None, raw_cursor: str | None, page_size: int) -> dict[str, Any]:
    from gpurent import cursor

    if status is not None and status not in STATUSES:
        raise ApiError("validation_failed", f"status must be one of {', '.join(STATUSES)}",
                       {"status": f"must be one of {', '.join(STATUSES)}"})
    before = None
    if raw_cursor:
        before = cursor.decode("rentals", user_id, raw_cursor).get("before")
        if not ids.is_id(before, "rent"):
            raise ApiError("validation_failed", "cursor is not valid", {"cursor": "not a cursor this list issued"})
    rows, more = store.list_for_user(user_id, before, page_size, status)
    next_cursor = cursor.encode("rentals", user_id, {"before": rows[-1]["id"]}) if more and rows else None
    return {"rentals": [public(r, full=False) for r in rows], "nextCursor": next_cursor}


def meter(r: dict[str, Any]) -> dict[str, Any]:
    seconds, charged = charged_now(r, clock.now())
    if r["status"] != "running":
        charged = metered_cents(r)  # the formula's charge for its seconds (before any refund)
    last = r.get("lastHealthyAt") if r["status"] == "running" else None
    if r["status"] == "running":
        last = clock.now()
    return {
        "rentalId": r["id"],
        "ratePerHour": int(r["pricePerHourCents"]) / 100,
        "secondsBilled": seconds,
        "currentChargeCents": charged,
        "lastHeartbeatAt": clock.iso(last) if last else None,
    }
