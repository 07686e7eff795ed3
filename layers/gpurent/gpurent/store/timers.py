"""Timers through an SQS delay queue: a message sent with `DelaySeconds` (0…900,
to the second) reaches the timer function at its moment.

EventBridge Scheduler's one-time schedules fire with one-minute precision,
too coarse for "stop within 5 s of the money running out"; an SQS delay is
exact to the second and costs one request.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import boto3
from botocore.config import Config

from gpurent.config import settings

MAX_DELAY = 900  # SQS's limit

_client: Any = None
_lock = threading.Lock()


def _sqs() -> Any:
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                s = settings()
                _client = boto3.client("sqs", region_name=s.region, endpoint_url=s.sqs_endpoint,
                                       config=Config(retries={"max_attempts": 3, "mode": "standard"},
                                                     connect_timeout=2, read_timeout=5))
    return _client


def reset_client() -> None:
    global _client
    _client = None


def send(queue_url: str, body: dict[str, Any], delay_seconds: int) -> None:
    _sqs().send_message(QueueUrl=queue_url, MessageBody=json.dumps(body, sort_keys=True),
                        DelaySeconds=max(0, min(MAX_DELAY, delay_seconds)))
