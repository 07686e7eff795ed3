"""Scheduled (every minute): refresh the catalog from every provider."""

from __future__ import annotations

from typing import Any

from gpurent import catalog_refresh
from gpurent.providers.registry import build_adapters, env_settings
from gpurent.telemetry import flush, logger


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    report = catalog_refresh.refresh(build_adapters(env_settings()))
    logger.info("catalog refreshed", extra=report.as_dict())
    flush()
    return report.as_dict()
