"""The metering sweep (`gpurent.sweep`).

Scheduled every minute: the coordinator hands each `ActiveIndex` shard to a worker
through the sweep queue (without a queue it charges every shard itself), then re-arms
the outbox timer of any user whose side effects are overdue (the safety net of
`gpurent.outbox`). From the sweep queue: a worker charges one part's wallets, handing
on what it has no time for. A failed part is reported back alone (partial batch
response) so SQS redelivers just that one; charging is idempotent, so a redelivery
charges nothing twice.
"""

from __future__ import annotations

import json
from typing import Any

from gpurent import outbox, sweep
from gpurent.telemetry import SCHEDULE, count, lambda_handler, logger


def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if "Records" not in event:
        answer: dict[str, Any] = sweep.start().as_dict()
        try:
            answer["outboxRearmed"] = outbox.rearm_overdue()
        except Exception:
            logger.exception("re-arming overdue outboxes failed; the next sweep tries again")
        logger.info("metering sweep", extra=answer)
        return answer
    failures = []
    total = sweep.Report()
    for record in event["Records"]:
        try:
            part = sweep.Part.from_body(json.loads(record["body"]))
            report = sweep.run_part(part, sweep.time_left_of(context))
            total.add(report)
        except Exception:
            logger.exception("sweep part failed; SQS redelivers it", extra={"messageId": record.get("messageId")})
            failures.append({"itemIdentifier": record.get("messageId", "")})
    count("RentalsMetered", total.rentals)
    logger.info("metering sweep part", extra=total.as_dict())
    if failures:
        count("SweepPartFailures", len(failures))
    return {"batchItemFailures": failures}


handler = lambda_handler(run, SCHEDULE)
