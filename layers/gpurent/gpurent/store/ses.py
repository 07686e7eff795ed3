"""Sending email through SES."""

from __future__ import annotations

import threading
from typing import Any

import boto3

from gpurent.config import settings

_client: Any = None
_lock = threading.Lock()


def _ses() -> Any:
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                s = settings()
                _client = boto3.client("ses", region_name=s.region, endpoint_url=s.ses_endpoint)
    return _client


def reset_client() -> None:
    global _client
    _client = None


def send_email(sender: str, to: str, subject: str, body: str) -> None:
    _ses().send_email(
        Source=sender,
        Destination={"ToAddresses": [to]},
        Message={
            "Subject": {"Data": subject, "Charset": "UTF-8"},
            "Body": {"Text": {"Data": body, "Charset": "UTF-8"}},
        },
    )
