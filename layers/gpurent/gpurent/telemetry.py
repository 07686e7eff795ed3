"""Powertools Logger and Metrics shared by every function (JSON logs, EMF metrics), and
`lambda_handler`, which every function's entry point goes through.

Logs carry ids and outcomes, never emails, codes, tokens or secrets.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

# An invocation that counted nothing (most do) is not worth a warning on every cold start.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger(service="gpurent")
metrics = Metrics(namespace="gpurent", service="gpurent")

# Where each kind of event carries the id that ties a function's log lines to its caller's
# (API Gateway's access log line for an HTTP request, the schedule's event id).
API = correlation_paths.API_GATEWAY_HTTP
SCHEDULE = correlation_paths.EVENT_BRIDGE

Handler = Callable[[dict[str, Any], Any], Any]


def count(name: str, value: int = 1) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def flush() -> None:
    """Emit the metrics recorded so far (EMF on stdout), if any (`lambda_handler` does it at the end)."""
    if metrics.metric_set:
        metrics.flush_metrics(raise_on_empty_metrics=False)


def lambda_handler(handler: Handler, correlation_id_path: str | None = None) -> Handler:
    """A function's entry point: Powertools' `inject_lambda_context` (cold start, function name
    and request id on every log line, `correlation_id` from the event) and `log_metrics` with the
    cold-start metric; every metric carries the function's name as a dimension (`function_name`,
    as Powertools names it on `ColdStart`), so the alarms can tell the functions apart."""

    @functools.wraps(handler)
    def with_function_dimension(event: dict[str, Any], context: Any) -> Any:
        # Set on this invocation's dimension set (cleared by each flush), not as a default one: a
        # process that runs several functions (the local stack, the tests) names each its own.
        metrics.dimension_set["function_name"] = str(context.function_name)
        return handler(event, context)

    measured = metrics.log_metrics(with_function_dimension, capture_cold_start_metric=True)
    entry: Handler = logger.inject_lambda_context(measured, correlation_id_path=correlation_id_path,
                                                  clear_state=True)
    entry.instrumented = True  # type: ignore[attr-defined]  # the template test checks every handler is
    return entry
