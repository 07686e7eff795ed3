"""Powertools Logger and Metrics shared by every function (JSON logs, EMF metrics).

Logs carry ids and outcomes, never emails, codes, tokens or secrets.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger(service="gpurent")
metrics = Metrics(namespace="gpurent", service="gpurent")


def count(name: str, value: int = 1) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def flush() -> None:
    """Emit this invocation's metrics (EMF on stdout), if it recorded any."""
    if metrics.metric_set:
        metrics.flush_metrics(raise_on_empty_metrics=False)
