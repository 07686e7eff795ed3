"""Google / GitHub sign-in through the real auth function (spec/api.md §3.1.4).

The providers are faked with respx at their real endpoints, answering with
their documented response shapes; AWS is moto (the `api` fixture)."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest
import respx

from gpurent import config
from gpurent.store import secrets as secret_store
from tests.conftest import Api
from tests.integration.helpers import envelope, snapshot

PUBLIC = "https://app.gpurent.test"
LOGIN_FAILED = f"{PUBLIC}/login?error=oauth_failed"
LOGIN_NO_EMAIL = f"{PUBLIC}/login?error=oauth_no_email"
LOGIN_UNAVAILABLE = f"{PUBLIC}/login?error=oauth_unavailable"

GOOGLE_AUTH = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN = "https://oauth2.googleapis.com/token"
GOOGLE_USERINFO = "https://openidconnect.googleapis.com/v1/userinfo"
GITHUB_AUTH = "https://github.com/login/oauth/authorize"
GITHUB_TOKEN = "https://github.com/login/oauth/access_token"
GITHUB_EMAILS = "https://api.github.com/user/emails"

GOOGLE_ACCESS = "ya29.a0AfH6SMBx-fake-google-access-token"
GITHUB_ACCESS = "gho_16C7e42F292c6912E7710c838347Ae178B4a"


# ---------------------------------------------------------------- fixtures and helpers

def _configure(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name in ("GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET", "GOOGLE_CLIENT_SECRET_PARAM",
                 "GITHUB_CLIENT_ID", "GITHUB_CLIENT_SECRET", "GITHUB_CLIENT_SECRET_PARAM"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config.reset()
    secret_store.reset_client()


@pytest.fixture(autouse=True)
def _fresh_secrets() -> Iterator[None]:
    secret_store.reset_client()
    yield
    secret_store.reset_client()
    config.reset()


@pytest.fixture
def configured(api: Api, monkeypatch: pytest.MonkeyPatch) -> Api:
    _configure(
        monkeypatch,
        GOOGLE_CLIENT_ID="123-google.apps.googleusercontent.com",
        GOOGLE_CLIENT_SECRET="GOCSPX-google-secret",
        GITHUB_CLIENT_ID="Iv1.github-client",
        GITHUB_CLIENT_SECRET="github-secret",
    )
    return api


@pytest.fixture
def providers() -> Iterator[respx.MockRouter]:
    """Every outgoing httpx request must hit a faked route (no real network)."""
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        yield mock


def google_token_ok(mock: respx.MockRouter) -> respx.Route:
    return mock.post(GOOGLE_TOKEN).respond(200, json={
        "access_token": GOOGLE_ACCESS,
        "expires_in": 3599,
        "scope": "openid https://www.googleapis.com/auth/userinfo.email "
                 "https://www.googleapis.com/auth/userinfo.profile",
        "token_type": "Bearer",
        "id_token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMDc2In0.c2ln",
    })


def google_userinfo(mock: respx.MockRouter, email: str, verified: bool = True) -> respx.Route:
    return mock.get(GOOGLE_USERINFO).respond(200, json={
        "sub": "107647562183912345678",
        "name": "Alice Example",
        "given_name": "Alice",
        "family_name": "Example",
        "picture": "https://lh3.googleusercontent.com/a/photo",
        "email": email,
        "email_verified": verified,
        "locale": "en",
    })


def github_token_ok(mock: respx.MockRouter) -> respx.Route:
    return mock.post(GITHUB_TOKEN).respond(200, json={
        "access_token": GITHUB_ACCESS, "scope": "read:user,user:email", "token_type": "bearer",
    })


def github_emails(mock: respx.MockRouter, emails: list[dict[str, Any]]) -> respx.Route:
    return mock.get(GITHUB_EMAILS).respond(200, json=emails)


def start(api: Api, provider: str) -> tuple[str, dict[str, list[str]], str, str]:
    """Start the flow: (authorize URL without query, its params, state, verifier)."""
    r = api.get(f"/v1/auth/oauth/{provider}")
    assert r.status == 302, r.body
    loc = urlsplit(r.headers["location"])
    value = api.cookies[f"oauth_{provider}"]
    state, _, verifier = value.partition(".")
    return f"{loc.scheme}://{loc.netloc}{loc.path}", parse_qs(loc.query, strict_parsing=True), state, verifier


def callback(api: Api, provider: str, **query: str) -> Any:
    qs = httpx.QueryParams(query)
    return api.get(f"/v1/auth/oauth/{provider}/callback?{qs}")


def form(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


def identity_items(prefix: str) -> list[dict[str, Any]]:
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": config.settings().identity_table}
    while True:
        r = ddb.scan(**kwargs)
        items.extend(i for i in r["Items"] if i["pk"]["S"].startswith(prefix))
        if "LastEvaluatedKey" not in r:
            return items
        kwargs["ExclusiveStartKey"] = r["LastEvaluatedKey"]


def assert_cleared(reply: Any, provider: str) -> None:
    cleared = [c for c in reply.cookies if c.startswith(f"oauth_{provider}=")]
    assert len(cleared) == 1, reply.cookies
    assert cleared[0].startswith(f"oauth_{provider}=;")
    assert "Max-Age=0" in cleared[0] and "Path=/v1/auth/oauth" in cleared[0]


def assert_refused(api: Api, reply: Any, provider: str, location: str = LOGIN_FAILED) -> None:
    """A failed callback: redirected to the login error, cookie cleared, nothing written."""
    assert reply.status == 302, reply.body
    assert reply.headers["location"] == location
    assert_cleared(reply, provider)
    assert not any(c.startswith("sid=") for c in reply.cookies)
    assert "sid" not in api.cookies
    assert api.get("/v1/auth/me").status == 401
    assert identity_items("SESSION#") == []
    assert all(items == [] for items in snapshot().values())  # no user, email, session… anywhere


# ---------------------------------------------------------------- start

@pytest.mark.parametrize(
    ("provider", "auth_url", "client_id", "scope"),
    [
        ("google", GOOGLE_AUTH, "123-google.apps.googleusercontent.com", "openid email profile"),
        ("github", GITHUB_AUTH, "Iv1.github-client", "read:user user:email"),
    ],
)
def test_start_redirects_to_consent_with_pkce(configured, provider, auth_url, client_id, scope):
    r = configured.get(f"/v1/auth/oauth/{provider}")
    assert r.status == 302
    assert r.body == ""
    loc = urlsplit(r.headers["location"])
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == auth_url
    params = parse_qs(loc.query, strict_parsing=True)
    assert all(len(v) == 1 for v in params.values())
    p = {k: v[0] for k, v in params.items()}
    assert set(p) == {"client_id", "redirect_uri", "response_type", "scope", "state", "code_challenge",
                      "code_challenge_method"}
    assert p["client_id"] == client_id
    assert p["redirect_uri"] == f"{PUBLIC}/v1/auth/oauth/{provider}/callback"
    assert p["response_type"] == "code"
    assert p["scope"] == scope
    assert p["code_challenge_method"] == "S256"

    [cookie] = r.cookies
    attrs = [a.strip() for a in cookie.split(";")]
    name, _, value = attrs[0].partition("=")
    assert name == f"oauth_{provider}"
    assert set(attrs[1:]) == {"HttpOnly", "Secure", "SameSite=Lax", "Path=/v1/auth/oauth", "Max-Age=600"}
    state, dot, verifier = value.partition(".")
    assert dot == "."
    assert p["state"] == state
    assert len(base64.urlsafe_b64decode(state + "=" * (-len(state) % 4))) >= 16  # ≥ 128 bits
    assert 43 <= len(verifier) <= 128
    assert set(verifier) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert p["code_challenge"] == expected
    assert "=" not in p["code_challenge"]


def test_start_is_fresh_each_time(configured):
    _, p1, s1, v1 = start(configured, "google")
    _, p2, s2, v2 = start(configured, "google")
    assert s1 != s2 and v1 != v2
    assert p1["code_challenge"] != p2["code_challenge"]


def test_state_cookie_not_secure_when_cookie_secure_off(configured, monkeypatch):
    monkeypatch.setenv("COOKIE_SECURE", "0")
    config.reset()
    r = configured.get("/v1/auth/oauth/github")
    assert r.status == 302
    assert "Secure" not in r.cookies[0]


def test_unknown_provider_is_not_found(configured):
    for url in ("/v1/auth/oauth/facebook", "/v1/auth/oauth/facebook/callback?code=x&state=y"):
        r = configured.get(url)
        envelope(r, 404, "not_found")
        assert r.cookies == []


@pytest.mark.parametrize("provider", ["google", "github"])
def test_unconfigured_provider_is_unavailable(api, monkeypatch, provider):
    _configure(monkeypatch)  # nothing set
    r = api.get(f"/v1/auth/oauth/{provider}")
    assert r.status == 302
    assert r.headers["location"] == LOGIN_UNAVAILABLE
    assert r.cookies == []


def test_client_id_without_any_secret_is_unavailable(api, monkeypatch):
    _configure(monkeypatch, GOOGLE_CLIENT_ID="cid", GITHUB_CLIENT_SECRET="s")  # github: secret but no id
    for provider in ("google", "github"):
        r = api.get(f"/v1/auth/oauth/{provider}")
        assert r.headers["location"] == LOGIN_UNAVAILABLE, provider
        assert r.cookies == []


def test_missing_secret_parameter_is_unavailable(api, monkeypatch):
    _configure(monkeypatch, GOOGLE_CLIENT_ID="cid", GOOGLE_CLIENT_SECRET_PARAM="/gpurent/absent")
    r = api.get("/v1/auth/oauth/google")
    assert r.headers["location"] == LOGIN_UNAVAILABLE
    assert r.cookies == []


def test_callback_on_unconfigured_provider_is_unavailable_and_clears_cookie(configured, monkeypatch,
                                                                            providers):
    _, _, state, _ = start(configured, "github")
    _configure(monkeypatch)  # the deployment lost its configuration mid-flow
    r = callback(configured, "github", code="c", state=state)
    assert_refused(configured, r, "github", LOGIN_UNAVAILABLE)
    assert not providers.calls


# ---------------------------------------------------------------- success

def test_google_sign_in(configured, providers):
    _, _, state, verifier = start(configured, "google")
    token = google_token_ok(providers)
    userinfo = google_userinfo(providers, "Alice@Example.com")

    r = callback(configured, "google", code="4/0AfJohXn-code", state=state, scope="email openid")
    assert r.status == 302, r.body
    assert r.headers["location"] == f"{PUBLIC}/app"
    assert_cleared(r, "google")
    [sid_cookie] = [c for c in r.cookies if c.startswith("sid=")]
    assert "HttpOnly" in sid_cookie and "Secure" in sid_cookie and "Path=/" in sid_cookie
    assert "oauth_google" not in configured.cookies

    sent = form(token.calls.last.request)
    assert sent == {
        "code": "4/0AfJohXn-code",
        "client_id": "123-google.apps.googleusercontent.com",
        "client_secret": "GOCSPX-google-secret",
        "redirect_uri": f"{PUBLIC}/v1/auth/oauth/google/callback",
        "grant_type": "authorization_code",
        "code_verifier": verifier,
    }
    assert userinfo.calls.last.request.headers["authorization"] == f"Bearer {GOOGLE_ACCESS}"

    me = configured.get("/v1/auth/me")
    assert me.status == 200, me.body
    assert me.json()["user"]["email"] == "alice@example.com"
    assert len(identity_items("SESSION#")) == 1


def test_github_sign_in(configured, providers):
    _, _, state, verifier = start(configured, "github")
    token = github_token_ok(providers)
    emails = github_emails(providers, [
        {"email": "octo-old@example.org", "verified": True, "primary": False, "visibility": None},
        {"email": "Octocat@GitHub.com", "verified": True, "primary": True, "visibility": "public"},
        {"email": "583231+octocat@users.noreply.github.com", "verified": True, "primary": False,
         "visibility": None},
    ])

    r = callback(configured, "github", code="e72e16c7e42f292c6912", state=state)
    assert r.status == 302, r.body
    assert r.headers["location"] == f"{PUBLIC}/app"
    assert_cleared(r, "github")

    req = token.calls.last.request
    assert req.headers["accept"] == "application/json"
    assert form(req) == {
        "client_id": "Iv1.github-client",
        "client_secret": "github-secret",
        "code": "e72e16c7e42f292c6912",
        "redirect_uri": f"{PUBLIC}/v1/auth/oauth/github/callback",
        "code_verifier": verifier,
    }
    assert emails.calls.last.request.headers["authorization"] == f"Bearer {GITHUB_ACCESS}"

    me = configured.get("/v1/auth/me")
    assert me.status == 200, me.body
    assert me.json()["user"]["email"] == "octocat@github.com"


def test_same_account_as_otp_and_across_providers(configured, providers):
    otp_user = Api(source_ip="198.51.100.8").sign_in("alice@example.com")

    _, _, state, _ = start(configured, "google")
    google_token_ok(providers)
    google_userinfo(providers, " ALICE@example.com")
    assert callback(configured, "google", code="g", state=state).headers["location"] == f"{PUBLIC}/app"
    assert configured.get("/v1/auth/me").json()["user"]["id"] == otp_user["id"]

    gh = Api(source_ip="198.51.100.9")
    _, _, state, _ = start(gh, "github")
    github_token_ok(providers)
    github_emails(providers, [{"email": "alice@example.com", "verified": True, "primary": True,
                               "visibility": "private"}])
    assert callback(gh, "github", code="h", state=state).headers["location"] == f"{PUBLIC}/app"
    assert gh.get("/v1/auth/me").json()["user"]["id"] == otp_user["id"]

    assert len(identity_items("EMAIL#")) == 1  # one account, three sign-in methods
    assert len(identity_items("SESSION#")) == 3


def test_secret_from_ssm_secure_string(api, monkeypatch, providers):
    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name="/gpurent/google-client-secret", Value="GOCSPX-from-ssm", Type="SecureString")
    _configure(monkeypatch, GOOGLE_CLIENT_ID="cid.apps.googleusercontent.com",
               GOOGLE_CLIENT_SECRET_PARAM="/gpurent/google-client-secret")
    _, _, state, _ = start(api, "google")
    token = google_token_ok(providers)
    google_userinfo(providers, "ssm@example.com")
    r = callback(api, "google", code="c", state=state)
    assert r.headers["location"] == f"{PUBLIC}/app"
    assert form(token.calls.last.request)["client_secret"] == "GOCSPX-from-ssm"
    assert api.get("/v1/auth/me").status == 200


def test_get_secret_is_cached_per_process(aws):
    ssm = boto3.client("ssm", region_name="us-east-1")
    ssm.put_parameter(Name="/x/secret", Value="one", Type="SecureString")
    assert secret_store.get_secret("/x/secret") == "one"
    ssm.put_parameter(Name="/x/secret", Value="two", Type="SecureString", Overwrite=True)
    assert secret_store.get_secret("/x/secret") == "one"
    secret_store.reset_client()
    assert secret_store.get_secret("/x/secret") == "two"


# ---------------------------------------------------------------- refusals

def test_state_mismatch(configured, providers):
    start(configured, "google")
    google_token_ok(providers)
    google_userinfo(providers, "alice@example.com")
    r = callback(configured, "google", code="c", state="A" * 43)
    assert_refused(configured, r, "google")
    assert not providers.calls


def test_state_missing_from_query(configured, providers):
    start(configured, "google")
    r = callback(configured, "google", code="c")
    assert_refused(configured, r, "google")
    assert not providers.calls


def test_non_ascii_state_is_a_mismatch_not_a_crash(configured, providers):
    start(configured, "github")
    r = callback(configured, "github", code="c", state="é" * 43)
    assert_refused(configured, r, "github")


def test_state_of_the_other_provider_does_not_count(configured, providers):
    _, _, google_state, _ = start(configured, "google")
    configured.cookies.pop("oauth_github", None)
    r = callback(configured, "github", code="c", state=google_state)
    assert_refused(configured, r, "github")
    assert not providers.calls


def test_missing_cookie(configured, providers):
    _, _, state, _ = start(configured, "google")
    configured.cookies.clear()
    google_token_ok(providers)
    google_userinfo(providers, "alice@example.com")
    r = callback(configured, "google", code="c", state=state)
    assert_refused(configured, r, "google")
    assert not providers.calls


@pytest.mark.parametrize("value", ["nodot", ".onlyverifier", "state.", "a" * 43 + ".short", "a.b.c"])
def test_malformed_cookie(configured, providers, value):
    configured.cookies["oauth_google"] = value
    r = callback(configured, "google", code="c", state=value.partition(".")[0])
    assert_refused(configured, r, "google")
    assert not providers.calls


@pytest.mark.parametrize("provider", ["google", "github"])
def test_provider_error_user_cancelled(configured, providers, provider):
    _, _, state, _ = start(configured, provider)
    r = callback(configured, provider, error="access_denied",
                 error_description="The user has denied your application access.", state=state)
    assert_refused(configured, r, provider)
    assert not providers.calls


def test_missing_code(configured, providers):
    _, _, state, _ = start(configured, "google")
    r = callback(configured, "google", state=state)
    assert_refused(configured, r, "google")
    assert not providers.calls


@pytest.mark.parametrize("provider", ["google", "github"])
@pytest.mark.parametrize(
    "token_reply",
    [
        httpx.Response(400, json={"error": "invalid_grant", "error_description": "Bad Request"}),
        httpx.Response(401, json={"error": "invalid_client", "error_description": "Unauthorized"}),
        httpx.Response(500, text="<html>Server Error</html>"),
        httpx.Response(503),
        httpx.Response(200, text="not json {"),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(200, json={"token_type": "Bearer"}),  # no access_token
        # GitHub's answer to a bad, expired or reused code is a 200:
        httpx.Response(200, json={"error": "bad_verification_code",
                                  "error_description": "The code passed is incorrect or expired.",
                                  "error_uri": "https://docs.github.com/apps/troubleshooting"}),
    ],
    ids=["400", "401", "500", "503", "not-json", "not-object", "no-token", "200-error"],
)
def test_token_exchange_failures(configured, providers, provider, token_reply):
    _, _, state, _ = start(configured, provider)
    token = providers.post(GOOGLE_TOKEN if provider == "google" else GITHUB_TOKEN).mock(return_value=token_reply)
    info = providers.get(GOOGLE_USERINFO if provider == "google" else GITHUB_EMAILS).respond(200, json={})
    r = callback(configured, provider, code="c", state=state)
    assert_refused(configured, r, provider)
    assert token.called and not info.called


@pytest.mark.parametrize("provider", ["google", "github"])
@pytest.mark.parametrize("exc", [httpx.ConnectTimeout, httpx.ReadTimeout, httpx.ConnectError])
def test_token_exchange_timeout_or_unreachable(configured, providers, provider, exc):
    _, _, state, _ = start(configured, provider)
    providers.post(GOOGLE_TOKEN if provider == "google" else GITHUB_TOKEN).mock(side_effect=exc("boom"))
    r = callback(configured, provider, code="c", state=state)
    assert_refused(configured, r, provider)


def test_timeouts_are_short(configured, providers):
    from gpurent import oauth

    assert oauth.TIMEOUTS["connect"] == 3.0 and oauth.TIMEOUTS["read"] == 10.0


@pytest.mark.parametrize("provider", ["google", "github"])
@pytest.mark.parametrize(
    "reply",
    [httpx.Response(401, json={"error": "invalid_token"}), httpx.Response(500), httpx.Response(200, text="<html>")],
    ids=["401", "500", "not-json"],
)
def test_email_lookup_failures(configured, providers, provider, reply):
    _, _, state, _ = start(configured, provider)
    (google_token_ok if provider == "google" else github_token_ok)(providers)
    providers.get(GOOGLE_USERINFO if provider == "google" else GITHUB_EMAILS).mock(return_value=reply)
    r = callback(configured, provider, code="c", state=state)
    assert_refused(configured, r, provider)


def test_email_lookup_timeout(configured, providers):
    _, _, state, _ = start(configured, "github")
    github_token_ok(providers)
    providers.get(GITHUB_EMAILS).mock(side_effect=httpx.ReadTimeout("slow"))
    r = callback(configured, "github", code="c", state=state)
    assert_refused(configured, r, "github")


@pytest.mark.parametrize(
    "info",
    [
        {"sub": "1", "email": "alice@example.com", "email_verified": False},
        {"sub": "1", "email": "alice@example.com"},
        {"sub": "1", "email": "alice@example.com", "email_verified": "false"},
        {"sub": "1", "email_verified": True},  # no email (scope not granted)
        {"sub": "1", "email": "not-an-email", "email_verified": True},
    ],
    ids=["unverified", "no-flag", "string-false", "no-email", "invalid-email"],
)
def test_google_without_verified_email(configured, providers, info):
    _, _, state, _ = start(configured, "google")
    google_token_ok(providers)
    providers.get(GOOGLE_USERINFO).respond(200, json=info)
    r = callback(configured, "google", code="c", state=state)
    assert_refused(configured, r, "google", LOGIN_NO_EMAIL)


@pytest.mark.parametrize(
    "emails",
    [
        [],
        # primary not verified, another one verified: only the primary counts
        [{"email": "alice@example.com", "verified": False, "primary": True, "visibility": "public"},
         {"email": "alice@work.example", "verified": True, "primary": False, "visibility": None}],
        # verified ones, none primary
        [{"email": "alice@example.com", "verified": True, "primary": False, "visibility": None}],
    ],
    ids=["empty", "primary-unverified", "no-primary"],
)
def test_github_without_primary_verified_email(configured, providers, emails):
    _, _, state, _ = start(configured, "github")
    github_token_ok(providers)
    github_emails(providers, emails)
    r = callback(configured, "github", code="c", state=state)
    assert_refused(configured, r, "github", LOGIN_NO_EMAIL)


def test_github_emails_not_a_list_is_failed(configured, providers):
    _, _, state, _ = start(configured, "github")
    github_token_ok(providers)
    providers.get(GITHUB_EMAILS).respond(200, json={"message": "Requires authentication"})
    r = callback(configured, "github", code="c", state=state)
    assert_refused(configured, r, "github")


class _Collect(logging.Handler):
    def __init__(self, formatter: logging.Formatter | None) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        if formatter is not None:
            self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"msg={record.getMessage()!r} " + self.format(record) + repr(record.__dict__))


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """Every record of the `gpurent` loggers, at every level, as the deployment formats it."""
    import gpurent.api  # noqa: F401 - configures the service logger (handler, level) first
    from gpurent import oauth

    parent = logging.getLogger("gpurent")
    child = logging.getLogger(oauth.logger.name)
    formatter = parent.handlers[0].formatter if parent.handlers else None
    collect = _Collect(formatter)
    levels = parent.level, child.level
    parent.addHandler(collect)
    parent.setLevel(logging.DEBUG)
    child.setLevel(logging.DEBUG)
    yield collect.lines
    parent.removeHandler(collect)
    parent.setLevel(levels[0])
    child.setLevel(levels[1])


def test_no_secret_token_code_or_email_in_logs(configured, providers, logs):
    _, _, state, _ = start(configured, "google")
    google_token_ok(providers)
    google_userinfo(providers, "secret-person@example.com", verified=False)
    callback(configured, "google", code="4/very-secret-code", state=state)
    _, _, state2, _ = start(configured, "github")
    github_token_ok(providers)
    github_emails(providers, [{"email": "secret-person@example.com", "verified": True, "primary": True}])
    callback(configured, "github", code="gh-secret-code", state=state2)
    _, _, state3, _ = start(configured, "google")
    providers.post(GOOGLE_TOKEN).mock(side_effect=httpx.ReadTimeout("timed out"))
    callback(configured, "google", code="4/timeout-code", state=state3)

    text = "\n".join(logs)
    assert "oauth sign-in refused" in text and "email_unverified" in text  # not vacuous
    assert "msg='oauth sign-in' " in text and "http_ReadTimeout" in text  # success logged too
    for needle in ("secret-person", "very-secret-code", "gh-secret-code", "timeout-code", GOOGLE_ACCESS,
                   GITHUB_ACCESS, "GOCSPX-google-secret", "github-secret", state, state2, state3):
        assert needle not in text, needle


# ---------------------------------------------------------------- discovery (dashboard extension)

def test_providers_lists_only_the_configured_ones_without_a_session(api: Api, monkeypatch) -> None:
    _configure(monkeypatch)
    r = api.get("/v1/auth/providers")
    assert r.status == 200 and r.json() == {"oauth": []}
    _configure(monkeypatch, GITHUB_CLIENT_ID="Iv1.github-client", GITHUB_CLIENT_SECRET_PARAM="/gpurent/github")
    assert api.get("/v1/auth/providers").json() == {"oauth": ["github"]}
    # A client id without any secret is not usable: no button.
    _configure(monkeypatch, GOOGLE_CLIENT_ID="123-google.apps.googleusercontent.com",
               GITHUB_CLIENT_ID="Iv1.github-client", GITHUB_CLIENT_SECRET="github-secret")
    assert api.get("/v1/auth/providers").json() == {"oauth": ["github"]}


def test_providers_lists_both_when_both_are_configured(configured: Api) -> None:
    assert configured.get("/v1/auth/providers").json() == {"oauth": ["google", "github"]}
