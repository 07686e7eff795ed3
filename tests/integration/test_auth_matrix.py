"""The auth matrix (issue #8 item 3), generated from template.yaml's routes so a new
route cannot be forgotten.

Every route of `template.routes()` is either on `PUBLIC` (api.md §3: "All
endpoints except OAuth redirects, request-code, verify-code and the Stripe
webhook require the sid cookie") or answers 401 without credentials. Every
non-public route × {no credentials, a forged cookie, a forged token, an
expired session (the ManualClock moved past the 30-day sliding session), a
revoked API token, someone else's resource id, a disallowed `Origin` on a
cookie-authenticated mutation, a non-admin on an admin route, an API token on a
session-only route (token and session management)} answers the
documented status and code in the error envelope, writes nothing (every item
of every table, before and after, except the rate-limit counters `RATE#…`,
a session's sliding fields and a credential's last use) and leaks nothing (no user's id, email or
resource ids in the body, the headers or the cookies; no new session cookie).

The requests are real-shaped HTTP API events through `infra.local.client`.
One world (moto, the provider simulators, four users and their resources) is
built once for the module: each case only sends one request and compares
snapshots, so the whole matrix runs in seconds. `tests/integration/
test_hostile_input.py` builds the same world (`build_shared`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gpurent import catalog, ids, timers
from gpurent import clock as clock_mod
from gpurent.billing import gateway
from gpurent.providers import registry
from gpurent.store import dynamo
from infra.local import template
from infra.local.client import Reply
from infra.openapi import function_routes
from infra.simulators import Simulators
from tests.conftest import MAIL_FROM, TEST_ENV, Api, reset_clients, table_env
from tests.integration.conftest import HANG_SECONDS, World
from tests.integration.helpers import envelope

ALICE, BOB, EVE, ADMIN = "alice@example.com", "bob@example.com", "eve@example.com", "admin@gpurent.test"
WEBHOOK_SECRET = "whsec_test_hostile"
SESSION_TTL = 30 * 86400
EVIL_ORIGIN = "https://evil.example"

ROUTES = {r.route_key: r for r in template.routes()}
# Routes a signed-in session may use and an API token may not (403 `forbidden`).
SESSION_ONLY = frozenset(k for k, r in function_routes().items() if r.session_only)

# Routes that need no credentials (api.md §3). The catalog, templates and the
# launch preview are NOT here: the spec says every other endpoint needs the
# session, and the implementation agrees. `GET /v1/openapi.json` (issue #8
# item 1) is public when it exists.
PUBLIC = frozenset({
    "POST /v1/auth/request-code",
    "POST /v1/auth/verify-code",
    "GET /v1/auth/oauth/{provider}",
    "GET /v1/auth/oauth/{provider}/callback",
    "POST /v1/webhooks/stripe",
    "POST /v1/billing/stripe/webhook",
})
# The dashboard's sign-in page asks which OAuth providers are configured (an extension).
PUBLIC_IF_PRESENT = frozenset({"GET /v1/openapi.json", "GET /v1/auth/providers"})
ADMIN_PREFIX = "/v1/admin/"
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# `{id}` routes: the documented 404 code for a foreign or unknown id, and the id prefix.
ID_KINDS = {
    "/v1/auth/tokens/": ("token_not_found", "tok"),
    "/v1/auth/sessions/": ("session_not_found", "ses"),
    "/v1/ssh-keys/": ("key_not_found", "key"),
    "/v1/billing/invoices/": ("invoice_not_found", "inv"),
    "/v1/rentals/": ("rental_not_found", "rent"),
    "/v1/admin/invoices/": ("invoice_not_found", "inv"),
}


def id_kind(route_key: str) -> tuple[str, str]:
    path = route_key.split(" ", 1)[1]
    for prefix, kind in ID_KINDS.items():
        if path.startswith(prefix):
            return kind
    raise AssertionError(f"{route_key}: an {{id}} route of an unknown resource kind; add it to ID_KINDS")


def ssh_public_key(comment: str = "matrix@test") -> str:
    pub = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{pub} {comment}"


# ---------------------------------------------------------------- the shared world

@dataclass
class Person:
    api: Api
    user: dict[str, Any]
    key_id: str = ""
    fingerprint: str = ""
    token_id: str = ""
    token: str = ""
    session_id: str = ""
    rentals: list[str] = field(default_factory=list)
    invoices: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.user["id"])

    @property
    def email(self) -> str:
        return str(self.user["email"])

    def ids_of(self, kind: str) -> str:
        return {"tok": self.token_id, "key": self.key_id, "inv": self.invoices[0] if self.invoices else "",
                "rent": self.rentals[0] if self.rentals else "", "ses": self.session_id}[kind]

    def secrets(self) -> set[str]:
        out = {self.id, self.email, self.key_id, self.fingerprint, self.token_id, self.token, self.session_id,
               *self.rentals, *self.invoices}
        return {s for s in out if s}


@dataclass
class Shared:
    clock: clock_mod.ManualClock
    world: World
    alice: Person  # the victim: owns a rental, a key, a token, invoices, ledger rows
    bob: Person  # the attacker: signed in, with resources of his own
    admin: Person
    eve_sid: str  # a session that expired: the clock moved 30 days + 2 h past its sign-in
    revoked_token: str  # bob's, revoked
    tables: list[str]

    def everyone(self) -> set[str]:
        return self.alice.secrets() | self.bob.secrets() | {EVE, self.revoked_token, self.eve_sid}

    def fund(self, user_id: str, cents: int) -> None:
        r = self.admin.api.post("/v1/admin/adjustments", {"userId": user_id, "amountCents": cents,
                                                         "reason": "test funding"})
        assert r.status == 200, r.body


def _person(ip: str, email: str) -> Person:
    api = Api(source_ip=ip)
    person = Person(api, api.sign_in(email))
    (mine,) = api.get("/v1/auth/sessions").json()["sessions"]
    person.session_id = mine["id"]
    return person


def _equip(s: Shared, p: Person, rentals_: int, invoices: int) -> None:
    """A key, a live token, rentals and invoices for `p` (funded by the admin)."""
    line = ssh_public_key()
    r = p.api.post("/v1/ssh-keys", {"name": "laptop", "publicKey": line})
    assert r.status == 200, r.body
    p.key_id, p.fingerprint = r.json()["id"], r.json()["fingerprint"]
    r = p.api.post("/v1/auth/tokens", {"name": "ci"})
    assert r.status == 200, r.body
    p.token_id, p.token = r.json()["id"], r.json()["token"]
    s.fund(p.id, 100_000)
    s.fund(p.id, 5_000)
    for _ in range(rentals_):
        r = p.api.post("/v1/rentals", {"familyId": "rtx-4090", "gpuCount": 1})
        assert r.status == 200, r.body
        p.rentals.append(r.json()["id"])
    for i in range(invoices):
        r = s.admin.api.post("/v1/admin/invoices", {"userId": p.id, "amountCents": 1000 + i,
                                                   "description": "support hours"})
        assert r.status == 200, r.body
        p.invoices.append(r.json()["id"])


@pytest.fixture(scope="module")
def shared_world(simulator_servers: Simulators) -> Iterator[Shared]:
    yield from build_shared(simulator_servers)


def build_shared(simulator_servers: Simulators) -> Iterator[Shared]:
    """moto with every table of the template, the simulators installed, and:
    eve (signed in, then the clock moved past her session), alice (victim), bob
    (attacker; one of his tokens revoked) and the admin. Rate limits are raised so
    the matrix is not throttled (rate limits have their own tests)."""
    from moto import mock_aws

    clock = clock_mod.ManualClock()
    previous = clock_mod.get_clock()
    with pytest.MonkeyPatch.context() as mp, mock_aws():
        clock_mod.set_clock(clock)
        timers.clear()
        names = template.default_table_names("matrix")
        env = {**TEST_ENV, **table_env(names), "RATE_LIMIT_PER_MINUTE": "1000000", "RATE_LIMIT_PER_HOUR": "1000000",
               "IP_RATE_LIMIT_PER_MINUTE": "1000000", "IP_RATE_LIMIT_PER_HOUR": "1000000",
               "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}
        for k, v in env.items():
            mp.setenv(k, v)
        for k in ("DYNAMODB_ENDPOINT", "STRIPE_SECRET_KEY", "STRIPE_SECRET_KEY_PARAM", "STRIPE_WEBHOOK_SECRET_PARAM",
                  "TIMER_QUEUE_URL", "CURSOR_KEY"):
            mp.delenv(k, raising=False)
        reset_clients()
        gateway.reset()
        catalog.invalidate()
        template.create_tables(dynamo.client(), names)
        import boto3

        boto3.client("ses", region_name="us-east-1").verify_email_identity(EmailAddress=MAIL_FROM)
        simulator_servers.reset()
        for sim in simulator_servers.all():
            sim.set_knobs(hang_seconds=HANG_SECONDS)
        world = World(simulator_servers, {})
        try:
            eve = _person("198.51.100.50", EVE)
            eve_sid = eve.api.cookies["sid"]
            clock.advance(SESSION_TTL + 2 * 3600)  # eve never came back: her session is over
            world.install(providers="lambda")  # unbounded capacity: every launch succeeds
            admin = _person("198.51.100.99", ADMIN)
            alice = _person("198.51.100.7", ALICE)
            bob = _person("198.51.100.20", BOB)
            s = Shared(clock, world, alice, bob, admin, eve_sid, "", list(names.values()))
            _equip(s, alice, rentals_=2, invoices=2)
            _equip(s, bob, rentals_=1, invoices=1)
            r = bob.api.post("/v1/auth/tokens", {"name": "old"})
            s.revoked_token = r.json()["token"]
            assert bob.api.delete(f"/v1/auth/tokens/{r.json()['id']}").status == 200
            yield s
        finally:
            registry.set_adapters(None)
            catalog.invalidate()
            simulator_servers.reset()
            timers.clear()
            gateway.reset()
            reset_clients()
            clock_mod.set_clock(previous)
    reset_clients()


# ---------------------------------------------------------------- snapshots and checks

SLIDING = frozenset({"slidAt", "expiresAt", "ttl", "lastUsedAt"})  # a session's sliding fields
LAST_USE = frozenset({"lastUsedAt"})  # a token's


def _moving(pk: str, sk: str) -> frozenset[str]:
    """The fields a credential's use may move (a session slides, a token records its use)."""
    if pk.startswith("SESSION#") or (pk.startswith("USER#") and sk.startswith("SESSION#")):
        return SLIDING
    if pk.startswith("TOKEN#") or (pk.startswith("USER#") and sk.startswith("TOKEN#")):
        return LAST_USE
    return frozenset()


def _freeze(value: Any) -> Any:
    """A moto DynamoType as a comparable, hashable value (cheaper than a boto3 round trip)."""
    kind, v = value.type, value.value
    if kind == "M":
        return kind, tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if kind == "L":
        return kind, tuple(_freeze(x) for x in v)
    return kind, tuple(sorted(v)) if isinstance(v, list) else v


def snapshot(tables: list[str]) -> dict[str, dict[tuple[str, str], Any]]:
    """Every item of every table, read straight from moto's backend (a boto3 scan through moto
    costs ~0.2 s a table), except rate-limit counters (`RATE#…`: they count the request
    itself), a session's sliding fields and a credential's last use."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    backend = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    out = {}
    for table in tables:
        items: dict[tuple[str, str], Any] = {}
        for item in backend.get_table(table).all_items():
            pk = str(item.hash_key.value)
            if pk.startswith("RATE#"):
                continue
            key = (pk, str(item.range_key.value) if item.range_key is not None else "")
            skip = _moving(*key)
            items[key] = tuple(sorted((k, _freeze(v)) for k, v in item.attrs.items() if k not in skip))
        out[table] = items
    return out


def changes(before: dict[str, dict[tuple[str, str], Any]], after: dict[str, dict[tuple[str, str], Any]]) -> str:
    """Which items a request added, removed or changed (for the failure message)."""
    out = []
    for table in sorted(set(before) | set(after)):
        b, a = before.get(table, {}), after.get(table, {})
        out += [f"{table}: added {k}" for k in sorted(set(a) - set(b))]
        out += [f"{table}: removed {k}" for k in sorted(set(b) - set(a))]
        out += [f"{table}: changed {k}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
    return "; ".join(out)


def assert_no_leak(reply: Reply, forbidden: set[str]) -> None:
    """No user's data in the body, any header or any cookie, and no session handed out."""
    text = reply.body + "\n" + "\n".join(f"{k}: {v}" for k, v in reply.headers.items()) + "\n" + "\n".join(
        reply.cookies)
    leaked = sorted(s for s in forbidden if s and s.lower() in text.lower())
    assert not leaked, f"refused reply leaks {leaked}: {reply.status} {reply.headers} {reply.body}"
    for c in reply.cookies:
        name, _, rest = c.partition("=")
        assert not (name.strip() == "sid" and rest.split(";", 1)[0]), f"a refused request got a session: {c}"


def refused(s: Shared, send: Callable[[], Reply], status: int, code: str) -> dict[str, Any]:
    """Send once: the documented status and code in the envelope, no write, no leak."""
    before = snapshot(s.tables)
    reply = send()
    body = envelope(reply, status, code)
    assert reply.headers.get("cache-control") == "no-store"
    assert_no_leak(reply, s.everyone())
    after = snapshot(s.tables)
    assert after == before, f"a refused request wrote: {changes(before, after)}"
    return body


# ---------------------------------------------------------------- requests of each route

def fill(route_key: str, rid: str) -> str:
    path = route_key.split(" ", 1)[1]
    return path.replace("{id}", rid).replace("{provider}", "google")


def valid_body(route_key: str, s: Shared, actor: Person) -> Any:
    """A body that would succeed (or get past validation) for `actor`: so that only the
    credential or the Origin is wrong. A new mutating route must be added here."""
    bodies: dict[str, Callable[[], Any]] = {
        "POST /v1/auth/request-code": lambda: {"email": ALICE},
        "POST /v1/auth/verify-code": lambda: {"email": ALICE, "code": "000000"},
        "POST /v1/auth/logout": lambda: None,
        "POST /v1/auth/tokens": lambda: {"name": "matrix"},
        "DELETE /v1/auth/tokens/{id}": lambda: None,
        "DELETE /v1/auth/sessions/{id}": lambda: None,
        "POST /v1/auth/sessions/revoke-others": lambda: {"tokens": True},
        "POST /v1/ssh-keys": lambda: {"name": "matrix", "publicKey": ssh_public_key()},
        "DELETE /v1/ssh-keys/{id}": lambda: None,
        "POST /v1/billing/checkout": lambda: {"amountCents": 2500},
        "POST /v1/billing/setup-intent": lambda: None,
        "DELETE /v1/billing/card": lambda: None,
        "PUT /v1/billing/auto-topup": lambda: {"enabled": False, "thresholdCents": 1000, "topupAmountCents": 2500},
        "POST /v1/admin/adjustments": lambda: {"userId": actor.id, "amountCents": 1_000_000, "reason": "free money"},
        "POST /v1/admin/invoices": lambda: {"userId": s.alice.id, "amountCents": 100, "description": "matrix"},
        "POST /v1/admin/invoices/{id}/void": lambda: None,
        "POST /v1/rentals": lambda: {"familyId": "rtx-4090", "gpuCount": 1},
        "POST /v1/rentals/preview": lambda: {"familyId": "rtx-4090", "gpuCount": 1},
        "POST /v1/rentals/{id}/stop": lambda: None,
        "POST /v1/webhooks/stripe": lambda: {"id": "evt_matrix", "type": "ping", "data": {"object": {}}},
        "POST /v1/billing/stripe/webhook": lambda: {"id": "evt_matrix", "type": "ping", "data": {"object": {}}},
    }
    method = route_key.split(" ", 1)[0]
    if route_key in bodies:
        return bodies[route_key]()
    assert method not in MUTATING, f"{route_key}: a new mutating route; add a valid body to valid_body()"
    return None


def send(route_key: str, s: Shared, *, rid: str = "", cookies: dict[str, str] | None = None,
         token: str | None = None, headers: dict[str, str] | None = None, actor: Person | None = None,
         ip: str = "203.0.113.66") -> Reply:
    client = Api(source_ip=ip)
    client.cookies = dict(cookies or {})
    client.token = token
    method = route_key.split(" ", 1)[0]
    body = valid_body(route_key, s, actor or s.bob)
    return client.call(method, fill(route_key, rid), body, headers=headers or {})


# ---------------------------------------------------------------- the matrix

NON_PUBLIC = sorted(k for k in ROUTES if k not in PUBLIC | PUBLIC_IF_PRESENT)
ID_ROUTES = [k for k in NON_PUBLIC if "{id}" in k]
OWNED_ID_ROUTES = [k for k in ID_ROUTES if not k.split(" ", 1)[1].startswith(ADMIN_PREFIX)]
MUTATIONS = [k for k in NON_PUBLIC if k.split(" ", 1)[0] in MUTATING]
ADMIN_ROUTES = [k for k in NON_PUBLIC if k.split(" ", 1)[1].startswith(ADMIN_PREFIX)]

# (route key, case) → reason: a case the product answers wrongly (kept, marked, reported).
KNOWN_BUGS: dict[tuple[str, str], str] = {}


def cases(route_keys: list[str], case: str) -> list[Any]:
    out = []
    for k in route_keys:
        reason = KNOWN_BUGS.get((k, case))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(k, id=k, marks=marks))
    return out


def victim_id(route_key: str, s: Shared) -> str:
    return s.alice.ids_of(id_kind(route_key)[1]) if "{id}" in route_key else ""


@pytest.mark.parametrize("route_key", cases(NON_PUBLIC, "anonymous"))
def test_no_credentials_is_401(shared_world: Shared, route_key: str) -> None:
    """The guard: a route that is not on PUBLIC must refuse a caller without credentials."""
    s = shared_world
    body = refused(s, lambda: send(route_key, s, rid=victim_id(route_key, s)), 401, "unauthorized")
    assert body["message"] == "Not signed in"


@pytest.mark.parametrize("route_key", cases(NON_PUBLIC, "forged_session"))
def test_a_forged_session_cookie_is_401(shared_world: Shared, route_key: str) -> None:
    s = shared_world
    refused(s, lambda: send(route_key, s, rid=victim_id(route_key, s),
                            cookies={"sid": secrets.token_urlsafe(32)}), 401, "unauthorized")


@pytest.mark.parametrize("route_key", cases(NON_PUBLIC, "forged_token"))
def test_a_forged_api_token_is_401(shared_world: Shared, route_key: str) -> None:
    s = shared_world
    refused(s, lambda: send(route_key, s, rid=victim_id(route_key, s),
                            token="gpr_" + secrets.token_urlsafe(32)), 401, "unauthorized")


@pytest.mark.parametrize("route_key", cases(NON_PUBLIC, "expired_session"))
def test_an_expired_session_is_401(shared_world: Shared, route_key: str) -> None:
    s = shared_world
    refused(s, lambda: send(route_key, s, rid=victim_id(route_key, s), cookies={"sid": s.eve_sid}),
            401, "unauthorized")


@pytest.mark.parametrize("route_key", cases(NON_PUBLIC, "revoked_token"))
def test_a_revoked_api_token_is_401(shared_world: Shared, route_key: str) -> None:
    s = shared_world
    refused(s, lambda: send(route_key, s, rid=victim_id(route_key, s), token=s.revoked_token),
            401, "unauthorized")


@pytest.mark.parametrize("route_key", cases(OWNED_ID_ROUTES, "foreign_id"))
@pytest.mark.parametrize("via", ["session", "token"])
def test_someone_elses_id_is_the_documented_404(shared_world: Shared, route_key: str, via: str) -> None:
    """Bob names alice's resource: the resource's own 404, exactly as for an id nobody has
    (with a token on a session-only route: 403, whatever the id)."""
    s = shared_world
    code, prefix = id_kind(route_key)
    creds: dict[str, Any] = {"cookies": dict(s.bob.api.cookies)} if via == "session" else {"token": s.bob.token}
    status = 404
    if via == "token" and route_key in SESSION_ONLY:
        status, code = 403, "forbidden"
    foreign = refused(s, lambda: send(route_key, s, rid=s.alice.ids_of(prefix), **creds), status, code)
    unknown = refused(s, lambda: send(route_key, s, rid=ids.new_id(prefix), **creds), status, code)
    assert foreign == unknown, "a foreign id must look exactly like an id that does not exist"


@pytest.mark.parametrize("route_key", cases(MUTATIONS, "bad_origin"))
def test_a_disallowed_origin_on_a_cookie_mutation_is_403(shared_world: Shared, route_key: str) -> None:
    """With a live session, a valid body and the actor's own resource: only the Origin is wrong."""
    s = shared_world
    actor = s.admin if route_key.split(" ", 1)[1].startswith(ADMIN_PREFIX) else s.bob
    rid = ""
    if "{id}" in route_key:
        rid = (s.bob if actor is s.admin else actor).ids_of(id_kind(route_key)[1])
    for origin in (EVIL_ORIGIN, "null", "https://app.gpurent.test.evil.example", "http://app.gpurent.test"):
        refused(s, lambda o=origin: send(route_key, s, rid=rid, cookies=dict(actor.api.cookies), actor=actor,  # type: ignore[misc]
                                         headers={"origin": o}), 403, "forbidden")


@pytest.mark.parametrize("route_key", cases(ADMIN_ROUTES, "non_admin"))
@pytest.mark.parametrize("via", ["session", "token"])
def test_admin_routes_refuse_a_non_admin(shared_world: Shared, route_key: str, via: str) -> None:
    """Bob (signed in, not in ADMIN_EMAILS) tries to credit himself, invoice alice, void an invoice."""
    s = shared_world
    creds: dict[str, Any] = {"cookies": dict(s.bob.api.cookies)} if via == "session" else {"token": s.bob.token}
    rid = s.alice.invoices[0] if "{id}" in route_key else ""
    refused(s, lambda: send(route_key, s, rid=rid, **creds), 403, "forbidden")


@pytest.mark.parametrize("route_key", cases(sorted(SESSION_ONLY), "token_on_session_route"))
def test_an_api_token_on_a_session_only_route_is_403(shared_world: Shared, route_key: str) -> None:
    """Bob's own live token, his own resource, a valid body: a token may not manage tokens or
    sessions (it could otherwise mint tokens that outlive it, or end its owner's sessions)."""
    s = shared_world
    rid = s.bob.ids_of(id_kind(route_key)[1]) if "{id}" in route_key else ""
    body = refused(s, lambda: send(route_key, s, rid=rid, token=s.bob.token), 403, "forbidden")
    assert "session" in body["message"]


# ---------------------------------------------------------------- keeping the lists honest

def test_the_public_allow_list_names_real_routes_that_need_no_credentials(shared_world: Shared) -> None:
    """Each allow-listed route exists and really answers without credentials (never 401):
    the allow-list can neither rot nor hide an authenticated route."""
    s = shared_world
    assert PUBLIC <= set(ROUTES), sorted(PUBLIC - set(ROUTES))
    for route_key in sorted((PUBLIC | PUBLIC_IF_PRESENT) & set(ROUTES)):
        reply = send(route_key, s)
        assert reply.status < 500, (route_key, reply.status, reply.body)
        if reply.status == 401:
            assert reply.json()["error"] != "unauthorized", (route_key, reply.body)
        assert_no_leak(reply, s.everyone() - {ALICE})  # request-code is about alice's address


def test_the_matrix_covers_every_route(shared_world: Shared) -> None:
    """Every template route is public or in the authenticated matrix; every {id} route has a
    documented 404 code; every mutation has a valid body (so the Origin case means something)."""
    assert set(NON_PUBLIC) | (PUBLIC & set(ROUTES)) | (PUBLIC_IF_PRESENT & set(ROUTES)) == set(ROUTES)
    assert len(NON_PUBLIC) >= 30 and ADMIN_ROUTES and OWNED_ID_ROUTES
    managing = {k for k in ROUTES if k.split(" ", 1)[1].startswith(("/v1/auth/tokens", "/v1/auth/sessions"))}
    assert managing and managing == SESSION_ONLY, sorted(managing ^ SESSION_ONLY)
    for k in ID_ROUTES:
        id_kind(k)
    for k in ROUTES:
        valid_body(k, shared_world, shared_world.bob)  # asserts for a mutation without one
