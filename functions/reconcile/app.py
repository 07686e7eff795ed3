"""Scheduled (every minute): advance live rentals and terminate orphaned instances."""

from __future__ import annotations

from typing import Any

from gpurent import rentals
from gpurent.telemetry import SCHEDULE, lambda_handler, logger


def reconcile(event: dict[str, Any], context: Any) -> dict[str, int]:
    counts = rentals.reconcile()
    logger.info("reconciled", extra=counts)
    return counts


handler = lambda_handler(reconcile, SCHEDULE)
