"""Scheduled (every minute): charge every running rental up to now, one transaction per wallet."""

from __future__ import annotations

from typing import Any

from gpurent import metering
from gpurent.telemetry import flush, logger


def handler(event: dict[str, Any], context: Any = None) -> dict[str, int]:
    report = metering.sweep()
    logger.info("metering sweep", extra=report)
    flush()
    return report
