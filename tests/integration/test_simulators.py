"""Each real adapter against its simulator, over real HTTP on loopback, end to end."""

from __future__ import annotations

import asyncio
import http.server
import json
import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from unittest.mock import patch

import httpx
import pytest

from gpurent.clock import ManualClock
from gpurent.families import FAMILIES
from gpurent.providers.base import AllocateRequest, Offer, ProviderAdapter, ProviderError
from gpurent.providers.http import HttpPolicy
from gpurent.providers.lambdacloud import LambdaAdapter
from gpurent.providers.runpod import RunPodAdapter
from gpurent.providers.vast import VastAdapter
from gpurent.regions import region_group
from infra.simulators import LAMBDA_SSH_KEY_NAME, Simulators, start_simulators
from infra.simulators import runpod as runpod_sim
from infra.simulators.common import SimulatorBase

BOOT = 20.0
PROVIDERS = ["vast", "runpod", "lambda"]
KEYS = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGfK3b8v7m4oW alice@laptop",)
RID = "rent_01JDX4ZK7Q0V8W1S2T3Y4Z5A6B"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def sims(clock: ManualClock) -> Iterator[Simulators]:
    s = start_simulators(clock.now, boot_seconds=BOOT, api_keys={"vast": "vk", "runpod": "rk", "lambda": "lk"})
    yield s
    s.shutdown()


@pytest.fixture(autouse=True)
def fresh(sims: Simulators) -> None:
    sims.reset()


def sim_of(sims: Simulators, code: str) -> SimulatorBase:
    return {"vast": sims.vast, "runpod": sims.runpod, "lambda": sims.lambdacloud}[code]


def adapter(sims: Simulators, code: str, *, key: str | None = None, **policy: Any) -> ProviderAdapter:
    pol = HttpPolicy(**{"read_timeout": 5.0, **policy})
    sim = sim_of(sims, code)
    k = key or sim.api_key
    if code == "vast":
        return VastAdapter(k, sim.base_url, policy=pol, sleep=no_sleep, page_size=2)
    if code == "runpod":
        return RunPodAdapter(k, sim.base_url, policy=pol, sleep=no_sleep)
    return LambdaAdapter(k, LAMBDA_SSH_KEY_NAME, sim.base_url, policy=pol, sleep=no_sleep)


def cheapest(offers: list[Offer], family: str = "h100-80gb", count: int = 1) -> Offer:
    return min((o for o in offers if o.family == family and o.gpu_count == count),
               key=lambda o: o.price_cents_per_hour)


def expected_cents(sims: Simulators, offer: Offer) -> int:
    """What the provider charges for the offer, from the simulator's own data, rounded up."""
    if offer.provider == "vast":
        raw = sims.vast.offers[int(offer.offer_key)]
        dollars = raw["dph_base"] + raw["storage_cost"] * 50 / 720
        return math.ceil(Decimal(str(dollars)) * 100)
    if offer.provider == "runpod":
        type_id, _cloud, dc, n = offer.offer_key.split("|")
        secure = next(t[3] for t in runpod_sim.GPU_TYPES if t[0] == type_id)
        per_gpu = runpod_sim.per_gpu_price(secure, dc)  # RunPod prices per GPU, per data centre
        dollars = Decimal(str(per_gpu)) * int(n) + Decimal(50) * Decimal("0.10") / 730
        return math.ceil(dollars * 100)
    from infra.simulators.lambdacloud import INSTANCE_TYPES

    return next(t[2] for t in INSTANCE_TYPES if t[0] == offer.offer_key.split("|")[0])


def control(sim: SimulatorBase, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, sim.origin + path, json=body, timeout=5.0)


@pytest.mark.parametrize("code", PROVIDERS)
def test_offers_cover_every_family_at_cents_up(sims, code):
    offers = run(adapter(sims, code).list_offers())
    assert {o.family for o in offers} == {f.id for f in FAMILIES}
    assert {region_group(o.region_code) for o in offers} >= {"us", "eu", "apac"}
    for o in offers:
        assert o.provider == code
        assert isinstance(o.price_cents_per_hour, int) and o.price_cents_per_hour > 0
        assert o.price_cents_per_hour == expected_cents(sims, o), o
    assert len({o.offer_key for o in offers}) == len(offers)


@pytest.mark.parametrize("code", PROVIDERS)
def test_every_gpu_count_is_billed_what_it_was_quoted(sims, code):
    """Quote = bill: for 1, 2, 4 and 8 GPUs the instance the provider starts bills exactly
    the offer's price (RunPod: the pod's costPerHr + its disk; vast: dph_total; Lambda: the
    instance type's price)."""
    a = adapter(sims, code)
    offers = run(a.list_offers())
    counts = sorted({o.gpu_count for o in offers})
    assert counts == [1, 2, 4, 8]
    for n in counts:
        offer = min((o for o in offers if o.gpu_count == n), key=lambda o: (o.price_cents_per_hour, o.offer_key))
        iid = run(a.allocate(AllocateRequest(f"rent_bill{n}", offer, "ubuntu:24.04", None, KEYS)))
        inst = run(a.get_instance(iid))
        assert inst is not None and inst.cost_cents_per_hour == offer.price_cents_per_hour, (n, offer, inst)
        run(a.terminate(iid))
    if code == "runpod":  # a dearer data centre quotes and bills its own per-GPU price
        jp = [o for o in offers if "|AP-JP-1|" in o.offer_key]
        assert jp and all(o.price_cents_per_hour == expected_cents(sims, o) for o in jp)


def ours_at_vast(sims: Simulators) -> set[str]:
    """The ask ids of every offer the vast simulator has that the adapter should list."""
    from gpurent.providers.vast_names import region_from_vast, vast_family

    return {str(ask) for ask, o in sims.vast.offers.items()
            if not o["rented"] and o["num_gpus"] in (1, 2, 4, 8) and vast_family(o["gpu_name"], o["gpu_ram"])
            and region_from_vast(o["geolocation"])}


@pytest.mark.parametrize("cap", [64, 20, None])
def test_vast_the_whole_market_under_a_search_cap(sims, cap):
    """vast caps a search's answer (64 seen in the wild); the adapter searches per GPU name in
    price bands, so it lists every offer whatever the cap."""
    sims.vast.set_knobs(search_cap=cap)
    one_search = httpx.post(f"{sims.vast.origin}/api/v0/bundles/",
                            headers={"Authorization": f"Bearer {sims.vast.api_key}"},
                            json={"limit": 3000, "order": [["dph_total", "asc"]]}, timeout=5.0).json()["offers"]
    if cap is not None:
        assert len(one_search) == cap < len(sims.vast.offers)  # one search over the market is cut off
    before = len(sims.vast.requests)
    offers = run(adapter(sims, "vast").list_offers())
    assert {o.offer_key for o in offers} == ours_at_vast(sims)
    searches = len(sims.vast.requests) - before
    assert searches >= 12  # two per GPU name at least: the last band proves the answer complete
    if cap == 20:
        assert searches > 12  # RTX 4090 alone needs several price bands


def test_vast_a_search_still_full_after_its_bands_is_reported_truncated(sims, caplog):
    sims.vast.set_knobs(search_cap=3)
    a = VastAdapter(sims.vast.api_key, sims.vast.base_url, sleep=no_sleep, search_page=3, max_bands=2)
    with caplog.at_level("WARNING", logger="gpurent.providers"):
        offers = run(a.list_offers())
    assert "'RTX 4090' still brought new offers after 2 price bands" in caplog.text
    assert 0 < len(offers) < len(ours_at_vast(sims))


@pytest.mark.parametrize("code", PROVIDERS)
def test_lifecycle(sims, clock, code):
    a = adapter(sims, code)
    offer = cheapest(run(a.list_offers()))
    iid = run(a.allocate(AllocateRequest(RID, offer, "ubuntu:24.04", "nvidia-smi -L", KEYS)))
    other = run(a.allocate(AllocateRequest("someone-elses-box", cheapest(run(a.list_offers()), "rtx-4090"),
                                           "ubuntu:24.04", None, KEYS)))

    inst = run(a.get_instance(iid))
    assert inst is not None and inst.label == RID
    assert (inst.status, inst.host, inst.ssh_port) == ("provisioning", None, None)

    clock.advance(BOOT + 1)
    inst = run(a.get_instance(iid))
    assert inst is not None and inst.status == "running"
    assert inst.host and inst.ssh_port

    listed = run(a.list_instances())
    assert [i.instance_id for i in listed] == [iid]  # only the rent_ labelled one
    assert other not in {i.instance_id for i in listed}

    run(a.terminate(iid))
    after = run(a.get_instance(iid))
    assert after is None or after.status == "terminated"
    assert iid not in {i.instance_id for i in run(a.list_instances())}
    run(a.terminate(iid))  # idempotent
    rows = control(sim_of(sims, code), "GET", "/_sim/instances").json()["instances"]
    snapshot = {row["id"]: row["status"] for row in rows}
    assert snapshot.get(iid) in (None, "terminated")
    assert snapshot[other] == "running"


@pytest.mark.parametrize("code", PROVIDERS)
def test_capacity_comes_back_after_terminate_and_goes_when_rented(sims, code):
    a = adapter(sims, code)
    if code == "vast":  # a vast ask is one machine: rented, it leaves the search
        offer = cheapest(run(a.list_offers()))
        iid = run(a.allocate(AllocateRequest(RID, offer, "img", None, KEYS)))
        assert offer.offer_key not in {o.offer_key for o in run(a.list_offers())}
        with pytest.raises(ProviderError) as e:
            run(a.allocate(AllocateRequest("rent_second", offer, "img", None, KEYS)))
        assert e.value.kind == "capacity"
        run(a.terminate(iid))
        assert offer.offer_key in {o.offer_key for o in run(a.list_offers())}
    else:
        offer = cheapest(run(a.list_offers()))
        run(a.allocate(AllocateRequest(RID, offer, "img", None, KEYS)))
        assert len(run(a.list_instances())) == 1


@pytest.mark.parametrize("code", PROVIDERS)
@pytest.mark.parametrize(("knob", "value", "kind"), [
    ("allocate", "capacity", "capacity"),
    ("allocate", "quota", "quota"),
    ("allocate", "auth", "auth"),
    ("allocate", "error", "transient"),
])
def test_allocate_knobs(sims, code, knob, value, kind):
    a = adapter(sims, code)
    offer = cheapest(run(a.list_offers()))
    r = control(sim_of(sims, code), "POST", "/_sim/knobs", {knob: value})
    assert r.status_code == 200 and r.json()[knob] == value
    with pytest.raises(ProviderError) as e:
        run(a.allocate(AllocateRequest(RID, offer, "img", None, KEYS)))
    assert e.value.kind == kind and e.value.provider == code
    assert control(sim_of(sims, code), "GET", "/_sim/instances").json()["instances"] == []


@pytest.mark.parametrize(("code", "refusal_code", "text", "kind"), [
    # RunPod's own wordings (GraphQL text only)
    ("runpod", None, "There are no instances currently available", "capacity"),
    ("runpod", None, "There are no longer any instances available with the request specifications. Please try "
                     "again later.", "capacity"),
    ("runpod", None, "There are not enough free GPUs on the host machine to start this pod.", "capacity"),
    ("runpod", None, "Insufficient balance", "quota"),
    ("runpod", None, "The flux capacitor is misaligned", "transient"),
    # vast: the code decides; without a known one, the words
    ("vast", "no_such_ask", "Instance type by id 1 is not available.", "capacity"),
    ("vast", None, "Your credit balance is too low.", "quota"),
    ("vast", "brand_new_code", "Something we never saw", "transient"),
    # Lambda: the code only, never the words
    ("lambda", "instance-operations/launch/insufficient-capacity", "Not enough capacity.", "capacity"),
    ("lambda", "global/quota-exceeded", "Quota exceeded.", "quota"),
    ("lambda", "global/account-inactive", "Your account is inactive.", "auth"),
    ("lambda", "global/invalid-parameters", "Bad region.", "invalid"),
    ("lambda", "instance-operations/launch/brand-new", "insufficient capacity", "transient"),
])
def test_refusals_in_the_providers_own_words(sims, code, refusal_code, text, kind, caplog):
    a = adapter(sims, code)
    offer = cheapest(run(a.list_offers()))
    sim_of(sims, code).set_knobs(allocate="refuse", refusal_code=refusal_code, refusal_text=text)
    with caplog.at_level("WARNING", logger="gpurent.providers"), pytest.raises(ProviderError) as e:
        run(a.allocate(AllocateRequest(RID, offer, "img", None, KEYS)))
    assert e.value.kind == kind, e.value
    assert text in e.value.message
    assert ("words we do not know" in caplog.text) == (kind == "transient")


@pytest.mark.parametrize("code", PROVIDERS)
def test_list_offers_error_knob(sims, code):
    sim_of(sims, code).set_knobs(list_offers="error")
    with pytest.raises(ProviderError) as e:
        run(adapter(sims, code).list_offers())
    assert e.value.kind == "transient"


@pytest.mark.parametrize("code", PROVIDERS)
def test_list_offers_timeout_knob(sims, code):
    sim_of(sims, code).set_knobs(list_offers="timeout", hang_seconds=2.0)
    with pytest.raises(ProviderError) as e:
        run(adapter(sims, code, read_timeout=0.5, max_attempts=2).list_offers())
    assert e.value.kind == "transient"


@pytest.mark.parametrize("code", PROVIDERS)
def test_terminate_error_knob(sims, code):
    a = adapter(sims, code)
    iid = run(a.allocate(AllocateRequest(RID, cheapest(run(a.list_offers())), "img", None, KEYS)))
    sim_of(sims, code).set_knobs(terminate="error")
    with pytest.raises(ProviderError) as e:
        run(a.terminate(iid))
    assert e.value.kind == "transient"
    inst = run(a.get_instance(iid))
    assert inst is not None and inst.status != "terminated"  # a failed terminate terminates nothing
    sim_of(sims, code).set_knobs(terminate=None)
    run(a.terminate(iid))


@pytest.mark.parametrize("code", PROVIDERS)
def test_timeout_on_allocate_leaves_an_instance_found_by_label(sims, code):
    sim = sim_of(sims, code)
    a = adapter(sims, code)
    impatient = adapter(sims, code, read_timeout=0.5)
    offer = cheapest(run(a.list_offers()))
    r = control(sim, "POST", "/_sim/knobs", {"allocate": "timeout", "hang_seconds": 3.0})
    assert r.status_code == 200
    creates_before = len(sim.requests)
    with pytest.raises(ProviderError) as e:
        run(impatient.allocate(AllocateRequest(RID, offer, "img", None, KEYS)))
    assert e.value.kind == "transient"
    assert len(sim.requests) == creates_before + 1  # the create was sent once, never repeated
    found = [i for i in run(a.list_instances()) if i.label == RID]
    assert len(found) == 1
    # What a launch asks when its create's answer was lost: the same instance, by its label alone.
    inst = run(a.find_by_label(RID))
    assert inst is not None and inst.instance_id == found[0].instance_id
    assert run(a.find_by_label("rent_01JDX4ZK7Q0V8W1S2T3Y4Z5A6C")) is None  # nothing under another label


@pytest.mark.parametrize("code", PROVIDERS)
def test_crash_shows_the_failure_state(sims, clock, code):
    a = adapter(sims, code)
    iid = run(a.allocate(AllocateRequest(RID, cheapest(run(a.list_offers())), "img", None, KEYS)))
    clock.advance(BOOT + 1)
    assert control(sim_of(sims, code), "POST", f"/_sim/instances/{iid}/crash").status_code == 200
    inst = run(a.get_instance(iid))
    assert inst is not None and inst.status == "failed" and inst.error
    assert inst.host is None


@pytest.mark.parametrize("code", PROVIDERS)
def test_vanish_means_gone(sims, code):
    a = adapter(sims, code)
    iid = run(a.allocate(AllocateRequest(RID, cheapest(run(a.list_offers())), "img", None, KEYS)))
    assert sim_of(sims, code).vanish(iid)
    assert run(a.get_instance(iid)) is None
    assert run(a.list_instances()) == []
    run(a.terminate(iid))  # terminating what the provider forgot is success
    assert control(sim_of(sims, code), "POST", f"/_sim/instances/{iid}/vanish").status_code == 404


@pytest.mark.parametrize("code", PROVIDERS)
def test_wrong_key_is_auth(sims, code):
    with pytest.raises(ProviderError) as e:
        run(adapter(sims, code, key="wrong").list_instances())
    assert e.value.kind == "auth"


def test_vast_list_pages(sims):
    a = adapter(sims, "vast")  # page size 2
    offers = [o for o in run(a.list_offers()) if o.family == "rtx-4090"][:5]
    ids = {run(a.allocate(AllocateRequest(f"rent_{n:026d}", o, "img", None, KEYS))) for n, o in enumerate(offers)}
    assert {i.instance_id for i in run(a.list_instances())} == ids
    pages = [p for m, p in sims.vast.requests if p == "/api/v1/instances/"]
    assert len(pages) == 3


def test_vast_list_in_id_ranges_against_the_simulator(sims):
    """The adapter's id ranges against the simulator's v1 list (25 a page at most, keyset
    tokens, ``select_filters`` on ``id``): every instance once, whatever range it falls in."""
    a = adapter(sims, "vast")  # page size 2
    offers = [o for o in run(a.list_offers()) if o.family == "rtx-4090"][:7]
    ids = sorted((run(a.allocate(AllocateRequest(f"rent_{n:026d}", o, "img", None, KEYS))) for n, o in
                  enumerate(offers)), key=int)
    sims.vast.requests.clear()
    with patch("gpurent.providers.vast.LIST_RANGE", 2):
        listed = run(a.list_instances(ids[1:6]))  # cut at ids[3] and ids[5]: three ranges
    assert sorted((i.instance_id for i in listed), key=int) == ids
    assert [i.status for i in listed if i.instance_id == ids[0]] == ["provisioning"]
    pages = [p for m, p in sims.vast.requests if p == "/api/v1/instances/"]
    assert len(pages) == 2 + 1 + 1  # [.., ids[3]): 3 ids, 2 pages; [ids[3], ids[5]): 2; [ids[5], ..): 2


def test_the_vast_simulator_lists_as_vast_documents(sims):
    a = adapter(sims, "vast")
    offers = [o for o in run(a.list_offers()) if o.family == "rtx-4090"][:30]
    ids = sorted((int(run(a.allocate(AllocateRequest(f"rent_{n:026d}", o, "img", None, KEYS)))) for n, o in
                  enumerate(offers)))

    def page(**params: Any) -> httpx.Response:
        return httpx.get(sims.vast.base_url + "/api/v1/instances/", headers={"Authorization": "Bearer vk"},
                         params={k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()})

    first = page(limit="200").json()  # more than the maximum: 25
    assert [r["id"] for r in first["instances"]] == ids[:25] and first["total_instances"] == 30
    rest = page(limit="200", after_token=first["next_token"]).json()
    assert [r["id"] for r in rest["instances"]] == ids[25:] and rest["next_token"] is None
    assert len(page(limit="0").json()["instances"]) == 5  # <= 0 means 5
    ranged = page(select_filters={"id": {"gte": ids[3], "lt": ids[6]}}, select_cols=["id", "nope"]).json()
    assert ranged["instances"] == [{"id": i, "nope": None} for i in ids[3:6]] and ranged["total_instances"] == 3
    assert page(select_filters={"dph_total": {"lt": 1}}).status_code == 400  # computed: not filterable
    assert page(select_filters={"id": {"like": 1}}).status_code == 400
    assert page(after_token="not-a-token").status_code == 400


def test_vast_content_type_is_exact(sims):
    r = httpx.post(sims.vast.origin + "/api/v0/bundles/", json={"limit": 1},
                   headers={"Authorization": f"Bearer {sims.vast.api_key}"})
    assert r.headers["content-type"] == "application/json"
    assert len(r.json()["offers"]) == 1
    assert httpx.get(sims.vast.origin + "/api/v0/gpu_names/unique/").status_code == 200  # no auth needed


def test_runpod_sdk_shapes(sims):
    """The runpod SDK's own query texts (provider-wire §2.2) and gpuhunt's variables form."""
    headers = {"Authorization": f"Bearer {sims.runpod.api_key}"}
    url = sims.runpod.origin + "/graphql"
    r = httpx.post(url, headers=headers, json={"query": 'query GpuTypes { gpuTypes(input: {id: "NVIDIA GeForce RTX '
                   '4090"}) { maxGpuCount id displayName manufacturer memoryInGb cudaCores secureCloud communityCloud '
                   "securePrice communityPrice oneMonthPrice threeMonthPrice oneWeekPrice communitySpotPrice "
                   "secureSpotPrice lowestPrice(input: {gpuCount: 1}) { minimumBidPrice uninterruptablePrice } } }"})
    gpu = r.json()["data"]["gpuTypes"]
    assert len(gpu) == 1 and gpu[0]["securePrice"] == 0.69 and set(gpu[0]["lowestPrice"]) == {
        "minimumBidPrice", "uninterruptablePrice"}
    r = httpx.post(url, json={
        "query": "query GpuTypes($lowestPriceInput: GpuLowestPriceInput) { gpuTypes { id lowestPrice(input: "
                 "$lowestPriceInput) { stockStatus countryCode __typename } __typename } }",
        "variables": {"lowestPriceInput": {"gpuCount": 1, "secureCloud": True, "dataCenterId": "EU-RO-1"}}})
    assert r.status_code == 200 and all(t["__typename"] == "GpuType" for t in r.json()["data"]["gpuTypes"])
    r = httpx.post(url, headers=headers, json={"query": "query { pod(input: {podId: \"x\"}) { id nonsense } }"})
    assert "Cannot query field" in r.json()["errors"][0]["message"]
    r = httpx.post(url, json={"query": "query myPods { myself { pods { id } } }"})
    assert r.status_code == 401
    r = httpx.post(url + f"?api_key={sims.runpod.api_key}", json={"query": "query myPods { myself { pods { id } } }"})
    assert r.json() == {"data": {"myself": {"pods": []}}}


def test_control_routes(sims):
    sim = sims.lambdacloud
    assert control(sim, "POST", "/_sim/knobs", {"allocate": "nonsense"}).status_code == 400
    assert control(sim, "POST", "/_sim/knobs", {"bogus": 1}).status_code == 400
    assert control(sim, "POST", "/_sim/knobs", {"latency_seconds": 0.2}).json()["latency_seconds"] == 0.2
    a = adapter(sims, "lambda")
    run(a.allocate(AllocateRequest(RID, cheapest(run(a.list_offers())), "img", None, KEYS)))
    rows = control(sim, "GET", "/_sim/instances").json()["instances"]
    assert [(r["label"], r["status"]) for r in rows] == [(RID, "provisioning")]
    assert control(sim, "POST", "/_sim/reset").status_code == 200
    assert control(sim, "GET", "/_sim/instances").json()["instances"] == []
    assert control(sim, "GET", "/_sim/knobs").json()["latency_seconds"] == 0.0


@pytest.mark.parametrize("which", ["simulator", "local Stripe's proxy"])
def test_a_client_gone_mid_request_is_no_traceback(capsys, which: str) -> None:
    """A crashed or timed-out caller resets its connection: the simulator (and the local
    Stripe's proxy, which the crash points kill calls to as well) stays quiet about it, and
    still prints any other error of its own."""
    from infra.local.stripe_local import _ProxyServer
    from infra.simulators.common import SimServer

    server = (SimServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler) if which == "simulator"
              else _ProxyServer(None))  # type: ignore[arg-type]  # no owner needed to report an error
    try:
        for gone in (ConnectionResetError(104, "Connection reset by peer"), BrokenPipeError(32, "Broken pipe")):
            try:
                raise gone
            except ConnectionError:
                server.handle_error(None, ("127.0.0.1", 1))
        assert capsys.readouterr().err == ""
        try:
            raise ValueError("a bug of the simulator")
        except ValueError:
            server.handle_error(None, ("127.0.0.1", 1))
        assert "ValueError: a bug of the simulator" in capsys.readouterr().err
    finally:
        server.server_close()
