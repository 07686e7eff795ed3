"""Rentals against providers as they really behave (issue 16), through the real handlers
and the simulators: refusals in the providers' own words, multi-GPU prices, machines
stuck before running, flaky health, Lambda preemption, price tolerance.

Each money-moving test ends with `check_invariants`."""

from __future__ import annotations

from typing import Any

import pytest

from gpurent import catalog
from gpurent.store import rentals as rental_store
from tests.conftest import Api
from tests.integration.conftest import World
from tests.integration.helpers import envelope
from tests.integration.test_rentals import FUNDS, balance, get, launch, launched
from tests.walletkit import check_invariants

# ---------------------------------------------------------------- refusals (item 5)


def runpod_ties(world: World, family: str = "rtx-4090") -> list[dict[str, Any]]:
    """RunPod only: the family ×1 at its list price in several data centres (a tie)."""
    world.install(providers="runpod")
    found = catalog.candidates(family, 1, None)
    tied = [c for c in found if c["pricePerHourCents"] == found[0]["pricePerHourCents"]]
    assert len(tied) >= 2, found
    return found


def data_centre(listing: dict[str, Any]) -> str:
    return str(listing["offerKey"]).split("|")[2]


def test_runpod_saying_no_instances_are_available_fails_over_to_the_next_listing(
    api: Api, funded_user: dict[str, Any], sim_world: World, aws: None,
) -> None:
    """RunPod's real refusal when a data centre emptied since the refresh ("There are no longer
    any instances available ...") is capacity: the launch goes on to the next listing."""
    found = runpod_ties(sim_world)
    first, second = found[0], found[1]
    rp = sim_world.sims.runpod
    type_id = str(first["offerKey"]).split("|")[0]
    with rp.lock:
        rp.stock[(type_id, data_centre(first))] = 0
    answer = launched(api)
    row = rental_store.get(funded_user["id"], answer["id"])
    assert row is not None and row["listingId"] == second["id"] and row["attempts"] == [first["id"]]
    (inst,) = sim_world.labelled(answer["id"])
    assert rp.instances[inst["id"]].details["dataCenterId"] == data_centre(second)
    check_invariants(funded_user["id"])


def test_runpod_words_we_do_not_know_fail_the_launch_without_failover(
    api: Api, funded_user: dict[str, Any], sim_world: World, aws: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    runpod_ties(sim_world)
    adapter = sim_world.adapters["runpod"]
    tried: list[str] = []
    real = adapter.allocate

    async def counting(req: Any) -> str:
        tried.append(req.offer.offer_key)
        return await real(req)

    monkeypatch.setattr(adapter, "allocate", counting)
    sim_world.sims.runpod.set_knobs(allocate="refuse", refusal_text="The flux capacitor is misaligned")
    err = envelope(launch(api), 400, "model_unavailable")
    assert "flux capacitor" in err["message"]
    assert len(tried) == 1  # unknown words are transient: no failover
    assert get(api, err["details"]["rentalId"])["status"] == "failed"
    assert (balance(api)["availableCents"], balance(api)["reservedCents"]) == (FUNDS, 0)
    check_invariants(funded_user["id"])
