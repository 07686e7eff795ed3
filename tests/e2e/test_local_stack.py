"""The local stack over real HTTP: the README walkthrough (sign in with a
mailed code, add an SSH key, make a personal API token, sign out), the 404
envelope and the dev-only test clock.

The stack is shared by the whole session: every test uses its own email
(request-code allows 1 per 30 s per email); the per-IP limit of unauthenticated
routes is raised for the tier (tests/e2e/conftest.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

SSH_KEYGEN = shutil.which("ssh-keygen")
needs_ssh_keygen = pytest.mark.skipif(SSH_KEYGEN is None, reason="ssh-keygen not installed")
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture
def http(stack: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack, timeout=600) as client:  # a hang guard: a busy machine makes a jump slow
        yield client


def new_email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


def error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) <= {"error", "message", "details"}
    return dict(body)


def mailbox(http: httpx.Client) -> list[dict[str, Any]]:
    r = http.get("/dev/mailbox")
    assert r.status_code == 200, r.text
    items = r.json()
    assert isinstance(items, list)
    for item in items:
        assert set(item) == {"to", "subject", "body", "sentAt"}, item
    return items


def mailed_code(http: httpx.Client, email: str) -> str:
    """The code of the newest mail to `email` (the mailbox is newest first)."""
    for item in mailbox(http):
        if item["to"] == email:
            m = re.search(r"\b(\d{6})\b", item["body"])
            assert m, item
            return m.group(1)
    raise AssertionError(f"no mail to {email}")


def sign_in(http: httpx.Client, email: str) -> dict[str, Any]:
    r = http.post("/v1/auth/request-code", json={"email": email})
    assert r.status_code == 200, r.text
    r = http.post("/v1/auth/verify-code", json={"email": email, "code": mailed_code(http, email)})
    assert r.status_code == 200, r.text
    assert http.cookies.get("sid")
    return dict(r.json()["user"])


def keygen(directory: Path, name: str, *args: str) -> Path:
    """An ssh-keygen key pair; returns the `.pub` path."""
    assert SSH_KEYGEN is not None
    path = directory / name
    subprocess.run([SSH_KEYGEN, "-q", *args, "-N", "", "-C", f"{name}@e2e", "-f", str(path)],
                   check=True, capture_output=True, timeout=120)
    return path.with_name(name + ".pub")


def fingerprint(pub: Path) -> str:
    assert SSH_KEYGEN is not None
    return subprocess.run([SSH_KEYGEN, "-E", "sha256", "-lf", str(pub)], check=True, capture_output=True,
                          text=True, timeout=60).stdout.split()[1]


# --------------------------------------------------------------------------- the walkthrough


@needs_ssh_keygen
def test_readme_walkthrough(stack: str, http: httpx.Client, tmp_path: Path) -> None:
    email = new_email("walk")

    # 1. Ask for a code; it arrives in the dev mailbox.
    r = http.post("/v1/auth/request-code", json={"email": email})
    assert r.status_code == 200 and r.json() == {"ok": True, "created": True}
    newest = mailbox(http)[0]
    assert newest["to"] == email and ISO_Z.fullmatch(newest["sentAt"])
    code = mailed_code(http, email)

    # 2. Verify it: the documented session cookie is set.
    r = http.post("/v1/auth/verify-code", json={"email": email, "code": code})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"]["email"] == email and body["user"]["id"].startswith("usr_")
    assert ISO_Z.fullmatch(body["expiresAt"])
    (set_cookie,) = r.headers.get_list("set-cookie")
    assert set_cookie.startswith("sid=")
    attrs = [a.strip() for a in set_cookie.split(";")[1:]]
    assert {"HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=2592000"} <= set(attrs)
    sid = http.cookies["sid"]
    assert len(sid) >= 43
    user = body["user"]

    # 3. Who am I.
    r = http.get("/v1/auth/me")
    assert r.status_code == 200, r.text
    assert r.json()["user"] == user
    assert r.headers["x-ratelimit-limit"] == "100"
    assert int(r.headers["x-ratelimit-remaining"]) < 100 and int(r.headers["x-ratelimit-reset"]) > 0

    # 4. Add a real key, then list it.
    pub = keygen(tmp_path, "id_ed25519", "-t", "ed25519")
    r = http.post("/v1/ssh-keys", json={"name": "laptop", "publicKey": pub.read_text()})
    assert r.status_code == 200, r.text
    key = r.json()
    assert set(key) == {"id", "name", "fingerprint", "algorithm", "createdAt"}
    assert re.fullmatch(r"key_[0-9A-HJKMNP-TV-Z]{26}", key["id"])
    assert key["name"] == "laptop" and key["algorithm"] == "ssh-ed25519"
    assert key["fingerprint"] == fingerprint(pub)
    assert ISO_Z.fullmatch(key["createdAt"])
    r = http.get("/v1/ssh-keys")
    assert r.status_code == 200 and r.json() == {"keys": [key]}

    # 5. A personal API token works as a Bearer credential, without the cookie.
    r = http.post("/v1/auth/tokens", json={"name": "laptop script"})
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    with httpx.Client(base_url=stack, timeout=15, headers={"authorization": f"Bearer {token}"}) as bot:
        r = bot.get("/v1/auth/me")
        assert r.status_code == 200 and r.json()["user"] == user
        assert bot.get("/v1/ssh-keys").json() == {"keys": [key]}

    # 6. Sign out: the cookie is cleared and that session is dead server-side too.
    r = http.post("/v1/auth/logout")
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert any(c.startswith("sid=;") and "Max-Age=0" in c for c in r.headers.get_list("set-cookie"))
    body = error(http.get("/v1/auth/me"), 401, "unauthorized")
    assert body["message"] == "Not signed in"
    with httpx.Client(base_url=stack, timeout=15, headers={"cookie": f"sid={sid}"}) as stale:
        error(stale.get("/v1/auth/me"), 401, "unauthorized")
        error(stale.get("/v1/ssh-keys"), 401, "unauthorized")
    # Logout ends only that session: the token still works.
    with httpx.Client(base_url=stack, timeout=15, headers={"authorization": f"Bearer {token}"}) as bot:
        assert bot.get("/v1/auth/me").status_code == 200


def test_sign_in_errors_over_http(http: httpx.Client) -> None:
    email = new_email("errors")
    error(http.post("/v1/auth/request-code", json={"email": "not-an-email"}), 400, "invalid_email")
    assert http.post("/v1/auth/request-code", json={"email": email}).status_code == 200
    r = http.post("/v1/auth/request-code", json={"email": email})
    error(r, 429, "code_request_rate_limited")
    assert 1 <= int(r.headers["retry-after"]) <= 30
    code = mailed_code(http, email)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    error(http.post("/v1/auth/verify-code", json={"email": email, "code": wrong}), 401, "code_invalid")
    assert "sid" not in http.cookies
    error(http.post("/v1/auth/verify-code", json={"email": email}), 400, "validation_failed")
    assert http.post("/v1/auth/verify-code", json={"email": email, "code": code}).status_code == 200


def test_mailbox_is_newest_first(http: httpx.Client) -> None:
    first, second = new_email("first"), new_email("second")
    assert http.post("/v1/auth/request-code", json={"email": first}).status_code == 200
    assert http.post("/v1/auth/request-code", json={"email": second}).status_code == 200
    items = mailbox(http)
    recipients = [i["to"] for i in items]
    assert recipients.index(second) < recipients.index(first)
    assert items[0]["to"] == second
    assert [i["sentAt"] for i in items] == sorted((i["sentAt"] for i in items), reverse=True)


@needs_ssh_keygen
def test_ssh_key_rules_over_http(http: httpx.Client, tmp_path: Path) -> None:
    sign_in(http, new_email("keys"))
    weak = keygen(tmp_path, "rsa1024", "-t", "rsa", "-b", "1024")
    error(http.post("/v1/ssh-keys", json={"name": "old", "publicKey": weak.read_text()}), 400, "weak_key")
    pub = keygen(tmp_path, "ecdsa", "-t", "ecdsa", "-b", "256")
    key = http.post("/v1/ssh-keys", json={"name": "ecdsa", "publicKey": pub.read_text()}).json()
    assert key["algorithm"] == "ecdsa-sha2-nistp256" and key["fingerprint"] == fingerprint(pub)
    error(http.post("/v1/ssh-keys", json={"name": "again", "publicKey": pub.read_text()}), 400, "duplicate_key")
    private = pub.with_suffix("").read_text()
    body = error(http.post("/v1/ssh-keys", json={"name": "oops", "publicKey": private}), 400, "validation_failed")
    assert "publicKey" in body["details"]
    error(http.post("/v1/ssh-keys", content=b'{"name": ', headers={"content-type": "application/json"}),
          400, "validation_failed")
    error(http.delete("/v1/ssh-keys/key_" + "0" * 26), 404, "key_not_found")
    r = http.delete(f"/v1/ssh-keys/{key['id']}")
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert http.get("/v1/ssh-keys").json() == {"keys": []}
    error(http.delete(f"/v1/ssh-keys/{key['id']}"), 404, "key_not_found")


def test_unauthenticated_api_calls_are_401(http: httpx.Client) -> None:
    for method, path in [("GET", "/v1/auth/me"), ("GET", "/v1/ssh-keys"), ("POST", "/v1/ssh-keys"),
                         ("DELETE", "/v1/ssh-keys/key_" + "0" * 26), ("POST", "/v1/auth/logout")]:
        error(http.request(method, path, json={} if method == "POST" else None), 401, "unauthorized")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/nothing-here"), ("GET", "/nothing"), ("POST", "/v1/ssh-keys/extra/segments"),
     ("PUT", "/v1/ssh-keys"), ("GET", "/dev/nothing")],
)
def test_unknown_paths_are_a_404_envelope(http: httpx.Client, method: str, path: str) -> None:
    error(http.request(method, path), 404, "not_found")


# --------------------------------------------------------------------------- the dev clock


def show_clock(http: httpx.Client) -> dict[str, Any]:
    r = http.get("/dev/clock")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"now", "epoch", "offsetSeconds"}
    assert ISO_Z.fullmatch(body["now"])
    return dict(body)


def test_dev_clock_advances(http: httpx.Client) -> None:
    before = show_clock(http)
    r = http.post("/dev/clock/advance", json={"seconds": 3600})
    assert r.status_code == 200, r.text
    moved = r.json()
    assert moved["offsetSeconds"] == before["offsetSeconds"] + 3600
    # The test clock is real time plus the offset: it moved by the 3600 s, and real time by
    # whatever the advance took (never negative; how long is not this test's business).
    assert moved["epoch"] - before["epoch"] >= 3600
    assert moved["epoch"] - moved["offsetSeconds"] >= before["epoch"] - before["offsetSeconds"]
    after = show_clock(http)
    assert after["offsetSeconds"] == moved["offsetSeconds"]
    assert after["now"] >= moved["now"]


def test_a_session_lives_through_an_hour_of_test_clock(http: httpx.Client) -> None:
    user = sign_in(http, new_email("clock"))
    assert http.post("/dev/clock/advance", json={"seconds": 3600}).status_code == 200
    r = http.get("/v1/auth/me")
    assert r.status_code == 200 and r.json()["user"] == user


@pytest.mark.parametrize(
    "body",
    [b"not json", b"{}", b"[]", b'"3600"', b'{"seconds": "soon"}', b'{"seconds": 0}', b'{"seconds": -60}',
     b'{"seconds": 2678401}', b'{"seconds": NaN}', b'{"seconds": Infinity}'],
)
def test_dev_clock_refuses_a_bad_body(http: httpx.Client, body: bytes) -> None:
    before = show_clock(http)
    error(http.post("/dev/clock/advance", content=body, headers={"content-type": "application/json"}),
          400, "validation_failed")
    assert show_clock(http)["offsetSeconds"] == before["offsetSeconds"]


@pytest.mark.parametrize("body", [b'{"seconds": null}', b'{"seconds": {}}', b'{"seconds": [60]}'])
def test_dev_clock_refuses_a_non_numeric_seconds(http: httpx.Client, body: bytes) -> None:
    error(http.post("/dev/clock/advance", content=body, headers={"content-type": "application/json"}),
          400, "validation_failed")


# --------------------------------------------------------------------------- the catalog (simulated providers)

LISTING_KEYS = {"id", "model", "family", "vramGb", "gpuCount", "pricePerHourCents", "providerCode", "region",
                "regionCode", "interconnect"}
EU_CODES = {"GB", "IE", "FR", "BE", "NL", "LU", "DE", "AT", "CH", "CZ", "PL", "SK", "HU", "SI", "LI", "SE", "NO",
            "FI", "DK", "IS", "EE", "LV", "LT", "ES", "PT", "IT", "GR", "HR", "MT", "CY", "RO", "BG"}
APAC_CODES = {"JP", "KR", "CN", "HK", "TW", "SG", "MY", "TH", "ID", "VN", "PH", "AU", "NZ", "IN"}


def all_listings(http: httpx.Client, query: str = "") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    params: dict[str, str] = dict(httpx.QueryParams(query))
    params["pageSize"] = "200"
    for _ in range(100):
        r = http.get("/v1/catalog/listings", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"listings", "nextCursor"}
        out.extend(body["listings"])
        if body["nextCursor"] is None:
            return out
        params["cursor"] = body["nextCursor"]
    raise AssertionError("pagination does not end")


def in_region(code: str, region: str) -> bool:
    if region == "eu":
        return code in EU_CODES
    if region == "apac":
        return code in APAC_CODES
    return code.lower() == region.lower()


def test_catalog_lists_all_three_simulated_providers_cheapest_first(http: httpx.Client) -> None:
    sign_in(http, new_email("catalog"))
    items = all_listings(http)
    assert {li["providerCode"] for li in items} == {"vast", "runpod", "lambda"}
    prices = [li["pricePerHourCents"] for li in items]
    assert prices == sorted(prices)
    assert len({li["id"] for li in items}) == len(items)
    for li in items:
        assert set(li) == LISTING_KEYS, li
        assert re.fullmatch(r"lst_[0-9A-HJKMNP-TV-Z]{26}", li["id"])
    page = http.get("/v1/catalog/listings").json()
    assert page["listings"] == items[:50] and isinstance(page["nextCursor"], str)


def test_catalog_filters_over_http(http: httpx.Client) -> None:
    sign_in(http, new_email("filters"))
    everything = all_listings(http)
    cases: list[tuple[str, Any]] = [
        ("model=H100", lambda li: li["model"].startswith("H100_")),
        ("model=B200", lambda li: li["model"] == "B200"),
        ("minVramGb=80", lambda li: li["vramGb"] >= 80),
        ("gpuCount=8", lambda li: li["gpuCount"] == 8),
        ("region=US", lambda li: li["regionCode"] == "US"),
        ("region=us", lambda li: li["regionCode"] == "US"),
        ("region=eu", lambda li: in_region(li["regionCode"], "eu")),
        ("region=apac", lambda li: in_region(li["regionCode"], "apac")),
        ("region=JP", lambda li: li["regionCode"] == "JP"),
        ("maxPricePerHourCents=100", lambda li: li["pricePerHourCents"] <= 100),
        ("model=H100&region=eu", lambda li: li["model"].startswith("H100_") and in_region(li["regionCode"], "eu")),
        ("model=RTX_4090&gpuCount=1&region=us&maxPricePerHourCents=60",
         lambda li: li["model"] == "RTX_4090" and li["gpuCount"] == 1 and li["regionCode"] == "US"
         and li["pricePerHourCents"] <= 60),
    ]
    for query, keep in cases:
        # The stack's scheduler refreshes the catalog in real time: a refresh between the two
        # reads changes the listings, so a case counts only when the whole catalog read the
        # same before and after its filtered read.
        for _ in range(5):
            got = all_listings(http, query)
            after = all_listings(http)
            if after == everything:
                break
            everything = after
        else:
            raise AssertionError("the catalog changed under every attempt")
        want = [li for li in everything if keep(li)]
        assert [li["id"] for li in got] == [li["id"] for li in want], query
    assert all_listings(http, "model=H100&region=eu"), "the README's example query finds something"
    error(http.get("/v1/catalog/listings", params={"gpuCount": "3"}), 400, "invalid_count")
    error(http.get("/v1/catalog/listings", params={"pageSize": "201"}), 400, "validation_failed")
    error(http.get("/v1/catalog/listings", params={"region": "europe"}), 400, "validation_failed")
    error(http.get("/v1/catalog/listings", params={"cursor": "forged"}), 400, "validation_failed")


def test_catalog_facets_families_and_templates_over_http(http: httpx.Client) -> None:
    sign_in(http, new_email("facets"))
    everything = all_listings(http)
    r = http.get("/v1/catalog/facets")
    assert r.status_code == 200, r.text
    facets = r.json()
    assert set(facets) == {"models", "regions", "providers", "priceRange"}
    for name, field in (("models", "model"), ("regions", "regionCode"), ("providers", "providerCode")):
        counts: dict[str, int] = {}
        for li in everything:
            counts[li[field]] = counts.get(li[field], 0) + 1
        assert {e["code"]: e["count"] for e in facets[name]} == counts, name
    prices = [li["pricePerHourCents"] for li in everything]
    assert facets["priceRange"] == {"minCents": min(prices), "maxCents": max(prices)}
    assert http.get("/v1/catalog/facets").json() == facets

    fams = http.get("/v1/catalog/families").json()["families"]
    assert [f["id"] for f in fams] == ["rtx-4090", "rtx-5090", "a100-80gb", "h100-80gb", "b200", "b300"]
    templates = http.get("/v1/templates").json()["templates"]
    assert [t["id"] for t in templates] == ["ubuntu-24-04", "pytorch", "vllm", "ollama", "a1111", "text-gen-webui"]


def test_preview_answers_the_cheapest_matching_listing_over_http(http: httpx.Client) -> None:
    sign_in(http, new_email("preview"))
    checked = 0
    for family, model in (("h100-80gb", "H100_SXM_80GB"), ("rtx-4090", "RTX_4090"), ("b200", "B200")):
        for count in (1, 8):
            for region in (None, "us", "eu"):
                params = {"model": model, "gpuCount": str(count), "pageSize": "1"}
                body: dict[str, Any] = {"familyId": family, "gpuCount": count}
                if region:
                    params["region"] = region
                    body["region"] = region
                first = http.get("/v1/catalog/listings", params=params).json()["listings"]
                r = http.post("/v1/rentals/preview", json=body)
                if not first:
                    error(r, 400, "model_unavailable")
                    continue
                assert r.status_code == 200, (body, r.text)
                got = r.json()
                assert set(got) == {"pricePerHourCents", "estimatedProvisionSeconds", "matchedListing"}
                assert got["pricePerHourCents"] == first[0]["pricePerHourCents"], body
                assert got["matchedListing"] == {k: first[0][k] for k in ("id", "providerCode", "region", "model")}
                checked += 1
    assert checked >= 6
    error(http.post("/v1/rentals/preview", json={"familyId": "h100-80gb", "gpuCount": 3}), 400, "invalid_count")
    error(http.post("/v1/rentals/preview", json={"familyId": "h100", "gpuCount": 1}), 400, "validation_failed")
    error(http.post("/v1/rentals/preview", json={"familyId": "h100-80gb", "gpuCount": 1, "templateId": "dos"}),
          400, "validation_failed")


def test_dev_providers_lists_the_simulators(http: httpx.Client) -> None:
    r = http.get("/dev/providers")
    assert r.status_code == 200, r.text
    urls = r.json()
    assert set(urls) == {"vast", "runpod", "lambda"}
    for url in urls.values():
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), url
        knobs = httpx.get(f"{url}/_sim/knobs", timeout=10)
        assert knobs.status_code == 200 and "list_offers" in knobs.json()
