"""Hostile input (issue #8 item 4): every request below is answered with a clear 4xx in
the error envelope and writes nothing (every item of every table before and after,
rate-limit counters aside), whatever it throws at the API:

- oversized bodies (1 MB), deeply nested JSON (1,000 and 100,000 levels), broken JSON,
  non-object bodies, wrong types for every field of every body, unknown fields;
- control characters, NUL, bidirectional overrides, line separators and lone
  surrogates in every free-text name (token and SSH key names, the SSH key comment,
  rental names, an admin's reason and invoice description), while real Unicode is
  kept exactly;
- huge, negative, fractional and non-finite numbers (`1e400`, `NaN`, `2**63`, a
  5,000-digit integer) in bodies and query strings;
- forged, garbled, edited, foreign (another user's) and other-list cursors on every
  paginated route;
- ids of the wrong prefix, path tricks (`../`, `%2e%2e`, NUL) and very long ids in
  every `{id}` route, as API Gateway would decode them and as sent raw;
- a flood of one-time-code guesses and a second code request within 30 s;
- Stripe webhooks unsigned, tampered, signed with another secret or replayed late;
- and the rate limit under concurrent load, against DynamoDB Local (moto does not
  serialise concurrent writers): 300 requests in one minute on one session, exactly
  100 pass and the rest are 429 with `Retry-After`.

The world (moto, the simulators, alice, bob, the admin) is the auth matrix's
(`build_shared`), built once for this module.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import pytest

from gpurent import ids, notify
from gpurent.templates import DEFAULT_TEMPLATE
from infra.local import template
from infra.local.client import Reply
from infra.local.events import http_event
from infra.local.functions import load_handler
from infra.local.stripe_local import sign
from infra.simulators import Simulators
from tests.conftest import Api, last_code
from tests.integration.conftest import sign_in
from tests.integration.helpers import envelope
from tests.integration.test_auth_matrix import (
    ROUTES,
    WEBHOOK_SECRET,
    Person,
    Shared,
    assert_no_leak,
    build_shared,
    changes,
    snapshot,
    ssh_public_key,
)

# (test id) → reason: a case the product answers wrongly (kept, marked xfail, reported). Empty now.
# Bugs this file found, fixed at their root (kept here by name as regression cases):
# - token names took any character (now the same printable-text rule as SSH key and rental names);
# - admin reasons / invoice descriptions refused only C0 controls (now the same rule);
# - `pageSize=²` / `limit=²` was a 500 (str.isdigit() is True for '²'; api.query_int takes ASCII digits only);
# - a cursor with a non-ASCII MAC was a 500 (hmac.compare_digest raised TypeError; cursor.decode refuses it).
KNOWN_BUGS: dict[str, str] = {}


def param(case_id: str, *values: Any) -> Any:
    reason = KNOWN_BUGS.get(case_id)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(*values, id=case_id, marks=marks)


# ---------------------------------------------------------------- rate limits under load (DynamoDB Local)
# First in the module: it runs on its own fresh tables (`locking_store`) before the shared moto world exists.

def test_the_per_session_limit_holds_under_concurrent_load(locking_store: None, clock: Any) -> None:
    """300 requests in one minute on one session, 50 at a time: exactly 100 pass, the other
    200 are 429 `rate_limited` with `Retry-After`; the next minute serves again."""
    clock.set(int(time.time()) // 60 * 60 + 5)  # 5 s into a minute, near the wall clock (DynamoDB Local's TTL)
    api = Api(source_ip="198.51.100.30")
    sign_in(api, "load@example.com")
    cookies = dict(api.cookies)

    def one(_: int) -> Reply:
        return Api(source_ip="198.51.100.30").get("/v1/auth/me", cookies=cookies)

    with ThreadPoolExecutor(max_workers=50) as pool:
        replies = list(pool.map(one, range(300)))
    statuses = [r.status for r in replies]
    assert statuses.count(200) == 100 and statuses.count(429) == 200, {s: statuses.count(s) for s in set(statuses)}
    for r in replies:
        if r.status == 429:
            body = envelope(r, 429, "rate_limited")
            assert r.headers["retry-after"] == "55", r.headers
            assert body["message"] == "Too many requests. Retry after 55 seconds."
            assert r.headers["x-ratelimit-remaining"] == "0" and r.headers["x-ratelimit-limit"] == "100"
    remaining = sorted(int(r.headers["x-ratelimit-remaining"]) for r in replies if r.status == 200)
    assert remaining == list(range(100)), "each admitted request saw its own count"
    clock.advance(60)
    assert Api().get("/v1/auth/me", cookies=cookies).status == 200
    notify.clear_mailbox()


# ---------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def shared(simulator_servers: Simulators) -> Iterator[Shared]:
    yield from build_shared(simulator_servers)


def refused(s: Shared, send: Callable[[], Reply], status: int, codes: str | tuple[str, ...]) -> dict[str, Any]:
    """Send once: a clear 4xx (status, one of the documented codes) in the envelope, no write, no leak."""
    codes = (codes,) if isinstance(codes, str) else codes
    before = snapshot(s.tables)
    reply = send()
    assert reply.status == status, (reply.status, reply.body[:500])
    body = reply.json()
    assert body["error"] in codes, body
    envelope(reply, status, body["error"])
    assert_no_leak(reply, s.everyone())
    after = snapshot(s.tables)
    assert after == before, f"a refused request wrote: {changes(before, after)}"
    return dict(body)


def actor_of(route_key: str, s: Shared) -> Person | None:
    path = route_key.split(" ", 1)[1]
    if path.startswith("/v1/admin/"):
        return s.admin
    if path.startswith(("/v1/auth/request-code", "/v1/auth/verify-code", "/v1/webhooks/", "/v1/billing/stripe/")):
        return None
    return s.alice


def call(route_key: str, s: Shared, *, path: str | None = None, body: Any = None, raw: bytes | None = None,
         headers: dict[str, str] | None = None, actor: Person | str | None = "auto") -> Reply:
    who = actor_of(route_key, s) if actor == "auto" else actor
    client = Api(source_ip="203.0.113.77")
    client.cookies = dict(who.api.cookies) if isinstance(who, Person) else {}
    method, route_path = route_key.split(" ", 1)
    return client.call(method, path or route_path, body, raw=raw, headers=headers or {})


def call_event(route_key: str, s: Shared, path_params: dict[str, str], actor: Person | None) -> Reply:
    """The handler with an event whose path parameters are exactly `path_params` (as API
    Gateway hands them over after decoding), bypassing the client's routing."""
    route = ROUTES[route_key]
    method, path = route_key.split(" ", 1)
    for k, v in path_params.items():
        path = path.replace("{" + k + "}", quote(v, safe=""))
    headers = {"cookie": "; ".join(f"{k}={v}" for k, v in actor.api.cookies.items())} if actor else {}
    event = http_event(method, path, route_key, headers=headers, path_params=path_params, source_ip="203.0.113.78")
    out = load_handler(route.code_uri, route.handler)(event, None)
    return Reply(int(out["statusCode"]), dict(out.get("headers") or {}), out.get("body") or "",
                 list(out.get("cookies") or []))


KEY_LINE = ssh_public_key("hostile@test")

# Every route that parses a JSON body, with a body that passes validation (the case then breaks one thing).
BODIES: dict[str, Callable[[Shared], dict[str, Any]]] = {
    "POST /v1/auth/request-code": lambda s: {"email": "hostile@example.com", "intent": "login"},
    "POST /v1/auth/verify-code": lambda s: {"email": "hostile@example.com", "code": "000000"},
    "POST /v1/auth/tokens": lambda s: {"name": "ci", "expiresInDays": 30},
    "POST /v1/auth/sessions/revoke-others": lambda s: {"tokens": False},
    "POST /v1/ssh-keys": lambda s: {"name": "laptop", "publicKey": KEY_LINE},
    "POST /v1/billing/checkout": lambda s: {"amountCents": 2500, "useCheckout": False},
    "PUT /v1/billing/auto-topup": lambda s: {"enabled": False, "thresholdCents": 1000, "topupAmountCents": 2500},
    "POST /v1/rentals": lambda s: {"familyId": "rtx-4090", "gpuCount": 1, "templateId": DEFAULT_TEMPLATE,
                                   "region": "us", "name": "train", "autoStopAfterHours": 2.5,
                                   "maxTotalCents": 5000},
    "POST /v1/rentals/preview": lambda s: {"familyId": "rtx-4090", "gpuCount": 1, "templateId": DEFAULT_TEMPLATE,
                                           "region": "us"},
    "POST /v1/admin/adjustments": lambda s: {"userId": s.bob.id, "amountCents": 100, "reason": "goodwill"},
    "POST /v1/admin/invoices": lambda s: {"userId": s.bob.id, "amountCents": 100, "description": "support",
                                          "creditsWallet": False},
}
# The body's field types, for the wrong-type cases (one entry per field of each body above).
FIELDS: dict[str, dict[str, str]] = {
    "POST /v1/auth/request-code": {"email": "str", "intent": "str"},
    "POST /v1/auth/verify-code": {"email": "str", "code": "str"},
    "POST /v1/auth/tokens": {"name": "str", "expiresInDays": "int"},
    "POST /v1/auth/sessions/revoke-others": {"tokens": "bool"},
    "POST /v1/ssh-keys": {"name": "str", "publicKey": "str"},
    "POST /v1/billing/checkout": {"amountCents": "int", "useCheckout": "bool"},
    "PUT /v1/billing/auto-topup": {"enabled": "bool", "thresholdCents": "int", "topupAmountCents": "int"},
    "POST /v1/rentals": {"familyId": "str", "gpuCount": "int", "templateId": "str", "region": "str", "name": "str",
                         "autoStopAfterHours": "float", "maxTotalCents": "int"},
    "POST /v1/rentals/preview": {"familyId": "str", "gpuCount": "int", "templateId": "str", "region": "str"},
    "POST /v1/admin/adjustments": {"userId": "str", "amountCents": "int", "reason": "str"},
    "POST /v1/admin/invoices": {"userId": "str", "amountCents": "int", "description": "str", "creditsWallet": "bool"},
}
WRONG: dict[str, list[Any]] = {
    "str": [5, True, ["x"], {}],
    "int": ["5", 5.5, True],  # 100.0 is an integer to JSON Schema, so to the API too
    "float": ["2.5", True, []],
    "bool": ["true", 1, None],
}
WEBHOOKS = ("POST /v1/webhooks/stripe", "POST /v1/billing/stripe/webhook")
MUTATIONS = sorted(k for k in ROUTES if k.split(" ", 1)[0] in ("POST", "PUT", "PATCH", "DELETE"))


def test_every_body_route_is_covered() -> None:
    """A new route that reads a JSON body must be added to BODIES and FIELDS."""
    import ast

    parsing = set()
    for route in ROUTES.values():
        tree = ast.parse((template.ROOT / route.code_uri / "app.py").read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef) and "req.parse(" in ast.unparse(fn):
                for dec in fn.decorator_list:
                    if isinstance(dec, ast.Call) and dec.args and isinstance(dec.args[0], ast.Constant):
                        parsing.add(dec.args[0].value)
    assert parsing == set(BODIES) == set(FIELDS), (parsing ^ set(BODIES), set(BODIES) ^ set(FIELDS))


# ---------------------------------------------------------------- size and shape

BIG = json.dumps({"name": "a" * (1024 * 1024)}).encode()


@pytest.mark.parametrize("route_key", [param(f"json-{k}", k) for k in MUTATIONS])
def test_a_1mb_json_body_is_refused(shared: Shared, route_key: str) -> None:
    refused(shared, lambda: call(route_key, shared, path=_path(route_key, shared), raw=BIG),
            400, "validation_failed")


@pytest.mark.parametrize("route_key", [param(f"binary-{k}", k) for k in sorted(BODIES)])
def test_a_1mb_binary_body_is_refused(shared: Shared, route_key: str) -> None:
    """Not UTF-8: the event carries it base64-encoded; decoded it is still over 64 KiB."""
    refused(shared, lambda: call(route_key, shared, raw=b"\xff\xfe" * (512 * 1024)),
            400, "validation_failed")


DEEP = {
    "arrays-1000": b"[" * 1000 + b"]" * 1000,
    "objects-1000": b'{"a":' * 1000 + b"1" + b"}" * 1000,
    "arrays-100000": b"[" * 100_000,
    "in-a-field": None,  # the route's first field holds 1,000 nested arrays
    "truncated": b'{"name": "x"',
    "not-utf8": b'{"name": "\xff\xfe"}',
    "top-level-array": b"[]",
    "top-level-null": b"null",
    "top-level-nan": b"NaN",
}


@pytest.mark.parametrize(("route_key", "shape"),
                         [param(f"{shape}-{k}", k, shape) for k in sorted(BODIES) for shape in DEEP])
def test_deep_or_malformed_json_is_refused(shared: Shared, route_key: str, shape: str) -> None:
    s = shared
    raw = DEEP[shape]
    if raw is None:
        body = BODIES[route_key](s)
        first = next(iter(FIELDS[route_key]))
        body[first] = "DEEP"
        raw = json.dumps(body).encode().replace(b'"DEEP"', b"[" * 1000 + b"]" * 1000)
    err = refused(s, lambda: call(route_key, s, raw=raw), 400, "validation_failed")
    assert err.get("details"), err


@pytest.mark.parametrize(("route_key", "raw"), [
    param(f"{name}-{k}", k, raw) for k in WEBHOOKS
    for name, raw in (("deep", b"[" * 1000 + b"]" * 1000), ("garbage", b"\x00\xff"), ("empty", b""))])
def test_a_webhook_with_a_hostile_unsigned_body_is_invalid_signature(shared: Shared, route_key: str,
                                                                     raw: bytes) -> None:
    refused(shared, lambda: call(route_key, shared, raw=raw), 400, "invalid_signature")


# ---------------------------------------------------------------- wrong types and unknown fields

def _wrong_type_cases() -> list[Any]:
    out = []
    for route_key in sorted(FIELDS):
        for fld, kind in FIELDS[route_key].items():
            for i, value in enumerate(WRONG[kind]):
                out.append(param(f"{route_key}-{fld}-{type(value).__name__}{i}", route_key, fld, value))
        out.append(param(f"{route_key}-unknown-field", route_key, "isAdmin", True))
    return out


@pytest.mark.parametrize(("route_key", "fld", "value"), _wrong_type_cases())
def test_a_wrong_type_is_validation_failed_naming_the_field(shared: Shared, route_key: str, fld: str,
                                                           value: Any) -> None:
    """Strict: `"5"` is not 5, `True` is not 1, `100.0` is not 100, and no unknown field passes."""
    s = shared
    body = BODIES[route_key](s)
    body[fld] = value
    err = refused(s, lambda: call(route_key, s, body=body), 400, "validation_failed")
    assert any(str(k).split(".")[0] == fld for k in err.get("details", {})), err


# ---------------------------------------------------------------- names

BAD_NAMES = {
    "nul": "a\x00b",
    "only-nul": "\x00",
    "escape-sequence": "\x1b[2J\x1b[31mred",
    "bell": "ding\x07",
    "newline": "a\nb",
    "carriage-return": "a\rb",
    "del": "a\x7fb",
    "c1-nel": "a\x85b",
    "c1-csi": "a\x9b31m",
    "rtl-override": "evil\u202egpj.exe",
    "ltr-isolate": "\u2066x\u2069",
    "line-separator": "a\u2028b",
    "paragraph-separator": "a\u2029b",
    "lone-surrogate": "a\ud800b",
    # Invisible format characters (Unicode category Cf): they hide or disguise what a name says.
    "zero-width-space": "ad\u200bmin",
    "byte-order-mark": "\ufeffname",
    "zero-width-joiner": "a\u200db",
    "soft-hyphen": "pay\u00adpal",
    "tag-characters": "ok\U000e0041\U000e0042",
    "arabic-letter-mark": "a\u061cb",
    "blank": "   ",
    "empty": "",
}
NAME_FIELDS = {
    "token-name": ("POST /v1/auth/tokens", "name", 64),
    "key-name": ("POST /v1/ssh-keys", "name", 64),
    "rental-name": ("POST /v1/rentals", "name", 64),
    "adjustment-reason": ("POST /v1/admin/adjustments", "reason", 500),
    "invoice-description": ("POST /v1/admin/invoices", "description", 500),
}


def _name_cases() -> list[Any]:
    out = []
    for where, (route_key, fld, limit) in NAME_FIELDS.items():
        for what, value in {**BAD_NAMES, "too-long": "n" * (limit + 1)}.items():
            out.append(param(f"{where}-{what}", route_key, fld, value))
    return out


@pytest.mark.parametrize(("route_key", "fld", "value"), _name_cases())
def test_control_characters_and_overrides_in_names_are_refused(shared: Shared, route_key: str, fld: str,
                                                                value: str) -> None:
    s = shared
    body = BODIES[route_key](s)
    body[fld] = value
    if route_key == "POST /v1/ssh-keys":
        body["publicKey"] = ssh_public_key()
    refused(s, lambda: call(route_key, s, body=body), 400, "validation_failed")


@pytest.mark.parametrize("comment", [param(f"key-comment-{k}", v) for k, v in BAD_NAMES.items()
                                     if k not in ("blank", "empty")] + [
    param("key-comment-second-key", "x\n" + ssh_public_key("mallory"))])
def test_control_characters_in_an_ssh_key_comment_are_refused(shared: Shared, comment: str) -> None:
    """The whole line goes into a pod's authorized_keys: a newline there would add a key."""
    s = shared
    refused(s, lambda: call("POST /v1/ssh-keys", s, body={"name": "laptop", "publicKey": ssh_public_key(comment)}),
            400, "validation_failed")


REAL_UNICODE = "Zoë — データ 🚀 Ñandú"


def test_real_unicode_names_are_kept_exactly(shared: Shared) -> None:
    s = shared
    r = s.alice.api.post("/v1/auth/tokens", {"name": REAL_UNICODE})
    assert r.status == 200 and r.json()["name"] == REAL_UNICODE, r.body
    assert REAL_UNICODE in [t["name"] for t in s.alice.api.get("/v1/auth/tokens").json()["tokens"]]
    r = s.alice.api.post("/v1/ssh-keys", {"name": REAL_UNICODE, "publicKey": ssh_public_key()})
    assert r.status == 200 and r.json()["name"] == REAL_UNICODE, r.body
    r = s.alice.api.post("/v1/rentals", {"familyId": "rtx-4090", "gpuCount": 1, "name": REAL_UNICODE})
    assert r.status == 200, r.body
    got = s.alice.api.get(f"/v1/rentals/{r.json()['id']}").json()
    assert got["name"] == REAL_UNICODE
    assert s.alice.api.post(f"/v1/rentals/{got['id']}/stop").status == 200


# ---------------------------------------------------------------- numbers

BAD_NUMBERS = {
    "1e400": "1e400", "-1e400": "-1e400", "nan": "NaN", "infinity": "Infinity", "minus-one": "-1",
    "2^63": str(2**63), "-2^63": str(-(2**63)), "5000-digits": "9" * 5000,
}
# `100.0` and `1e2` are integers to JSON Schema (and so to the contract): accepted, see below.
INT_ONLY = {"fraction": "10.5", "fraction-exponent": "1.55e1"}
NUMERIC = {
    # route, field → (kind, documented codes)
    ("POST /v1/billing/checkout", "amountCents"): ("int", ("invalid_amount", "validation_failed")),
    ("PUT /v1/billing/auto-topup", "thresholdCents"): ("int", ("validation_failed",)),
    ("PUT /v1/billing/auto-topup", "topupAmountCents"): ("int", ("validation_failed",)),
    ("POST /v1/auth/tokens", "expiresInDays"): ("int", ("validation_failed",)),
    ("POST /v1/rentals", "gpuCount"): ("int", ("invalid_count", "validation_failed")),
    ("POST /v1/rentals", "maxTotalCents"): ("int", ("validation_failed",)),
    ("POST /v1/rentals", "autoStopAfterHours"): ("float", ("validation_failed",)),
    ("POST /v1/rentals/preview", "gpuCount"): ("int", ("invalid_count", "validation_failed")),
    ("POST /v1/admin/adjustments", "amountCents"): ("int", ("validation_failed",)),
    ("POST /v1/admin/invoices", "amountCents"): ("int", ("validation_failed",)),
}


def _number_cases() -> list[Any]:
    out = []
    for (route_key, fld), (kind, codes) in NUMERIC.items():
        literals = dict(BAD_NUMBERS)
        if kind == "int":
            literals.update(INT_ONLY)
        if route_key == "POST /v1/admin/adjustments":  # a negative adjustment is legal: go past the cap instead
            literals["minus-one"] = "-10000001"
        for name, literal in literals.items():
            out.append(param(f"{route_key}-{fld}-{name}", route_key, fld, literal, codes))
    return out


@pytest.mark.parametrize(("route_key", "fld", "literal", "codes"), _number_cases())
def test_huge_negative_and_non_finite_numbers_are_refused(shared: Shared, route_key: str, fld: str,
                                                          literal: str, codes: tuple[str, ...]) -> None:
    s = shared
    body = BODIES[route_key](s)
    body[fld] = "NUMBER"
    raw = json.dumps(body).encode().replace(b'"NUMBER"', literal.encode())
    refused(s, lambda: call(route_key, s, raw=raw), 400, codes)


@pytest.mark.parametrize("literal", ["30.0", "3e1", "3.0E1", "30.000"])
def test_whole_numbers_written_with_a_fraction_or_exponent_are_integers(shared: Shared, literal: str) -> None:
    """JSON Schema's `integer` is any number with a zero fraction: the contract allows `30.0`, so the
    API takes it as 30."""
    raw = b'{"name": "whole", "expiresInDays": ' + literal.encode() + b"}"
    r = call("POST /v1/auth/tokens", shared, raw=raw, headers={"content-type": "application/json"})
    assert r.status == 200, r.body
    assert r.json()["expiresAt"] is not None


QUERY_NUMBERS = {
    "minus-one": "-1", "zero": "0", "fraction": "1.5", "nan": "NaN", "inf": "inf", "2^63": str(2**63),
    "superscript-two": "²", "hex": "0x10", "underscore": "1_0", "nul": "5\x00",
}
QUERY_FIELDS = {
    ("GET /v1/billing/ledger", "pageSize"): ("validation_failed",),
    ("GET /v1/rentals", "pageSize"): ("validation_failed",),
    ("GET /v1/billing/invoices", "limit"): ("validation_failed",),
    ("GET /v1/catalog/listings", "pageSize"): ("validation_failed",),
    ("GET /v1/catalog/listings", "gpuCount"): ("validation_failed", "invalid_count"),
    ("GET /v1/catalog/listings", "maxPricePerHourCents"): ("validation_failed",),
    ("GET /v1/catalog/listings", "minVramGb"): ("validation_failed",),
}
VALID_FLOAT_QUERIES = {"fraction", "underscore"}  # float("1.5"), float("1_0") are numbers


def _query_cases() -> list[Any]:
    out = []
    for (route_key, fld), codes in QUERY_FIELDS.items():
        for name, literal in QUERY_NUMBERS.items():
            if fld in ("maxPricePerHourCents", "minVramGb") and name in VALID_FLOAT_QUERIES | {"zero"}:
                continue
            if fld == "gpuCount" and name == "underscore":
                continue  # int("1_0") is 10: refused below as invalid_count all the same
            out.append(param(f"{route_key}-{fld}-{name}", route_key, fld, literal, codes))
    return out


@pytest.mark.parametrize(("route_key", "fld", "literal", "codes"), _query_cases())
def test_hostile_numbers_in_query_strings_are_refused(shared: Shared, route_key: str, fld: str,
                                                      literal: str, codes: tuple[str, ...]) -> None:
    s = shared
    path = route_key.split(" ", 1)[1] + f"?{fld}={quote(literal, safe='')}"
    refused(s, lambda: call(route_key, s, path=path), 400, codes)


# ---------------------------------------------------------------- cursors

PAGED = {
    # route → (page-size parameter, list key)
    "GET /v1/billing/ledger": "pageSize",
    "GET /v1/rentals": "pageSize",
    "GET /v1/billing/invoices": "limit",
    "GET /v1/catalog/listings": "pageSize",
}
# Admin-only lists (alice cannot read them): their cursors are attacked in test_admin_audit.py.
ADMIN_PAGED = {"GET /v1/admin/audit"}


_cursors: dict[tuple[int, str], str] = {}


def _cursor_of(s: Shared, route_key: str) -> str:
    """Alice's genuine next-page cursor of that list (asked once per world)."""
    if (id(s), route_key) in _cursors:
        return _cursors[(id(s), route_key)]
    path = route_key.split(" ", 1)[1]
    r = s.alice.api.get(f"{path}?{PAGED[route_key]}=1")
    assert r.status == 200, r.body
    cursor = r.json()["nextCursor"]
    assert cursor, f"{route_key}: the world should give alice more than one page"
    _cursors[(id(s), route_key)] = str(cursor)
    return str(cursor)


def _flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1:]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


CURSOR_CASES: dict[str, Callable[[Shared, str, str], str]] = {
    "garbage": lambda s, rk, c: "garbage",
    "dot": lambda s, rk, c: ".",
    "two-dots": lambda s, rk, c: c + ".x",
    "forged-mac": lambda s, rk, c: c.split(".")[0] + "." + "A" * 22,
    "forged-payload": lambda s, rk, c: _b64(json.dumps({"after": ids.new_id("led"), "before": ids.new_id("rent"),
                                                          "p": 0, "i": "lst_x"}).encode()) + "." + c.split(".")[1],
    "edited-payload": lambda s, rk, c: _flip(c, 2),
    "edited-mac": lambda s, rk, c: _flip(c, len(c) - 3),
    "truncated": lambda s, rk, c: c[:-4],
    "bad-base64": lambda s, rk, c: "!!!!" + "." + c.split(".")[1],
    "json-array": lambda s, rk, c: _b64(b"[1]") + "." + c.split(".")[1],
    "very-long": lambda s, rk, c: "A" * 5000 + "." + c.split(".")[1],
    "nul": lambda s, rk, c: c + "\x00",
    "non-ascii-mac": lambda s, rk, c: c.split(".")[0] + ".é" + c.split(".")[1][1:],
    "non-ascii-payload": lambda s, rk, c: "é" + c,
    "another-users": lambda s, rk, c: c,  # alice's cursor, sent by bob (below)
    "another-lists": lambda s, rk, c: _cursor_of(s, next(k for k in PAGED if k != rk)),
}


@pytest.mark.parametrize(("route_key", "case"),
                         [param(f"{case}-{rk}", rk, case) for rk in PAGED for case in CURSOR_CASES])
def test_forged_garbled_and_foreign_cursors_are_refused(shared: Shared, route_key: str, case: str) -> None:
    s = shared
    cursor = CURSOR_CASES[case](s, route_key, _cursor_of(s, route_key))
    who = s.bob if case == "another-users" else s.alice
    path = route_key.split(" ", 1)[1] + f"?{PAGED[route_key]}=1&cursor={quote(cursor, safe='')}"
    err = refused(s, lambda: call(route_key, s, path=path, actor=who), 400, "validation_failed")
    assert "cursor" in err.get("details", {}), err


def test_every_paginated_route_is_covered() -> None:
    """A route that reads a `cursor` must be in PAGED."""
    import ast

    found = set()
    for route in ROUTES.values():
        tree = ast.parse((template.ROOT / route.code_uri / "app.py").read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef) and "'cursor'" in ast.unparse(fn):
                for dec in fn.decorator_list:
                    if isinstance(dec, ast.Call) and dec.args and isinstance(dec.args[0], ast.Constant):
                        found.add(dec.args[0].value)
    assert found == set(PAGED) | ADMIN_PAGED, found ^ (set(PAGED) | ADMIN_PAGED)


# ---------------------------------------------------------------- ids and path tricks

ID_ROUTES = {
    "DELETE /v1/auth/tokens/{id}": ("token_not_found", "tok"),
    "DELETE /v1/auth/sessions/{id}": ("session_not_found", "ses"),
    "DELETE /v1/ssh-keys/{id}": ("key_not_found", "key"),
    "GET /v1/billing/invoices/{id}": ("invoice_not_found", "inv"),
    "GET /v1/billing/invoices/{id}/pay-url": ("invoice_not_found", "inv"),
    "GET /v1/rentals/{id}": ("rental_not_found", "rent"),
    "POST /v1/rentals/{id}/stop": ("rental_not_found", "rent"),
    "GET /v1/rentals/{id}/meter": ("rental_not_found", "rent"),
    "POST /v1/admin/invoices/{id}/void": ("invoice_not_found", "inv"),
}


def _real(s: Shared, prefix: str) -> str:
    return s.alice.ids_of(prefix)


BAD_IDS: dict[str, Callable[[Shared, str], str]] = {
    "other-kind": lambda s, p: _real(s, next(k for k in ("rent", "key", "tok", "inv") if k != p)),
    "other-prefix-same-ulid": lambda s, p: ("key" if p != "key" else "rent") + "_" + _real(s, p).split("_", 1)[1],
    "lowercase": lambda s, p: _real(s, p).lower(),
    "no-prefix": lambda s, p: _real(s, p).split("_", 1)[1],
    "traversal": lambda s, p: "../../auth/me",
    "traversal-to-own": lambda s, p: f"../{_real(s, p)}",
    "encoded-traversal": lambda s, p: "..%2F..%2Fauth%2Fme",
    "encoded-dots": lambda s, p: "%2e%2e",
    "trailing-nul": lambda s, p: _real(s, p) + "\x00",
    "hash-suffix": lambda s, p: _real(s, p) + "#PROFILE",
    "key-injection": lambda s, p: f"USER#{s.alice.id}",
    "very-long": lambda s, p: f"{p}_" + "0" * 10_000,
    "huge": lambda s, p: "A" * 100_000,
    "unicode-lookalike": lambda s, p: _real(s, p).replace("_", "\uff3f"),
    "empty": lambda s, p: "",
}


URL_CASES = ("traversal", "trailing-nul", "very-long")


@pytest.mark.parametrize(("route_key", "case", "how"), [
    param(f"{how}-{case}-{rk}", rk, case, how) for rk in ID_ROUTES for case in BAD_IDS
    for how in ("decoded", "url") if how == "decoded" or case in URL_CASES])
def test_bad_ids_and_path_tricks_are_the_documented_404(shared: Shared, route_key: str, case: str,
                                                        how: str) -> None:
    """Alice's own session, her own real ids bent out of shape: the resource's 404, no write."""
    s = shared
    code, prefix = ID_ROUTES[route_key]
    bad = BAD_IDS[case](s, prefix)
    actor = s.admin if "/admin/" in route_key else s.alice
    if how == "decoded":
        refused(s, lambda: call_event(route_key, s, {"id": bad}, actor), 404, code)
    else:
        path = route_key.split(" ", 1)[1].replace("{id}", quote(bad, safe=""))
        refused(s, lambda: call(route_key, s, path=path, actor=actor), 404, code)


def test_every_id_route_is_covered() -> None:
    assert set(ID_ROUTES) == {k for k in ROUTES if "{id}" in k}


# ---------------------------------------------------------------- one-time codes

def test_a_flood_of_code_guesses_kills_the_code(shared: Shared) -> None:
    """Five wrong guesses (from five addresses) kill the code: the right one, sixth, is refused
    and so is everything after; nothing is written once the code is dead, no session is made."""
    s = shared
    email = "flood@example.com"
    assert Api().post("/v1/auth/request-code", {"email": email}).status == 200
    code = last_code(email)
    wrong = [f"{(int(code) + i) % 10**6:06d}" for i in range(1, 6)]
    for i, guess in enumerate(wrong):
        r = Api(source_ip=f"192.0.2.{i + 1}").post("/v1/auth/verify-code", {"email": email, "code": guess})
        body = envelope(r, 401, "code_invalid")
        assert ("Too many" in body["message"]) == (i == 4), (i, body)
        assert r.cookies == []
    hostile = [code, code, "١٢٣٤٥٦", code + "\x00", " " + code, "000000", "999999"]
    for i, guess in enumerate(hostile):
        body = refused(s, lambda g=guess, n=i: Api(source_ip=f"192.0.2.{50 + n}").post(  # type: ignore[misc]
            "/v1/auth/verify-code", {"email": email, "code": g}), 401, "code_invalid")
        assert body["message"] == "Too many attempts. Request a new code"


@pytest.mark.parametrize("code", [param(f"code-{k}", v) for k, v in {
    "int": 123456, "null": None, "list": ["123456"], "too-long": "1" * 33}.items()])
def test_a_malformed_guess_is_refused_and_not_counted(shared: Shared, code: Any) -> None:
    """A guess that is not even a string is a 400 that leaves the live code's attempts alone."""
    s = shared
    email = "guess@example.com"
    if not mails_to(email):
        assert Api().post("/v1/auth/request-code", {"email": email}).status == 200
    refused(s, lambda: Api().post("/v1/auth/verify-code", {"email": email, "code": code}), 400,
            "validation_failed")


def test_a_second_code_request_within_30_seconds_is_429(shared: Shared) -> None:
    """One code per 30 s per address, whatever its spelling or the caller's IP; no mail, no write."""
    s = shared
    email = "twice@example.com"
    assert Api().post("/v1/auth/request-code", {"email": email}).status == 200
    mailed = len(mails_to(email))
    s.clock.advance(10)
    for i, variant in enumerate((email, email.upper(), f"  {email} ", email)):
        replies: list[Reply] = []

        def again(v: str = variant, n: int = i, replies: list[Reply] = replies) -> Reply:
            replies.append(Api(source_ip=f"192.0.2.{200 + n}").post("/v1/auth/request-code", {"email": v}))
            return replies[-1]

        refused(s, again, 429, "code_request_rate_limited")
        assert 1 <= int(replies[0].headers["retry-after"]) <= 21, replies[0].headers
    assert len(mails_to(email)) == mailed
    s.clock.advance(21)
    assert Api().post("/v1/auth/request-code", {"email": email}).status == 200
    assert len(mails_to(email)) == mailed + 1


def mails_to(email: str) -> list[Any]:
    from tests.conftest import sent_mail

    return [m for m in sent_mail() if email in m.destinations["ToAddresses"]]


# ---------------------------------------------------------------- Stripe webhooks

def _event(s: Shared, amount: int = 5000) -> bytes:
    """A payment_intent.succeeded that would credit alice, were it believed."""
    return json.dumps({
        "id": "evt_hostile_1", "object": "event", "type": "payment_intent.succeeded", "api_version": "2024-06-20",
        "created": int(time.time()), "livemode": False,
        "data": {"object": {"id": "pi_hostile_1", "object": "payment_intent", "amount": amount,
                            "amount_received": amount, "currency": "usd", "status": "succeeded",
                            "latest_charge": "ch_hostile_1", "metadata": {"user_id": s.alice.id}}},
    }).encode()


WEBHOOK_CASES: dict[str, Callable[[Shared], tuple[bytes, dict[str, str]]]] = {
    "unsigned": lambda s: (_event(s), {}),
    "empty-signature": lambda s: (_event(s), {"stripe-signature": ""}),
    "garbage-signature": lambda s: (_event(s), {"stripe-signature": "t=abc,v1=zzz"}),
    "other-secret": lambda s: (_event(s), {"stripe-signature": sign("whsec_someone_else", _event(s))}),
    "tampered-amount": lambda s: (_event(s, 5_000_000), {"stripe-signature": sign(WEBHOOK_SECRET, _event(s))}),
    "replayed-an-hour-late": lambda s: (_event(s), {"stripe-signature": sign(WEBHOOK_SECRET, _event(s),
                                                                             int(time.time()) - 3600)}),
    "replayed-6-minutes-late": lambda s: (_event(s), {"stripe-signature": sign(WEBHOOK_SECRET, _event(s),
                                                                               int(time.time()) - 360)}),
    "v0-scheme-only": lambda s: (_event(s), {"stripe-signature": sign(WEBHOOK_SECRET, _event(s)).replace(
        "v1=", "v0=")}),
    "timestamp-swapped": lambda s: (_event(s), {"stripe-signature": "t=1," + sign(WEBHOOK_SECRET, _event(s)).split(
        ",", 1)[1]}),
    "signed-not-an-event": lambda s: (b"[]", {"stripe-signature": sign(WEBHOOK_SECRET, b"[]")}),
    "signed-without-id": lambda s: (b'{"type":"payment_intent.succeeded","data":{"object":{}}}',
                                    {"stripe-signature": sign(WEBHOOK_SECRET,
                                                              b'{"type":"payment_intent.succeeded",'
                                                              b'"data":{"object":{}}}')}),
}


@pytest.mark.parametrize(("route_key", "case"),
                         [param(f"{case}-{rk}", rk, case) for rk in WEBHOOKS for case in WEBHOOK_CASES])
def test_tampered_replayed_and_unsigned_webhooks_are_refused(shared: Shared, route_key: str,
                                                             case: str) -> None:
    s = shared
    raw, headers = WEBHOOK_CASES[case](s)
    refused(s, lambda: call(route_key, s, raw=raw, headers=headers), 400, "invalid_signature")


def _path(route_key: str, s: Shared) -> str:
    path = route_key.split(" ", 1)[1]
    if "{id}" in path:
        path = path.replace("{id}", ids.new_id("inv" if "invoices" in path else "rent"))
    return path
