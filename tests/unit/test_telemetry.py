"""Every entry point goes through `telemetry.lambda_handler`: Powertools' logger context
(the API Gateway request id as correlation id) and EMF metrics carrying the function's name."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from gpurent import telemetry
from infra.local.functions import LocalContext


def _lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_metrics_carry_the_function_name_and_logs_the_request_id(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "0")
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")
    telemetry.logger.setLevel("INFO")

    def work(event: dict[str, Any], context: Any) -> dict[str, int]:
        telemetry.count("ServerErrors")
        telemetry.logger.info("working")
        return {"ok": 1}

    handler = telemetry.lambda_handler(work, telemetry.API)
    logs = io.StringIO()
    previous = telemetry.logger.registered_handler.setStream(logs)  # type: ignore[attr-defined]
    capsys.readouterr()
    for name in ("RentalsFunction", "BillingFunction"):
        event = {"requestContext": {"requestId": f"req-{name}"}}
        assert handler(event, LocalContext(name)) == {"ok": 1}
        lines = _lines(capsys.readouterr().out)
        emf = [x for x in lines if "_aws" in x and "ServerErrors" in x]
        assert len(emf) == 1, lines
        assert emf[0]["function_name"] == name and emf[0]["service"] == "gpurent"
        assert ["function_name", "service"] == sorted(emf[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0])
        log = next(x for x in _lines(logs.getvalue()) if x.get("message") == "working" and
                   x["function_name"] == name)
        assert log["correlation_id"] == f"req-{name}" and log["function_name"] == name
    telemetry.logger.registered_handler.setStream(previous)  # type: ignore[attr-defined]
    telemetry.logger.setLevel("WARNING")
