"""The OpenAPI document (`infra/openapi.py`): committed and packaged copies are
current, every template route is in it, and every error code it mentions is a
real one."""

from __future__ import annotations

import json
from typing import Any

from gpurent.errors import STATUS
from infra import openapi
from infra.local.template import ROOT, routes

REGENERATE = "python -m infra.openapi > docs/openapi.json"


def _document() -> dict[str, Any]:
    return openapi.build()


def test_committed_and_packaged_documents_are_current() -> None:
    fresh = openapi.render()
    for path in (openapi.COMMITTED, openapi.PACKAGED):
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        assert current == fresh, f"{path.relative_to(ROOT)} is stale: run `{REGENERATE}`"


def test_every_template_route_is_documented() -> None:
    doc = _document()
    for r in routes():
        op = doc["paths"].get(r.path, {}).get(r.method.lower())
        assert op is not None, f"{r.route_key} is missing from the document"
        assert op["summary"] and op["responses"], r.route_key
    documented = {f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops}
    assert documented == {r.route_key for r in routes()}


def _error_codes(node: Any) -> list[tuple[str, str]]:
    """(status, code) of every error response's `error` enum, anywhere in the document."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "responses" and isinstance(value, dict):
                for status, resp in value.items():
                    schema = resp.get("content", {}).get("application/json", {}).get("schema", {})
                    for code in schema.get("properties", {}).get("error", {}).get("enum", []):
                        found.append((status, code))
            found.extend(_error_codes(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_error_codes(item))
    return found


def test_every_error_code_is_a_real_one_under_its_status() -> None:
    found = _error_codes(_document())
    assert found
    for status, code in found:
        assert code in STATUS, f"{code} is not in gpurent.errors.STATUS"
        assert str(STATUS[code]) == status, f"{code} documented under {status}, its status is {STATUS[code]}"


def test_auth_and_security_follow_the_routers() -> None:
    doc = _document()
    served = openapi.function_routes()
    for key, route in served.items():
        method, path = key.split(" ", 1)
        op = doc["paths"][path][method.lower()]
        if route.session_only:  # credential management: a session, never a token
            assert op["security"] == [{"sessionCookie": []}], key
            assert "401" in op["responses"] and "403" in op["responses"], key
        elif route.auth:
            assert op["security"] == [{"sessionCookie": []}, {"bearerToken": []}], key
            assert "401" in op["responses"], key
        else:
            assert op["security"] == [], key
        if route.admin:
            assert "forbidden" in op["responses"]["403"]["content"]["application/json"]["schema"]["properties"][
                "error"]["enum"], key
        if route.rate_limited:
            assert op["responses"]["429"]["headers"]["Retry-After"]["required"] is True, key
        if "{id}" in path:
            assert "404" in op["responses"], key


def test_document_is_json_and_openapi_3_1() -> None:
    doc = json.loads(openapi.PACKAGED.read_text(encoding="utf-8"))
    assert doc["openapi"] == "3.1.0"
    assert set(doc["components"]["securitySchemes"]) == {"sessionCookie", "bearerToken"}
    assert doc["paths"]["/v1/openapi.json"]["get"]["security"] == []
