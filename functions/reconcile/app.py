"""Scheduled (every minute): advance live rentals and terminate orphaned instances."""

from __future__ import annotations

from typing import Any

from gpurent import rentals
from gpurent.telemetry import flush, logger


def handler(event: dict[str, Any], context: Any = None) -> dict[str, int]:
    counts = rentals.reconcile()
    logger.info("reconciled", extra=counts)
    flush()
    return counts
