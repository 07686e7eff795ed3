"""Sign-in through the real handlers: every rule and code of api.md §3.1 and
decisions.md "Auth"; each error asserts status, code and that nothing was written."""

from __future__ import annotations

import pytest

from gpurent import clock as clock_mod
from gpurent import config
from tests.conftest import Api, last_code, sent_mail
from tests.integration.helpers import envelope, snapshot

EMAIL = "alice@example.com"


def test_request_code_creates_the_user_once_and_mails_a_code(api: Api, clock) -> None:
    r = api.post("/v1/auth/request-code", {"email": EMAIL, "intent": "signup"})
    assert r.status == 200 and r.json() == {"ok": True, "created": True}
    assert len(last_code(EMAIL)) == 6
    clock.advance(31)
    r = api.post("/v1/auth/request-code", {"email": "  ALICE@Example.COM "})
    assert r.json() == {"ok": True, "created": False}
    assert sent_mail()[-1].destinations["ToAddresses"] == [EMAIL]


def test_the_code_is_not_stored_in_clear(api: Api) -> None:
    api.post("/v1/auth/request-code", {"email": EMAIL})
    code = last_code(EMAIL)
    assert code not in str(snapshot())


@pytest.mark.parametrize("email", ["nope", "a@b", "a b@c.com", "@example.com", "a@.com", "x" * 250 + "@e.com"])
def test_invalid_email(api: Api, email: str) -> None:
    before = snapshot()
    envelope(api.post("/v1/auth/request-code", {"email": email}), 400, "invalid_email")
    assert snapshot() == before


@pytest.mark.parametrize(
    "body",
    [{}, {"email": 5}, {"email": EMAIL, "extra": 1}, {"email": EMAIL, "intent": "hack"}, [EMAIL], "x"],
)
def test_malformed_request_code_body(api: Api, body: object) -> None:
    before = snapshot()
    body_ = envelope(api.post("/v1/auth/request-code", body), 400, "validation_failed")
    assert "details" in body_
    assert snapshot() == before


def test_broken_json_and_oversized_body(api: Api) -> None:
    before = snapshot()
    envelope(api.call("POST", "/v1/auth/request-code", raw=b'{"email": '), 400, "validation_failed")
    envelope(api.call("POST", "/v1/auth/request-code", raw=b"[" * 100000), 400, "validation_failed")
    big = b'{"email": "' + b"a" * (70 * 1024) + b'@example.com"}'
    envelope(api.call("POST", "/v1/auth/request-code", raw=big), 400, "validation_failed")
    assert snapshot() == before


def test_one_code_request_per_30_seconds_per_email(api: Api, clock) -> None:
    assert api.post("/v1/auth/request-code", {"email": EMAIL}).status == 200
    first = last_code(EMAIL)
    clock.advance(10)
    before = snapshot()
    r = api.post("/v1/auth/request-code", {"email": EMAIL})
    envelope(r, 429, "code_request_rate_limited")
    assert 1 <= int(r.headers["retry-after"]) <= 21
    assert snapshot() == before and last_code(EMAIL) == first
    clock.advance(21)
    assert api.post("/v1/auth/request-code", {"email": EMAIL}).status == 200


def test_verify_sets_the_documented_session_cookie(api: Api, clock) -> None:
    api.post("/v1/auth/request-code", {"email": EMAIL})
    r = api.post("/v1/auth/verify-code", {"email": EMAIL.upper(), "code": last_code(EMAIL)})
    assert r.status == 200, r.body
    body = r.json()
    assert body["user"]["email"] == EMAIL and body["user"]["id"].startswith("usr_")
    assert body["expiresAt"] == clock_mod.iso(clock.now() + 30 * 86400)
    (cookie,) = r.cookies
    sid = cookie.split(";")[0].removeprefix("sid=")
    assert len(sid) >= 43  # 256 bits, url-safe
    attrs = [a.strip() for a in cookie.split(";")[1:]]
    assert attrs == ["HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=2592000"]
    assert sid not in str(snapshot())  # only the hash is stored
    assert api.get("/v1/auth/me").json()["user"] == body["user"]


def test_a_code_works_once(api: Api) -> None:
    api.post("/v1/auth/request-code", {"email": EMAIL})
    code = last_code(EMAIL)
    assert api.post("/v1/auth/verify-code", {"email": EMAIL, "code": code}).status == 200
    before = snapshot()
    envelope(Api().post("/v1/auth/verify-code", {"email": EMAIL, "code": code}), 401, "code_invalid")
    assert snapshot() == before


def test_five_wrong_guesses_kill_the_code(api: Api) -> None:
    api.post("/v1/auth/request-code", {"email": EMAIL})
    code = last_code(EMAIL)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(4):
        body = envelope(api.post("/v1/auth/verify-code", {"email": EMAIL, "code": wrong}), 401, "code_invalid")
        assert "Too many" not in body["message"]
    body = envelope(api.post("/v1/auth/verify-code", {"email": EMAIL, "code": wrong}), 401, "code_invalid")
    assert body["message"] == "Too many attempts. Request a new code"
    before = snapshot()
    body = envelope(api.post("/v1/auth/verify-code", {"email": EMAIL, "code": code}), 401, "code_invalid")
    assert body["message"] == "Too many attempts. Request a new code"
    assert snapshot() == before
    assert api.get("/v1/auth/me").status == 401


def test_expired_code(api: Api, clock) -> None:
    api.post("/v1/auth/request-code", {"email": EMAIL})
    clock.advance(601)
    before = snapshot()
    envelope(api.post("/v1/auth/verify-code", {"email": EMAIL, "code": last_code(EMAIL)}), 401, "code_expired")
    assert snapshot() == before


def test_verify_without_any_code_and_with_garbage(api: Api) -> None:
    before = snapshot()
    envelope(api.post("/v1/auth/verify-code", {"email": EMAIL, "code": "123456"}), 401, "code_invalid")
    envelope(api.post("/v1/auth/verify-code", {"email": EMAIL, "code": 123456}), 400, "validation_failed")
    envelope(api.post("/v1/auth/verify-code", {"email": "bad", "code": "123456"}), 400, "invalid_email")
    assert snapshot() == before


def test_me_requires_a_live_session(api: Api, user, clock) -> None:
    envelope(Api().get("/v1/auth/me"), 401, "unauthorized")
    envelope(Api().get("/v1/auth/me", cookies={"sid": "forged"}), 401, "unauthorized")
    assert api.get("/v1/auth/me").status == 200
    clock.advance(31 * 86400)
    body = envelope(api.get("/v1/auth/me"), 401, "unauthorized")
    assert body["message"] == "Not signed in"


def test_sessions_slide_at_most_once_an_hour(api: Api, user, clock) -> None:
    first = api.get("/v1/auth/me")
    assert first.cookies == []  # a read within the hour writes nothing
    clock.advance(2 * 3600)
    slid = api.get("/v1/auth/me")
    assert slid.json()["expiresAt"] == clock_mod.iso(clock.now() + 30 * 86400)
    assert len(slid.cookies) == 1 and "Max-Age=2592000" in slid.cookies[0]
    clock.advance(29 * 86400)  # still alive: it slid
    assert api.get("/v1/auth/me").status == 200


def test_logout_ends_only_this_session(api: Api, user, clock) -> None:
    other = Api()
    clock.advance(31)
    other.sign_in(EMAIL)
    r = api.post("/v1/auth/logout")
    assert r.status == 200 and r.json() == {"ok": True}
    assert any(c.startswith("sid=;") and "Max-Age=0" in c for c in r.cookies)
    assert "sid" not in api.cookies
    envelope(api.get("/v1/auth/me"), 401, "unauthorized")
    assert other.get("/v1/auth/me").status == 200


def test_origin_check_on_cookie_mutations(api: Api, user) -> None:
    before = snapshot()
    envelope(api.post("/v1/auth/logout", headers={"origin": "https://evil.example"}), 403, "forbidden")
    envelope(api.post("/v1/auth/tokens", {"name": "x"}, headers={"origin": "https://evil.example"}), 403, "forbidden")
    assert snapshot() == before
    assert api.get("/v1/auth/me", headers={"origin": "https://evil.example"}).status == 200  # reads pass
    r = api.post("/v1/auth/tokens", {"name": "ok"}, headers={"origin": "https://dash.gpurent.test"})
    assert r.status == 200
    r = api.post("/v1/auth/tokens", {"name": "ok2"}, headers={"origin": "https://app.gpurent.test"})
    assert r.status == 200


def test_per_session_rate_limit_and_headers(api: Api, user, clock) -> None:
    clock.set(clock.now() // 3600 * 3600 + 3600)  # start of an hour and of a minute
    for i in range(100):
        r = api.get("/v1/auth/me")
        assert r.status == 200, (i, r.body)
        assert r.headers["x-ratelimit-limit"] == "100"
        assert r.headers["x-ratelimit-remaining"] == str(99 - i)
    r = api.get("/v1/auth/me")
    envelope(r, 429, "rate_limited")
    assert r.headers["retry-after"] == "60" and r.headers["x-ratelimit-remaining"] == "0"
    assert int(r.headers["x-ratelimit-reset"]) == int(clock.now()) + 60
    assert r.json()["message"] == "Too many requests. Retry after 60 seconds."
    other = Api()
    clock.advance(31)
    other.sign_in("bob@example.com")
    assert other.get("/v1/auth/me").status == 200  # per session, not global
    clock.advance(60)
    assert api.get("/v1/auth/me").status == 200


def test_unauthenticated_routes_are_limited_per_ip(api: Api, clock, monkeypatch) -> None:
    monkeypatch.setenv("IP_RATE_LIMIT_PER_MINUTE", "3")
    config.reset()
    for i in range(3):
        assert api.post("/v1/auth/verify-code", {"email": EMAIL, "code": "000000"}).status == 401, i
    envelope(api.post("/v1/auth/verify-code", {"email": EMAIL, "code": "000000"}), 429, "rate_limited")
    other_ip = Api(source_ip="203.0.113.9")
    assert other_ip.post("/v1/auth/verify-code", {"email": EMAIL, "code": "000000"}).status == 401


def test_personal_api_tokens(api: Api, user) -> None:
    r = api.post("/v1/auth/tokens", {"name": "ci", "expiresInDays": 30})
    assert r.status == 200, r.body
    created = r.json()
    token = created["token"]
    assert token.startswith("gpr_") and created["id"].startswith("tok_")
    assert token not in str(snapshot())  # stored hashed
    listed = api.get("/v1/auth/tokens").json()["tokens"]
    assert [t["id"] for t in listed] == [created["id"]] and "token" not in listed[0]

    bot = Api()
    bot.token = token
    me = bot.get("/v1/auth/me").json()
    assert me["user"]["id"] == user["id"]
    # Bearer requests skip the Origin check (no cookie, no CSRF).
    assert bot.post("/v1/ssh-keys", {"name": "x", "publicKey": "junk"},
                    headers={"origin": "https://evil.example"}).status == 400

    stranger = Api()
    stranger.sign_in("mallory@example.com")
    envelope(stranger.delete(f"/v1/auth/tokens/{created['id']}"), 404, "token_not_found")
    envelope(api.delete("/v1/auth/tokens/tok_nope"), 404, "token_not_found")
    assert api.delete(f"/v1/auth/tokens/{created['id']}").json() == {"ok": True}
    envelope(bot.get("/v1/auth/me"), 401, "unauthorized")
    envelope(Api().get("/v1/auth/me", headers={"authorization": "Bearer gpr_forged"}), 401, "unauthorized")


def test_expired_token(api: Api, user, clock) -> None:
    token = api.post("/v1/auth/tokens", {"name": "short", "expiresInDays": 1}).json()["token"]
    bot = Api()
    bot.token = token
    assert bot.get("/v1/auth/me").status == 200
    clock.advance(86401)
    envelope(bot.get("/v1/auth/me"), 401, "unauthorized")
    assert api.get("/v1/auth/tokens").json()["tokens"] == []


def test_unknown_route_is_a_404_envelope(api: Api) -> None:
    envelope(api.get("/v1/nothing-here"), 404, "not_found")


def test_me_says_whether_the_user_is_an_admin(api: Api) -> None:
    """Extension for the dashboard: `isAdmin` shows or hides its admin pages."""
    from tests.integration.conftest import ADMIN_EMAIL, sign_in

    sign_in(api, EMAIL)
    assert api.get("/v1/auth/me").json()["isAdmin"] is False
    admin = Api(source_ip="198.51.100.7")
    sign_in(admin, ADMIN_EMAIL.upper())
    body = admin.get("/v1/auth/me").json()
    assert body["isAdmin"] is True and body["user"]["email"] == ADMIN_EMAIL
