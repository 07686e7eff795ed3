"""A provider that is not configured is off, not an error (issue 16 item 8).

A deployment passes every provider's ``<CODE>_API_KEY_PARAM``; one whose SSM parameter
does not exist (moto here) must leave the catalog refresh and the reconciler quiet: the
others refresh, nothing raises, the absence is logged once, and SSM is not asked again
every minute.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from gpurent import catalog, config, reconciler, rentals
from gpurent.providers import registry
from gpurent.store import secrets
from infra.local.events import schedule_event, sqs_event
from infra.local.functions import load_handler
from infra.simulators import Simulators
from tests.integration.conftest import World


@pytest.fixture
def ssm_calls() -> Iterator[list[str]]:
    """The SSM parameters asked for (GetParameter), counted on the store's client."""
    names: list[str] = []

    def hook(params: dict[str, Any], **_: Any) -> None:
        names.append(str(params.get("Name")))

    secrets.reset_client()
    secrets._provider("ssm").client.meta.events.register("before-parameter-build.ssm.GetParameter", hook)
    yield names
    secrets.reset_client()


@pytest.fixture
def only_vast_in_ssm(aws: None, sim_world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulators]:
    sims = sim_world.sims
    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name="/gpurent/test/vast-api-key", Value=sims.vast.api_key, Type="SecureString")
    for name, value in sims.settings().items():
        if not name.endswith("_API_KEY"):
            monkeypatch.setenv(name, value)
        else:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("PROVIDERS", raising=False)
    monkeypatch.setenv("VAST_API_KEY_PARAM", "/gpurent/test/vast-api-key")
    monkeypatch.setenv("RUNPOD_API_KEY_PARAM", "/gpurent/test/runpod-api-key")  # never created
    monkeypatch.setenv("LAMBDA_API_KEY_PARAM", "/gpurent/test/lambda-api-key")  # never created
    config.reset()
    registry.reset_off()
    registry.set_adapters(None)
    yield sims
    registry.reset_off()
    registry.set_adapters(None)
    catalog.invalidate()


def test_refresh_skips_unconfigured_providers_quietly(
        only_vast_in_ssm: Simulators, ssm_calls: list[str], caplog: pytest.LogCaptureFixture) -> None:
    handler = load_handler("functions/refresh/")
    with caplog.at_level(logging.INFO, logger="gpurent.providers"):
        first = handler(schedule_event(), None)
        second = handler(schedule_event(), None)
    for result in (first, second):
        assert [p["provider"] for p in result["providers"]] == ["vast"]
        assert result["providers"][0]["ok"] and result["providers"][0]["listings"] > 0
    off = [r.getMessage() for r in caplog.records if "is off" in r.getMessage()]
    assert len(off) == 2 and any("runpod" in m for m in off) and any("lambda" in m for m in off)  # once each
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # SSM: the vast key once (cached), each missing parameter once (remembered as missing)
    assert sorted(ssm_calls) == ["/gpurent/test/lambda-api-key", "/gpurent/test/runpod-api-key",
                                 "/gpurent/test/vast-api-key"]


def test_reconciler_skips_unconfigured_providers(only_vast_in_ssm: Simulators, ssm_calls: list[str]) -> None:
    handed = load_handler("functions/reconcile/")(schedule_event(), None)
    assert handed == {"handedOff": 3}  # the coordinator reads no key: each provider's worker finds out
    worker = load_handler("functions/reconcile_worker/")
    counts = [worker(sqs_event([body]), None) for body in reconciler.pending()]
    assert len(counts) == 3 and not any(c.get("errors") for c in counts), counts
    assert list(registry.adapters()) == ["vast"]
    listed = [(m, p) for m, p in only_vast_in_ssm.vast.requests if p == "/api/v1/instances/"]
    assert listed  # the configured provider is listed; the others are not asked at all
    assert not only_vast_in_ssm.runpod.requests and not only_vast_in_ssm.lambdacloud.requests
    assert rentals.reconcile()["errors"] == 0


def test_a_parameter_created_later_turns_the_provider_on(
        only_vast_in_ssm: Simulators, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "RUNPOD_API_KEY" not in registry.env_settings()
    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name="/gpurent/test/runpod-api-key", Value=only_vast_in_ssm.runpod.api_key, Type="SecureString")
    assert "RUNPOD_API_KEY" not in registry.env_settings()  # remembered as missing for a while
    monkeypatch.setattr(registry, "OFF_RECHECK_SECONDS", 0.0)
    assert registry.env_settings()["RUNPOD_API_KEY"] == only_vast_in_ssm.runpod.api_key
