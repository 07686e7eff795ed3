"""The dashboard's files on the local server as `make dev` wires them (`start_dashboard`: a
fallback of infra/local/server.py): the API's routes and `/dev` come first and are never
shadowed, the pages and assets are served with their headers, and whatever neither takes is
the API's JSON 404."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from infra.local.server import LocalServer, Response
from infra.local.static import NO_STORE, Dashboard, start_dashboard

INDEX = b"<!doctype html><title>gpurent</title><div id=root></div>"


@pytest.fixture
def served(aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[httpx.Client, list[str]]]:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_bytes(INDEX)
    (dist / "assets" / "index-abc.js").write_text("console.log(1);")
    asked: list[str] = []
    real = Dashboard.fallback

    def spy(self: Dashboard, method: str, path: str, headers: Any) -> Response | None:
        asked.append(f"{method} {path}")
        return real(self, method, path, headers)

    monkeypatch.setattr(Dashboard, "fallback", spy)
    srv = LocalServer("127.0.0.1", 0)
    srv.add_dev_route("GET", "/dev/ping", lambda path, headers, body: (200, {"pong": True}))
    start_dashboard(SimpleNamespace(server=srv), dist)  # type: ignore[arg-type]
    srv.start()
    with httpx.Client(base_url=srv.url, timeout=10, follow_redirects=False) as client:
        yield client, asked
    srv.shutdown()
    srv.server_close()


def test_pages_assets_and_the_root_redirect(served: tuple[httpx.Client, list[str]]) -> None:
    http, _ = served
    for path in ("/login", "/app", "/app/billing"):
        r = http.get(path, params={"session": "success"} if path == "/app/billing" else None)
        assert (r.status_code, r.content) == (200, INDEX), path
        assert r.headers["cache-control"] == NO_STORE
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert http.get("/").headers["location"] == "/login"
    http.cookies.set("sid", "x")
    assert http.get("/").headers["location"] == "/app"
    http.cookies.clear()
    r = http.head("/app/rentals")
    assert r.status_code == 200 and r.content == b"" and int(r.headers["content-length"]) == len(INDEX)
    assert http.get("/assets/index-abc.js").headers["cache-control"].endswith("immutable")
    r = http.get("/assets/index-old.js")
    assert r.status_code == 404 and r.content != INDEX


def test_the_api_and_dev_routes_come_first_and_unknown_paths_stay_json(
        served: tuple[httpx.Client, list[str]]) -> None:
    http, asked = served
    assert http.get("/dev/ping").json() == {"pong": True}
    r = http.get("/v1/openapi.json")  # an API route: the dashboard is never asked
    assert r.status_code == 200 and r.json()["openapi"].startswith("3.1")
    assert asked == []
    for method, path in (("GET", "/v1/nope"), ("POST", "/login"), ("GET", "/nothing"), ("DELETE", "/app")):
        r = http.request(method, path)
        assert r.status_code == 404 and r.json()["error"] == "not_found", (method, path, r.text)
    assert asked == ["GET /v1/nope", "POST /login", "GET /nothing", "DELETE /app"]
