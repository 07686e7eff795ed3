"""Scheduled (every minute): charge every running rental up to now, one transaction per wallet."""

from __future__ import annotations

from typing import Any

from gpurent import metering
from gpurent.telemetry import SCHEDULE, lambda_handler, logger


def sweep(event: dict[str, Any], context: Any) -> dict[str, int]:
    report = metering.sweep()
    logger.info("metering sweep", extra=report)
    return report


handler = lambda_handler(sweep, SCHEDULE)
