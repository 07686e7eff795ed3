"""A rental's instance at its provider: the calls every part of a rental's life makes."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from gpurent.providers import registry
from gpurent.providers.base import Instance, ProviderError
from gpurent.records import Rental
from gpurent.telemetry import logger

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def find_by_label(r: Rental) -> Instance | None:
    """The instance its provider has under this rental's label (our rental id), if any."""
    for inst in run(registry.adapter(r.provider).list_instances()):
        if inst.label == r.id:
            return inst
    return None


def terminate_quietly(r: Rental) -> None:
    """Send terminate once now; a failure is retried by the reconciler until it succeeds."""
    if not r.instance_id:
        return
    try:
        run(registry.adapter(r.provider).terminate(r.instance_id))
    except ProviderError as exc:
        logger.warning("terminate failed; the reconciler retries", extra={"rentalId": r.id, "kind": exc.kind})
