"""RunPod adapter against recorded-shape GraphQL answers (provider-wire.md §2)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx

from gpurent.providers.base import AllocateRequest, Offer, ProviderError
from gpurent.providers.runpod import RunPodAdapter
from gpurent.providers.runpod_wire import classify_message
from infra.simulators.runpod import parse

BASE = "https://api.runpod.test"
URL = f"{BASE}/graphql"
RID = "rent_01JDX4ZK7Q0V8W1S2T3Y4Z5A6B"
KEYS = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGfK3b8v7m4oW alice@laptop", 'ssh-rsa AAAAB3NzaC1yc2E bob "the builder"')


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def runpod(sleeps) -> RunPodAdapter:
    return RunPodAdapter("rp-key", BASE, sleep=sleeps)


def query_of(call) -> str:
    body = json.loads(call.request.content)
    assert set(body) == {"query"}  # inline literals only, like the SDK: no variables
    return str(body["query"])


def offer(key: str = "NVIDIA H100 80GB HBM3|SECURE|US-OR-1|1") -> Offer:
    return Offer("runpod", key, "NVIDIA H100 80GB HBM3", "h100-80gb", "H100_SXM_80GB", 80, 1, 270, "US-West", "US",
                 "PCIe")


def catalog(fx: Callable[[str], Any]) -> Callable[[httpx.Request], httpx.Response]:
    """Answer the data-centre query, then the gpu-type query by its gpuCount."""
    def answer(request: httpx.Request) -> httpx.Response:
        q = json.loads(request.content)["query"]
        if "dataCenters" in q:
            return httpx.Response(200, json=fx("runpod/data_centers.json"))
        n = int(re.search(r"gpuCount: (\d+)", q).group(1))  # type: ignore[union-attr]
        name = {1: "runpod/gpu_types_x1.json", 2: "runpod/gpu_types_x2.json",
                8: "runpod/gpu_types_x8.json"}.get(n, "runpod/gpu_types_none.json")
        return httpx.Response(200, json=fx(name))
    return answer


# --- offers ---------------------------------------------------------------------------


@respx.mock
def test_offers_queries_and_mapping(runpod, fx, caplog):
    route = respx.post(URL).mock(side_effect=catalog(fx))
    with caplog.at_level(logging.INFO, logger="gpurent.providers"):
        offers = run(runpod.list_offers())

    queries = [query_of(c) for c in route.calls]
    assert route.calls.last.request.headers["authorization"] == "Bearer rp-key"
    assert queries[0] == "query DataCenters { dataCenters { id name listed } }"
    assert len(queries) == 5  # data centres, then gpuCount 1, 2, 4, 8
    q1 = queries[1]
    # one aliased lowestPrice per listed, known data centre: the unlisted and the unknown are not asked
    assert 'dc0: lowestPrice(input: {gpuCount: 1, secureCloud: true, dataCenterId: "US-OR-1"})' in q1
    assert 'dc1: lowestPrice(input: {gpuCount: 1, secureCloud: true, dataCenterId: "EU-RO-1"})' in q1
    assert 'dc2: lowestPrice(input: {gpuCount: 1, secureCloud: true, dataCenterId: "AP-JP-1"})' in q1
    assert "US-DE-1" not in q1 and "MOON-1" not in q1
    assert "{ uninterruptablePrice stockStatus }" in q1
    parse(q1)  # well-formed GraphQL

    by_key = {o.offer_key: o for o in offers}
    assert set(by_key) == {
        "NVIDIA GeForce RTX 4090|SECURE|US-OR-1|2",
        "NVIDIA H100 80GB HBM3|SECURE|AP-JP-1|2",
        "NVIDIA GeForce RTX 4090|SECURE|US-OR-1|1",
        "NVIDIA GeForce RTX 4090|SECURE|EU-RO-1|1",
        "NVIDIA H100 80GB HBM3|SECURE|US-OR-1|1",
        "NVIDIA H100 80GB HBM3|SECURE|AP-JP-1|1",
        "NVIDIA B200|SECURE|AP-JP-1|8",
    }
    rtx = by_key["NVIDIA GeForce RTX 4090|SECURE|US-OR-1|1"]
    # $0.69 + 50 GB container disk at $0.10/GB/month (0.00685/h) = 0.69685 → 70 cents, rounded up
    assert rtx.price_cents_per_hour == 70
    assert (rtx.family, rtx.region, rtx.region_code, rtx.gpu_count) == ("rtx-4090", "US-West", "US", 1)
    assert by_key["NVIDIA GeForce RTX 4090|SECURE|EU-RO-1|1"].region == "EU-East"
    h100_jp = by_key["NVIDIA H100 80GB HBM3|SECURE|AP-JP-1|1"]
    assert (h100_jp.price_cents_per_hour, h100_jp.region, h100_jp.interconnect) == (300, "AP-Northeast", "NVLink")
    b200 = by_key["NVIDIA B200|SECURE|AP-JP-1|8"]
    # per-GPU price × 8 = 47.92, + storage → 4793 (4792 would leave the disk out)
    assert (b200.price_cents_per_hour, b200.interconnect, b200.model) == (4793, "NVLink", "B200")
    assert "NVIDIA GeForce RTX 3090" in caplog.text and "NVIDIA H100 PCIe" in caplog.text
    assert "malformed gpu type" in caplog.text


def test_the_four_gpu_count_queries_are_in_flight_at_once(fx, sleeps):
    """After the data-centre query, the four GPU-count queries go out together: every one of them
    is in flight before the first answer comes back (counted at the transport, not timed)."""

    class Overlap(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.in_flight = self.most = 0
            self.answer = catalog(fx)

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            await asyncio.sleep(0.2)  # an answer takes a moment: requests sent together overlap
            self.in_flight -= 1
            return self.answer(request)

    transport = Overlap()

    async def go() -> list[Offer]:
        async with httpx.AsyncClient(transport=transport) as client:
            return await RunPodAdapter("rp-key", BASE, sleep=sleeps, client=client).list_offers()

    assert len(run(go())) == 7
    assert transport.most == 4  # sequential queries would never have more than one in flight


@respx.mock
def test_multi_gpu_listings_are_priced_per_gpu_times_count(runpod, fx, caplog):
    """RunPod's GPU-type prices are per GPU: a 2-GPU pod is twice the data centre's
    per-GPU price plus the pod's disk, and a price that looks like a whole pod's is left out."""
    respx.post(URL).mock(side_effect=catalog(fx))
    with caplog.at_level(logging.WARNING, logger="gpurent.providers"):
        offers = {o.offer_key: o for o in run(runpod.list_offers()) if o.gpu_count == 2}
    assert set(offers) == {"NVIDIA GeForce RTX 4090|SECURE|US-OR-1|2", "NVIDIA H100 80GB HBM3|SECURE|AP-JP-1|2"}
    # 2 × $0.69 + 50 GB × $0.10 / 730 h = 1.38685 → 139
    assert offers["NVIDIA GeForce RTX 4090|SECURE|US-OR-1|2"].price_cents_per_hour == 139
    # Japan's own per-GPU price (2.96, not the 2.69 list price) × 2 + disk = 5.92685 → 593
    assert offers["NVIDIA H100 80GB HBM3|SECURE|AP-JP-1|2"].price_cents_per_hour == 593
    # EU-RO-1 answered 1.38 for an RTX 4090 whose list price is 0.69: a whole pod's figure, not per GPU
    assert "NVIDIA GeForce RTX 4090|SECURE|EU-RO-1|2" not in offers
    assert "not a per-GPU price" in caplog.text and "EU-RO-1" in caplog.text


@pytest.mark.parametrize(("per_gpu", "list_price", "count", "pod"), [
    ("0.69", "0.69", 1, "0.69"), ("0.69", "0.69", 8, "5.52"), ("2.96", "2.69", 2, "5.92"),
    ("0.35", "0.69", 2, "0.70"), ("0.34", "0.69", 2, None), ("1.38", "0.69", 2, None), ("0.69", None, 4, "2.76"),
    ("0", "0.69", 1, None),
])
def test_pod_price_from_a_per_gpu_price(per_gpu, list_price, count, pod):
    from decimal import Decimal

    from gpurent.providers.runpod_wire import pod_price_dollars

    got = pod_price_dollars(Decimal(per_gpu), Decimal(list_price) if list_price else None, count)
    assert got == (Decimal(pod) if pod else None)


@respx.mock
def test_offers_errors_are_classified(runpod, fx):
    respx.post(URL).mock(return_value=httpx.Response(200, json=fx("runpod/error_something_wrong.json")))
    with pytest.raises(ProviderError) as e:
        run(runpod.list_offers())
    assert e.value.kind == "transient" and "Something went wrong" in e.value.message


@respx.mock
def test_offers_auth(runpod):
    respx.post(URL).mock(return_value=httpx.Response(401, text="Unauthorized"))
    with pytest.raises(ProviderError) as e:
        run(runpod.list_offers())
    assert e.value.kind == "auth"


@respx.mock
def test_offers_503_then_success(runpod, fx, sleeps):
    answer = catalog(fx)
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(503) if calls["n"] == 1 else answer(request)

    respx.post(URL).mock(side_effect=flaky)
    assert len(run(runpod.list_offers())) == 7
    assert len(sleeps.calls) == 1


@respx.mock
@pytest.mark.parametrize("answer", [httpx.Response(200, text="<html>"), httpx.Response(200, json={"data": None}),
                                    httpx.Response(500, text="Internal Server Error")])
def test_offers_malformed(runpod, answer):
    respx.post(URL).mock(return_value=answer)
    with pytest.raises(ProviderError) as e:
        run(runpod.list_offers())
    assert e.value.kind == "transient"


# --- allocate -------------------------------------------------------------------------


@respx.mock
def test_deploy_mutation(runpod, fx):
    route = respx.post(URL).mock(return_value=httpx.Response(200, json=fx("runpod/deploy_ok.json")))
    req = AllocateRequest(RID, offer(), 'runpod/pytorch:2.4.0 "odd\\name"', None, KEYS, disk_gb=60)
    assert run(runpod.allocate(req)) == "sim0pod0abc123"

    q = query_of(route.calls.last)
    op, fields = parse(q)  # the simulator's GraphQL reader gives back exactly what we meant
    assert op == "mutation" and fields[0].name == "podFindAndDeployOnDemand"
    inp = fields[0].args["input"]
    assert inp["name"] == RID
    assert inp["imageName"] == 'runpod/pytorch:2.4.0 "odd\\name"'
    assert inp["gpuTypeId"] == "NVIDIA H100 80GB HBM3"
    assert inp["cloudType"] == "SECURE" and type(inp["cloudType"]).__name__ == "Enum"  # bare enum
    assert inp["dataCenterId"] == "US-OR-1"
    assert inp["gpuCount"] == 1 and inp["containerDiskInGb"] == 60 and inp["volumeInGb"] == 0
    assert inp["ports"] == "22/tcp" and inp["startSsh"] is True and inp["supportPublicIp"] is True
    assert inp["dockerArgs"] == ""  # no start command: the image's own start script runs sshd
    env = {e["key"]: e["value"] for e in inp["env"]}
    assert env["PUBLIC_KEY"] == "\n".join(KEYS)
    assert env["GPURENT_RENTAL_ID"] == RID
    assert 'bob \\"the builder\\"' in q  # escaped inside the literal


@respx.mock
def test_deploy_with_a_start_command_keeps_ssh(runpod, fx):
    route = respx.post(URL).mock(return_value=httpx.Response(200, json=fx("runpod/deploy_ok.json")))
    run(runpod.allocate(AllocateRequest(RID, offer(), "vllm/vllm-openai", "vllm serve 'org/model'", KEYS)))
    inp = parse(query_of(route.calls.last))[1][0].args["input"]
    args = inp["dockerArgs"]
    assert args.startswith("bash -c ")
    assert "authorized_keys" in args and "sshd" in args and "sleep infinity" in args and "vllm serve" in args


@respx.mock
@pytest.mark.parametrize(("answer", "kind"), [
    (httpx.Response(200, json={"errors": [{"message": "There are no longer any instances available with the "
                                                      "requested specifications. Please refresh and try again."}]}),
     "capacity"),
    ("runpod/error_no_capacity.json", "capacity"),
    ("runpod/error_balance.json", "quota"),
    ("runpod/error_bad_input.json", "invalid"),
    ("runpod/error_something_wrong.json", "transient"),
    ("runpod/deploy_null.json", "transient"),
    (httpx.Response(401, text="Unauthorized"), "auth"),
    (httpx.Response(403, json={"errors": [{"message": "Forbidden"}]}), "auth"),
])
def test_deploy_errors(runpod, fx, answer, kind):
    if isinstance(answer, str):
        answer = httpx.Response(200, json=fx(answer))
    route = respx.post(URL).mock(return_value=answer)
    with pytest.raises(ProviderError) as e:
        run(runpod.allocate(AllocateRequest(RID, offer(), "img", None, KEYS)))
    assert e.value.kind == kind and route.call_count == 1


@respx.mock
def test_deploy_read_timeout_is_not_retried(runpod):
    route = respx.post(URL).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(ProviderError) as e:
        run(runpod.allocate(AllocateRequest(RID, offer(), "img", None, KEYS)))
    assert e.value.kind == "transient" and route.call_count == 1


def test_deploy_rejects_a_foreign_offer_key(runpod):
    with pytest.raises(ProviderError) as e:
        run(runpod.allocate(AllocateRequest(RID, offer("12345678"), "img", None, KEYS)))
    assert e.value.kind == "invalid"


# --- pods -----------------------------------------------------------------------------


@respx.mock
@pytest.mark.parametrize(("fixture", "status", "host", "port"), [
    ("runpod/pod_running.json", "running", "203.0.113.8", 40022),
    ("runpod/pod_starting.json", "provisioning", None, None),
    ("runpod/pod_exited.json", "failed", None, None),
    ("runpod/pod_terminated.json", "terminated", None, None),
])
def test_get_pod_states(runpod, fx, fixture, status, host, port):
    route = respx.post(URL).mock(return_value=httpx.Response(200, json=fx(fixture)))
    inst = run(runpod.get_instance("sim0pod0abc123"))
    assert inst is not None and inst.label == RID
    assert (inst.status, inst.host, inst.ssh_port) == (status, host, port)
    q = query_of(route.calls.last)
    assert 'pod(input: {podId: "sim0pod0abc123"})' in q
    parse(q)
    if status == "failed":
        assert inst.error and "exited with code 137" in inst.error


@respx.mock
def test_an_undocumented_pod_status_is_logged_and_not_running(runpod, fx, caplog):
    answer = fx("runpod/pod_running.json")
    answer["data"]["pod"]["desiredStatus"] = "RESTARTING"
    respx.post(URL).mock(return_value=httpx.Response(200, json=answer))
    with caplog.at_level(logging.WARNING, logger="gpurent.providers"):
        inst = run(runpod.get_instance("sim0pod0abc123"))
    assert inst is not None and (inst.status, inst.host, inst.ssh_port) == ("provisioning", None, None)
    assert "unknown desiredStatus 'RESTARTING'" in caplog.text


@respx.mock
def test_a_pod_says_what_it_bills(runpod, fx):
    """costPerHr is the whole pod's: 0.69 + the 50 GB container disk = 70 cents, as its offer was quoted."""
    answer = fx("runpod/pod_running.json")
    respx.post(URL).mock(return_value=httpx.Response(200, json=answer))
    assert run(runpod.get_instance("sim0pod0abc123")).cost_cents_per_hour == 70
    answer["data"]["pod"].update(costPerHr="1.38", gpuCount=2, containerDiskInGb=100)
    respx.post(URL).mock(return_value=httpx.Response(200, json=answer))
    # 1.38 + 100 GB × 0.10 / 730 = 1.3937 → 140
    assert run(runpod.get_instance("sim0pod0abc123")).cost_cents_per_hour == 140
    answer["data"]["pod"]["costPerHr"] = None
    respx.post(URL).mock(return_value=httpx.Response(200, json=answer))
    assert run(runpod.get_instance("sim0pod0abc123")).cost_cents_per_hour is None


@respx.mock
@pytest.mark.parametrize("answer", ["runpod/pod_null.json", "runpod/error_pod_not_found.json"])
def test_get_pod_gone(runpod, fx, answer):
    respx.post(URL).mock(return_value=httpx.Response(200, json=fx(answer)))
    assert run(runpod.get_instance("sim0pod0abc123")) is None


@respx.mock
@pytest.mark.parametrize("answer", [httpx.Response(200, json={"data": {}}),
                                    httpx.Response(404, json={"message": "no route"})])
def test_get_pod_unproven_gone_is_transient(runpod, answer):
    respx.post(URL).mock(return_value=answer)
    with pytest.raises(ProviderError) as e:
        run(runpod.get_instance("sim0pod0abc123"))
    assert e.value.kind == "transient"


@respx.mock
def test_list_pods_keeps_ours(runpod, fx):
    route = respx.post(URL).mock(return_value=httpx.Response(200, json=fx("runpod/my_pods.json")))
    pods = run(runpod.list_instances())
    assert [(p.instance_id, p.status) for p in pods] == [("sim0pod0abc123", "running"),
                                                         ("sim0pod0ghi789", "provisioning")]
    assert query_of(route.calls.last).startswith("query myPods { myself { pods {")


@respx.mock
def test_terminate(runpod, fx):
    route = respx.post(URL).mock(return_value=httpx.Response(200, json=fx("runpod/terminate_ok.json")))
    run(runpod.terminate("sim0pod0abc123"))
    assert query_of(route.calls.last) == 'mutation { podTerminate(input: { podId: "sim0pod0abc123" }) }'


@respx.mock
def test_terminate_unknown_pod_is_success(runpod, fx):
    respx.post(URL).mock(return_value=httpx.Response(200, json=fx("runpod/error_pod_not_found.json")))
    run(runpod.terminate("sim0pod0abc123"))


@respx.mock
def test_terminate_retries_then_gives_up(runpod, sleeps):
    route = respx.post(URL).mock(return_value=httpx.Response(503))
    with pytest.raises(ProviderError) as e:
        run(runpod.terminate("sim0pod0abc123"))
    assert e.value.kind == "transient" and route.call_count == 4


@pytest.mark.parametrize(("message", "code", "kind"), [
    ("There are no longer any instances available with enough disk space.", None, "capacity"),
    ("There are no longer any instances available with the requested specifications. Please refresh and try "
     "again.", None, "capacity"),
    ("There are no longer any instances available with the request specifications. Please try again later.", None,
     "capacity"),
    ("There are no instances currently available", None, "capacity"),
    ("There are not enough free GPUs on the host machine to start this pod.", None, "capacity"),
    ("this machine does not have the resources to deploy this pod", None, "capacity"),
    ("Your balance is too low", None, "quota"),
    ("Insufficient balance", None, "quota"),
    ("whatever", "UNAUTHENTICATED", "auth"),
    ("Pod not found", None, "not_found"),
    ("pod not found to terminate", None, "not_found"),
    ('Cannot query field "foo" on type "Pod".', None, "invalid"),
    ("Something went wrong. Please try again later or contact support.", None, "transient"),
    ("The flux capacitor is misaligned", None, None),
])
def test_message_classification(message, code, kind):
    assert classify_message(message, code) == kind


@respx.mock
@pytest.mark.parametrize(("message", "kind"), [
    ("There are no instances currently available", "capacity"),
    ("Insufficient balance", "quota"),
    ("The flux capacitor is misaligned", "transient"),
])
def test_deploy_refusals_by_their_words(runpod, message, kind, caplog):
    respx.post(URL).mock(return_value=httpx.Response(200, json={
        "errors": [{"message": message, "path": ["podFindAndDeployOnDemand"]}], "data": None}))
    with caplog.at_level(logging.WARNING, logger="gpurent.providers"), pytest.raises(ProviderError) as e:
        run(runpod.allocate(AllocateRequest(RID, offer(), "ubuntu:24.04", None, KEYS)))
    assert e.value.kind == kind and message in e.value.message
    assert ("words we do not know" in caplog.text) == (kind == "transient")
