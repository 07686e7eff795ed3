"""Google / GitHub sign-in: authorization code flow with PKCE (`spec/api.md`
§3.1.4, `spec/decisions.md` "Auth").

Both endpoints are browser navigations, so neither answers with JSON (except
an unknown provider, a plain 404 `not_found`): every outcome is a 302.

* `start` puts a CSRF `state` (256 random bits) and a PKCE code verifier in a
  short-lived cookie `oauth_<provider>=<state>.<verifier>` (HttpOnly,
  SameSite=Lax so the provider's top-level redirect back carries it, scoped to
  `/v1/auth/oauth`, 10 minutes) and sends the browser to the provider's consent
  page with `state` and the S256 `code_challenge`.
* `callback` checks `state` against the cookie, exchanges the code (with the
  verifier) for an access token, reads the account's **verified** email,
  signs in the user with that email exactly as an OTP sign-in does (same email,
  same account; the provider's own user id is never stored), and redirects to
  `{public_url}/app` with the `sid` cookie. The oauth cookie is cleared on
  every outcome.

Redirect targets are absolute: `{settings().public_url}/login?error=<code>`
and `{settings().public_url}/app`. The documented targets are the paths
`/login?…` and `/app`; prefixing `public_url` (the origin users reach the
dashboard on, API and dashboard sharing it) gives the same page when they do
share an origin and still lands on the dashboard when the API is reached on
another host (an API Gateway URL, the local stack's port).

Error codes (`/login?error=…`): `oauth_unavailable` — the provider is not
configured (client id unset, no client secret nor secret parameter, or the
secret parameter cannot be read); `oauth_no_email` — the provider gave no
verified email (or an invalid one); `oauth_failed` — everything else: cookie
missing or malformed, state mismatch, the user cancelled (`error=` in the
query), the token exchange or the email look-up failed, timed out or answered
something unreadable.

Tokens, codes, secrets and emails are never logged; failures are logged with
a fixed reason string only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from aws_lambda_powertools import Logger

if TYPE_CHECKING:
    import httpx

from gpurent import auth
from gpurent.config import settings
from gpurent.errors import ApiError
from gpurent.store import secrets as secret_store

logger = Logger(service="gpurent", child=True)

PROVIDERS = ("google", "github")
COOKIE_PATH = "/v1/auth/oauth"
COOKIE_MAX_AGE = 600
SCOPES = {"google": "openid email profile", "github": "read:user user:email"}
# httpx is imported only by the callback: the other sign-in routes never pay its import time.
TIMEOUTS = {"connect": 3.0, "read": 10.0, "write": 10.0, "pool": 3.0}
GITHUB_API_VERSION = "2022-11-28"

_STATE_RE = re.compile(r"[A-Za-z0-9_-]{43,128}")
_VERIFIER_RE = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 §4.1
_ERROR_CODE_RE = re.compile(r"[a-z_]{1,64}")


@dataclass(frozen=True)
class _Client:
    provider: str
    client_id: str
    client_secret: str


class _Failed(Exception):
    """The flow ends with `/login?error=<error>`; `reason` is for the log only."""

    def __init__(self, reason: str, error: str = "oauth_failed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


# ---------------------------------------------------------------- public

def start(provider: str) -> tuple[str, str | None]:
    """(redirect location, Set-Cookie value or None)."""
    _known(provider)
    client = _client(provider)
    if client is None:
        return _login("oauth_unavailable"), None
    state = secrets.token_urlsafe(32)  # 256 bits
    verifier = secrets.token_urlsafe(64)  # 86 chars of the RFC 7636 alphabet
    params = {
        "client_id": client.client_id,
        "redirect_uri": redirect_uri(provider),
        "response_type": "code",
        "scope": SCOPES[provider],
        "state": state,
        "code_challenge": code_challenge(verifier),
        "code_challenge_method": "S256",
    }
    url = _auth_url(provider)
    location = f"{url}{'&' if '?' in url else '?'}{urlencode(params, quote_via=quote)}"
    return location, _state_cookie(provider, f"{state}.{verifier}", COOKIE_MAX_AGE)


def callback(provider: str, query: dict[str, str], cookies: dict[str, str], *, user_agent: str | None = None,
             source_ip: str | None = None) -> tuple[str, list[str]]:
    """(redirect location, Set-Cookie values); the oauth cookie is always cleared."""
    _known(provider)
    cleared = _state_cookie(provider, "", 0)
    try:
        client = _client(provider)
        if client is None:
            raise _Failed("not_configured", "oauth_unavailable")
        verifier = _check_state(provider, query, cookies)
        code = query.get("code") or ""
        if not code:
            raise _Failed("missing_code")
        email = _verified_email(client, code, verifier)
        user, created = auth.upsert_user(email)
        sid, _ = auth.create_session(user["id"], user_agent=user_agent, source_ip=source_ip)
    except _Failed as failure:
        logger.warning("oauth sign-in refused", extra={"provider": provider, "reason": failure.reason,
                                                       "error": failure.error})
        return _login(failure.error), [cleared]
    except Exception:
        # A browser navigation: a JSON 500 would strand the user and keep the cookie.
        logger.exception("oauth sign-in failed", extra={"provider": provider})
        return _login("oauth_failed"), [cleared]
    logger.info("oauth sign-in", extra={"provider": provider, "userId": user["id"], "newUser": created})
    return f"{settings().public_url}/app", [auth.session_cookie(sid), cleared]


def redirect_uri(provider: str) -> str:
    return f"{settings().public_url}/v1/auth/oauth/{provider}/callback"


def code_challenge(verifier: str) -> str:
    """S256: base64url(sha256(verifier)) without padding (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# ---------------------------------------------------------------- configuration

def _known(provider: str) -> None:
    if provider not in PROVIDERS:
        raise ApiError("not_found")


def _client(provider: str) -> _Client | None:
    """The provider's credentials, or None when it is not (usably) configured."""
    s = settings()
    if provider == "google":
        client_id, secret, param = s.google_client_id, s.google_client_secret, s.google_client_secret_param
    else:
        client_id, secret, param = s.github_client_id, s.github_client_secret, s.github_client_secret_param
    if not client_id:
        return None
    if not secret:
        if not param:
            return None
        try:
            secret = secret_store.get_secret(param)
        except Exception as exc:
            logger.error("oauth client secret unreadable",
                         extra={"provider": provider, "param": param, "errorType": type(exc).__name__})
            return None
        if not secret:
            return None
    return _Client(provider, client_id, secret)


def configured() -> list[str]:
    """The providers whose sign-in button the dashboard shows: a client id and a secret (or
    the name of its parameter) are set. Cheap on purpose: no secret is read here, so a
    parameter that cannot be read still ends at `/login?error=oauth_unavailable`."""
    s = settings()
    pairs = {"google": (s.google_client_id, s.google_client_secret or s.google_client_secret_param),
             "github": (s.github_client_id, s.github_client_secret or s.github_client_secret_param)}
    return [p for p in PROVIDERS if all(pairs[p])]


def _auth_url(provider: str) -> str:
    s = settings()
    return s.google_auth_url if provider == "google" else s.github_auth_url


def _login(error: str) -> str:
    return f"{settings().public_url}/login?error={error}"


def _state_cookie(provider: str, value: str, max_age: int) -> str:
    secure = "; Secure" if settings().cookie_secure else ""
    return f"oauth_{provider}={value}; HttpOnly{secure}; SameSite=Lax; Path={COOKIE_PATH}; Max-Age={max_age}"


# ---------------------------------------------------------------- callback steps

def _check_state(provider: str, query: dict[str, str], cookies: dict[str, str]) -> str:
    """The PKCE verifier, once the query's `state` matches the cookie's."""
    raw = cookies.get(f"oauth_{provider}") or ""
    if not raw:
        raise _Failed("state_cookie_missing")
    state, sep, verifier = raw.partition(".")
    if not sep or not _STATE_RE.fullmatch(state) or not _VERIFIER_RE.fullmatch(verifier):
        raise _Failed("state_cookie_malformed")
    if "error" in query:
        code = query["error"]
        raise _Failed(f"provider_error:{code if _ERROR_CODE_RE.fullmatch(code) else 'other'}")
    # Bytes, so a non-ASCII `state` is a mismatch rather than a TypeError.
    if not hmac.compare_digest(query.get("state", "").encode("utf-8"), state.encode("ascii")):
        raise _Failed("state_mismatch")
    return verifier


def _verified_email(client: _Client, code: str, verifier: str) -> str:
    import httpx

    timeout = httpx.Timeout(**TIMEOUTS)
    with httpx.Client(timeout=timeout, follow_redirects=False, headers={"User-Agent": "gpurent"}) as http:
        try:
            if client.provider == "google":
                raw = _google_email(http, client, code, verifier)
            else:
                raw = _github_email(http, client, code, verifier)
        except httpx.HTTPError as exc:
            raise _Failed(f"http_{type(exc).__name__}") from None
    try:
        return auth.normalise_email(raw)
    except ApiError:
        raise _Failed("invalid_email", "oauth_no_email") from None


def _google_email(http: httpx.Client, client: _Client, code: str, verifier: str) -> str:
    s = settings()
    token = _access_token(http.post(
        s.google_token_url,
        data={
            "code": code,
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            "redirect_uri": redirect_uri("google"),
            "grant_type": "authorization_code",
            "code_verifier": verifier,
        },
        headers={"Accept": "application/json"},
    ))
    info = _json(http.get(s.google_userinfo_url,
                          headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}), "userinfo")
    if not isinstance(info, dict):
        raise _Failed("userinfo_malformed")
    email = info.get("email")
    # The userinfo endpoint sends a boolean; older Google answers used the string "true".
    if info.get("email_verified") not in (True, "true") or not isinstance(email, str) or not email:
        raise _Failed("email_unverified", "oauth_no_email")
    return email


def _github_email(http: httpx.Client, client: _Client, code: str, verifier: str) -> str:
    s = settings()
    token = _access_token(http.post(
        s.github_token_url,
        data={
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            "code": code,
            "redirect_uri": redirect_uri("github"),
            "code_verifier": verifier,
        },
        headers={"Accept": "application/json"},
    ))
    emails = _json(http.get(
        f"{s.github_api_url.rstrip('/')}/user/emails",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
                 "X-GitHub-Api-Version": GITHUB_API_VERSION},
    ), "emails")
    if not isinstance(emails, list):
        raise _Failed("emails_malformed")
    primary = next((e for e in emails if isinstance(e, dict) and e.get("primary") is True), None)
    if primary is None or primary.get("verified") is not True:
        raise _Failed("no_primary_verified_email", "oauth_no_email")
    email = primary.get("email")
    if not isinstance(email, str) or not email:
        raise _Failed("no_primary_verified_email", "oauth_no_email")
    return email


def _access_token(resp: httpx.Response) -> str:
    body = _json(resp, "token")
    # GitHub answers a bad or reused code with 200 {"error": "bad_verification_code", …}.
    if not isinstance(body, dict) or "error" in body:
        raise _Failed("token_refused")
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise _Failed("token_missing")
    return token


def _json(resp: httpx.Response, what: str) -> Any:
    if not resp.is_success:
        raise _Failed(f"{what}_http_{resp.status_code}")
    try:
        return resp.json()
    except ValueError:
        raise _Failed(f"{what}_not_json") from None
