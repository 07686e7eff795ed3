"""Timers: in AWS an SQS delay-queue message (moto), locally an in-process heap;
the timer function reports failures per message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from gpurent import config, timers
from gpurent.store import timers as timer_store
from infra.local.events import sqs_event
from infra.local.functions import load_handler


@pytest.fixture
def queue(aws, monkeypatch) -> Iterator[str]:
    url = boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="timers")["QueueUrl"]
    monkeypatch.setenv("TIMER_QUEUE_URL", url)
    config.reset()
    timer_store.reset_client()
    yield url
    monkeypatch.delenv("TIMER_QUEUE_URL")
    config.reset()
    timer_store.reset_client()


def _receive(url: str) -> list[dict[str, Any]]:
    got = boto3.client("sqs", region_name="us-east-1").receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    return [json.loads(m["Body"]) for m in got.get("Messages", [])]


def test_a_timer_is_an_sqs_message_delayed_to_its_second(queue: str, clock) -> None:
    timers.arm("usr_a", clock.now())  # due now: visible at once
    timers.arm("usr_b", clock.now() + 120, "rent_x")  # due in two minutes: hidden until then
    got = _receive(queue)
    assert got == [{"userId": "usr_a", "due": clock.now()}]
    assert timers.next_due() is None  # nothing kept in process when a queue is configured


def test_in_process_timers_come_due_in_order_once(aws, clock) -> None:
    now = clock.now()
    timers.arm("usr_b", now + 20)
    timers.arm("usr_a", now + 10)
    timers.arm("usr_a", now + 10)  # the same second again (the sweep re-arms): kept once
    timers.arm("usr_a", now + 10, "rent_1")  # a rental follow-up is a different timer
    assert timers.due(now + 5) == []
    assert [(t.user_id, t.rental_id) for t in timers.due(now + 10)] == [("usr_a", ""), ("usr_a", "rent_1")]
    assert [t.user_id for t in timers.due(now + 60)] == ["usr_b"]
    assert timers.next_due() is None


def test_the_timer_function_reports_only_the_failed_message(aws, clock, monkeypatch) -> None:
    from gpurent import metering

    seen: list[str] = []

    def on_timer(user_id: str) -> dict[str, int]:
        seen.append(user_id)
        if user_id == "usr_bad":
            raise RuntimeError("boom")
        return {"rentals": 0, "chargedCents": 0, "exhausted": 0}

    monkeypatch.setattr(metering, "on_timer", on_timer)
    event = sqs_event([{"userId": "usr_ok", "due": 1.0}, {"userId": "usr_bad", "due": 1.0}])
    out = load_handler("functions/timers/")(event, None)
    assert seen == ["usr_ok", "usr_bad"]
    assert out == {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["messageId"]}]}
