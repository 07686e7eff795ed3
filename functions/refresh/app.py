"""Scheduled (every minute): refresh the catalog from every provider."""

from __future__ import annotations

from typing import Any

from gpurent import catalog_refresh
from gpurent.providers.registry import build_adapters, env_settings
from gpurent.telemetry import SCHEDULE, lambda_handler, logger


def refresh(event: dict[str, Any], context: Any) -> dict[str, Any]:
    report = catalog_refresh.refresh(build_adapters(env_settings()))
    logger.info("catalog refreshed", extra=report.as_dict())
    return report.as_dict()


handler = lambda_handler(refresh, SCHEDULE)
