"""Opaque, tamper-safe pagination cursors.

A cursor is base64url(JSON) plus an HMAC over the caller's user id, the list
it belongs to and the JSON, so it cannot be forged, edited, or replayed by
another user or on another list; any such cursor is a 400 `validation_failed`.

The HMAC key is a Secrets Manager secret whose ARN a deployment passes as
`CURSOR_KEY_SECRET_ARN`: read at run time through `gpurent.store.secrets` (cached a few
minutes), so it is in no function's configuration and a rotation needs no deploy (cursors
signed with the old key are refused once it has expired from the cache). The local stack
and the tests may give the key itself (`CURSOR_KEY`), or none: a random one per process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from typing import Any

from gpurent.config import settings
from gpurent.errors import ApiError

_fallback_key = secrets.token_bytes(32)


def _key() -> bytes:
    arn = os.environ.get("CURSOR_KEY_SECRET_ARN")
    if arn:
        from gpurent.store.secrets import get_secret_value

        return get_secret_value(arn).encode()
    configured = settings().cursor_key
    return configured.encode() if configured else _fallback_key


def _mac(scope: str, user_id: str, payload: bytes) -> str:
    digest = hmac.new(_key(), f"{scope}\x00{user_id}\x00".encode() + payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def encode(scope: str, user_id: str, data: dict[str, Any]) -> str:
    payload = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{body}.{_mac(scope, user_id, payload)}"


def decode(scope: str, user_id: str, cursor: str) -> dict[str, Any]:
    bad = ApiError("validation_failed", "cursor is not valid", {"cursor": "not a cursor this list issued"})
    if len(cursor) > 2048 or cursor.count(".") != 1:
        raise bad
    body, mac = cursor.split(".")
    try:
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise bad from None
    if not mac.isascii() or not hmac.compare_digest(mac, _mac(scope, user_id, payload)):
        raise bad
    try:
        data = json.loads(payload)
    except ValueError:
        raise bad from None
    if not isinstance(data, dict):
        raise bad
    return data
