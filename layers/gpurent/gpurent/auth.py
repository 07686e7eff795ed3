"""Sign-in: email one-time codes, sessions, personal API tokens, admins and
rate limits (`spec/api.md` §3.1, `spec/decisions.md` "Auth")."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
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
# Wrong sign-in codes allowed over a rolling day (the current hour and the 23 before it),
# per address and per source address (an IPv6 source counts per /64).
GUESSES_PER_EMAIL_PER_DAY = 20
GUESSES_PER_IP_PER_DAY = 100
GUESS_WINDOW_HOURS = 24
SESSION_TTL = 30 * 86400
SLIDE_EVERY = 3600
TOKEN_TOUCH_EVERY = 3600  # a token's `lastUsedAt` is recorded at most once an hour
# Per user, across all of the user's sessions and tokens: by default this many times
# the per-credential limits (RATE_LIMIT_PER_MINUTE / _PER_HOUR, so they follow them);
# USER_RATE_LIMIT_PER_MINUTE / _PER_HOUR set them directly.
USER_RATE_LIMIT_FACTOR = 2
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
    hour = int(now) // 3600 * 3600
    # No code is mailed while the address's guesses are used up: it could not be used.
    mine = store.guess_counter(_email_counter(email), store.get_guess_item(_email_counter(email)), hour,
                               GUESS_WINDOW_HOURS)
    _check_guess_window(mine, GUESSES_PER_EMAIL_PER_DAY, now, "for this address")
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


def _email_counter(email: str) -> str:
    return f"GUESS#EMAIL#{email}"


def _address(source_ip: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(source_ip or "")
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _ip_counter(source_ip: str) -> str:
    """Guesses count per IPv4 address and per IPv6 /64 (one subscriber's usual share)."""
    addr = _address(source_ip)
    if addr is None:
        return f"GUESS#IP#{source_ip[:64]}"
    if addr.version == 6:
        return f"GUESS#IP#{ipaddress.ip_network(f'{addr}/64', strict=False)}"
    return f"GUESS#IP#{addr}"


def _check_guess_window(counter: store.GuessCounter, limit: int, now: float, whose: str) -> None:
    """429 when the rolling day's wrong guesses are used up; Retry-After is when enough of
    them are a day old."""
    total = sum(counter.seen.values()) + counter.current
    if total < limit:
        return
    slots = sorted({**counter.seen, int(now) // 3600 * 3600: counter.current}.items())
    retry = GUESS_WINDOW_HOURS * 3600
    for hour, n in slots:
        total -= n
        if total < limit:
            retry = hour + GUESS_WINDOW_HOURS * 3600 - int(now)
            break
    retry = max(1, retry)
    count("SignInGuessesCapped")
    raise ApiError("rate_limited", f"Too many wrong sign-in codes {whose}. Retry after {_duration(retry)}.",
                   headers={"retry-after": str(retry)})


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} seconds"
    if seconds < 2 * 3600:
        return f"{math.ceil(seconds / 60)} minutes"
    return f"{math.ceil(seconds / 3600)} hours"


def verify_code(raw_email: object, raw_code: object, source_ip: str = "",
                user_agent: str | None = None) -> tuple[dict[str, Any], str, float]:
    """Check the code; on success a new session: (user, sid, expiresAt).

    Every guess at a live code is counted before it is checked, on the code (5 kill it)
    and against the address's and the source's rolling day, in one conditional
    transaction; a right guess gives its day back. A refused guess writes nothing.
    """
    email = normalise_email(raw_email)
    code = raw_code if isinstance(raw_code, str) else ""
    counters = [(_email_counter(email), GUESSES_PER_EMAIL_PER_DAY, "for this address"),
                (_ip_counter(source_ip), GUESSES_PER_IP_PER_DAY, "from your network")]
    for _ in range(3):
        now = clock.now()
        hour = int(now) // 3600 * 3600
        record, items = store.read_sign_in(email, [pk for pk, _, _ in counters])
        read = [(store.guess_counter(pk, items[pk], hour, GUESS_WINDOW_HOURS), limit, whose)
                for pk, limit, whose in counters]
        for counter, limit, whose in read:
            _check_guess_window(counter, limit, now, whose)
        if record is None:
            raise ApiError("code_invalid", "Code is incorrect or expired")
        attempts = int(record.get("attempts", 0))
        if attempts >= MAX_ATTEMPTS:
            raise ApiError("code_invalid", "Too many attempts. Request a new code")
        if now >= float(record["expiresAt"]):
            raise ApiError("code_expired", "Code expired. Request a new code")
        expected = str(record["codeHash"])
        try:
            attempts = store.reserve_guess(email, expected, attempts, hour, [(c, limit) for c, limit, _ in read],
                                           hour + (GUESS_WINDOW_HOURS + 1) * 3600)
            break
        except store.ConditionFailed:
            continue  # another guess, a new code or a new hour came first: read again
    else:
        raise ApiError("rate_limited", "Too many sign-in attempts at once. Retry after 1 seconds.",
                       headers={"retry-after": "1"})
    if not (re.fullmatch(r"\d{6}", code) and hmac.compare_digest(_code_hash(record["salt"], email, code), expected)):
        count("SignInCodeRejected")
        if attempts >= MAX_ATTEMPTS:
            raise ApiError("code_invalid", "Too many attempts. Request a new code")
        raise ApiError("code_invalid", "Code is incorrect or expired")
    if not store.consume_code(email, expected, hour, [pk for pk, _, _ in counters]):
        raise ApiError("code_invalid", "Code is incorrect or expired")
    user, _ = upsert_user(email)
    sid, expires_at = create_session(user["id"], user_agent=user_agent, source_ip=source_ip)
    count("SignIns")
    return user, sid, expires_at


# ---------------------------------------------------------------- sessions

def create_session(user_id: str, *, user_agent: str | None = None, source_ip: str | None = None) -> tuple[str, float]:
    sid = secrets.token_urlsafe(32)  # 256 random bits; only the hash is stored
    now = clock.now()
    expires_at = now + SESSION_TTL
    store.put_session(sha256(sid), user_id, now, expires_at, ids.new_id("ses"),
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
    session = store.get_session(sid_hash)
    if session is None or now >= float(session["expiresAt"]):
        raise ApiError("unauthorized")
    if not session.get("sessionId"):
        session = _adopt(sid_hash, session)
    principal = Principal(session["userId"], "session", sid_hash, float(session["expiresAt"]), sid_hash,
                          session_id=str(session["sessionId"]))
    if now - float(session["slidAt"]) >= SLIDE_EVERY:
        new_expiry = now + SESSION_TTL
        if store.slide_session(sid_hash, int(session["slidAt"]), now, new_expiry, principal.user_id,
                               str(session["sessionId"])):
            principal.expires_at = new_expiry
            principal.refreshed_cookie = session_cookie(sid)
    return principal


def _authenticate_token(bearer: str, now: float) -> Principal:
    if not bearer.startswith(TOKEN_PREFIX):
        raise ApiError("unauthorized")
    token_hash = sha256(bearer)
    token = store.get_token(token_hash)
    if token is None or (token.get("expiresAt") and now >= float(token["expiresAt"])):
        raise ApiError("unauthorized")
    last = token.get("lastUsedAt")
    if last is None or now - float(last) >= TOKEN_TOUCH_EVERY:
        store.touch_token(token_hash, token["userId"], token["tokenId"], None if last is None else int(last), now)
    return Principal(token["userId"], "token", token["tokenId"], token.get("expiresAt"))


def _adopt(sid_hash: str, session: dict[str, Any]) -> dict[str, Any]:
    """A session written before sessions were listed: give it an id and an index item at its
    first use, unless its user has signed out everywhere since (then it is over)."""
    session_id = f"ses_{ids.ulid_at(float(session['createdAt']))}"
    try:
        if store.adopt_session(sid_hash, session, session_id):
            return {**session, "sessionId": session_id}
    except store.SessionsRevoked:
        store.delete_session(sid_hash)
        raise ApiError("unauthorized") from None
    again = store.get_session(sid_hash)  # another request adopted it first (or it was ended)
    if again is None or not again.get("sessionId"):
        raise ApiError("unauthorized")
    return again


def logout(principal: Principal) -> None:
    if principal.session_hash:
        store.delete_session(principal.session_hash, principal.user_id, principal.session_id)


def require_session(principal: Principal | None) -> None:
    """Credential management is for a signed-in person, not for a script's token."""
    if principal is None:
        raise ApiError("unauthorized")
    if principal.via != "session":
        raise ApiError("forbidden", "Only a signed-in session can manage sessions and API tokens, not an API token")


def require_admin(principal: Principal | None) -> dict[str, Any]:
    if principal is None:
        raise ApiError("unauthorized")
    user = store.get_user(principal.user_id)
    if user is None or user["email"].lower() not in settings().admin_emails:
        raise ApiError("forbidden", "Admins only")
    return user


# ---------------------------------------------------------------- rate limits

def enforce_request_limits(principal: Principal | None, source_ip: str) -> dict[str, str]:
    """Count an API request: per credential and per user when signed in, else per source IP.

    Each window is one conditional write; a request refused by the user's window is given
    back to the credential's, so a refused request counts nowhere. Returns the
    `X-RateLimit-*` headers of the tighter minute window.
    """
    s = settings()
    if principal is None:
        return enforce_rate_limit(f"IP#{source_ip}", s.ip_rate_limit_per_minute, s.ip_rate_limit_per_hour)
    now = clock.now()
    own = (f"P#{principal.bucket}", s.rate_limit_per_minute, s.rate_limit_per_hour)
    user = (f"U#{principal.user_id}", s.user_rate_limit_per_minute or s.rate_limit_per_minute * USER_RATE_LIMIT_FACTOR,
            s.user_rate_limit_per_hour or s.rate_limit_per_hour * USER_RATE_LIMIT_FACTOR)
    own_hit = store.hit_rate_limit(own[0], now, own[1], own[2])
    if not own_hit.allowed:
        raise _rate_limited(own_hit, own[1], own[2], now)
    user_hit = store.hit_rate_limit(user[0], now, user[1], user[2])
    if not user_hit.allowed:
        store.unhit_rate_limit(own[0], now)
        raise _rate_limited(user_hit, user[1], user[2], now)
    if user[1] - user_hit.minute_count < own[1] - own_hit.minute_count:
        return _rate_headers(user_hit, user[1], now)
    return _rate_headers(own_hit, own[1], now)


def enforce_rate_limit(bucket: str, per_minute: int, per_hour: int) -> dict[str, str]:
    """Count the request in one bucket; 429 when a window is full. Returns the `X-RateLimit-*` headers."""
    now = clock.now()
    hit = store.hit_rate_limit(bucket, now, per_minute, per_hour)
    if not hit.allowed:
        raise _rate_limited(hit, per_minute, per_hour, now)
    return _rate_headers(hit, per_minute, now)


def _rate_headers(hit: store.Hit, per_minute: int, now: float) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(per_minute),
        "x-ratelimit-remaining": str(max(0, per_minute - hit.minute_count)),
        "x-ratelimit-reset": str(int(now) // 60 * 60 + 60),
    }


def _rate_limited(hit: store.Hit, per_minute: int, per_hour: int, now: float) -> ApiError:
    headers = _rate_headers(hit, per_minute, now)
    if hit.minute_count >= per_minute:
        retry = max(1, int(now) // 60 * 60 + 60 - int(now))
    else:
        retry = max(1, int(now) // 3600 * 3600 + 3600 - int(now))
    headers["retry-after"] = str(retry)
    headers["x-ratelimit-remaining"] = "0"
    return ApiError("rate_limited", f"Too many requests. Retry after {retry} seconds.", headers=headers)


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
    addr = _address(source_ip)
    if addr is None:
        return None
    bits = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


# ---------------------------------------------------------------- listing and ending sessions

def session_public(item: dict[str, Any], current_id: str | None) -> dict[str, Any]:
    return {
        "id": item["id"],
        "current": item["id"] == current_id,
        "createdAt": clock.iso(item["createdAt"]),
        "lastUsedAt": clock.iso(item["lastUsedAt"]),
        "expiresAt": clock.iso(item["expiresAt"]),
        "client": item.get("client"),
        "ipPrefix": item.get("ipPrefix"),
    }


def list_sessions(principal: Principal) -> list[dict[str, Any]]:
    """The user's live sessions, newest first, the current one marked (one Query)."""
    now = clock.now()
    live = [s for s in store.list_sessions(principal.user_id) if now < float(s["expiresAt"])]
    return [session_public(s, principal.session_id) for s in sorted(live, key=lambda s: s["id"], reverse=True)]


def end_session(principal: Principal, session_id: str) -> bool:
    """End one of the user's sessions; True when it was the current one."""
    if not ids.is_id(session_id, "ses"):
        raise ApiError("session_not_found", "No such session")
    try:
        store.end_session(principal.user_id, session_id)
    except store.NotFound:
        raise ApiError("session_not_found", "No such session") from None
    return session_id == principal.session_id


def revoke_others(principal: Principal, tokens: bool) -> dict[str, Any]:
    """Sign out everywhere else: every other session, and every API token when asked."""
    assert principal.session_id is not None
    now = clock.now()
    store.mark_sessions_revoked(principal.user_id, now)
    others = [s for s in store.list_sessions(principal.user_id) if s["id"] != principal.session_id]
    store.delete_listed(principal.user_id, others, "SESSION")
    revoked: list[dict[str, Any]] = []
    if tokens:
        revoked = store.list_tokens(principal.user_id)
        store.delete_listed(principal.user_id, revoked, "TOKEN")
    count("SignedOutEverywhere")
    return {"ok": True, "sessionsEnded": sum(1 for s in others if now < float(s["expiresAt"])),
            "tokensRevoked": sum(1 for t in revoked if not t.get("expiresAt") or now < float(t["expiresAt"]))}


# ---------------------------------------------------------------- API tokens

def create_token(principal: Principal, name: str, expires_in_days: int | None) -> dict[str, Any]:
    require_session(principal)
    name = name.strip()
    if not name or not text.is_printable(name):
        raise ApiError("validation_failed", "name must be 1-64 printable characters",
                       {"name": "must be 1-64 printable characters"})
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = ids.new_id("tok")
    now = clock.now()
    expires_at = int(now) + expires_in_days * 86400 if expires_in_days else None
    record = {"id": token_id, "name": name, "createdAt": int(now), "expiresAt": expires_at,
              "hint": token[:8] + "…" + token[-4:], "createdBySessionId": principal.session_id}
    store.put_token(principal.user_id, token_id, sha256(token), record)
    return {**token_public(record), "token": token}


def token_public(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "name": record["name"],
        "hint": record["hint"],
        "createdAt": clock.iso(record["createdAt"]),
        "expiresAt": clock.iso(record["expiresAt"]) if record.get("expiresAt") else None,
        "lastUsedAt": clock.iso(record["lastUsedAt"]) if record.get("lastUsedAt") else None,
        "createdBySessionId": record.get("createdBySessionId"),
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
