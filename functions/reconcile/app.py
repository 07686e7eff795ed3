"""Scheduled (every minute): the reconciler's coordinator. It hands each provider's pass to a
worker through the reconcile queue (`gpurent.reconciler.dispatch`); it reads no table, calls
no provider and holds no secret."""

from __future__ import annotations

from typing import Any

from gpurent import reconciler
from gpurent.telemetry import SCHEDULE, lambda_handler, logger


def reconcile(event: dict[str, Any], context: Any) -> dict[str, int]:
    counts = dict(reconciler.dispatch())
    logger.info("reconcile handed off", extra=counts)
    return counts


handler = lambda_handler(reconcile, SCHEDULE)
