"""Sign-in: email one-time codes, sessions, personal API tokens, admins and
rate limits (`spec/api.md` §3.1, `spec/decisions.md` "Auth")."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from gpurent import clock, ids, notify, text
from gpurent.config import settings
from gpurent.errors import ApiError
from gpurent.store import identity as store
from gpurent.telemetry import count

CODE_TTL = 600
MAX_ATTEMPTS = 5
CODE_REQUEST_INTERVAL = 30
SESSION_TTL = 30 * 86400
SLIDE_EVERY = 3600
TOKEN_PREFIX = "gpr_"  # noqa: S105 - a public prefix, not a secret
_EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}$")


@dataclass
class Principal:
    user_id: str
    via: str  # "session" | "token"
    bucket: str  # rate-limit key: the session hash or the token id
    expires_at: float | None
    session_hash: str | None = None
    refreshed_cookie: str | None = None


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
    user = store.get_user(principal.user_id)
    if user is None:
        raise ApiError("unauthorized")
    expires = principal.expires_at
    return {"user": user_public(user), "expiresAt": clock.iso(expires) if expires else None,
            "isAdmin": str(user["email"]).lower() in settings().admin_emails}


# ---------------------------------------------------------------- users

def upsert_user(email: str) -> tuple[dict[str, Any], bool]:
    """The user for `email`, created if missing; (user, created)."""
    user_id = store.get_user_id_by_email(email, consistent=True)
    if user_id is None:
        new_id = ids.new_id("usr")
        try:
            store.create_user(new_id, email, clock.now())
            return {"id": new_id, "email": email, "createdAt": int(clock.now())}, True
        except store.AlreadyExists:
            user_id = store.get_user_id_by_email(email, consistent=True)
    user = store.get_user(user_id) if user_id else None
    if user is None:
        raise RuntimeError("email look-up points at a missing user")
    return user, False


# ---------------------------------------------------------------- one-time codes

def _code_hash(salt: str, email: str, code: str) -> str:
    return sha256(f"{salt}:{email}:{code}")


def request_code(raw_email: object) -> dict[str, Any]:
    email = normalise_email(raw_email)
    now = clock.now()
    _, created = upsert_user(email)
    code = f"{secrets.randbelow(10**6):06d}"
    salt = secrets.token_hex(16)
    try:
        store.put_code(
            email,
            {
                "codeHash": _code_hash(salt, email, code),
                "salt": salt,
                "attempts": 0,
                "requestedAt": int(now),
                "expiresAt": int(now) + CODE_TTL,
                "ttl": int(now) + CODE_TTL + 3600,
            },
            not_requested_since=now - CODE_REQUEST_INTERVAL,
        )
    except store.ConditionFailed as exc:
        since = float((exc.old or {}).get("requestedAt", now))
        wait = max(1, int(since + CODE_REQUEST_INTERVAL - now) + 1)
        raise ApiError(
            "code_request_rate_limited",
            f"A code was sent less than {CODE_REQUEST_INTERVAL} seconds ago. Retry after {wait} seconds.",
            headers={"retry-after": str(wait)},
        ) from None
    notify.send(
        email,
        "Your gpurent sign-in code",
        f"Your sign-in code is {code}\n\nIt expires in 10 minutes. If you did not ask for it, ignore this email.",
    )
    return {"ok": True, "created": created}


def verify_code(raw_email: object, raw_code: object) -> tuple[dict[str, Any], str, float]:
    """Check the code; on success a new session: (user, sid, expiresAt)."""
    email = normalise_email(raw_email)
    code = raw_code if isinstance(raw_code, str) else ""
    record = store.get_code(email)
    if record is None:
        raise ApiError("code_invalid", "Code is incorrect or expired")
    if int(record.get("attempts", 0)) >= MAX_ATTEMPTS:
        raise ApiError("code_invalid", "Too many attempts. Request a new code")
    if clock.now() >= float(record["expiresAt"]):
        raise ApiError("code_expired", "Code expired. Request a new code")
    expected = str(record["codeHash"])
    if not (re.fullmatch(r"\d{6}", code) and hmac.compare_digest(_code_hash(record["salt"], email, code), expected)):
        count("SignInCodeRejected")
        attempts = store.count_failed_attempt(email, expected, MAX_ATTEMPTS)
        if attempts >= MAX_ATTEMPTS:
            raise ApiError("code_invalid", "Too many attempts. Request a new code")
        raise ApiError("code_invalid", "Code is incorrect or expired")
    if not store.consume_code(email, expected, MAX_ATTEMPTS):
        raise ApiError("code_invalid", "Code is incorrect or expired")
    user, _ = upsert_user(email)
    sid, expires_at = create_session(user["id"])
    count("SignIns")
    return user, sid, expires_at


# ---------------------------------------------------------------- sessions

def create_session(user_id: str) -> tuple[str, float]:
    sid = secrets.token_urlsafe(32)  # 256 random bits; only the hash is stored
    now = clock.now()
    expires_at = now + SESSION_TTL
    store.put_session(sha256(sid), user_id, now, expires_at)
    return sid, expires_at


def session_cookie(sid: str, max_age: int = SESSION_TTL) -> str:
    secure = "; Secure" if settings().cookie_secure else ""
    return f"sid={sid}; HttpOnly{secure}; SameSite=Lax; Path=/; Max-Age={max_age}"


def cleared_cookie() -> str:
    return session_cookie("", 0)


def authenticate(sid: str | None, bearer: str | None) -> Principal:
    now = clock.now()
    if bearer:
        if not bearer.startswith(TOKEN_PREFIX):
            raise ApiError("unauthorized")
        token = store.get_token(sha256(bearer))
        if token is None or (token.get("expiresAt") and now >= float(token["expiresAt"])):
            raise ApiError("unauthorized")
        return Principal(token["userId"], "token", token["tokenId"], token.get("expiresAt"))
    if not sid:
        raise ApiError("unauthorized")
    sid_hash = sha256(sid)
    session = store.get_session(sid_hash)
    if session is None or now >= float(session["expiresAt"]):
        raise ApiError("unauthorized")
    principal = Principal(session["userId"], "session", sid_hash, float(session["expiresAt"]), sid_hash)
    if now - float(session["slidAt"]) >= SLIDE_EVERY:
        new_expiry = now + SESSION_TTL
        if store.slide_session(sid_hash, int(session["slidAt"]), now, new_expiry):
            principal.expires_at = new_expiry
            principal.refreshed_cookie = session_cookie(sid)
    return principal


def logout(principal: Principal) -> None:
    if principal.session_hash:
        store.delete_session(principal.session_hash)


def require_admin(principal: Principal | None) -> dict[str, Any]:
    if principal is None:
        raise ApiError("unauthorized")
    user = store.get_user(principal.user_id)
    if user is None or user["email"].lower() not in settings().admin_emails:
        raise ApiError("forbidden", "Admins only")
    return user


def enforce_rate_limit(bucket: str, per_minute: int, per_hour: int) -> dict[str, str]:
    """Count the request; 429 when a window is full. Returns the `X-RateLimit-*` headers."""
    now = clock.now()
    hit = store.hit_rate_limit(bucket, now, per_minute, per_hour)
    minute_reset = int(now) // 60 * 60 + 60
    headers = {
        "x-ratelimit-limit": str(per_minute),
        "x-ratelimit-remaining": str(max(0, per_minute - hit.minute_count)),
        "x-ratelimit-reset": str(minute_reset),
    }
    if not hit.allowed:
        if hit.minute_count >= per_minute:
            retry = max(1, minute_reset - int(now))
        else:
            retry = max(1, int(now) // 3600 * 3600 + 3600 - int(now))
        headers["retry-after"] = str(retry)
        headers["x-ratelimit-remaining"] = "0"
        raise ApiError("rate_limited", f"Too many requests. Retry after {retry} seconds.", headers=headers)
    return headers


# ---------------------------------------------------------------- API tokens

def create_token(user_id: str, name: str, expires_in_days: int | None) -> dict[str, Any]:
    if not text.is_printable(name):
        raise ApiError("validation_failed", "name must be 1-64 printable characters",
                       {"name": "must be 1-64 printable characters"})
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = ids.new_id("tok")
    now = clock.now()
    expires_at = int(now) + expires_in_days * 86400 if expires_in_days else None
    record = {"id": token_id, "name": name, "createdAt": int(now), "expiresAt": expires_at,
              "hint": token[:8] + "…" + token[-4:]}
    store.put_token(user_id, token_id, sha256(token), record)
    return {**token_public(record), "token": token}


def token_public(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "name": record["name"],
        "hint": record["hint"],
        "createdAt": clock.iso(record["createdAt"]),
        "expiresAt": clock.iso(record["expiresAt"]) if record.get("expiresAt") else None,
    }


def list_tokens(user_id: str) -> list[dict[str, Any]]:
    now = clock.now()
    live = [t for t in store.list_tokens(user_id) if not t.get("expiresAt") or now < float(t["expiresAt"])]
    return [token_public(t) for t in sorted(live, key=lambda t: t["id"], reverse=True)]


def revoke_token(user_id: str, token_id: str) -> None:
    if not ids.is_id(token_id, "tok"):
        raise ApiError("token_not_found", "No such token")
    try:
        store.delete_token(user_id, token_id)
    except store.NotFound:
        raise ApiError("token_not_found", "No such token") from None
