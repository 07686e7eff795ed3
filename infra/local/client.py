"""Invokes the API's functions in-process with real-shaped HTTP API events,
routed exactly as template.yaml routes them (the integration tests' client)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from infra.local import template
from infra.local.events import http_event
from infra.local.functions import load_handler


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str
    cookies: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def match(method: str, path: str) -> tuple[template.Route, dict[str, str]] | None:
    for route in template.routes():
        params = route.match(method.upper(), path)
        if params is not None:
            return route, params
    return None


def invoke(
    method: str,
    url: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
    source_ip: str = "127.0.0.1",
) -> Reply:
    parts = urlsplit(url)
    found = match(method, parts.path)
    if found is None:
        return Reply(404, {"content-type": "application/json"},
                     json.dumps({"error": "not_found", "message": "Not found"}))
    route, params = found
    hdrs = dict(headers or {})
    if cookies:
        hdrs["cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        hdrs.setdefault("content-type", "application/json")
    event = http_event(method, parts.path, route.route_key, query=parts.query, headers=hdrs, body=data,
                       path_params=params, source_ip=source_ip)
    out = load_handler(route.code_uri, route.handler)(event, None)
    return Reply(int(out["statusCode"]), dict(out.get("headers") or {}), out.get("body") or "",
                 list(out.get("cookies") or []))
