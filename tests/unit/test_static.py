"""The dashboard's files on the local stack's port (infra/local/static.py), against a
small `dist` laid out as `vite build` lays it out."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from infra.local.static import IMMUTABLE, NO_STORE, Dashboard, has_session

INDEX = b"<!doctype html><html><head><script type=module src=/assets/index-abc123.js></script></head></html>"


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_bytes(INDEX)
    (tmp_path / "assets" / "index-abc123.js").write_text("console.log('x');" * 200)
    (tmp_path / "favicon.svg").write_text("<svg/>")
    (tmp_path.parent / "secret.txt").write_text("nope")
    return tmp_path


def get(d: Dashboard, path: str, **headers: str):
    return d.handle("GET", path, headers)


@pytest.mark.parametrize("path", ["/login", "/app", "/app/", "/app/rentals", "/app/billing", "/app/x/y"])
def test_pages_fall_back_to_the_single_page_uncached(dist: Path, path: str) -> None:
    status, headers, body = get(Dashboard(dist), path)
    assert (status, body) == (200, INDEX)
    assert headers["Cache-Control"] == NO_STORE and headers["Content-Type"].startswith("text/html")
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_checkout_return_pages_are_the_dashboard(dist: Path) -> None:
    for query_page in ("/app/billing",):  # ?session=success|cancel: the query is not part of the path
        assert get(Dashboard(dist), query_page)[0] == 200


def test_root_redirects_by_session_cookie(dist: Path) -> None:
    d = Dashboard(dist)
    assert get(d, "/")[:2] == (302, {"Location": "/login", "Cache-Control": NO_STORE, "Content-Type": "text/plain"})
    assert get(d, "/", cookie="theme=dark; sid=abc")[1]["Location"] == "/app"
    assert get(d, "/", Cookie="sid=")[1]["Location"] == "/login"
    assert not has_session({"cookie": "sidx=1"})


def test_hashed_assets_are_immutable_and_gzipped_on_request(dist: Path) -> None:
    d = Dashboard(dist)
    status, headers, body = get(d, "/assets/index-abc123.js")
    assert status == 200 and headers["Cache-Control"] == IMMUTABLE
    assert "javascript" in headers["Content-Type"] and "Content-Encoding" not in headers
    status, headers, packed = get(d, "/assets/index-abc123.js", **{"Accept-Encoding": "gzip, br"})
    assert headers["Content-Encoding"] == "gzip" and gzip.decompress(packed) == body


def test_a_missing_asset_is_a_404_never_the_page(dist: Path) -> None:
    status, headers, body = get(Dashboard(dist), "/assets/index-old999.js")
    assert status == 404 and body != INDEX and headers["Cache-Control"] == NO_STORE


def test_path_tricks_do_not_leave_dist(dist: Path) -> None:
    d = Dashboard(dist)
    assert get(d, "/assets/../../secret.txt")[0] == 404
    assert get(d, "/../secret.txt") is None


def test_api_dev_and_unknown_paths_are_left_to_the_server(dist: Path) -> None:
    d = Dashboard(dist)
    for path in ("/v1/auth/me", "/v1/nope", "/dev/mailbox", "/nothing", "/index.html", "/appx"):
        assert get(d, path) is None, path
    assert d.handle("POST", "/login", {}) is None  # only GET/HEAD
    assert get(d, "/favicon.svg")[0] == 200


def test_not_built_yet_says_how_to_build(tmp_path: Path) -> None:
    status, _, body = get(Dashboard(tmp_path / "missing"), "/login")
    assert status == 503 and b"make web" in body


def test_web_deploy_uploads_assets_first_and_the_page_last(dist: Path) -> None:
    from infra.web_deploy import IMMUTABLE as DEPLOY_IMMUTABLE
    from infra.web_deploy import cache_control, upload_order

    (dist / "size.json").write_text("{}")
    (dist / ".built").write_text("")
    order = [p.relative_to(dist).as_posix() for p in upload_order(dist)]
    assert order == ["assets/index-abc123.js", "favicon.svg", "index.html"]
    assert cache_control("assets/index-abc123.js") == DEPLOY_IMMUTABLE
    assert cache_control("index.html") == "no-store"
