"""Lambda Cloud adapter against recorded-shape answers (provider-wire.md §3)."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
import respx

from gpurent.providers.base import AllocateRequest, Offer, ProviderError
from gpurent.providers.lambdacloud import LambdaAdapter

BASE = "https://cloud.lambda.test/api/v1"
RID = "rent_01JDX4ZK7Q0V8W1S2T3Y4Z5A6B"
LID = "0920582c7ff041399e34823a0be62549"
KEYS = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGfK3b8v7m4oW alice@laptop", "ssh-rsa AAAAB3NzaC1yc2E bob@desk")


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def lam(sleeps) -> LambdaAdapter:
    return LambdaAdapter("secret_lambda_key", "gpurent-platform", BASE, sleep=sleeps)


def offer(key: str = "gpu_1x_h100_sxm5|us-east-1") -> Offer:
    return Offer("lambda", key, "1x H100 (80 GB SXM5)", "h100-80gb", "H100_SXM_80GB", 80, 1, 329, "US-East", "US",
                 "PCIe")


def request(start: str | None = None) -> AllocateRequest:
    return AllocateRequest(RID, offer(), "ignored-by-lambda", start, KEYS)


@respx.mock
def test_instance_types(lam, fx, caplog):
    route = respx.get(f"{BASE}/instance-types").mock(
        return_value=httpx.Response(200, json=fx("lambda/instance_types.json")))
    with caplog.at_level(logging.INFO, logger="gpurent.providers"):
        offers = run(lam.list_offers())
    assert route.calls.last.request.headers["authorization"] == "Bearer secret_lambda_key"
    got = {(o.offer_key, o.family, o.gpu_count, o.price_cents_per_hour, o.region, o.region_code, o.interconnect)
           for o in offers}
    assert got == {
        ("gpu_1x_h100_sxm5|us-east-1", "h100-80gb", 1, 329, "US-East", "US", "NVLink"),
        ("gpu_1x_h100_sxm5|europe-central-1", "h100-80gb", 1, 329, "EU-Central", "DE", "NVLink"),
        ("gpu_8x_b200_sxm6|asia-northeast-1", "b200", 8, 3992, "AP-Northeast", "JP", "NVLink"),
        ("gpu_8x_a100_80gb_sxm4|us-west-1", "a100-80gb", 8, 1432, "US-West", "US", "NVLink"),
    }
    # 8x H100 has no capacity; the 40 GB A100, H100 PCIe, A10 and GH200 are not ours;
    # a region we do not know and a float price are left out.
    assert "gpu_1x_a100_sxm4" in caplog.text and "gpu_1x_gh200" in caplog.text
    assert "mars-central-1" in caplog.text
    assert "gpu_1x_rtx4090_float" in caplog.text and "positive integer" in caplog.text


@respx.mock
@pytest.mark.parametrize("answer", [httpx.Response(200, json={"data": []}), httpx.Response(200, json={}),
                                    httpx.Response(200, text="<html>")])
def test_instance_types_malformed(lam, answer):
    respx.get(f"{BASE}/instance-types").mock(return_value=answer)
    with pytest.raises(ProviderError) as e:
        run(lam.list_offers())
    assert e.value.kind == "transient"


@respx.mock
def test_instance_types_429_then_success(lam, fx, sleeps):
    route = respx.get(f"{BASE}/instance-types").mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "10"}), httpx.Response(200, json=fx("lambda/instance_types.json"))])
    assert len(run(lam.list_offers())) == 4
    assert route.call_count == 2 and sleeps.calls == [10.0]


@respx.mock
def test_instance_types_invalid_key(lam, fx):
    respx.get(f"{BASE}/instance-types").mock(
        return_value=httpx.Response(401, json=fx("lambda/error_invalid_api_key.json")))
    with pytest.raises(ProviderError) as e:
        run(lam.list_offers())
    assert e.value.kind == "auth" and "global/invalid-api-key" in e.value.message


@respx.mock
def test_launch_request(lam, fx):
    route = respx.post(f"{BASE}/instance-operations/launch").mock(
        return_value=httpx.Response(200, json=fx("lambda/launch_ok.json")))
    assert run(lam.allocate(request("jupyter lab --port 8888"))) == LID
    req = route.calls.last.request
    assert req.headers["authorization"] == "Bearer secret_lambda_key"
    body = json.loads(req.content)
    assert set(body) == {"region_name", "instance_type_name", "ssh_key_names", "name", "user_data"}
    assert body["region_name"] == "us-east-1"
    assert body["instance_type_name"] == "gpu_1x_h100_sxm5"
    assert body["ssh_key_names"] == ["gpurent-platform"]
    assert body["name"] == RID
    ud = body["user_data"]
    assert ud.startswith("#!/bin/sh")
    assert "/root/.ssh/authorized_keys" in ud and "/home/ubuntu" in ud
    assert all(k in ud for k in KEYS) and "jupyter lab --port 8888" in ud


@respx.mock
@pytest.mark.parametrize(("status", "fixture", "kind"), [
    (400, "lambda/error_insufficient_capacity.json", "capacity"),
    (400, "lambda/error_quota_exceeded.json", "quota"),
    (403, "lambda/error_quota_exceeded.json", "quota"),  # the code decides, not the status
    (401, "lambda/error_invalid_api_key.json", "auth"),
    (403, "lambda/error_account_inactive.json", "auth"),
    (400, "lambda/error_invalid_parameters.json", "invalid"),
    (404, "lambda/error_object_does_not_exist.json", "not_found"),
    (500, "lambda/error_unknown.json", "transient"),
])
def test_launch_errors_by_code(lam, fx, status, fixture, kind):
    route = respx.post(f"{BASE}/instance-operations/launch").mock(return_value=httpx.Response(status, json=fx(fixture)))
    with pytest.raises(ProviderError) as e:
        run(lam.allocate(request()))
    assert e.value.kind == kind and route.call_count == 1


@respx.mock
def test_unknown_code_is_transient_and_logged_raw(lam, caplog):
    respx.post(f"{BASE}/instance-operations/launch").mock(return_value=httpx.Response(
        400, json={"error": {"code": "instance-operations/launch/brand-new-reason",
                             "message": "insufficient capacity"}}))
    with caplog.at_level(logging.WARNING, logger="gpurent.providers"), pytest.raises(ProviderError) as e:
        run(lam.allocate(request()))
    assert e.value.kind == "transient"  # never classified by the text
    assert "brand-new-reason: insufficient capacity" in caplog.text and "words we do not know" in caplog.text


@respx.mock
def test_an_answer_without_a_code_falls_back_to_status(lam):
    respx.post(f"{BASE}/instance-operations/launch").mock(return_value=httpx.Response(403, text="Forbidden"))
    with pytest.raises(ProviderError) as e:
        run(lam.allocate(request()))
    assert e.value.kind == "auth"


@respx.mock
@pytest.mark.parametrize("failure", [httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("dropped"),
                                     httpx.Response(504)])
def test_launch_is_never_repeated(lam, failure):
    route = respx.post(f"{BASE}/instance-operations/launch").mock(side_effect=[failure])
    with pytest.raises(ProviderError) as e:
        run(lam.allocate(request()))
    assert e.value.kind == "transient" and route.call_count == 1


@respx.mock
def test_launch_without_ids(lam):
    respx.post(f"{BASE}/instance-operations/launch").mock(return_value=httpx.Response(200, json={"data": {}}))
    with pytest.raises(ProviderError) as e:
        run(lam.allocate(request()))
    assert e.value.kind == "transient"


@respx.mock
@pytest.mark.parametrize(("fixture", "status", "host", "port"), [
    ("lambda/instance_active.json", "running", "203.0.113.9", 22),
    ("lambda/instance_active_no_ip.json", "provisioning", None, None),
    ("lambda/instance_booting.json", "provisioning", None, None),
    ("lambda/instance_unhealthy.json", "failed", None, None),
    ("lambda/instance_preempted.json", "terminated", None, None),
    ("lambda/instance_terminating.json", "stopped", None, None),
    ("lambda/instance_terminated.json", "terminated", None, None),
])
def test_get_instance_states(lam, fx, fixture, status, host, port):
    respx.get(f"{BASE}/instances/{LID}").mock(return_value=httpx.Response(200, json=fx(fixture)))
    inst = run(lam.get_instance(LID))
    assert inst is not None and (inst.instance_id, inst.label) == (LID, RID)
    assert (inst.status, inst.host, inst.ssh_port) == (status, host, port)
    # preempted / terminating: Lambda is ending it on its own; no grace period for those
    assert inst.ending == (fixture in ("lambda/instance_preempted.json", "lambda/instance_terminating.json"))
    if inst.ending:
        assert inst.error and "lambda reports the instance" in inst.error


@respx.mock
def test_get_instance_gone(lam, fx):
    respx.get(f"{BASE}/instances/{LID}").mock(
        return_value=httpx.Response(404, json=fx("lambda/error_object_does_not_exist.json")))
    assert run(lam.get_instance(LID)) is None


@respx.mock
def test_a_bare_404_does_not_prove_an_instance_gone(lam):
    respx.get(f"{BASE}/instances/{LID}").mock(return_value=httpx.Response(404, text="<html>nginx</html>"))
    respx.post(f"{BASE}/instance-operations/terminate").mock(return_value=httpx.Response(404, json={"detail": "?"}))
    with pytest.raises(ProviderError) as e:
        run(lam.get_instance(LID))
    assert e.value.kind == "transient"
    with pytest.raises(ProviderError) as e:
        run(lam.terminate(LID))
    assert e.value.kind == "transient"


@respx.mock
def test_get_instance_malformed(lam):
    respx.get(f"{BASE}/instances/{LID}").mock(return_value=httpx.Response(200, json={"data": {"id": LID}}))
    with pytest.raises(ProviderError) as e:
        run(lam.get_instance(LID))
    assert e.value.kind == "transient"


@respx.mock
def test_list_instances_keeps_ours(lam, fx):
    respx.get(f"{BASE}/instances").mock(return_value=httpx.Response(200, json=fx("lambda/instances.json")))
    assert [(i.instance_id, i.status) for i in run(lam.list_instances())] == [(LID, "running")]


@respx.mock
def test_terminate(lam, fx):
    route = respx.post(f"{BASE}/instance-operations/terminate").mock(
        return_value=httpx.Response(200, json=fx("lambda/terminate_ok.json")))
    run(lam.terminate(LID))
    assert json.loads(route.calls.last.request.content) == {"instance_ids": [LID]}


@respx.mock
def test_terminate_unknown_is_success(lam, fx):
    respx.post(f"{BASE}/instance-operations/terminate").mock(
        return_value=httpx.Response(404, json=fx("lambda/error_object_does_not_exist.json")))
    run(lam.terminate(LID))


@respx.mock
def test_terminate_timeout_is_retried(lam, fx):
    route = respx.post(f"{BASE}/instance-operations/terminate").mock(side_effect=[
        httpx.ReadTimeout("slow"), httpx.Response(200, json=fx("lambda/terminate_ok.json"))])
    run(lam.terminate(LID))
    assert route.call_count == 2


@respx.mock
def test_terminate_server_error(lam, fx):
    respx.post(f"{BASE}/instance-operations/terminate").mock(
        return_value=httpx.Response(500, json=fx("lambda/error_unknown.json")))
    with pytest.raises(ProviderError) as e:
        run(lam.terminate(LID))
    assert e.value.kind == "transient"


def test_needs_a_platform_key_name():
    with pytest.raises(ValueError):
        LambdaAdapter("k", "", BASE)
