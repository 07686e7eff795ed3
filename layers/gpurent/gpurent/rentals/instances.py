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


# What one reconcile pass learnt from a provider's one list-instances answer: our
# instances by instance id and by label (a rental id). None: no list (ask the provider).
Listed = dict[str, Instance]


def find_by_label(r: Rental, listed: Listed | None = None) -> Instance | None:
    """The instance its provider has under this rental's label (our rental id), if any:
    from this pass's list when there is one (a list is complete: absent = not there)."""
    if listed is not None:
        return listed.get(r.id)
    for inst in run(registry.adapter(r.provider).list_instances()):
        if inst.label == r.id:
            return inst
    return None


def current(r: Rental, listed: Listed | None = None) -> Instance | None:
    """The rental's instance as its provider sees it now: from this pass's list, or (no list,
    or the list is silent about it: terminated and forgotten, or not listed) one get."""
    assert r.instance_id
    if listed is not None:
        found = listed.get(r.instance_id)
        if found is not None:
            return found
    return run(registry.adapter(r.provider).get_instance(r.instance_id))


def list_all(codes: list[str] | None = None) -> dict[str, list[Instance] | ProviderError]:
    """Each configured provider's instances (ours), every provider at once: one
    list-instances answer each (paged where the provider pages)."""
    adapters = registry.adapters()
    wanted = [c for c in adapters if codes is None or c in codes]

    async def one(code: str) -> list[Instance] | ProviderError:
        try:
            return await adapters[code].list_instances()
        except ProviderError as exc:
            return exc

    async def every() -> list[list[Instance] | ProviderError]:
        return list(await asyncio.gather(*(one(c) for c in wanted)))

    return dict(zip(wanted, run(every()), strict=True))


def index(found: list[Instance]) -> Listed:
    out: Listed = {}
    for inst in found:
        out[inst.instance_id] = inst
        if inst.label:
            out[inst.label] = inst
    return out


def terminate_quietly(r: Rental) -> None:
    """Send terminate once now; a failure is retried by the reconciler until it succeeds."""
    if not r.instance_id:
        return
    try:
        run(registry.adapter(r.provider).terminate(r.instance_id))
    except ProviderError as exc:
        logger.warning("terminate failed; the reconciler retries", extra={"rentalId": r.id, "kind": exc.kind})
