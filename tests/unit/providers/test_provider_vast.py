"""vast.ai adapter against recorded-shape answers (provider-wire.md §1)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx

from gpurent.providers.base import AllocateRequest, Offer, ProviderError
from gpurent.providers.vast import VastAdapter
from gpurent.providers.vast_names import VAST_NAMES

BASE = "https://console.vast.test"
RID = "rent_01JDX4ZK7Q0V8W1S2T3Y4Z5A6B"
KEYS = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGfK3b8v7m4oW alice@laptop", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB bob's key")


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def vast(sleeps) -> VastAdapter:
    return VastAdapter("vk-123", BASE, sleep=sleeps)


def offer(key: str = "12345678") -> Offer:
    return Offer("vast", key, "RTX 4090", "rtx-4090", "RTX_4090", 24, 1, 36, "US-West", "US", "PCIe")


def request(start: str | None = "python -m http.server 8080") -> AllocateRequest:
    return AllocateRequest(RID, offer(), "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime", start, KEYS, disk_gb=50)


# --- offers ---------------------------------------------------------------------------


def first_band_only(fx: Callable[[str], Any]) -> Callable[[httpx.Request], httpx.Response]:
    """The recorded search answer for a name's first band; later bands (``dph_total``) are empty."""
    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        return httpx.Response(200, json={"offers": []} if "dph_total" in body else fx("vast/search_offers.json"))
    return answer


@respx.mock
def test_search_request_and_mapping(vast, fx, caplog):
    route = respx.post(f"{BASE}/api/v0/bundles/").mock(side_effect=first_band_only(fx))
    with caplog.at_level(logging.INFO, logger="gpurent.providers"):
        offers = run(vast.list_offers())

    bodies = [json.loads(c.request.content) for c in route.calls]
    assert route.calls.last.request.headers["authorization"] == "Bearer vk-123"
    # one search per GPU name, then one more band per name that proves the answer complete
    assert len(bodies) == 2 * len(VAST_NAMES)
    assert sorted(b["gpu_name"]["eq"] for b in bodies if "dph_total" not in b) == sorted(VAST_NAMES)
    for body in bodies:
        assert body["verified"] == {"eq": True} and body["rentable"] == {"eq": True}
        assert body["rented"] == {"eq": False} and body["type"] == "on-demand"
        assert body["allocated_storage"] == 50.0  # so dph_total includes our disk
        assert body["order"] == [["dph_total", "asc"]] and body["limit"] == 64
        assert body["num_gpus"] == {"in": [1, 2, 4, 8]}
    band = next(b for b in bodies if "dph_total" in b)
    # the next band starts at the dearest price seen, without the offers seen at exactly that price
    assert band["dph_total"] == {"gte": 36.00694444444444} and band["id"] == {"notin": [12346007]}

    by_key = {o.offer_key: o for o in offers}
    assert set(by_key) == {"12345678", "12345901", "12346002", "12346007", "12346008", "12346009"}
    rtx = by_key["12345678"]
    assert (rtx.family, rtx.model, rtx.vram_gb, rtx.gpu_count) == ("rtx-4090", "RTX_4090", 24, 1)
    assert rtx.price_cents_per_hour == 36  # dph_total 0.3569 rounded UP (dph_base 0.35 would be 35)
    assert (rtx.region, rtx.region_code, rtx.interconnect) == ("US-West", "US", "PCIe")
    h100 = by_key["12345901"]
    assert (h100.family, h100.gpu_count, h100.price_cents_per_hour) == ("h100-80gb", 8, 1762)
    assert (h100.region, h100.interconnect) == ("US-East", "NVLink")
    assert by_key["12346002"].family == "a100-80gb" and by_key["12346002"].region == "EU-North"
    assert by_key["12346008"].price_cents_per_hour == 100  # an exact price is not bumped
    assert by_key["12346007"].region_code == "JP" and by_key["12346009"].region_code == "SG"
    # the 40 GB A100, the RTX 3090, the 3-GPU box and the one without location are left out
    assert "RTX 3090" in caplog.text and "A100 SXM4 (40960 MB)" in caplog.text


@respx.mock
def test_search_pages_by_price_band_through_a_cap(vast, caplog):
    """An answer cut by the provider's cap is continued from its dearest price, ties included."""
    def offer_row(ask: int, price: float) -> dict[str, Any]:
        return {"id": ask, "gpu_name": "RTX 4090", "num_gpus": 1, "gpu_ram": 24564, "dph_total": price,
                "geolocation": "Oregon, US", "rentable": True, "rented": False}

    market = [offer_row(100 + i, p) for i, p in enumerate([0.30, 0.31, 0.31, 0.31, 0.35, 0.40, 0.41])]
    cap = 3

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["gpu_name"]["eq"] != "RTX 4090":
            return httpx.Response(200, json={"offers": []})
        lo = body.get("dph_total", {}).get("gte", 0.0)
        skip = set(body.get("id", {}).get("notin", []))
        rows = [r for r in market if r["dph_total"] >= lo and r["id"] not in skip]
        return httpx.Response(200, json={"offers": rows[:cap]})

    respx.post(f"{BASE}/api/v0/bundles/").mock(side_effect=answer)
    with caplog.at_level(logging.INFO, logger="gpurent.providers"):
        offers = run(vast.list_offers())
    assert sorted(int(o.offer_key) for o in offers) == [r["id"] for r in market]
    assert "'RTX 4090' was cut at 3 offers" in caplog.text


@respx.mock
def test_search_skips_malformed_offers_keeps_good_ones(vast, fx, caplog):
    respx.post(f"{BASE}/api/v0/bundles/").mock(side_effect=first_band_only(fx))
    with caplog.at_level(logging.WARNING, logger="gpurent.providers"):
        offers = run(vast.list_offers())
    assert len(offers) == 6
    # the string id and the missing dph_total, in each name's answer
    assert caplog.text.count("malformed offer") == 2 * len(VAST_NAMES)


@respx.mock
def test_search_429_then_success(vast, fx, sleeps):
    answer = first_band_only(fx)
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(429, headers={"Retry-After": "1"}, json={"error": "too_many_requests"})
        return answer(request)

    route = respx.post(f"{BASE}/api/v0/bundles/").mock(side_effect=flaky)
    assert len(run(vast.list_offers())) == 6
    assert route.call_count == 2 * len(VAST_NAMES) + 1 and sleeps.calls == [1.0]


@respx.mock
def test_search_quota_is_not_retried(vast, fx):
    route = respx.post(f"{BASE}/api/v0/bundles/").mock(
        return_value=httpx.Response(429, json=fx("vast/search_quota_exceeded.json")))
    with pytest.raises(ProviderError) as e:
        run(vast.list_offers())
    names = [json.loads(c.request.content)["gpu_name"]["eq"] for c in route.calls]
    assert e.value.kind == "quota" and len(names) == len(set(names))  # never retried


@respx.mock
def test_search_5xx_exhausts(vast, sleeps):
    route = respx.post(f"{BASE}/api/v0/bundles/").mock(return_value=httpx.Response(502, text="Bad Gateway"))
    with pytest.raises(ProviderError) as e:
        run(vast.list_offers())
    tries = Counter(json.loads(c.request.content)["gpu_name"]["eq"] for c in route.calls)
    assert e.value.kind == "transient" and max(tries.values()) == 4 and all(n <= 4 for n in tries.values())


@respx.mock
@pytest.mark.parametrize("answer", [
    httpx.Response(200, text="<html>maintenance</html>"),
    httpx.Response(200, json={"bundles": []}),
    httpx.Response(200, json=[1, 2]),
])
def test_search_malformed_answer_is_transient(vast, answer):
    respx.post(f"{BASE}/api/v0/bundles/").mock(return_value=answer)
    with pytest.raises(ProviderError) as e:
        run(vast.list_offers())
    assert e.value.kind == "transient"


@respx.mock
def test_search_auth(vast, fx):
    respx.post(f"{BASE}/api/v0/bundles/").mock(return_value=httpx.Response(401, json=fx("vast/auth_error.json")))
    with pytest.raises(ProviderError) as e:
        run(vast.list_offers())
    assert e.value.kind == "auth" and "Invalid user key" in str(e.value)


# --- allocate -------------------------------------------------------------------------


@respx.mock
def test_create_request(vast, fx):
    route = respx.put(f"{BASE}/api/v0/asks/12345678/").mock(
        return_value=httpx.Response(200, json=fx("vast/create_ok.json")))
    assert run(vast.allocate(request())) == "7835610"
    req = route.calls.last.request
    assert req.method == "PUT" and req.headers["authorization"] == "Bearer vk-123"
    body = json.loads(req.content)
    assert body["label"] == RID
    assert body["image"] == "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"
    assert body["disk"] == 50
    assert body["runtype"] == "ssh_direc ssh_proxy"
    assert body["client_id"] == "me"
    onstart = body["onstart"]
    assert "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGfK3b8v7m4oW alice@laptop" in onstart
    assert "bob'\"'\"'s key" in onstart  # quoted for the shell
    assert "/root/.ssh/authorized_keys" in onstart
    assert "python -m http.server 8080" in onstart


@respx.mock
@pytest.mark.parametrize(("status", "fixture", "kind"), [
    (410, "vast/create_no_such_ask.json", "capacity"),
    (200, "vast/create_no_such_ask.json", "capacity"),
    (400, "vast/create_insufficient_credit.json", "quota"),
    (200, "vast/create_insufficient_credit.json", "quota"),
    (401, "vast/auth_error.json", "auth"),
    (403, "vast/auth_error.json", "auth"),
    (400, "vast/create_invalid_args.json", "invalid"),
    (500, "vast/server_error.json", "transient"),
    (404, None, "capacity"),
])
def test_create_errors(vast, fx, status, fixture, kind):
    answer = httpx.Response(status, json=fx(fixture)) if fixture else httpx.Response(status, text="Not Found")
    route = respx.put(f"{BASE}/api/v0/asks/12345678/").mock(return_value=answer)
    with pytest.raises(ProviderError) as e:
        run(vast.allocate(request()))
    assert e.value.kind == kind
    assert e.value.provider == "vast"
    assert route.call_count == 1


@respx.mock
@pytest.mark.parametrize("failure", [httpx.ReadTimeout("slow"), httpx.Response(504), httpx.Response(502)])
def test_create_is_never_repeated_after_it_may_have_run(vast, failure):
    route = respx.put(f"{BASE}/api/v0/asks/12345678/").mock(side_effect=[failure])
    with pytest.raises(ProviderError) as e:
        run(vast.allocate(request()))
    assert e.value.kind == "transient" and route.call_count == 1


@respx.mock
def test_create_429_then_success(vast, fx):
    route = respx.put(f"{BASE}/api/v0/asks/12345678/").mock(side_effect=[
        httpx.Response(429), httpx.Response(200, json=fx("vast/create_ok.json"))])
    assert run(vast.allocate(request())) == "7835610" and route.call_count == 2


@respx.mock
@pytest.mark.parametrize(("body", "kind", "logged"), [
    ({"success": False, "error": "ask_gone", "msg": "This offer is no longer available."}, "capacity", False),
    ({"success": False, "msg": "Your credit balance is too low to rent this instance."}, "quota", False),
    ({"success": False, "error": "weird_new_thing", "msg": "The host asked for a llama"}, "transient", True),
])
def test_create_refusals_by_code_then_words(vast, body, kind, logged, caplog):
    respx.put(f"{BASE}/api/v0/asks/12345678/").mock(return_value=httpx.Response(400, json=body))
    with caplog.at_level(logging.WARNING, logger="gpurent.providers"), pytest.raises(ProviderError) as e:
        run(vast.allocate(request()))
    assert e.value.kind == kind
    assert ("words we do not know" in caplog.text) == logged
    if logged:
        assert "weird_new_thing: The host asked for a llama" in caplog.text


@respx.mock
def test_a_refused_create_that_made_an_instance_destroys_it(vast):
    """vast may answer a refusal and still have created the instance (new_contract)."""
    respx.put(f"{BASE}/api/v0/asks/12345678/").mock(return_value=httpx.Response(200, json={
        "success": False, "error": "insufficient_credit", "msg": "bid too low", "new_contract": 7835699}))
    destroy = respx.delete(f"{BASE}/api/v0/instances/7835699/").mock(
        return_value=httpx.Response(200, json={"success": True}))
    with pytest.raises(ProviderError) as e:
        run(vast.allocate(request()))
    assert e.value.kind == "quota" and destroy.call_count == 1


@respx.mock
def test_create_success_without_contract_is_transient(vast):
    respx.put(f"{BASE}/api/v0/asks/12345678/").mock(return_value=httpx.Response(200, json={"success": True}))
    with pytest.raises(ProviderError) as e:
        run(vast.allocate(request()))
    assert e.value.kind == "transient" and "reconcile" in e.value.message


def test_create_rejects_a_foreign_offer_key(vast):
    bad = AllocateRequest(RID, offer("NVIDIA H100|SECURE|US-OR-1|1"), "img", None, KEYS)
    with pytest.raises(ProviderError) as e:
        run(vast.allocate(bad))
    assert e.value.kind == "invalid"


def test_multiline_key_is_refused(vast):
    bad = AllocateRequest(RID, offer(), "img", None, ("ssh-ed25519 AAAA\nrm -rf /",))
    with pytest.raises(ProviderError) as e:
        run(vast.allocate(bad))
    assert e.value.kind == "invalid"


# --- instances ------------------------------------------------------------------------


@respx.mock
@pytest.mark.parametrize(("fixture", "status", "host", "port"), [
    ("vast/instance_running_direct.json", "running", "203.0.113.41", 41022),
    ("vast/instance_running_proxy.json", "running", "ssh4.vast.ai", 22610),
    ("vast/instance_running_no_ssh.json", "provisioning", None, None),
    ("vast/instance_loading.json", "provisioning", None, None),
    ("vast/instance_created_null.json", "provisioning", None, None),
    ("vast/instance_exited.json", "failed", None, None),
    ("vast/instance_offline.json", "failed", None, None),
    ("vast/instance_stopped.json", "stopped", None, None),
])
def test_get_instance_states(vast, fx, fixture, status, host, port):
    route = respx.get(f"{BASE}/api/v0/instances/7835610/").mock(return_value=httpx.Response(200, json=fx(fixture)))
    inst = run(vast.get_instance("7835610"))
    assert inst is not None
    assert (inst.instance_id, inst.label) == ("7835610", RID)
    assert (inst.status, inst.host, inst.ssh_port) == (status, host, port)
    assert route.calls.last.request.url.params["owner"] == "me"
    if status == "failed":
        assert inst.error


@respx.mock
def test_a_start_that_failed_for_good_is_failed_though_vast_says_created(vast, fx):
    respx.get(f"{BASE}/api/v0/instances/7835610/").mock(
        return_value=httpx.Response(200, json=fx("vast/instance_created_oci_failed.json")))
    inst = run(vast.get_instance("7835610"))
    assert inst is not None and inst.status == "failed" and inst.host is None
    assert inst.error and "OCI runtime create failed" in inst.error


@respx.mock
def test_get_instance_exited_carries_the_reason(vast, fx):
    respx.get(f"{BASE}/api/v0/instances/7835610/").mock(
        return_value=httpx.Response(200, json=fx("vast/instance_exited.json")))
    inst = run(vast.get_instance("7835610"))
    assert inst is not None and "code 137" in (inst.error or "")


@respx.mock
@pytest.mark.parametrize("answer", [
    httpx.Response(200, json={"instances": None}),
    httpx.Response(404, json={"success": False, "error": "no_such_instance", "msg": "not found"}),
])
def test_get_instance_gone(vast, answer):
    respx.get(f"{BASE}/api/v0/instances/7835610/").mock(return_value=answer)
    assert run(vast.get_instance("7835610")) is None


@respx.mock
@pytest.mark.parametrize("answer", [
    httpx.Response(200, json={"instance": {}}),
    httpx.Response(200, json={"instances": {"id": "x"}}),
    httpx.Response(200, text="nope"),
])
def test_get_instance_malformed(vast, answer):
    respx.get(f"{BASE}/api/v0/instances/7835610/").mock(return_value=answer)
    with pytest.raises(ProviderError) as e:
        run(vast.get_instance("7835610"))
    assert e.value.kind == "transient"


@respx.mock
def test_get_instance_retries_timeouts(vast, fx):
    route = respx.get(f"{BASE}/api/v0/instances/7835610/").mock(side_effect=[
        httpx.ReadTimeout("slow"), httpx.Response(200, json=fx("vast/instance_loading.json"))])
    inst = run(vast.get_instance("7835610"))
    assert inst is not None and inst.status == "provisioning" and route.call_count == 2


@respx.mock
def test_list_instances_pages_and_keeps_ours(vast, fx):
    route = respx.get(f"{BASE}/api/v1/instances/").mock(side_effect=[
        httpx.Response(200, json=fx("vast/instances_page1.json")),
        httpx.Response(200, json=fx("vast/instances_page2.json")),
    ])
    instances = run(vast.list_instances())
    assert [(i.instance_id, i.status) for i in instances] == [("7835610", "running"), ("7835612", "provisioning")]
    first, second = (c.request.url.params for c in route.calls)
    assert json.loads(first["select_filters"]) == {}  # nothing expected: one chain over every id
    assert json.loads(first["order_by"]) == [{"col": "id", "dir": "asc"}]
    assert first["limit"] == "25"  # vast.ai's documented maximum
    assert set(json.loads(first["select_cols"])) >= {"id", "label", "actual_status", "ssh_host", "ssh_port",
                                                      "dph_total"}
    assert "after_token" not in first
    assert second["after_token"] == "7835611"


@respx.mock
def test_the_list_page_size_is_a_setting(fx):
    from gpurent.providers.registry import build_adapters

    route = respx.get(f"{BASE}/api/v1/instances/").mock(return_value=httpx.Response(200, json={
        "instances": [], "next_token": None}))
    default = build_adapters({"VAST_API_KEY": "k", "VAST_BASE_URL": BASE, "PROVIDERS": "vast"})["vast"]
    smaller = build_adapters({"VAST_API_KEY": "k", "VAST_BASE_URL": BASE, "PROVIDERS": "vast",
                              "VAST_PAGE_SIZE": "10"})["vast"]
    run(default.list_instances())
    run(smaller.list_instances())
    assert [c.request.url.params["limit"] for c in route.calls] == ["25", "10"]
    for refused in ("0", "26"):  # 25 is vast.ai's documented maximum
        with pytest.raises(ValueError):
            build_adapters({"VAST_API_KEY": "k", "VAST_PAGE_SIZE": refused, "PROVIDERS": "vast"})


class Account:
    """vast.ai's v1 list over an account of `ids` (ours, labelled `rent_…`), as its reference
    documents it: 25 a page, a keyset token, `select_filters` on `id`; the requests in flight
    are counted."""

    def __init__(self, ids: list[int], serves_at_once: int | None = None) -> None:
        self.ids = sorted(ids)
        self.serves_at_once = serves_at_once  # beyond this many requests in flight: 429
        self.in_flight = self.most_in_flight = self.refused = 0
        self.filters: list[dict[str, Any]] = []

    @staticmethod
    def label(instance_id: int) -> str:
        return f"rent_{instance_id:026d}"

    async def answer(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.serves_at_once is not None and self.in_flight > self.serves_at_once:
                self.refused += 1
                await asyncio.sleep(0.001)
                return httpx.Response(429, text="API requests too frequent")
            await asyncio.sleep(0.001)  # the other ranges' requests go out meanwhile
            params = request.url.params
            filters = json.loads(params["select_filters"])
            bound = filters.get("id", {})
            self.filters.append(filters if "label" in filters else bound)
            lo, hi = bound.get("gte", -1), bound.get("lt", 10**12)
            labels = filters.get("label", {}).get("in")
            after = int(params.get("after_token", -1))
            rest = [i for i in self.ids if lo <= i < hi and i > after
                    and (labels is None or self.label(i) in labels)]
            page = rest[:min(int(params["limit"]), 25)]
            rows = [{"id": i, "label": self.label(i), "actual_status": "running", "ssh_host": "ssh4.vast.ai",
                     "ssh_port": 40000 + i % 1000, "dph_total": 0.35} for i in page]
            token = str(page[-1]) if len(rest) > len(page) else None
            return httpx.Response(200, json={"instances": rows, "next_token": token, "total_instances": len(rest)})
        finally:
            self.in_flight -= 1


@respx.mock
def test_a_long_list_is_listed_in_id_ranges_at_once(sleeps):
    """The ranges are cut among the expected ids (250 each); the first and last are open, so
    instances nobody expected (an orphan below or above every expected id) are listed too."""
    expected = list(range(1_000_000, 1_001_000))
    account = Account([*expected, 7, 5_000_000])
    route = respx.get(f"{BASE}/api/v1/instances/").mock(side_effect=account.answer)
    vast = VastAdapter("vk-123", BASE, sleep=sleeps, list_concurrency=3)
    listed = run(vast.list_instances([str(i) for i in expected]))
    assert sorted(int(i.instance_id) for i in listed) == account.ids  # each once
    assert {tuple(sorted(f.items())) for f in account.filters} == {
        (("lt", 1_000_250),), (("gte", 1_000_250), ("lt", 1_000_500)), (("gte", 1_000_500), ("lt", 1_000_750)),
        (("gte", 1_000_750),)}
    assert route.call_count == 11 + 10 + 10 + 11  # 250 ids a range, 25 a page (the open ones hold an orphan)
    assert 1 < account.most_in_flight <= 3


@respx.mock
def test_an_instance_is_found_by_its_label_in_one_request_however_large_the_account(sleeps):
    """A launch whose create's answer was lost looks for its instance under its label: the list
    filtered on the label, as vast.ai's own client filters it, not the whole account (here 5,000
    instances: 200 pages)."""
    account = Account(list(range(3_000_000, 3_005_000)))
    route = respx.get(f"{BASE}/api/v1/instances/").mock(side_effect=account.answer)
    vast = VastAdapter("vk-123", BASE, sleep=sleeps)
    found = run(vast.find_by_label(Account.label(3_004_321)))
    assert found is not None and found.instance_id == "3004321" and found.label == Account.label(3_004_321)
    assert route.call_count == 1
    assert account.filters == [{"label": {"in": [Account.label(3_004_321)]}}]
    assert run(vast.find_by_label(Account.label(42))) is None  # no instance under it
    assert route.call_count == 2


@respx.mock
def test_a_rate_limited_list_slows_down_and_still_lists_everything(sleeps):
    """vast.ai answers 429 beyond the rate it serves a key: the list narrows its requests in
    flight and asks the refused pages again, instead of failing."""
    expected = list(range(2_000_000, 2_001_000))
    account = Account(expected, serves_at_once=2)
    respx.get(f"{BASE}/api/v1/instances/").mock(side_effect=account.answer)
    vast = VastAdapter("vk-123", BASE, sleep=sleeps, list_concurrency=8)
    listed = run(vast.list_instances([str(i) for i in expected]))
    assert sorted(int(i.instance_id) for i in listed) == expected
    assert account.refused > 0


@respx.mock
def test_a_list_refused_for_ever_fails_as_transient(sleeps):
    respx.get(f"{BASE}/api/v1/instances/").mock(return_value=httpx.Response(429, text="API requests too frequent"))
    with pytest.raises(ProviderError) as e:
        run(VastAdapter("vk-123", BASE, sleep=sleeps).list_instances())
    assert e.value.kind == "transient" and "429" in str(e.value)


def test_id_ranges_cover_every_id():
    from gpurent.providers.vast_wire import id_filter, id_ranges

    assert id_ranges([], 250) == [(None, None)] and id_filter(None, None) == {}
    assert id_ranges(["5", "3", "x", "9", "1"], 2) == [(None, 5), (5, None)]  # not a number: left out
    assert id_ranges(["11", "5", "3", "9", "1"], 2) == [(None, 5), (5, 11), (11, None)]
    assert id_ranges([str(i) for i in range(10)], 5) == [(None, 5), (5, None)]
    assert id_filter(3, 9) == {"id": {"gte": 3, "lt": 9}} and id_filter(None, 9) == {"id": {"lt": 9}}


@respx.mock
def test_list_instances_refuses_a_paging_loop(vast, fx):
    respx.get(f"{BASE}/api/v1/instances/").mock(return_value=httpx.Response(200, json=fx("vast/instances_page1.json")))
    with pytest.raises(ProviderError) as e:
        run(vast.list_instances())
    assert e.value.kind == "transient"


@respx.mock
def test_terminate(vast, fx):
    route = respx.delete(f"{BASE}/api/v0/instances/7835610/").mock(
        return_value=httpx.Response(200, json=fx("vast/destroy_ok.json")))
    run(vast.terminate("7835610"))
    assert route.call_count == 1 and route.calls.last.request.headers["authorization"] == "Bearer vk-123"


@respx.mock
@pytest.mark.parametrize("answer", [
    httpx.Response(404, json={"success": False, "error": "no_such_instance", "msg": "Instance 7835610 not found."}),
    httpx.Response(200, json={"success": False, "error": "no_such_instance", "msg": "Instance 7835610 not found."}),
])
def test_terminate_is_idempotent(vast, answer):
    respx.delete(f"{BASE}/api/v0/instances/7835610/").mock(return_value=answer)
    run(vast.terminate("7835610"))


@respx.mock
@pytest.mark.parametrize("answer", [httpx.Response(404, text="<html>Not Found</html>"), httpx.Response(410, text="")])
def test_a_bare_404_does_not_prove_an_instance_gone(vast, answer):
    """A wrong base URL or a proxy answers 404 too: that must not make a billing machine look gone."""
    respx.delete(f"{BASE}/api/v0/instances/7835610/").mock(return_value=answer)
    respx.get(f"{BASE}/api/v0/instances/7835610/").mock(return_value=answer)
    with pytest.raises(ProviderError) as e:
        run(vast.terminate("7835610"))
    assert e.value.kind == "transient"
    with pytest.raises(ProviderError) as e:
        run(vast.get_instance("7835610"))
    assert e.value.kind == "transient"


@respx.mock
def test_terminate_retries_timeouts_then_gives_up(vast, sleeps):
    route = respx.delete(f"{BASE}/api/v0/instances/7835610/").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(ProviderError) as e:
        run(vast.terminate("7835610"))
    assert e.value.kind == "transient" and route.call_count == 4


@respx.mock
def test_terminate_logical_failure_raises(vast, fx):
    respx.delete(f"{BASE}/api/v0/instances/7835610/").mock(
        return_value=httpx.Response(200, json={"success": False, "error": "server_error", "msg": "try later"}))
    with pytest.raises(ProviderError) as e:
        run(vast.terminate("7835610"))
    assert e.value.kind == "transient"
