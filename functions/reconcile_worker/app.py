"""SQS (the reconcile queue, one message at a time): one provider's reconcile pass, or a chunk
of its changed rentals another worker handed on (`gpurent.reconciler.handle`).

A failed or timed-out pass is not retried (its message expires before it would be seen
again): the next minute's pass does the same work from the store and the provider's list.
"""

from __future__ import annotations

import json
from typing import Any

from gpurent import reconciler
from gpurent.telemetry import lambda_handler, logger


def work(event: dict[str, Any], context: Any) -> dict[str, Any]:
    seconds_left = context.get_remaining_time_in_millis() / 1000 if context is not None else None
    totals: dict[str, int] = {}
    for record in event.get("Records", []):
        body = json.loads(record["body"])
        counts = reconciler.handle(body, seconds_left)
        logger.info("reconciled", extra={"provider": body.get("provider"), **counts})
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
    return totals


handler = lambda_handler(work)
