"""SQS (a delay queue): a timer came due; meter that wallet now.

Each message names a wallet (`gpurent.timers`); metering it stops whatever is
due (an exhausted wallet, an `autoStopAfterHours` or `maxTotalCents` limit)
and arms the next timer. A message that also names a rental follows up that
rental (a stop waiting for the provider to confirm). A failed message is reported back alone (partial
batch response) so SQS redelivers just that one.
"""

from __future__ import annotations

import json
from typing import Any

from gpurent import metering, rentals
from gpurent.billing import autotopup
from gpurent.telemetry import count, lambda_handler, logger


def due(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failures = []
    for record in event.get("Records", []):
        try:
            body = json.loads(record["body"])
            if body.get("kind") == "auto_topup":
                autotopup.resume(str(body["userId"]))
                report = {"resumed": 1}
            elif body.get("rentalId"):
                report = rentals.on_timer(str(body["userId"]), str(body["rentalId"]))
            else:
                report = metering.on_timer(str(body["userId"]))
            logger.info("timer", extra={"due": body.get("due"), **report})
        except Exception:
            logger.exception("timer failed; SQS redelivers it", extra={"messageId": record.get("messageId")})
            failures.append({"itemIdentifier": record.get("messageId", "")})
    if failures:
        count("TimerFailures", len(failures))  # each redelivered; the fifth failure goes to the DLQ
    return {"batchItemFailures": failures}


handler = lambda_handler(due)
