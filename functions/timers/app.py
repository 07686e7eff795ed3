"""SQS (a delay queue): a timer came due; meter that wallet now.

Each message names a wallet (`gpurent.timers`); metering it stops whatever is
due (an exhausted wallet, an `autoStopAfterHours` or `maxTotalCents` limit)
and arms the next timer. A message that also names a rental follows up that
rental (a stop waiting for the provider to confirm). A message of kind `auto_topup` runs the
auto-topup (`billing.autotopup.run`: finish a pending attempt, or claim and fire a due one): the
only place the card is charged off-session. A message of kind `outbox` does the user's pending
side effects (emails, Stripe invoice mirrors: `gpurent.outbox`). A failed message is reported back alone (partial
batch response) so SQS redelivers just that one.
"""

from __future__ import annotations

import json
from typing import Any

from gpurent import metering, outbox, rentals
from gpurent.billing import autotopup
from gpurent.telemetry import count, lambda_handler, logger


def due(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failures = []
    for record in event.get("Records", []):
        try:
            body = json.loads(record["body"])
            report: dict[str, Any]
            if body.get("kind") == "auto_topup":
                report = {"autoTopup": autotopup.run(str(body["userId"]))}
            elif body.get("kind") == "outbox":
                report = outbox.drain(str(body["userId"]))
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
