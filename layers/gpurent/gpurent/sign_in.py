"""Signing in with an email one-time code (`spec/api.md` §3.1): the code mailed, the guess
checked against the code's attempts and the rolling day's wrong-guess limits (per address and
per source network), then a session."""

from __future__ import annotations

import hmac
import ipaddress
import math
import re
import secrets
from typing import Any

from gpurent import auth, clock, notify
from gpurent.auth import sha256
from gpurent.errors import ApiError
from gpurent.store import identity
from gpurent.store import sign_in_codes as code_store
from gpurent.telemetry import count

CODE_TTL = 600
MAX_ATTEMPTS = 5
CODE_REQUEST_INTERVAL = 30
# Wrong sign-in codes allowed over a rolling day (the current hour and the 23 before it),
# per address and per source address (an IPv6 source counts per /64).
GUESSES_PER_EMAIL_PER_DAY = 20
GUESSES_PER_IP_PER_DAY = 100
GUESS_WINDOW_HOURS = 24


def _code_hash(salt: str, email: str, code: str) -> str:
    return sha256(f"{salt}:{email}:{code}")


def request_code(raw_email: object) -> dict[str, Any]:
    email = auth.normalise_email(raw_email)
    now = clock.now()
    hour = int(now) // 3600 * 3600
    # No code is mailed while the address's guesses are used up: it could not be used.
    counter = _email_counter(email)
    mine = code_store.guess_counter(counter, code_store.get_guess_item(counter), hour, GUESS_WINDOW_HOURS)
    _check_guess_window(mine, GUESSES_PER_EMAIL_PER_DAY, now, "for this address")
    _, created = auth.upsert_user(email)
    code = f"{secrets.randbelow(10**6):06d}"
    salt = secrets.token_hex(16)
    try:
        code_store.put_code(
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
    except identity.ConditionFailed as exc:
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


def _ip_counter(source_ip: str) -> str:
    """Guesses count per IPv4 address and per IPv6 /64 (one subscriber's usual share)."""
    addr = auth.source_address(source_ip)
    if addr is None:
        return f"GUESS#IP#{source_ip[:64]}"
    if addr.version == 6:
        return f"GUESS#IP#{ipaddress.ip_network(f'{addr}/64', strict=False)}"
    return f"GUESS#IP#{addr}"


def _check_guess_window(counter: code_store.GuessCounter, limit: int, now: float, whose: str) -> None:
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
    email = auth.normalise_email(raw_email)
    code = raw_code if isinstance(raw_code, str) else ""
    counters = [(_email_counter(email), GUESSES_PER_EMAIL_PER_DAY, "for this address"),
                (_ip_counter(source_ip), GUESSES_PER_IP_PER_DAY, "from your network")]
    for _ in range(3):
        now = clock.now()
        hour = int(now) // 3600 * 3600
        record, items = code_store.read_sign_in(email, [pk for pk, _, _ in counters])
        read = [(code_store.guess_counter(pk, items[pk], hour, GUESS_WINDOW_HOURS), limit, whose)
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
            attempts = code_store.reserve_guess(email, expected, attempts, hour,
                                                [(c, limit) for c, limit, _ in read],
                                                hour + (GUESS_WINDOW_HOURS + 1) * 3600)
            break
        except identity.ConditionFailed:
            continue  # another guess, a new code or a new hour came first: read again
    else:
        raise ApiError("rate_limited", "Too many sign-in attempts at once. Retry after 1 seconds.",
                       headers={"retry-after": "1"})
    if not (re.fullmatch(r"\d{6}", code) and hmac.compare_digest(_code_hash(record["salt"], email, code), expected)):
        count("SignInCodeRejected")
        if attempts >= MAX_ATTEMPTS:
            raise ApiError("code_invalid", "Too many attempts. Request a new code")
        raise ApiError("code_invalid", "Code is incorrect or expired")
    if not code_store.consume_code(email, expected, hour, [pk for pk, _, _ in counters]):
        raise ApiError("code_invalid", "Code is incorrect or expired")
    user, _ = auth.upsert_user(email)
    sid, expires_at = auth.create_session(user["id"], user_agent=user_agent, source_ip=source_ip)
    count("SignIns")
    return user, sid, expires_at
