"""What a reconcile pass decides without any I/O: whether a live rental disagrees with its
provider's list (`needs_work`: the only rentals a pass reads whole, calls about or writes),
and the last moment a running pod was seen running (`last_healthy`)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gpurent.providers.base import Instance
from gpurent.providers.registry import provision_deadline
from gpurent.reconciler import INDEX_LAG, last_healthy, needs_work
from gpurent.records import LiveRental, PassRecord, Rental
from gpurent.rentals.instances import Listed, index
from tests.unit.core.conftest import T0, rental

NOW = T0 + 3600.0
COVER = NOW - INDEX_LAG


def live(**kw: object) -> LiveRental:
    base = LiveRental(id="rent_A", user_id="usr_A", status="running", provider="lambda", created_at=T0 - 60,
                      instance_id="i-1", running_at=T0, last_healthy_at=T0, price_per_hour_cents=3600)
    return replace(base, **kw)  # type: ignore[arg-type]


def listed(status: str = "running", iid: str = "i-1", label: str = "rent_A", **kw: object) -> Listed:
    host = "203.0.113.9" if status == "running" else None
    return index([Instance(iid, label, status, host, 22 if host else None, **kw)])  # type: ignore[arg-type]


def test_a_healthy_pod_its_list_shows_running_needs_nothing() -> None:
    assert not needs_work(live(), listed(), COVER, NOW)


@pytest.mark.parametrize(("why", "rental", "seen"), [
    ("its list shows it failed", live(), listed("failed")),
    ("its list shows it terminated", live(), listed("terminated")),
    ("its list is silent about it (gone, or forgotten)", live(), listed(iid="i-2", label="rent_B")),
    ("Lambda is ending it", live(), listed("stopped", ending=True)),
    ("it was degraded and must be cleared", live(bad_checks=1, unhealthy_since=NOW - 60), listed()),
    ("its health was pinned by a pass that did not finish", live(unhealthy_since=NOW - 60), listed()),
    ("its autoStopAfterHours is due", live(auto_stop_after_hours=0.5), listed()),
    ("its maxTotalCents is reached", live(max_total_cents=100), listed()),
])
def test_a_running_pod_needs_work_when(why: str, rental: LiveRental, seen: Listed) -> None:
    assert needs_work(rental, seen, COVER, NOW), why


def test_a_running_pod_is_not_judged_without_a_list_or_before_the_index_shows_it() -> None:
    assert not needs_work(live(), None, COVER, NOW)  # the list failed: an API error is not a bad check
    assert needs_work(live(auto_stop_after_hours=0.5), None, COVER, NOW)  # … but a limit stops it anyway
    new = live(running_at=COVER + 1, last_healthy_at=COVER + 1)
    assert not needs_work(new, listed("provisioning"), COVER, NOW)  # running after the index was read


def test_provisioning_and_stopping() -> None:
    booting = live(status="provisioning", running_at=None, last_healthy_at=None, created_at=NOW - 30)
    assert not needs_work(booting, listed("provisioning"), COVER, NOW)  # still booting: nothing to write
    assert needs_work(booting, listed("running"), COVER, NOW)
    assert needs_work(booting, listed("failed"), COVER, NOW)
    assert needs_work(booting, None, COVER, NOW)  # no list: one get each (few, transient)
    late = replace(booting, created_at=NOW - provision_deadline("lambda") - 1)
    assert needs_work(late, listed("provisioning"), COVER, NOW)  # past its provider's deadline
    died = replace(booting, instance_id=None, allocating_until=NOW - 1)
    assert needs_work(died, listed(), COVER, NOW)  # its launch died: finished from the list
    assert not needs_work(died, None, COVER, NOW)  # … once there is a list
    assert not needs_work(replace(died, allocating_until=NOW + 1), listed(), COVER, NOW)  # a launch holds it
    assert needs_work(live(status="stopping"), listed("terminated"), COVER, NOW)
    assert needs_work(live(status="stopping"), listed("running"), COVER, NOW)


def running_rental(**kw: object) -> Rental:
    return rental(**kw)


def test_last_healthy_is_the_last_pass_that_saw_it() -> None:
    r = running_rental(running_at=T0, last_healthy_at=T0)
    record = PassRecord("lambda", listed_at=T0 + 1800, cover_from=T0 + 1790)
    assert last_healthy(r, record) == T0 + 1800
    assert last_healthy(r, None) == T0  # no pass recorded: its own last write
    # Not covered: running since after the pass read the index, or a bad check since.
    assert last_healthy(running_rental(running_at=T0 + 1795, last_healthy_at=T0 + 1795), record) == T0 + 1795
    assert last_healthy(replace(r, bad_checks=1, unhealthy_since=T0 + 1000), record) == T0
    assert last_healthy(replace(r, unhealthy_since=T0 + 1000), record) == T0
    # A later write of its own wins over an older pass.
    assert last_healthy(replace(r, last_healthy_at=T0 + 1900), record) == T0 + 1900
