"""The shared HTTP client: retries, backoff, Retry-After, what is never retried."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import respx

from gpurent.providers.base import ProviderError
from gpurent.providers.http import HttpPolicy, JsonHttp, parse_retry_after, status_kind

BASE = "https://api.example.test"


def client(sleeps, **policy) -> JsonHttp:
    return JsonHttp("vast", BASE, {"Authorization": "Bearer k"}, policy=HttpPolicy(**policy), sleep=sleeps,
                    rand=lambda: 0.0)


def run(coro):
    return asyncio.run(coro)


@respx.mock
def test_429_with_retry_after_then_success(sleeps):
    route = respx.get(f"{BASE}/x").mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "2"}, json={"error": "slow down"}),
        httpx.Response(200, json={"ok": True}),
    ])
    response = run(client(sleeps).send("GET", "/x", idempotent=True))
    assert response.status_code == 200
    assert route.call_count == 2
    assert sleeps.calls == [2.0]
    assert route.calls.last.request.headers["authorization"] == "Bearer k"


@respx.mock
def test_retry_after_is_capped(sleeps):
    respx.get(f"{BASE}/x").mock(side_effect=[
        httpx.Response(503, headers={"Retry-After": "3600"}),
        httpx.Response(200, json={}),
    ])
    run(client(sleeps, retry_after_cap=30.0).send("GET", "/x", idempotent=True))
    assert sleeps.calls == [30.0]


@respx.mock
def test_5xx_exhausts_retries_with_exponential_backoff(sleeps):
    route = respx.get(f"{BASE}/x").mock(return_value=httpx.Response(503, text="<html>busy</html>"))
    with pytest.raises(ProviderError) as e:
        run(client(sleeps, max_attempts=4, backoff_base=0.5).send("GET", "/x", idempotent=True))
    assert e.value.kind == "transient"
    assert "503" in e.value.message and "4 attempts" in e.value.message
    assert route.call_count == 4
    assert sleeps.calls == [0.25, 0.5, 1.0]  # base·2^(n-1), half of it jittered (rand = 0)


def test_backoff_is_capped_and_jittered(sleeps):
    http = JsonHttp("vast", BASE, {}, policy=HttpPolicy(backoff_base=1.0, backoff_cap=4.0), sleep=sleeps,
                    rand=lambda: 1.0)
    assert [http._backoff(n, None) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 4.0, 4.0]


@respx.mock
def test_read_timeout_on_a_create_is_not_retried(sleeps):
    route = respx.put(f"{BASE}/create").mock(side_effect=httpx.ReadTimeout("read timed out"))
    with pytest.raises(ProviderError) as e:
        run(client(sleeps).send("PUT", "/create", json={}, idempotent=False))
    assert e.value.kind == "transient"
    assert "may have taken effect" in e.value.message
    assert route.call_count == 1
    assert sleeps.calls == []


@respx.mock
def test_read_timeout_on_an_idempotent_call_is_retried(sleeps):
    route = respx.get(f"{BASE}/x").mock(side_effect=[httpx.ReadTimeout("slow"), httpx.Response(200, json=[])])
    assert run(client(sleeps).send("GET", "/x", idempotent=True)).status_code == 200
    assert route.call_count == 2


@respx.mock
@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_on_a_create_are_handed_back_not_retried(sleeps, status):
    route = respx.put(f"{BASE}/create").mock(return_value=httpx.Response(status))
    response = run(client(sleeps).send("PUT", "/create", json={}, idempotent=False))
    assert response.status_code == status
    assert route.call_count == 1


@respx.mock
@pytest.mark.parametrize("status", [429, 503])
def test_not_processed_statuses_are_retried_even_for_a_create(sleeps, status):
    route = respx.put(f"{BASE}/create").mock(side_effect=[httpx.Response(status), httpx.Response(200, json={})])
    assert run(client(sleeps).send("PUT", "/create", json={}, idempotent=False)).status_code == 200
    assert route.call_count == 2


@respx.mock
def test_connect_errors_are_retried_for_every_call(sleeps):
    route = respx.put(f"{BASE}/create").mock(side_effect=[httpx.ConnectError("refused"),
                                                        httpx.Response(200, json={})])
    assert run(client(sleeps).send("PUT", "/create", json={}, idempotent=False)).status_code == 200
    assert route.call_count == 2


@respx.mock
def test_connect_errors_exhaust_to_transient(sleeps):
    respx.get(f"{BASE}/x").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(ProviderError) as e:
        run(client(sleeps, max_attempts=3).send("GET", "/x", idempotent=True))
    assert e.value.kind == "transient" and len(sleeps.calls) == 2


@respx.mock
def test_a_veto_stops_a_retry(sleeps):
    route = respx.post(f"{BASE}/search").mock(return_value=httpx.Response(429, json={"error": "quota"}))
    response = run(client(sleeps).send("POST", "/search", json={}, idempotent=True, retryable=lambda r: False))
    assert response.status_code == 429 and route.call_count == 1


@respx.mock
def test_timeouts_are_sent_with_every_request(sleeps):
    route = respx.get(f"{BASE}/x").mock(return_value=httpx.Response(200, json={}))
    run(client(sleeps, connect_timeout=3.0, read_timeout=10.0).send("GET", "/x", idempotent=True))
    timeout = route.calls.last.request.extensions["timeout"]
    assert timeout["connect"] == 3.0 and timeout["read"] == 10.0
    run(client(sleeps).send("GET", "/x", idempotent=True, read_timeout=42.0))
    assert route.calls.last.request.extensions["timeout"]["read"] == 42.0


def test_malformed_json_is_transient(sleeps):
    http = client(sleeps)
    with pytest.raises(ProviderError) as e:
        http.decode(httpx.Response(200, text="<html>oops</html>"))
    assert e.value.kind == "transient" and "malformed JSON" in e.value.message
    assert str(e.value).startswith("vast: ")


def test_retry_after_forms():
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(("status", "kind"), [(401, "auth"), (403, "auth"), (404, "not_found"),
                                              (402, "quota"), (400, "invalid"), (422, "invalid"),
                                              (500, "transient"), (429, "transient")])
def test_status_kinds(status, kind):
    assert status_kind(status) == kind
