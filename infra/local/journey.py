"""Small HTTP helpers for driving a running local stack as a user would: sign in
with the mailed code, fund a wallet through the local admin, launch pods, move
the test clock. Used by the e2e tier and the bench scripts (never by the app)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx

LOCAL_ADMIN = "admin@localhost"


def mailed_code(http: httpx.Client, email: str) -> str:
    for item in http.get("/dev/mailbox").json():
        if item["to"] == email:
            m = re.search(r"\b(\d{6})\b", item["body"])
            if m:
                return m.group(1)
    raise AssertionError(f"no mail to {email}")


def sign_in(base: str, email: str, *, source: str | None = None, timeout: float = 600) -> httpx.Client:
    """A client signed in as `email` (its cookie jar holds the session)."""
    transport = httpx.HTTPTransport(local_address=source) if source else None
    http = httpx.Client(base_url=base, timeout=timeout, transport=transport)
    r = http.post("/v1/auth/request-code", json={"email": email})
    assert r.status_code == 200, r.text
    r = http.post("/v1/auth/verify-code", json={"email": email, "code": mailed_code(http, email)})
    assert r.status_code == 200, r.text
    return http


def new_email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


def fund(admin: httpx.Client, email: str, cents: int, key: str | None = None) -> httpx.Response:
    return admin.post("/v1/admin/adjustments", json={"email": email, "amountCents": cents, "reason": "funding"},
                      headers={"idempotency-key": key or uuid.uuid4().hex})


def launch(http: httpx.Client, family: str = "rtx-4090", key: str | None = None, **extra: Any) -> httpx.Response:
    return http.post("/v1/rentals", json={"familyId": family, "gpuCount": 1, **extra},
                     headers={"idempotency-key": key or uuid.uuid4().hex})


def advance(http: httpx.Client, seconds: float) -> dict[str, Any]:
    r = http.post("/dev/clock/advance", json={"seconds": seconds})
    assert r.status_code == 200, r.text
    return dict(r.json())


def balance(http: httpx.Client) -> dict[str, Any]:
    r = http.get("/v1/billing/balance")
    assert r.status_code == 200, r.text
    return dict(r.json())


def ledger(http: httpx.Client, **params: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    query: dict[str, str] = {"pageSize": "200", **params}
    while True:
        r = http.get("/v1/billing/ledger", params=query)
        assert r.status_code == 200, r.text
        page = r.json()
        out.extend(page["entries"])
        if not page.get("nextCursor"):
            return out
        query["cursor"] = page["nextCursor"]
