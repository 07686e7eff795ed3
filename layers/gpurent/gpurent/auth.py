"""Who is calling (`spec/api.md` §3.1, `spec/decisions.md` "Auth"): users, sessions (created,
authenticated, slid, ended at sign-out), personal API tokens at authentication, admins.

Signing in with a one-time code is `sign_in`; listing and ending sessions and managing API
tokens is `credentials`; request rate limits are `rate_limits`."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from dataclasses import dataclass
from typing import Any

from gpurent import clock, ids
from gpurent.config import settings
from gpurent.errors import ApiError
from gpurent.store import identity
from gpurent.store import sessions as session_store
from gpurent.store import tokens as token_store

SESSION_TTL = 30 * 86400
SLIDE_EVERY = 3600
TOKEN_TOUCH_EVERY = 3600  # a token's `lastUsedAt` is recorded at most once an hour
TOKEN_PREFIX = "gpr_"  # noqa: S105 - a public prefix, not a secret
EMAIL_PATTERN = (r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                 r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}$")  # also the contract's
_EMAIL_RE = re.compile(EMAIL_PATTERN.removesuffix("$") + r"\Z")


@dataclass
class Principal:
    user_id: str
    via: str  # "session" | "token"
    bucket: str  # rate-limit key: the session hash or the token id
    expires_at: float | None
    session_hash: str | None = None
    refreshed_cookie: str | None = None
    session_id: str | None = None  # `ses_…`, for a session


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def normalise_email(raw: object) -> str:
    if not isinstance(raw, str):
        raise ApiError("invalid_email", "Email must be a string like user@host.tld")
    email = raw.strip().lower()
    if settings().is_local and email.endswith("@localhost") and _EMAIL_RE.match(email + ".test"):
        return email  # the local stage's default admin is admin@localhost
    if len(email) > 254 or not _EMAIL_RE.match(email):
        raise ApiError("invalid_email", "Email must look like user@host.tld")
    return email


def user_public(user: dict[str, Any]) -> dict[str, Any]:
    return {"id": user["id"], "email": user["email"], "createdAt": clock.iso(user["createdAt"])}


def me(principal: Principal) -> dict[str, Any]:
    """`GET /v1/auth/me`: the user and when this session (or token) expires."""
    user = identity.get_user(principal.user_id)
    if user is None:
        raise ApiError("unauthorized")
    expires = principal.expires_at
    return {"user": user_public(user), "expiresAt": clock.iso(expires) if expires else None,
            "isAdmin": str(user["email"]).lower() in settings().admin_emails}


# ---------------------------------------------------------------- users

def upsert_user(email: str) -> tuple[dict[str, Any], bool]:
    """The user for `email`, created if missing; (user, created)."""
    user_id = identity.get_user_id_by_email(email, consistent=True)
    if user_id is None:
        new_id = ids.new_id("usr")
        try:
            identity.create_user(new_id, email, clock.now())
            return {"id": new_id, "email": email, "createdAt": int(clock.now())}, True
        except identity.AlreadyExists:
            user_id = identity.get_user_id_by_email(email, consistent=True)
    user = identity.get_user(user_id) if user_id else None
    if user is None:
        raise RuntimeError("email look-up points at a missing user")
    return user, False


def source_address(source_ip: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(source_ip or "")
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


# ---------------------------------------------------------------- sessions

def create_session(user_id: str, *, user_agent: str | None = None, source_ip: str | None = None) -> tuple[str, float]:
    sid = secrets.token_urlsafe(32)  # 256 random bits; only the hash is stored
    now = clock.now()
    expires_at = now + SESSION_TTL
    session_store.put_session(sha256(sid), user_id, now, expires_at, ids.new_id("ses"),
                              client_summary(user_agent), ip_prefix(source_ip))
    return sid, expires_at


def session_cookie(sid: str, max_age: int = SESSION_TTL) -> str:
    secure = "; Secure" if settings().cookie_secure else ""
    return f"sid={sid}; HttpOnly{secure}; SameSite=Lax; Path=/; Max-Age={max_age}"


def cleared_cookie() -> str:
    return session_cookie("", 0)


def authenticate(sid: str | None, bearer: str | None) -> Principal:
    now = clock.now()
    if bearer:
        return _authenticate_token(bearer, now)
    if not sid:
        raise ApiError("unauthorized")
    sid_hash = sha256(sid)
    session = session_store.get_session(sid_hash)
    if session is None or now >= float(session["expiresAt"]):
        raise ApiError("unauthorized")
    if not session.get("sessionId"):
        session = _adopt(sid_hash, session)
    principal = Principal(session["userId"], "session", sid_hash, float(session["expiresAt"]), sid_hash,
                          session_id=str(session["sessionId"]))
    if now - float(session["slidAt"]) >= SLIDE_EVERY:
        new_expiry = now + SESSION_TTL
        if session_store.slide_session(sid_hash, int(session["slidAt"]), now, new_expiry, principal.user_id,
                                       str(session["sessionId"])):
            principal.expires_at = new_expiry
            principal.refreshed_cookie = session_cookie(sid)
    return principal


def _authenticate_token(bearer: str, now: float) -> Principal:
    if not bearer.startswith(TOKEN_PREFIX):
        raise ApiError("unauthorized")
    token_hash = sha256(bearer)
    token = token_store.get_token(token_hash)
    if token is None or (token.get("expiresAt") and now >= float(token["expiresAt"])):
        raise ApiError("unauthorized")
    last = token.get("lastUsedAt")
    if last is None or now - float(last) >= TOKEN_TOUCH_EVERY:
        token_store.touch_token(token_hash, token["userId"], token["tokenId"], None if last is None else int(last), now)
    return Principal(token["userId"], "token", token["tokenId"], token.get("expiresAt"))


def _adopt(sid_hash: str, session: dict[str, Any]) -> dict[str, Any]:
    """A session written before sessions were listed: give it an id and an index item at its
    first use, unless its user has signed out everywhere since (then it is over)."""
    session_id = f"ses_{ids.ulid_at(float(session['createdAt']))}"
    try:
        if session_store.adopt_session(sid_hash, session, session_id):
            return {**session, "sessionId": session_id}
    except session_store.SessionsRevoked:
        session_store.delete_session(sid_hash)
        raise ApiError("unauthorized") from None
    again = session_store.get_session(sid_hash)  # another request adopted it first (or it was ended)
    if again is None or not again.get("sessionId"):
        raise ApiError("unauthorized")
    return again


def logout(principal: Principal) -> None:
    if principal.session_hash:
        session_store.delete_session(principal.session_hash, principal.user_id, principal.session_id)


def require_session(principal: Principal | None) -> None:
    """Credential management is for a signed-in person, not for a script's token."""
    if principal is None:
        raise ApiError("unauthorized")
    if principal.via != "session":
        raise ApiError("forbidden", "Only a signed-in session can manage sessions and API tokens, not an API token")


def require_admin(principal: Principal | None) -> dict[str, Any]:
    if principal is None:
        raise ApiError("unauthorized")
    user = identity.get_user(principal.user_id)
    if user is None or user["email"].lower() not in settings().admin_emails:
        raise ApiError("forbidden", "Admins only")
    return user


# ---------------------------------------------------------------- where a session was opened

_TOOLS = (("gpurent-cli", "gpurent-cli"), ("curl/", "curl"), ("wget/", "Wget"), ("python-httpx", "Python"),
          ("python-requests", "Python"), ("python-urllib", "Python"), ("httpie", "HTTPie"),
          ("go-http-client", "Go"), ("postmanruntime", "Postman"), ("node-fetch", "Node.js"), ("undici", "Node.js"))
_BROWSERS = (("edg/", "Edge"), ("opr/", "Opera"), ("firefox/", "Firefox"), ("fxios/", "Firefox"),
             ("crios/", "Chrome"), ("chrome/", "Chrome"), ("safari/", "Safari"))
_SYSTEMS = (("iphone", "iOS"), ("ipad", "iOS"), ("android", "Android"), ("windows", "Windows"),
            ("cros", "ChromeOS"), ("mac os x", "macOS"), ("macintosh", "macOS"), ("linux", "Linux"))


def client_summary(user_agent: str | None) -> str | None:
    """"Firefox on Linux", "gpurent-cli", … from a User-Agent; None when unrecognised.
    Only this summary is stored, never the header itself."""
    ua = (user_agent or "").lower()[:512]
    if not ua:
        return None
    for needle, name in _TOOLS:
        if ua.startswith(needle) or f" {needle}" in ua:
            return name
    browser = next((name for needle, name in _BROWSERS if needle in ua), None)
    system = next((name for needle, name in _SYSTEMS if needle in ua), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or (f"Browser on {system}" if system else None)


def ip_prefix(source_ip: str | None) -> str | None:
    """The network a session was opened from (/24, or /48 for IPv6), never the address."""
    addr = source_address(source_ip)
    if addr is None:
        return None
    bits = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


