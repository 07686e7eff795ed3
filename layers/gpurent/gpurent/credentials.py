"""A person's credentials (`spec/api.md` §3.1): their sessions (listed, ended one by one or all
but the current) and their personal API tokens (created, listed, revoked)."""

from __future__ import annotations

import secrets
from typing import Any

from gpurent import auth, clock, ids, text
from gpurent.auth import Principal, require_session, sha256
from gpurent.errors import ApiError
from gpurent.store import identity
from gpurent.store import sessions as session_store
from gpurent.store import tokens as token_store
from gpurent.telemetry import count


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
    live = [s for s in session_store.list_sessions(principal.user_id) if now < float(s["expiresAt"])]
    return [session_public(s, principal.session_id) for s in sorted(live, key=lambda s: s["id"], reverse=True)]


def end_session(principal: Principal, session_id: str) -> bool:
    """End one of the user's sessions; True when it was the current one."""
    if not ids.is_id(session_id, "ses"):
        raise ApiError("session_not_found", "No such session")
    try:
        session_store.end_session(principal.user_id, session_id)
    except identity.NotFound:
        raise ApiError("session_not_found", "No such session") from None
    return session_id == principal.session_id


def revoke_others(principal: Principal, tokens: bool) -> dict[str, Any]:
    """Sign out everywhere else: every other session, and every API token when asked."""
    assert principal.session_id is not None
    now = clock.now()
    session_store.mark_sessions_revoked(principal.user_id, now)
    others = [s for s in session_store.list_sessions(principal.user_id) if s["id"] != principal.session_id]
    identity.delete_listed(principal.user_id, others, "SESSION")
    revoked: list[dict[str, Any]] = []
    if tokens:
        revoked = token_store.list_tokens(principal.user_id)
        identity.delete_listed(principal.user_id, revoked, "TOKEN")
    count("SignedOutEverywhere")
    return {"ok": True, "sessionsEnded": sum(1 for s in others if now < float(s["expiresAt"])),
            "tokensRevoked": sum(1 for t in revoked if not t.get("expiresAt") or now < float(t["expiresAt"]))}


def create_token(principal: Principal, name: str, expires_in_days: int | None) -> dict[str, Any]:
    require_session(principal)
    name = name.strip()
    if not name or not text.is_printable(name):
        raise ApiError("validation_failed", "name must be 1-64 printable characters",
                       {"name": "must be 1-64 printable characters"})
    token = auth.TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = ids.new_id("tok")
    now = clock.now()
    expires_at = int(now) + expires_in_days * 86400 if expires_in_days else None
    record = {"id": token_id, "name": name, "createdAt": int(now), "expiresAt": expires_at,
              "hint": token[:8] + "…" + token[-4:], "createdBySessionId": principal.session_id}
    token_store.put_token(principal.user_id, token_id, sha256(token), record)
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
    live = [t for t in token_store.list_tokens(user_id) if not t.get("expiresAt") or now < float(t["expiresAt"])]
    return [token_public(t) for t in sorted(live, key=lambda t: t["id"], reverse=True)]


def revoke_token(user_id: str, token_id: str) -> None:
    if not ids.is_id(token_id, "tok"):
        raise ApiError("token_not_found", "No such token")
    try:
        token_store.delete_token(user_id, token_id)
    except identity.NotFound:
        raise ApiError("token_not_found", "No such token") from None
