"""The `ProviderIndex` (the reconciler's read of live rentals) projects only what a pass
compares, and nothing a metering tick writes: the sweep updates every running rental every
minute, and an update that changes a projected attribute is written to the index too. The
`ActiveIndex` (the sweep's) projects its keys only, for the same reason."""

from __future__ import annotations

from typing import Any

import pytest

from gpurent import metering
from gpurent.store import rentals as rental_store
from infra.local import template
from tests.fakes.world import FakeWorld
from tests.unit.core.conftest import T0, rental, seed


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.capitalize() for w in rest)


def provider_index(name: str = rental_store.PROVIDER_INDEX) -> dict[str, Any]:
    spec = template.table_definitions()["MoneyTable"]["create"]
    (index,) = [g for g in spec["GlobalSecondaryIndexes"] if g["IndexName"] == name]
    return dict(index)


def test_the_active_index_projects_its_keys_only() -> None:
    index = provider_index(rental_store.ACTIVE_INDEX)
    assert [k["AttributeName"] for k in index["KeySchema"]] == ["activeKey", "activeSort"]
    assert index["Projection"] == {"ProjectionType": "KEYS_ONLY"}


def test_the_template_projects_what_the_store_reads() -> None:
    index = provider_index()
    assert [k["AttributeName"] for k in index["KeySchema"]] == ["provider", "activeSort"]
    assert index["Projection"]["ProjectionType"] == "INCLUDE"
    assert set(index["Projection"]["NonKeyAttributes"]) == set(rental_store.LIVE_PROJECTION)


def test_a_metering_tick_writes_no_attribute_the_index_projects(
        world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    r = seed(world, rental(), available=10_000)
    written: list[str] = []
    real = world.rentals.update_item

    def capture(user_id: str, rental_id: str, changes: Any, *args: Any, **kwargs: Any) -> Any:
        written.extend(_camel(k) for k in changes)
        return real(user_id, rental_id, changes, *args, **kwargs)

    monkeypatch.setattr(world.rentals, "update_item", capture)
    world.clock.set(T0 + 60)
    metering.meter_wallet(r.user_id, [world.rentals.get(r.user_id, r.id)], T0 + 60)  # type: ignore[list-item]
    assert written, "the tick wrote the rental"
    projected = {"provider", "activeSort", *rental_store.LIVE_PROJECTION}
    assert not projected & {*written, "version"}, projected & {*written, "version"}
