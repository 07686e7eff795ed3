"""Scheduled (every minute): charge every running rental up to now, one transaction per wallet;
then re-arm the outbox timer of any user whose side effects are overdue (the safety net of
`gpurent.outbox`)."""

from __future__ import annotations

from typing import Any

from gpurent import metering, outbox
from gpurent.telemetry import SCHEDULE, lambda_handler, logger


def sweep(event: dict[str, Any], context: Any) -> dict[str, int]:
    report = metering.sweep()
    try:
        report["outboxRearmed"] = outbox.rearm_overdue()
    except Exception:
        logger.exception("re-arming overdue outboxes failed; the next sweep tries again")
    logger.info("metering sweep", extra=report)
    return report


handler = lambda_handler(sweep, SCHEDULE)
