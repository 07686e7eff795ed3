"""Rentals through the real handlers and the provider simulators: api.md §3.4
(launch, list, get, stop, meter), §4.2-4.9 (reserve, metering, refunds,
statuses) and decisions.md "Money", "Catalog and placement", "Invariants".

Every money-moving test ends with `check_invariants` (invariants 1-4)."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gpurent import catalog, rentals, templates
from gpurent.listing import Listing
from gpurent.records import LedgerRow
from gpurent.store import money as money_store
from gpurent.store import rentals as rental_store
from tests.conftest import Api
from tests.integration.conftest import BOOT_SECONDS, Fund, Locking, World
from tests.integration.conftest import state as snapshot
from tests.integration.helpers import envelope, reconcile_through_health_grace
from tests.walletkit import check_invariants

RENTAL_ID = re.compile(r"rent_[0-9A-HJKMNP-TV-Z]{26}")
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
STATUSES = ("provisioning", "running", "stopping", "stopped", "failed")
GET_FIELDS = {"id", "name", "status", "familyId", "gpuCount", "pricePerHourCents", "host", "port", "region",
              "provider", "startedAt", "stoppedAt", "totalChargedCents", "error"}
LIST_FIELDS = GET_FIELDS - {"provider", "error"}
BASIC = {"familyId": "rtx-4090", "gpuCount": 1}
FUNDS = 100_000


# ---------------------------------------------------------------- helpers

def charge(seconds: int, rate: int) -> int:
    """round_half_up(seconds × rate / 3600), computed independently of the product."""
    return int((Decimal(seconds * rate) / 3600).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def ssh_key(comment: str = "alice@laptop") -> str:
    pub = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{pub} {comment}"


def add_key(api: Api, name: str = "laptop") -> str:
    line = ssh_key()
    r = api.post("/v1/ssh-keys", {"name": name, "publicKey": line})
    assert r.status == 200, r.body
    return line.rsplit(" ", 1)[0]  # "ssh-ed25519 AAAA…" without the comment


def launch(api: Api, body: dict[str, Any] | None = None, key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return api.post("/v1/rentals", BASIC if body is None else body, headers=headers)


def launched(api: Api, body: dict[str, Any] | None = None, key: str | None = None) -> dict[str, Any]:
    r = launch(api, body, key)
    assert r.status == 200, r.body
    return dict(r.json())


def get(api: Api, rid: str) -> dict[str, Any]:
    r = api.get(f"/v1/rentals/{rid}")
    assert r.status == 200, r.body
    return dict(r.json())


def balance(api: Api) -> dict[str, Any]:
    return dict(api.get("/v1/billing/balance").json())


def running(api: Api, clock: Any, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Launch, boot, and poll once: the rental as GET shows it, running."""
    rid = launched(api, body)["id"]
    clock.advance(BOOT_SECONDS + 1)
    got = get(api, rid)
    assert got["status"] == "running", got
    return got


def listings(api: Api, family: str, count: int, region: str | None = None) -> list[dict[str, Any]]:
    q = f"/v1/catalog/listings?model={family}&gpuCount={count}&pageSize=200" + (f"&region={region}" if region else "")
    r = api.get(q)
    assert r.status == 200, r.body
    return list(r.json()["listings"])


def ledger(user_id: str) -> list[LedgerRow]:
    return money_store.all_ledger(user_id)


def allocations(world: World) -> int:
    """Allocate calls the simulators answered: vast PUT ask and lambda launch requests (refused or
    not), and RunPod pods created (its GraphQL requests all share one path)."""
    n = 0
    for code, method, path in world.requests():
        if (code == "vast" and method == "PUT" and path.startswith("/api/v0/asks/")) or (
                code == "lambda" and path.endswith("/instance-operations/launch")):
            n += 1
    with world.sims.runpod.lock:
        n += world.sims.runpod._counter  # every runpod pod created draws a number
    return n


def tie_world(world: World) -> list[Listing]:
    """Lambda and RunPod only: Lambda offers rtx-4090 ×1 at one price in several regions
    (a tie), RunPod dearer. Returns the candidates in selection order."""
    world.install(providers="lambda,runpod")
    found = catalog.candidates("rtx-4090", 1, None)
    tied = [c for c in found if c.price_per_hour_cents == found[0].price_per_hour_cents]
    assert len(tied) >= 4 and {c.provider for c in tied} == {"lambda"}, found
    assert any(c.provider == "runpod" for c in found)
    return found


def lambda_region(listing: Listing) -> str:
    return str(listing.offer_key).split("|", 1)[1]


# ---------------------------------------------------------------- launch: the answer, the row, the allocation

def test_launch_takes_the_reserve_with_the_row_before_calling_the_provider(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_line = add_key(api)
    best = listings(api, "rtx-4090", 1)[0]
    seen: dict[str, Any] = {}
    transactions: list[list[dict[str, Any]]] = []
    real_transact = money_store.transact

    def spy_transact(items: list[dict[str, Any]]) -> Any:
        transactions.append(items)
        return real_transact(items)

    monkeypatch.setattr(money_store, "transact", spy_transact)
    adapter = world.adapters[best["providerCode"]]
    real_allocate = adapter.allocate

    async def spy_allocate(req: Any) -> str:
        # What the store holds at the moment of the provider call.
        seen["row"] = rental_store.get(funded_user["id"], req.rental_id)
        seen["balance"] = balance(api)
        seen["transactions"] = len(transactions)
        seen["req"] = req
        return await real_allocate(req)

    monkeypatch.setattr(adapter, "allocate", spy_allocate)
    r = launch(api)
    assert r.status == 200, r.body
    answer = r.json()
    assert set(answer) == {"id", "status", "host", "port", "pricePerHourCents", "startedAt", "warnings",
                           "quotedPricePerHourCents"}
    assert answer["quotedPricePerHourCents"] == answer["pricePerHourCents"]  # placed at the quote
    assert RENTAL_ID.fullmatch(answer["id"])
    assert answer["status"] == "provisioning" and answer["host"] is None and answer["port"] is None
    assert answer["pricePerHourCents"] == best["pricePerHourCents"]
    assert ISO.fullmatch(answer["startedAt"]) and answer["warnings"] == []

    row = seen["row"]
    assert row is not None, "the rental row must exist before the provider is called"
    assert row.status == "provisioning" and row.id == answer["id"]
    assert row.price_per_hour_cents == best["pricePerHourCents"] and row.reserve_cents == best["pricePerHourCents"]
    assert (row.listing_id, row.provider, row.region) == (best["id"], best["providerCode"], best["region"])
    assert not row.instance_id
    assert seen["balance"]["reservedCents"] == best["pricePerHourCents"]
    assert seen["balance"]["availableCents"] == FUNDS - best["pricePerHourCents"]
    # One transaction moved the money and wrote the row (with its owner index), before the call.
    assert seen["transactions"] == 1
    launch_tx = transactions[0]

    def keys_of(kind: str) -> set[tuple[str, str]]:
        out = set()
        for item in launch_tx:
            if kind in item:
                k = item[kind].get("Item") or item[kind].get("Key")
                out.add((k["pk"]["S"], k["sk"]["S"]))
        return out

    uid = funded_user["id"]
    assert (f"USER#{uid}", "WALLET") in keys_of("Update")
    assert (f"USER#{uid}", f"RENTAL#{answer['id']}") in keys_of("Put")
    assert (f"RENTAL#{answer['id']}", "OWNER") in keys_of("Put")
    assert seen["req"].rental_id == answer["id"]

    # The instance carries our rental id as its label, every key on file, and its id is stored.
    (inst,) = world.labelled(answer["id"])
    assert inst["provider"] == best["providerCode"]
    stored = rental_store.get(funded_user["id"], answer["id"])
    assert stored is not None and stored.instance_id == inst["id"]
    assert key_line in seen["req"].ssh_public_keys[0]
    check_invariants(funded_user["id"])


def test_every_ssh_key_on_file_goes_into_the_pod_and_no_warning(
    api: Api, funded_user: dict[str, Any], world: World,
) -> None:
    keys = [add_key(api, "laptop"), add_key(api, "desktop")]
    answer = launched(api)
    assert answer["warnings"] == []
    (inst,) = world.labelled(answer["id"])
    assert inst["provider"] == "vast"  # the cheapest rtx-4090 ×1 of the seeded world
    onstart = world.sims.vast.instances[inst["id"]].details["onstart"]
    for k in keys:
        assert k in onstart
    assert onstart.count("authorized_keys") >= 2


def test_no_ssh_key_on_file_is_allowed_with_a_warning(api: Api, funded_user: dict[str, Any], world: World) -> None:
    answer = launched(api)
    assert answer["status"] == "provisioning"
    assert isinstance(answer["warnings"], list) and len(answer["warnings"]) == 1
    assert isinstance(answer["warnings"][0], str) and "SSH" in answer["warnings"][0]
    assert len(world.labelled(answer["id"])) == 1


@pytest.mark.parametrize(("family", "count", "region"), [
    ("rtx-4090", 1, None), ("rtx-4090", 1, "US"), ("rtx-4090", 1, "eu"), ("h100-80gb", 8, None),
    ("b200", 1, "us"),
])
def test_the_cheapest_matching_listing_is_used_and_its_price_locked(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any, family: str, count: int, region: str | None,
) -> None:
    offered = listings(api, family, count, region)
    assert offered, "the seeded world offers this"
    best = offered[0]
    assert best["pricePerHourCents"] == min(li["pricePerHourCents"] for li in offered)
    body: dict[str, Any] = {"familyId": family, "gpuCount": count}
    if region:
        body["region"] = region
    answer = launched(api, body)
    assert answer["pricePerHourCents"] == best["pricePerHourCents"]
    got = get(api, answer["id"])
    assert (got["provider"], got["region"], got["familyId"], got["gpuCount"]) == (
        best["providerCode"], best["region"], family, count)
    row = rental_store.get(funded_user["id"], answer["id"])
    assert row is not None and row.listing_id == best["id"]
    assert balance(api)["reservedCents"] == best["pricePerHourCents"]
    # The locked rate is the rate billed, whatever the catalog says later.
    clock.advance(BOOT_SECONDS + 1)
    assert get(api, answer["id"])["status"] == "running"
    clock.advance(600)
    stop = api.post(f"/v1/rentals/{answer['id']}/stop").json()
    assert stop["finalChargedCents"] == charge(600, best["pricePerHourCents"])
    check_invariants(funded_user["id"])


def test_every_documented_field_is_accepted_and_kept(api: Api, funded_user: dict[str, Any], world: World) -> None:
    body: dict[str, Any] = {"familyId": "rtx-4090", "gpuCount": 1, "templateId": "pytorch", "region": "us",
                            "name": "alice/exp-42" + "x" * 52, "autoStopAfterHours": 720, "maxTotalCents": 1}
    assert len(body["name"]) == 64
    answer = launched(api, body)
    got = get(api, answer["id"])
    assert got["name"] == body["name"] and got["templateId"] == "pytorch"
    assert got["autoStopAfterHours"] == 720 and got["maxTotalCents"] == 1
    (inst,) = world.labelled(answer["id"])
    pytorch = templates.get_template("pytorch")
    assert pytorch is not None
    assert world.sims.vast.instances[inst["id"]].details["image"] == pytorch.image
    assert launched(api, {**BASIC, "autoStopAfterHours": 0.5, "region": "DE"})["status"] == "provisioning"


def test_the_default_template_is_ubuntu(api: Api, funded_user: dict[str, Any], world: World) -> None:
    answer = launched(api)
    assert get(api, answer["id"])["templateId"] == "ubuntu-24-04"
    (inst,) = world.labelled(answer["id"])
    ubuntu = templates.get_template("ubuntu-24-04")
    assert ubuntu is not None
    assert world.sims.vast.instances[inst["id"]].details["image"] == ubuntu.image


BAD_BODIES: list[tuple[str, Any, str, str]] = [
    ("count 3", {**BASIC, "gpuCount": 3}, "invalid_count", "gpuCount"),
    ("count 0", {**BASIC, "gpuCount": 0}, "invalid_count", "gpuCount"),
    ("count 16", {**BASIC, "gpuCount": 16}, "invalid_count", "gpuCount"),
    ("count -1", {**BASIC, "gpuCount": -1}, "invalid_count", "gpuCount"),
    ("count as string", {**BASIC, "gpuCount": "1"}, "validation_failed", "gpuCount"),
    ("count as bool", {**BASIC, "gpuCount": True}, "validation_failed", "gpuCount"),
    ("count missing", {"familyId": "rtx-4090"}, "validation_failed", "gpuCount"),
    ("family missing", {"gpuCount": 1}, "validation_failed", "familyId"),
    ("unknown family", {**BASIC, "familyId": "rtx-9999"}, "validation_failed", "familyId"),
    ("family as number", {**BASIC, "familyId": 4090}, "validation_failed", "familyId"),
    ("unknown template", {**BASIC, "templateId": "windows-11"}, "validation_failed", "templateId"),
    ("template as null", {**BASIC, "templateId": None}, "validation_failed", "templateId"),
    ("name too long", {**BASIC, "name": "x" * 65}, "validation_failed", "name"),
    ("name with newline", {**BASIC, "name": "exp\n42"}, "validation_failed", "name"),
    ("name with bidi override", {**BASIC, "name": "exp\u202e42"}, "validation_failed", "name"),
    ("name blank", {**BASIC, "name": "   "}, "validation_failed", "name"),
    ("name as number", {**BASIC, "name": 42}, "validation_failed", "name"),
    ("autostop 0", {**BASIC, "autoStopAfterHours": 0}, "validation_failed", "autoStopAfterHours"),
    ("autostop negative", {**BASIC, "autoStopAfterHours": -1}, "validation_failed", "autoStopAfterHours"),
    ("autostop 720.01", {**BASIC, "autoStopAfterHours": 720.01}, "validation_failed", "autoStopAfterHours"),
    ("autostop 721", {**BASIC, "autoStopAfterHours": 721}, "validation_failed", "autoStopAfterHours"),
    ("autostop as string", {**BASIC, "autoStopAfterHours": "5"}, "validation_failed", "autoStopAfterHours"),
    ("autostop as bool", {**BASIC, "autoStopAfterHours": True}, "validation_failed", "autoStopAfterHours"),
    ("cap 0", {**BASIC, "maxTotalCents": 0}, "validation_failed", "maxTotalCents"),
    ("cap negative", {**BASIC, "maxTotalCents": -5}, "validation_failed", "maxTotalCents"),
    ("cap fractional", {**BASIC, "maxTotalCents": 1.5}, "validation_failed", "maxTotalCents"),
    ("cap as string", {**BASIC, "maxTotalCents": "100"}, "validation_failed", "maxTotalCents"),
    ("region not a code", {**BASIC, "region": "Mars"}, "validation_failed", "region"),
    ("region as number", {**BASIC, "region": 1}, "validation_failed", "region"),
    ("unknown field", {**BASIC, "image": "evil/miner"}, "validation_failed", "image"),
    ("snake_case field", {**BASIC, "gpu_count": 1}, "validation_failed", "gpu_count"),
    ("body a list", [BASIC], "validation_failed", "body"),
    ("body a string", "rtx-4090", "validation_failed", "body"),
]


def test_a_bad_launch_is_refused_and_writes_nothing(api: Api, funded_user: dict[str, Any], world: World) -> None:
    before = snapshot()
    calls = len(world.requests())
    for name, body, code, field in BAD_BODIES:
        r = launch(api, body)
        assert (r.status, r.json()["error"]) == (400, code), (name, r.body)
        err = envelope(r, 400, code)
        assert field in (err.get("details") or {}), (name, err)
    assert snapshot() == before
    assert len(world.requests()) == calls, "no provider call for a refused request"


def test_a_body_that_is_not_json_is_refused(api: Api, funded_user: dict[str, Any], world: World) -> None:
    before = snapshot()
    r = api.call("POST", "/v1/rentals", raw=b"{not json", headers={"content-type": "application/json"})
    envelope(r, 400, "validation_failed")
    assert snapshot() == before


def test_signed_out_launch_is_401(api: Api, world: World) -> None:
    envelope(launch(Api()), 401, "unauthorized")


# ---------------------------------------------------------------- the one-hour minimum

def test_one_hour_of_the_rate_is_the_minimum_available(
    api: Api, user: dict[str, Any], fund: Fund, world: World,
) -> None:
    price = listings(api, "rtx-4090", 1)[0]["pricePerHourCents"]
    fund(user["id"], price - 1)
    before = snapshot()
    calls = len(world.requests())
    err = envelope(launch(api), 403, "insufficient_balance")
    assert err.get("details", {}).get("requiredCents") in (None, price)
    assert snapshot() == before, "no rental row, no reserve, no ledger row"
    assert len(world.requests()) == calls, "no provider call"
    assert world.alive() == []

    fund(user["id"], 1)  # exactly one hour is enough
    answer = launched(api)
    assert answer["pricePerHourCents"] == price
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"], b["totalCents"]) == (0, price, price)
    envelope(launch(api, {"familyId": "h100-80gb", "gpuCount": 1}), 403, "insufficient_balance")
    check_invariants(user["id"])


def test_a_new_user_with_no_wallet_gets_insufficient_balance(api: Api, user: dict[str, Any], world: World) -> None:
    before = snapshot()
    envelope(launch(api), 403, "insufficient_balance")
    assert snapshot() == before


# ---------------------------------------------------------------- Idempotency-Key

def test_same_key_same_body_answers_the_same_and_launches_once(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    first = launch(api, key="launch-1")
    assert first.status == 200, first.body
    calls = allocations(world)
    clock.advance(5)
    again = launch(api, key="launch-1")
    assert again.status == 200, again.body
    same = ("id", "status", "pricePerHourCents", "startedAt", "warnings")
    assert {k: again.json().get(k) for k in same} == {k: first.json()[k] for k in same}
    assert allocations(world) == calls == 1
    assert len(world.labelled(first.json()["id"])) == 1
    price = first.json()["pricePerHourCents"]
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"]) == (FUNDS - price, price)
    assert [r["id"] for r in api.get("/v1/rentals").json()["rentals"]] == [first.json()["id"]]
    # Even once the rental has moved on, the replay answers the first answer.
    clock.advance(BOOT_SECONDS + 1)
    assert get(api, first.json()["id"])["status"] == "running"
    assert launch(api, key="launch-1").json()["id"] == first.json()["id"]
    # A different key is a different launch.
    world.refresh()  # the ask just rented left the search
    other = launched(api, key="launch-2")
    assert other["id"] != first.json()["id"]
    check_invariants(funded_user["id"])


def test_a_replay_answers_exactly_the_first_answer(api: Api, funded_user: dict[str, Any], world: World) -> None:
    first = launch(api, key="launch-1")
    assert first.status == 200, first.body
    again = launch(api, key="launch-1")
    assert (again.status, again.json()) == (200, first.json())  # host: null, port: null included


def test_same_key_different_body_is_refused(api: Api, funded_user: dict[str, Any], world: World) -> None:
    first = launched(api, key="k1")
    before = snapshot()
    calls = len(world.requests())
    for body in ({**BASIC, "name": "other"}, {"familyId": "h100-80gb", "gpuCount": 1}, {**BASIC, "region": "US"}):
        err = envelope(launch(api, body, key="k1"), 400, "validation_failed")
        assert err["details"]
    assert snapshot() == before
    assert len(world.requests()) == calls
    assert len(world.labelled(first["id"])) == 1


def test_a_replayed_failed_launch_answers_the_same_failure(
    api: Api, funded_user: dict[str, Any], world: World,
) -> None:
    world.sims.vast.set_knobs(allocate="auth")
    first = launch(api, key="k-fail")
    envelope(first, 400, "model_unavailable")
    world.sims.vast.set_knobs(allocate=None)
    calls = len(world.requests())
    again = launch(api, key="k-fail")
    assert (again.status, again.json()) == (400, first.json())
    assert len(world.requests()) == calls
    check_invariants(funded_user["id"])


def test_an_idempotency_key_is_per_user(
    api: Api, funded_user: dict[str, Any], fund: Fund, world: World, clock: Any,
) -> None:
    mine = launched(api, key="shared")
    bob = Api(source_ip="198.51.100.20")
    bob_user = bob.sign_in("bob@example.com")
    fund(bob_user["id"], FUNDS)
    world.refresh()  # the ask alice rented left the search
    theirs = launched(bob, key="shared")
    assert theirs["id"] != mine["id"]


def test_a_bad_idempotency_key_is_refused(api: Api, funded_user: dict[str, Any], world: World) -> None:
    before = snapshot()
    envelope(launch(api, key="x" * 256), 400, "validation_failed")
    assert snapshot() == before


def test_concurrent_duplicates_launch_once(locking: Locking, clock: Any) -> None:
    api, world = locking.api, locking.world
    add_key(api)
    barrier = threading.Barrier(6)

    def one(_: int) -> Any:
        barrier.wait()
        return launch(api, key="same-launch")

    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(one, range(6)))
    assert [r.status for r in replies] == [200] * 6, [r.body for r in replies]
    ids = {r.json()["id"] for r in replies}
    assert len(ids) == 1
    (rid,) = ids
    assert len(world.labelled(rid)) == 1 and allocations(world) == 1
    price = replies[0].json()["pricePerHourCents"]
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"]) == (FUNDS - price, price)
    assert len(api.get("/v1/rentals").json()["rentals"]) == 1
    check_invariants(locking.user["id"])


# ---------------------------------------------------------------- failover

def test_a_capacity_refusal_fails_over_to_the_next_listing_at_the_quoted_price(
    api: Api, funded_user: dict[str, Any], sim_world: World, aws: None,
) -> None:
    found = tie_world(sim_world)
    first, second = found[0], found[1]
    sim_world.sims.lambdacloud.capacity["gpu_1x_rtx4090"].remove(lambda_region(first))  # gone since the refresh
    answer = launched(api)
    assert answer["pricePerHourCents"] == first.price_per_hour_cents
    row = rental_store.get(funded_user["id"], answer["id"])
    assert row is not None
    assert (row.listing_id, row.region, row.provider) == (second.id, second.region, "lambda")
    assert row.price_per_hour_cents == first.price_per_hour_cents == second.price_per_hour_cents
    assert row.attempts == (first.id,)
    (inst,) = sim_world.labelled(answer["id"])
    assert sim_world.sims.lambdacloud.instances[inst["id"]].details["region"] == lambda_region(second)
    assert allocations(sim_world) == 2
    assert get(api, answer["id"])["region"] == second.region
    assert balance(api)["reservedCents"] == first.price_per_hour_cents
    check_invariants(funded_user["id"])


@pytest.mark.parametrize("refusal", ["capacity", "quota"])
def test_failover_is_bounded_and_never_dearer_than_quoted(
    api: Api, funded_user: dict[str, Any], sim_world: World, aws: None, refusal: str,
) -> None:
    found = tie_world(sim_world)
    sim_world.sims.lambdacloud.set_knobs(allocate=refusal)
    err = envelope(launch(api), 400, "model_unavailable")
    rid = err["details"]["rentalId"]
    assert allocations(sim_world) == rentals.MAX_ATTEMPTS  # bounded, though more tied listings exist
    assert sim_world.sims.runpod.snapshot() == [], "the dearer RunPod listing is never tried"
    got = get(api, rid)
    assert got["status"] == "failed" and got["error"] and got["totalChargedCents"] == 0
    assert got["pricePerHourCents"] == found[0].price_per_hour_cents
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"]) == (FUNDS, 0)
    assert [e["type"] for e in ledger(funded_user["id"])] == ["adjustment"]
    assert sim_world.alive() == []
    check_invariants(funded_user["id"])


@pytest.mark.parametrize("refusal", ["auth"])
def test_any_other_refusal_fails_at_once_without_failover(
    api: Api, funded_user: dict[str, Any], sim_world: World, aws: None, refusal: str,
) -> None:
    tie_world(sim_world)
    sim_world.sims.lambdacloud.set_knobs(allocate=refusal)
    err = envelope(launch(api), 400, "model_unavailable")
    assert allocations(sim_world) == 1
    got = get(api, err["details"]["rentalId"])
    assert got["status"] == "failed" and "Provision failed" in got["error"]
    assert balance(api)["reservedCents"] == 0 and balance(api)["availableCents"] == FUNDS
    check_invariants(funded_user["id"])


def test_when_the_only_listing_at_the_price_refuses_the_launch_fails(
    api: Api, funded_user: dict[str, Any], world: World,
) -> None:
    offered = listings(api, "rtx-4090", 1)
    assert offered[1]["pricePerHourCents"] > offered[0]["pricePerHourCents"]
    world.sims.vast.set_knobs(allocate="capacity")
    err = envelope(launch(api), 400, "model_unavailable")
    assert set(err["details"]) == {"rentalId"}
    assert allocations(world) == 1
    rid = err["details"]["rentalId"]
    failed = api.get("/v1/rentals?status=failed").json()["rentals"]
    assert [r["id"] for r in failed] == [rid]
    got = get(api, rid)
    assert got["status"] == "failed" and got["error"].startswith("Provision failed")
    assert balance(api)["availableCents"] == FUNDS
    check_invariants(funded_user["id"])


def test_no_listing_at_all_is_model_unavailable_and_writes_nothing(
    api: Api, funded_user: dict[str, Any], world: World,
) -> None:
    before = snapshot()
    envelope(launch(api, {"familyId": "rtx-5090", "gpuCount": 8, "region": "DE"}), 400, "model_unavailable")
    envelope(launch(api, {"familyId": "h100-80gb", "gpuCount": 4, "region": "apac"}), 400, "model_unavailable")
    envelope(launch(api, {"familyId": "rtx-4090", "gpuCount": 1, "region": "BR"}), 400, "model_unavailable")
    assert snapshot() == before


# ---------------------------------------------------------------- lifecycle

def test_provisioning_becomes_running_when_reachable_and_get_polls_at_most_every_2s(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    rid = launched(api)["id"]
    (inst,) = world.labelled(rid)
    n = len(world.requests())
    got = get(api, rid)
    assert got["status"] == "provisioning" and got["host"] is None and got["port"] is None
    assert len(world.requests()) == n + 1, "a provisioning rental is checked with its provider"
    clock.advance(1.5)
    assert get(api, rid)["status"] == "provisioning"
    assert len(world.requests()) == n + 1, "not again within 2 s"
    clock.advance(0.6)
    get(api, rid)
    assert len(world.requests()) == n + 2
    clock.advance(BOOT_SECONDS)
    got = get(api, rid)
    assert got["status"] == "running"
    (inst,) = world.labelled(rid)
    assert (got["host"], got["port"]) == (inst["host"], inst["sshPort"])
    assert got["runningAt"] is not None and ISO.fullmatch(got["runningAt"])
    n = len(world.requests())
    clock.advance(10)
    assert get(api, rid)["status"] == "running"
    assert len(world.requests()) == n, "a running rental is read from the store only"


def test_the_reconciler_moves_a_provisioning_rental_to_running(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    rid = launched(api)["id"]
    rentals.reconcile()
    assert rental_store.get(funded_user["id"], rid).status == "provisioning"  # type: ignore[union-attr]
    clock.advance(BOOT_SECONDS)
    rentals.reconcile()
    row = rental_store.get(funded_user["id"], rid)
    assert row is not None and row.status == "running" and row.host and row.port
    # Billing starts at running, not at launch.
    assert get(api, rid)["totalChargedCents"] == 0
    world.no_orphans()


def test_stopping_becomes_stopped_only_when_the_provider_confirms(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    got = running(api, clock)
    rid = got["id"]
    clock.advance(120)
    stop = api.post(f"/v1/rentals/{rid}/stop")
    assert stop.status == 200, stop.body
    assert world.alive(rid) == [], "terminate is sent at once"
    after = get(api, rid)
    assert after["status"] == "stopping" and ISO.fullmatch(after["stoppedAt"])
    rentals.reconcile()
    done = get(api, rid)
    assert done["status"] == "stopped" and done["stoppedAt"] == after["stoppedAt"]
    assert done["totalChargedCents"] == charge(120, got["pricePerHourCents"])
    rentals.reconcile()
    assert get(api, rid)["status"] == "stopped"
    world.no_orphans()
    check_invariants(funded_user["id"])


@pytest.mark.parametrize("ran", [30, 59])
def test_a_crash_within_a_minute_is_refunded_in_full(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any, ran: int,
) -> None:
    got = running(api, clock, {"familyId": "b200", "gpuCount": 8})
    rid, rate = got["id"], got["pricePerHourCents"]
    clock.advance(ran)
    rentals.reconcile()  # healthy: the last moment it was known healthy
    (inst,) = world.labelled(rid)
    assert world.sims.vast.crash(inst["id"])
    clock.advance(45)
    reconcile_through_health_grace(clock)
    failed = get(api, rid)
    assert failed["status"] == "failed" and failed["error"] and failed["totalChargedCents"] == 0
    rows = [r for r in ledger(funded_user["id"]) if r.get("rentalId") == rid]
    assert charge(ran, rate) > 0
    assert sorted((r["type"], r["amountCents"]) for r in rows) == sorted(
        [("rental_charge", -charge(ran, rate)), ("refund", charge(ran, rate))])
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"]) == (FUNDS, 0)
    assert world.alive() == [], "the crashed instance is terminated"
    check_invariants(funded_user["id"])


def test_a_crash_is_billed_up_to_the_last_moment_known_healthy(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    got = running(api, clock, {"familyId": "h100-80gb", "gpuCount": 8})
    rid, rate = got["id"], got["pricePerHourCents"]
    clock.advance(1000)
    rentals.reconcile()
    clock.advance(777)
    rentals.reconcile()  # last healthy: 1777 s after running
    (inst,) = world.labelled(rid)
    world.sims.vast.crash(inst["id"])
    clock.advance(300)
    reconcile_through_health_grace(clock)
    failed = get(api, rid)
    assert failed["status"] == "failed" and failed["totalChargedCents"] == charge(1777, rate)
    assert "exited" in failed["error"] or "crash" in failed["error"].lower() or failed["error"]
    assert api.get(f"/v1/rentals/{rid}/meter").json()["secondsBilled"] == 1777
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"]) == (FUNDS - charge(1777, rate), 0)
    assert [r["amountCents"] for r in ledger(funded_user["id"]) if r.get("rentalId") == rid] == [-charge(1777, rate)]
    envelope(api.post(f"/v1/rentals/{rid}/stop"), 409, "already_stopped")
    assert world.alive() == []
    check_invariants(funded_user["id"])


def test_the_reconciler_terminates_labelled_instances_without_a_live_rental(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    import asyncio

    from gpurent.ids import new_id
    from gpurent.providers.base import AllocateRequest

    keep = running(api, clock)
    world.sims.vast.set_knobs(allocate="auth")
    failed_id = envelope(launch(api, {"familyId": "h100-80gb", "gpuCount": 1}), 400,
                         "model_unavailable")["details"]["rentalId"]
    world.sims.vast.set_knobs(allocate=None)
    # Instances that exist anyway: one labelled with the failed rental, one with an id we never issued,
    # and one that is not ours at all.
    offers = {o.offer_key: o for o in asyncio.run(world.adapters["vast"].list_offers())}
    free = iter(offers.values())

    def allocate(label: str) -> str:
        req = AllocateRequest(rental_id=label, offer=next(free), image="img", start_command=None, ssh_public_keys=())
        return asyncio.run(world.adapters["vast"].allocate(req))

    allocate(failed_id)
    allocate(new_id("rent"))
    foreign = allocate("someone-elses-box")
    assert len(world.alive()) == 3
    counts = rentals.reconcile()
    assert counts["orphansTerminated"] == 2
    assert [i["label"] for i in world.alive()] == [keep["id"]]
    assert foreign in {i["id"] for i in world.instances()}, "an instance that is not ours is left alone"
    world.no_orphans()
    assert get(api, keep["id"])["status"] == "running"


def test_a_second_instance_under_a_live_rentals_label_is_terminated_and_its_machine_kept(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    """An instance under a live rental's label that is not the machine the rental recorded (a
    create that took effect though its provider refused it and the destroy failed, or one that
    surfaced after the launch allocated elsewhere) is terminated at the next pass, at the
    rental's own provider or at another, instead of billing us for the rental's whole life."""
    import asyncio

    from gpurent.providers.base import AllocateRequest

    keep = running(api, clock)
    stored = rental_store.get(funded_user["id"], keep["id"])
    assert stored is not None and stored.instance_id is not None
    other = next(code for code in world.adapters if code != stored.provider)

    def allocate(code: str) -> str:
        offer = next(iter(asyncio.run(world.adapters[code].list_offers())))
        req = AllocateRequest(rental_id=keep["id"], offer=offer, image="img", start_command=None, ssh_public_keys=())
        return asyncio.run(world.adapters[code].allocate(req))

    seconds = {allocate(stored.provider), allocate(other)}
    assert {i["id"] for i in world.alive(keep["id"])} == {stored.instance_id, *seconds}
    with pytest.raises(AssertionError):
        world.no_orphans()  # the invariant sees a second machine under a live rental's label
    counts = rentals.reconcile()
    assert counts["orphansTerminated"] == 2
    assert [i["id"] for i in world.alive(keep["id"])] == [stored.instance_id]  # its own machine is kept
    assert get(api, keep["id"])["status"] == "running"
    assert rentals.reconcile()["orphansTerminated"] == 0
    world.no_orphans()


# ---------------------------------------------------------------- stop

def test_stop_settles_to_the_second_and_releases_the_reserve(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    got = running(api, clock)
    rid, rate = got["id"], got["pricePerHourCents"]
    # A number of seconds whose charge is exactly half a cent: half-up rounds it up.
    seconds = next(s for s in range(3600, 20000) if (s * rate) % 3600 == 1800)
    clock.advance(seconds)
    r = api.post(f"/v1/rentals/{rid}/stop")
    assert r.status == 200, r.body
    expected = charge(seconds, rate)
    assert expected == (seconds * rate + 1800) // 3600
    assert r.json() == {"id": rid, "status": "stopping", "finalChargedCents": expected, "refundedCents": 0}
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"], b["totalCents"]) == (FUNDS - expected, 0, FUNDS - expected)
    rows = [x for x in ledger(funded_user["id"]) if x.get("rentalId") == rid]
    assert [(x["type"], x["amountCents"]) for x in rows] == [("rental_charge", -expected)]
    after = get(api, rid)
    assert after["totalChargedCents"] == expected and after["status"] == "stopping"
    meter = api.get(f"/v1/rentals/{rid}/meter").json()
    assert (meter["secondsBilled"], meter["currentChargeCents"]) == (seconds, expected)
    clock.advance(3600)
    assert get(api, rid)["totalChargedCents"] == expected, "nothing is billed after the stop"
    check_invariants(funded_user["id"])


@pytest.mark.parametrize(("ran", "refunded"), [(0, False), (30, True), (59, True), (60, False), (61, False)])
def test_a_pod_that_ran_under_a_minute_is_refunded(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any, ran: int, refunded: bool,
) -> None:
    got = running(api, clock, {"familyId": "b200", "gpuCount": 8})
    rid, rate = got["id"], got["pricePerHourCents"]
    clock.advance(ran)
    stop = api.post(f"/v1/rentals/{rid}/stop").json()
    c = charge(ran, rate)
    assert stop["finalChargedCents"] == c
    assert stop["refundedCents"] == (c if refunded else 0)
    net = 0 if refunded else c
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"]) == (FUNDS - net, 0)
    assert get(api, rid)["totalChargedCents"] == net
    types = sorted(x["type"] for x in ledger(funded_user["id"]) if x.get("rentalId") == rid)
    assert types == (["refund", "rental_charge"] if refunded and c else ["rental_charge"] if c else [])
    check_invariants(funded_user["id"])


def test_stop_while_provisioning_bills_nothing_and_terminates(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    rid = launched(api)["id"]
    clock.advance(5)
    r = api.post(f"/v1/rentals/{rid}/stop")
    assert r.status == 200, r.body
    assert r.json() == {"id": rid, "status": "stopping", "finalChargedCents": 0, "refundedCents": 0}
    b = balance(api)
    assert (b["availableCents"], b["reservedCents"]) == (FUNDS, 0)
    assert world.alive(rid) == []
    clock.advance(BOOT_SECONDS)  # it would have booted by now
    rentals.reconcile()
    got = get(api, rid)
    assert got["status"] == "stopped" and got["host"] is None and got["totalChargedCents"] == 0
    assert [x["type"] for x in ledger(funded_user["id"])] == ["adjustment"]
    world.no_orphans()
    check_invariants(funded_user["id"])


def test_stop_from_a_terminal_or_stopping_state_is_409(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    got = running(api, clock)
    rid = got["id"]
    clock.advance(100)
    assert api.post(f"/v1/rentals/{rid}/stop").status == 200
    before = snapshot()
    envelope(api.post(f"/v1/rentals/{rid}/stop"), 409, "already_stopped")  # stopping
    assert snapshot() == before
    rentals.reconcile()
    assert get(api, rid)["status"] == "stopped"
    envelope(api.post(f"/v1/rentals/{rid}/stop"), 409, "already_stopped")  # stopped
    world.sims.vast.set_knobs(allocate="auth")
    failed = envelope(launch(api), 400, "model_unavailable")["details"]["rentalId"]
    envelope(api.post(f"/v1/rentals/{failed}/stop"), 409, "already_stopped")  # failed
    assert [x["amountCents"] for x in ledger(funded_user["id"]) if x.get("rentalId") == rid] == [
        -charge(100, got["pricePerHourCents"])]
    check_invariants(funded_user["id"])


# ---------------------------------------------------------------- reading

def test_get_shows_every_documented_field(api: Api, funded_user: dict[str, Any], world: World, clock: Any) -> None:
    answer = launched(api, {**BASIC, "name": "alice/exp-42"})
    got = get(api, answer["id"])
    assert GET_FIELDS <= set(got)
    assert got["id"] == answer["id"] and got["name"] == "alice/exp-42" and got["status"] == "provisioning"
    assert (got["familyId"], got["gpuCount"], got["pricePerHourCents"]) == ("rtx-4090", 1, answer["pricePerHourCents"])
    assert got["host"] is None and got["port"] is None and got["stoppedAt"] is None and got["error"] is None
    assert got["startedAt"] == answer["startedAt"] and got["provider"] == "vast" and isinstance(got["region"], str)
    assert got["totalChargedCents"] == 0
    clock.advance(BOOT_SECONDS + 1)
    got = get(api, answer["id"])
    assert isinstance(got["host"], str) and isinstance(got["port"], int)
    clock.advance(90)
    assert get(api, answer["id"])["totalChargedCents"] == charge(90, answer["pricePerHourCents"]), "live"
    unnamed = launched(api, {"familyId": "h100-80gb", "gpuCount": 1})
    assert get(api, unnamed["id"])["name"] is None


def test_someone_elses_rental_is_404_and_leaks_nothing(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    rid = running(api, clock)["id"]
    bob = Api(source_ip="198.51.100.20")
    bob.sign_in("bob@example.com")
    from gpurent import ids

    unknown = ids.new_id("rent")
    before = snapshot()
    for path in (f"/v1/rentals/{rid}", f"/v1/rentals/{rid}/meter"):
        mine_to_bob = envelope(bob.get(path), 404, "rental_not_found")
        nobodys = envelope(bob.get(path.replace(rid, unknown)), 404, "rental_not_found")
        assert mine_to_bob == nobodys, "a foreign id looks exactly like an unknown one"
        assert rid not in str(mine_to_bob)
    envelope(bob.post(f"/v1/rentals/{rid}/stop"), 404, "rental_not_found")
    assert snapshot() == before
    assert get(api, rid)["status"] == "running"
    assert bob.get("/v1/rentals").json() == {"rentals": [], "nextCursor": None}


BAD_IDS = ["key_01JABCDEFGHJKMNPQRSTVWXYZ0", "rent_123", "rent_01jabcdefghjkmnpqrstvwxyz0",
           "lst_01JABCDEFGHJKMNPQRSTVWXYZ0", "x", "rent_01JABCDEFGHJKMNPQRSTVWXYZU"]


def test_a_malformed_or_wrong_prefix_id_is_404(api: Api, funded_user: dict[str, Any], world: World) -> None:
    for bad in BAD_IDS:
        envelope(api.get(f"/v1/rentals/{bad}"), 404, "rental_not_found")
        envelope(api.get(f"/v1/rentals/{bad}/meter"), 404, "rental_not_found")
        envelope(api.post(f"/v1/rentals/{bad}/stop"), 404, "rental_not_found")


def _lambda_fleet(api: Api, world: World, clock: Any) -> dict[str, list[str]]:
    """Six rentals on Lambda (unbounded capacity): 2 running, 1 provisioning, 1 stopping,
    1 stopped, 1 failed; launched a second apart, oldest first."""
    world.install(providers="lambda")
    made: list[str] = []
    for _ in range(5):
        made.append(launched(api)["id"])
        clock.advance(1)
    world.sims.lambdacloud.set_knobs(allocate="auth")
    made.append(envelope(launch(api), 400, "model_unavailable")["details"]["rentalId"])
    world.sims.lambdacloud.set_knobs(allocate=None)
    clock.advance(BOOT_SECONDS + 1)
    for rid in made[:4]:
        assert get(api, rid)["status"] == "running"
    assert api.post(f"/v1/rentals/{made[2]}/stop").status == 200
    rentals.reconcile()  # made[2] stopped; made[4] (never polled) becomes running too
    world.sims.lambdacloud.set_knobs(terminate="error")
    assert api.post(f"/v1/rentals/{made[3]}/stop").status == 200  # stays stopping
    world.sims.lambdacloud.set_knobs(terminate=None)
    clock.advance(1)
    made.append(launched(api)["id"])  # provisioning
    statuses = {rid: get(api, rid)["status"] for rid in made}
    by: dict[str, list[str]] = {s: [] for s in STATUSES}
    for rid in made:
        by[statuses[rid]].append(rid)
    by["all"] = made
    return by


def test_list_is_newest_first_filters_by_status_and_pages(
    api: Api, funded_user: dict[str, Any], aws: None, sim_world: World, clock: Any,
) -> None:
    by = _lambda_fleet(api, sim_world, clock)
    assert {s: len(v) for s, v in by.items() if s != "all"} == {
        "provisioning": 1, "running": 3, "stopping": 1, "stopped": 1, "failed": 1}
    newest_first = list(reversed(by["all"]))
    page = api.get("/v1/rentals").json()
    assert [r["id"] for r in page["rentals"]] == newest_first and page["nextCursor"] is None
    for r in page["rentals"]:
        assert LIST_FIELDS <= set(r) and r["status"] in STATUSES and ISO.fullmatch(r["startedAt"])
    # Pages of 2 cover everything once, in order.
    seen: list[str] = []
    cursor = None
    while True:
        q = "/v1/rentals?pageSize=2" + (f"&cursor={cursor}" if cursor else "")
        body = api.get(q).json()
        assert len(body["rentals"]) <= 2
        seen += [r["id"] for r in body["rentals"]]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert seen == newest_first
    # Each status on its own, paged one at a time.
    for status in STATUSES:
        got: list[str] = []
        cursor = None
        while True:
            q = f"/v1/rentals?status={status}&pageSize=1" + (f"&cursor={cursor}" if cursor else "")
            body = api.get(q).json()
            assert all(r["status"] == status for r in body["rentals"])
            got += [r["id"] for r in body["rentals"]]
            cursor = body["nextCursor"]
            if cursor is None:
                break
        assert got == [rid for rid in newest_first if rid in by[status]], status
    assert len(api.get("/v1/rentals?pageSize=200").json()["rentals"]) == 7
    assert len(api.get("/v1/rentals?pageSize=1").json()["rentals"]) == 1
    check_invariants(funded_user["id"])


BAD_QUERIES = ["status=paused", "status=RUNNING", "status=running,stopped", "pageSize=0", "pageSize=201",
               "pageSize=abc", "pageSize=-1", "pageSize=1.5", "cursor=abc",
               "cursor=eyJiZWZvcmUiOiJyZW50XzAxIn0.AAAAAAAAAAAAAAAAAAAAAA"]


def test_list_refuses_bad_queries(api: Api, funded_user: dict[str, Any], world: World) -> None:
    for query in BAD_QUERIES:
        err = envelope(api.get(f"/v1/rentals?{query}"), 400, "validation_failed")
        assert err.get("details"), (query, err)


def test_list_refuses_a_tampered_or_foreign_cursor(
    api: Api, funded_user: dict[str, Any], aws: None, sim_world: World, clock: Any,
) -> None:
    sim_world.install(providers="lambda")
    for _ in range(3):
        launched(api)
        clock.advance(1)
    cursor = api.get("/v1/rentals?pageSize=1").json()["nextCursor"]
    assert cursor
    body, mac = cursor.split(".")
    tampered = ("A" if body[0] != "A" else "B") + body[1:] + "." + mac
    envelope(api.get(f"/v1/rentals?pageSize=1&cursor={tampered}"), 400, "validation_failed")
    bob = Api(source_ip="198.51.100.20")
    bob.sign_in("bob@example.com")
    envelope(bob.get(f"/v1/rentals?pageSize=1&cursor={cursor}"), 400, "validation_failed")
    # A cursor of another list (the ledger) is not a rentals cursor either.
    ledger_cursor = api.get("/v1/billing/ledger?pageSize=1").json()["nextCursor"]
    if ledger_cursor:
        envelope(api.get(f"/v1/rentals?cursor={ledger_cursor}"), 400, "validation_failed")


def test_meter_has_the_documented_shape_and_live_values(
    api: Api, funded_user: dict[str, Any], world: World, clock: Any,
) -> None:
    rid = launched(api, {"familyId": "h100-80gb", "gpuCount": 1})["id"]
    m = api.get(f"/v1/rentals/{rid}/meter").json()
    assert set(m) == {"rentalId", "ratePerHour", "secondsBilled", "currentChargeCents", "lastHeartbeatAt"}
    assert (m["rentalId"], m["secondsBilled"], m["currentChargeCents"]) == (rid, 0, 0), "provisioning is not billed"
    clock.advance(BOOT_SECONDS + 1)
    rate = get(api, rid)["pricePerHourCents"]
    for step in (1, 59, 3540, 1234):
        clock.advance(step)
        m = api.get(f"/v1/rentals/{rid}/meter").json()
        expected_seconds = sum((1, 59, 3540, 1234)[: (1, 59, 3540, 1234).index(step) + 1])
        assert m["secondsBilled"] == expected_seconds
        assert m["currentChargeCents"] == charge(expected_seconds, rate)
        assert isinstance(m["ratePerHour"], float | int) and Decimal(str(m["ratePerHour"])) == Decimal(rate) / 100
        assert ISO.fullmatch(m["lastHeartbeatAt"])
        assert get(api, rid)["totalChargedCents"] == m["currentChargeCents"]
    envelope(api.get(f"/v1/rentals/{rid}/meter", cookies={}), 401, "unauthorized")
