"""Accounts (issue 15, items 13-16) through the real auth function: token management is
for signed-in sessions only, sign-in guesses are capped per address and per source
address over a rolling day, rate limits hold per user as well as per credential, and a
person can list their sessions and end them ("sign out everywhere").

Each refusal asserts the documented status and code and that nothing was written."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from gpurent import auth, config
from gpurent import clock as clock_mod
from gpurent import sign_in as code_sign_in
from gpurent.store import dynamo
from tests.conftest import Api, last_code, sent_mail
from tests.integration.helpers import envelope, scan, snapshot

EMAIL = "alice@example.com"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.5 Mobile/15E148 Safari/604.1")
CLI = "gpurent-cli/0.1.0"


def bearer(token: str, source_ip: str = "198.51.100.40") -> Api:
    bot = Api(source_ip=source_ip)
    bot.token = token
    return bot


def new_token(api: Api, name: str) -> dict[str, Any]:
    r = api.post("/v1/auth/tokens", {"name": name})
    assert r.status == 200, r.body
    return dict(r.json())


def sign_in(api: Api, email: str, user_agent: str | None = None) -> dict[str, Any]:
    headers = {"user-agent": user_agent} if user_agent else {}
    r = api.post("/v1/auth/request-code", {"email": email}, headers=headers)
    assert r.status == 200, r.body
    r = api.post("/v1/auth/verify-code", {"email": email, "code": last_code(email)}, headers=headers)
    assert r.status == 200, r.body
    return dict(r.json()["user"])


def wrong(code: str, k: int = 1) -> str:
    return f"{(int(code) + k) % 10**6:06d}"


def mails_to(email: str) -> int:
    return sum(1 for m in sent_mail() if email in m.destinations["ToAddresses"])


def at_hour_start(clock: clock_mod.ManualClock) -> float:
    clock.set(clock.now() // 3600 * 3600 + 3600)
    return clock.now()


@contextmanager
def dynamodb_calls() -> Iterator[list[str]]:
    """The DynamoDB operations made inside the block (by name, in order)."""
    calls: list[str] = []

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    events = dynamo.client().meta.events
    events.register("before-call.dynamodb", record)
    try:
        yield calls
    finally:
        events.unregister("before-call.dynamodb", record)


# ---------------------------------------------------------------- 13. token management is for sessions

def test_a_token_cannot_create_list_or_revoke_tokens(api: Api, user: dict[str, Any]) -> None:
    made = new_token(api, "ci")
    bot = bearer(made["token"])
    assert bot.get("/v1/auth/me").status == 200  # the token works (and its first use is recorded)
    before = snapshot()
    body = envelope(bot.post("/v1/auth/tokens", {"name": "child"}), 403, "forbidden")
    assert "signed-in session" in body["message"]
    envelope(bot.get("/v1/auth/tokens"), 403, "forbidden")
    envelope(bot.delete(f"/v1/auth/tokens/{made['id']}"), 403, "forbidden")
    assert snapshot() == before
    assert bot.get("/v1/auth/me").status == 200  # refused, not revoked
    assert [t["id"] for t in api.get("/v1/auth/tokens").json()["tokens"]] == [made["id"]]


def test_revoking_a_token_leaves_no_credential_it_made(api: Api, user: dict[str, Any]) -> None:
    """The bug: a token minted a child, and the child outlived its parent's revocation."""
    parent = new_token(api, "parent")
    child = bearer(parent["token"]).post("/v1/auth/tokens", {"name": "child"})
    assert api.delete(f"/v1/auth/tokens/{parent['id']}").status == 200
    if child.status == 200:
        assert bearer(child.json()["token"]).get("/v1/auth/me").status == 401, "the child outlived its parent"
    envelope(child, 403, "forbidden")
    assert api.get("/v1/auth/tokens").json()["tokens"] == []


def test_a_token_records_the_session_that_made_it(api: Api, user: dict[str, Any]) -> None:
    made = new_token(api, "ci")
    (mine,) = api.get("/v1/auth/sessions").json()["sessions"]
    assert made["createdBySessionId"] == mine["id"]
    (listed,) = api.get("/v1/auth/tokens").json()["tokens"]
    assert listed["createdBySessionId"] == mine["id"] and listed["lastUsedAt"] is None


# ---------------------------------------------------------------- 14. sign-in guesses per day

def test_wrong_guesses_per_address_are_capped_over_a_day(api: Api, clock: clock_mod.ManualClock) -> None:
    """Each new code used to reset the count (~14,000 guesses a day); now 20 a day per address."""
    start = at_hour_start(clock)
    guesses = 0
    for per_code in (5, 5, 5, 4, 1):  # five codes, 20 wrong guesses
        assert api.post("/v1/auth/request-code", {"email": EMAIL}).status == 200
        code = last_code(EMAIL)
        for k in range(per_code):
            envelope(api.post("/v1/auth/verify-code", {"email": EMAIL, "code": wrong(code, k + 1)}),
                     401, "code_invalid")
            guesses += 1
        clock.advance(31)
    assert guesses == 20
    # The last code is alive (one wrong guess on it), and right: refused all the same.
    mailed = mails_to(EMAIL)
    before = snapshot()
    for client in (api, Api(source_ip="203.0.113.55")):  # per address, whatever the caller
        r = client.post("/v1/auth/verify-code", {"email": EMAIL, "code": code})
        body = envelope(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) == int(start + 86400 - clock.now())
        assert body["message"].startswith("Too many wrong sign-in codes for this address")
        r = client.post("/v1/auth/request-code", {"email": EMAIL})  # no code is mailed meanwhile
        envelope(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) == int(start + 86400 - clock.now())
    assert snapshot() == before and mails_to(EMAIL) == mailed
    assert EMAIL not in r.body
    clock.set(start + 86400)
    assert api.post("/v1/auth/request-code", {"email": EMAIL}).status == 200
    assert api.post("/v1/auth/verify-code", {"email": EMAIL, "code": last_code(EMAIL)}).status == 200


def test_the_day_is_rolling(api: Api, clock: clock_mod.ManualClock) -> None:
    """10 wrong guesses at 00:xx and 10 at 12:xx: capped until the first ten are 24 hours old,
    then 10 more are allowed (not 20: the later ten still count)."""
    start = at_hour_start(clock)

    def ten_wrong() -> None:
        for _ in range(2):
            assert api.post("/v1/auth/request-code", {"email": EMAIL}).status == 200
            code = last_code(EMAIL)
            for k in range(5):
                envelope(api.post("/v1/auth/verify-code", {"email": EMAIL, "code": wrong(code, k + 1)}),
                         401, "code_invalid")
            clock.advance(31)

    ten_wrong()
    clock.set(start + 12 * 3600)
    ten_wrong()
    r = api.post("/v1/auth/request-code", {"email": EMAIL})
    envelope(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) == int(start + 86400 - clock.now())
    clock.set(start + 86400)
    ten_wrong()
    envelope(api.post("/v1/auth/request-code", {"email": EMAIL}), 429, "rate_limited")
    clock.set(start + 12 * 3600 + 86400)
    assert api.post("/v1/auth/request-code", {"email": EMAIL}).status == 200


def test_wrong_guesses_per_source_address_are_capped(api: Api, clock: clock_mod.ManualClock,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """100 wrong guesses a day from one source address, spread over 20 addresses; the 101st
    guess is refused, even the right code of a fresh address; another source still signs in."""
    monkeypatch.setenv("IP_RATE_LIMIT_PER_MINUTE", "100000")
    monkeypatch.setenv("IP_RATE_LIMIT_PER_HOUR", "100000")
    config.reset()
    at_hour_start(clock)
    attacker = Api(source_ip="192.0.2.66")
    for i in range(20):
        email = f"victim{i}@example.com"
        assert Api().post("/v1/auth/request-code", {"email": email}).status == 200
        code = last_code(email)
        for k in range(5):
            envelope(attacker.post("/v1/auth/verify-code", {"email": email, "code": wrong(code, k + 1)}),
                     401, "code_invalid")
    assert Api().post("/v1/auth/request-code", {"email": EMAIL}).status == 200
    code = last_code(EMAIL)
    before = snapshot()
    r = attacker.post("/v1/auth/verify-code", {"email": EMAIL, "code": code})
    body = envelope(r, 429, "rate_limited")
    assert body["message"].startswith("Too many wrong sign-in codes from your network")
    assert 1 <= int(r.headers["retry-after"]) <= 86400
    assert snapshot() == before
    assert Api(source_ip="192.0.2.67").post("/v1/auth/verify-code", {"email": EMAIL, "code": code}).status == 200


def test_ipv6_sources_are_counted_per_64_prefix(api: Api, clock: clock_mod.ManualClock,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(code_sign_in, "GUESSES_PER_IP_PER_DAY", 3)
    assert api.post("/v1/auth/request-code", {"email": EMAIL}).status == 200
    code = last_code(EMAIL)
    for k, host in enumerate(("2001:db8:1:2::a", "2001:db8:1:2:ffff::1", "2001:db8:1:2::c")):
        envelope(Api(source_ip=host).post("/v1/auth/verify-code", {"email": EMAIL, "code": wrong(code, k + 1)}),
                 401, "code_invalid")
    envelope(Api(source_ip="2001:db8:1:2::d").post("/v1/auth/verify-code", {"email": EMAIL, "code": code}),
             429, "rate_limited")
    assert Api(source_ip="2001:db8:1:3::d").post("/v1/auth/verify-code",
                                                  {"email": EMAIL, "code": code}).status == 200


def test_right_codes_spend_nothing_and_dead_codes_are_not_guesses(api: Api, clock: clock_mod.ManualClock,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(code_sign_in, "GUESSES_PER_EMAIL_PER_DAY", 3)
    for _ in range(5):  # five sign-ins: none of them is a wrong guess
        sign_in(Api(), EMAIL)
        clock.advance(31)
    assert api.post("/v1/auth/request-code", {"email": EMAIL}).status == 200
    code = last_code(EMAIL)
    for k in range(2):
        envelope(api.post("/v1/auth/verify-code", {"email": EMAIL, "code": wrong(code, k + 1)}), 401, "code_invalid")
    clock.advance(601)  # the code expired: trying it again is not a guess
    envelope(api.post("/v1/auth/verify-code", {"email": EMAIL, "code": wrong(code, 3)}), 401, "code_expired")
    assert api.post("/v1/auth/request-code", {"email": EMAIL}).status == 200
    code = last_code(EMAIL)
    envelope(api.post("/v1/auth/verify-code", {"email": EMAIL, "code": wrong(code)}), 401, "code_invalid")
    envelope(api.post("/v1/auth/verify-code", {"email": EMAIL, "code": code}), 429, "rate_limited")


def test_a_guess_that_keeps_losing_races_is_refused_not_checked(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Other guesses keep moving the counters between our read and our write: after three
    tries the guess is refused (429, Retry-After 1) without being checked or written."""
    from gpurent.store import identity, sign_in_codes

    assert api.post("/v1/auth/request-code", {"email": EMAIL}).status == 200
    code = last_code(EMAIL)

    def always_moved(*_: Any, **__: Any) -> int:
        raise identity.ConditionFailed()

    before = snapshot()
    with monkeypatch.context() as m:
        m.setattr(sign_in_codes, "reserve_guess", always_moved)
        r = api.post("/v1/auth/verify-code", {"email": EMAIL, "code": code})
    envelope(r, 429, "rate_limited")
    assert r.headers["retry-after"] == "1" and r.cookies == []
    assert snapshot() == before
    assert api.post("/v1/auth/verify-code", {"email": EMAIL, "code": code}).status == 200


# ---------------------------------------------------------------- 15. rate limits per user

def test_a_fresh_token_does_not_escape_a_throttled_one(api: Api, user: dict[str, Any],
                                                       clock: clock_mod.ManualClock) -> None:
    at_hour_start(clock)
    a, b = new_token(api, "a"), new_token(api, "b")  # two requests of the user's 200 this minute
    bot_a, bot_b = bearer(a["token"]), bearer(b["token"])
    for i in range(100):
        r = bot_a.get("/v1/auth/me")
        assert r.status == 200, (i, r.body)
        # the token's own window (100) is the tighter one
        assert (r.headers["x-ratelimit-limit"], r.headers["x-ratelimit-remaining"]) == ("100", str(99 - i))
    envelope(bot_a.get("/v1/auth/me"), 429, "rate_limited")
    r = bot_b.get("/v1/auth/me")
    assert r.status == 200
    # now the user's window (200, 103 used) is tighter than the fresh token's (100, 1 used)
    assert (r.headers["x-ratelimit-limit"], r.headers["x-ratelimit-remaining"]) == ("200", "97")
    for i in range(97):
        assert bot_b.get("/v1/auth/me").status == 200, i
    r = bot_b.get("/v1/auth/me")
    envelope(r, 429, "rate_limited")
    assert r.headers["retry-after"] == "60" and r.headers["x-ratelimit-remaining"] == "0"
    assert r.headers["x-ratelimit-limit"] == "200"
    envelope(api.get("/v1/auth/me"), 429, "rate_limited")  # the session too: same user
    # the refused request was not counted in the token's own window
    hour = int(clock.now()) // 3600 * 3600
    item = dynamo.client().get_item(TableName=config.settings().identity_table,
                                    Key=dynamo.key(f"RATE#P#{b['id']}", f"H#{hour}"), ConsistentRead=True)
    assert dynamo.from_item(item["Item"])["hc"] == 98  # type: ignore[index]
    clock.advance(60)
    assert bot_b.get("/v1/auth/me").status == 200 and api.get("/v1/auth/me").status == 200


def test_the_user_hour_window(api: Api, user: dict[str, Any], clock: clock_mod.ManualClock,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_PER_HOUR", "5")  # per user: 10 an hour
    config.reset()
    at_hour_start(clock)
    bots = [bearer(new_token(api, f"t{i}")["token"]) for i in range(2)]  # 2 of the session's 5
    for bot, uses in zip(bots, (4, 3), strict=True):
        for _ in range(uses):
            assert bot.get("/v1/auth/me").status == 200
            clock.advance(1)
    late = bearer(new_token(api, "late")["token"])  # the session's 3rd request, the user's 10th
    r = late.get("/v1/auth/me")  # the user's 11th
    envelope(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) == int(clock.now()) // 3600 * 3600 + 3600 - int(clock.now())


def test_the_user_windows_can_be_set_directly(api: Api, user: dict[str, Any], clock: clock_mod.ManualClock,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER_RATE_LIMIT_PER_MINUTE", "3")
    config.reset()
    at_hour_start(clock)
    bot = bearer(new_token(api, "ci")["token"])
    r = bot.get("/v1/auth/me")
    assert (r.headers["x-ratelimit-limit"], r.headers["x-ratelimit-remaining"]) == ("3", "1")
    assert bot.get("/v1/auth/me").status == 200
    envelope(bot.get("/v1/auth/me"), 429, "rate_limited")


# ---------------------------------------------------------------- 16. sessions

def test_a_person_lists_their_sessions(aws: None, clock: clock_mod.ManualClock) -> None:
    laptop, phone, cli = Api(source_ip="198.51.100.7"), Api(source_ip="203.0.113.9"), Api(source_ip="2001:db8:5:6::7")
    sign_in(laptop, EMAIL, FIREFOX)
    clock.advance(31)
    sign_in(phone, EMAIL, IPHONE)
    clock.advance(31)
    sign_in(cli, EMAIL, CLI)
    sign_in(Api(), "mallory@example.com")
    r = laptop.get("/v1/auth/sessions")
    assert r.status == 200, r.body
    sessions = r.json()["sessions"]
    assert [(s["client"], s["ipPrefix"], s["current"]) for s in sessions] == [
        ("gpurent-cli", "2001:db8:5::/48", False),
        ("Safari on iOS", "203.0.113.0/24", False),
        ("Firefox on Linux", "198.51.100.0/24", True),
    ]
    assert all(s["id"].startswith("ses_") for s in sessions)
    first = sessions[-1]
    assert first["lastUsedAt"] == first["createdAt"]
    assert first["expiresAt"] == clock_mod.iso(clock.now() - 62 + 30 * 86400)
    # Only the summaries are stored: no raw user agent, no full address.
    stored = str([i for i in scan(config.settings().identity_table)
                  if "SESSION" in str(i["pk"]) + str(i["sk"])])
    for raw in (FIREFOX, IPHONE, "198.51.100.7", "203.0.113.9", "2001:db8:5:6::7", "Gecko"):
        assert raw not in stored
    # Using a session an hour later moves its lastUsedAt (with its sliding expiry).
    clock.advance(2 * 3600)
    assert phone.get("/v1/auth/me").status == 200
    listed = {s["client"]: s for s in laptop.get("/v1/auth/sessions").json()["sessions"]}
    assert listed["Safari on iOS"]["lastUsedAt"] == clock_mod.iso(clock.now())
    assert listed["gpurent-cli"]["lastUsedAt"] == listed["gpurent-cli"]["createdAt"]


def test_the_session_list_is_one_query(api: Api, user: dict[str, Any], clock: clock_mod.ManualClock) -> None:
    for _ in range(5):
        clock.advance(31)
        sign_in(Api(), EMAIL)
    with dynamodb_calls() as calls:
        r = api.get("/v1/auth/sessions")
    assert r.status == 200 and len(r.json()["sessions"]) == 6
    assert calls.count("Query") == 1 and "Scan" not in calls, calls
    assert [c for c in calls if c != "Query"] == ["GetItem", "UpdateItem", "UpdateItem"], calls
    with dynamodb_calls() as calls:
        assert api.get("/v1/auth/tokens").status == 200
    assert calls.count("Query") == 1 and "Scan" not in calls, calls


def test_ending_one_session(api: Api, user: dict[str, Any], clock: clock_mod.ManualClock) -> None:
    phone = Api(source_ip="203.0.113.9")
    clock.advance(31)
    sign_in(phone, EMAIL, IPHONE)
    other = Api()
    sign_in(other, "mallory@example.com")
    (theirs,) = other.get("/v1/auth/sessions").json()["sessions"]
    mine = api.get("/v1/auth/sessions").json()["sessions"]
    phone_id = next(s["id"] for s in mine if not s["current"])
    own_id = next(s["id"] for s in mine if s["current"])

    before = snapshot()
    envelope(api.delete(f"/v1/auth/sessions/{theirs['id']}"), 404, "session_not_found")
    envelope(api.delete("/v1/auth/sessions/ses_01J00000000000000000000000"), 404, "session_not_found")
    envelope(api.delete("/v1/auth/sessions/nonsense"), 404, "session_not_found")
    assert snapshot() == before
    assert other.get("/v1/auth/me").status == 200

    r = api.delete(f"/v1/auth/sessions/{phone_id}")
    assert r.status == 200 and r.json() == {"ok": True} and r.cookies == []
    envelope(phone.get("/v1/auth/me"), 401, "unauthorized")
    assert [s["id"] for s in api.get("/v1/auth/sessions").json()["sessions"]] == [own_id]
    envelope(api.delete(f"/v1/auth/sessions/{phone_id}"), 404, "session_not_found")
    # Ending the current session is a logout: the cookie is cleared.
    r = api.delete(f"/v1/auth/sessions/{own_id}")
    assert r.status == 200 and any(c.startswith("sid=;") and "Max-Age=0" in c for c in r.cookies)
    envelope(api.get("/v1/auth/me"), 401, "unauthorized")


def test_sign_out_everywhere(api: Api, user: dict[str, Any], clock: clock_mod.ManualClock) -> None:
    devices = [Api(source_ip=f"203.0.113.{i}") for i in (1, 2)]
    for d in devices:
        clock.advance(31)
        sign_in(d, EMAIL)
    tokens = [new_token(api, n) for n in ("ci", "laptop-script")]
    mallory = Api()
    sign_in(mallory, "mallory@example.com")
    mallory_token = new_token(mallory, "theirs")

    r = api.post("/v1/auth/sessions/revoke-others", {})
    assert r.status == 200, r.body
    assert r.json() == {"ok": True, "sessionsEnded": 2, "tokensRevoked": 0}
    for d in devices:
        envelope(d.get("/v1/auth/me"), 401, "unauthorized")
    assert all(bearer(t["token"]).get("/v1/auth/me").status == 200 for t in tokens)
    assert api.get("/v1/auth/me").status == 200
    assert [s["current"] for s in api.get("/v1/auth/sessions").json()["sessions"]] == [True]

    r = api.post("/v1/auth/sessions/revoke-others", {"tokens": True})
    assert r.json() == {"ok": True, "sessionsEnded": 0, "tokensRevoked": 2}
    for t in tokens:
        envelope(bearer(t["token"]).get("/v1/auth/me"), 401, "unauthorized")
    assert api.get("/v1/auth/tokens").json()["tokens"] == []
    assert api.get("/v1/auth/me").status == 200
    # Nobody else's sessions or tokens were touched.
    assert mallory.get("/v1/auth/me").status == 200
    assert bearer(mallory_token["token"]).get("/v1/auth/me").status == 200


def test_session_routes_are_for_sessions_only(api: Api, user: dict[str, Any]) -> None:
    bot = bearer(new_token(api, "ci")["token"])
    assert bot.get("/v1/auth/me").status == 200
    (mine,) = api.get("/v1/auth/sessions").json()["sessions"]
    before = snapshot()
    envelope(bot.get("/v1/auth/sessions"), 403, "forbidden")
    envelope(bot.delete(f"/v1/auth/sessions/{mine['id']}"), 403, "forbidden")
    envelope(bot.post("/v1/auth/sessions/revoke-others", {"tokens": True}), 403, "forbidden")
    assert snapshot() == before
    assert api.get("/v1/auth/me").status == 200


def test_revoke_others_validates_its_body(api: Api, user: dict[str, Any]) -> None:
    before = snapshot()
    for body in ({"tokens": "yes"}, {"tokens": 1}, {"everything": True}, [1]):
        envelope(api.post("/v1/auth/sessions/revoke-others", body), 400, "validation_failed")
    assert snapshot() == before


# ---------------------------------------------------------------- sessions made before this change

def _legacy_session(user_id: str, now: float) -> str:
    """A session as the code before this change wrote it: the hash item only, no index item."""
    sid = f"legacy-{hashlib.sha256(str(now).encode()).hexdigest()}"
    dynamo.client().put_item(TableName=config.settings().identity_table, Item=dynamo.to_item({
        "pk": f"SESSION#{auth.sha256(sid)}", "sk": "SESSION", "userId": user_id, "createdAt": int(now),
        "slidAt": int(now), "expiresAt": int(now) + 30 * 86400, "ttl": int(now) + 31 * 86400}))
    return sid


def test_sessions_from_before_this_change_are_listed_once_used_and_end_with_the_others(
        api: Api, user: dict[str, Any], clock: clock_mod.ManualClock) -> None:
    used = Api()
    used.cookies = {"sid": _legacy_session(user["id"], clock.now() - 100)}
    idle = Api()
    idle.cookies = {"sid": _legacy_session(user["id"], clock.now() - 50)}
    assert used.get("/v1/auth/me").status == 200  # still valid
    listed = used.get("/v1/auth/sessions").json()["sessions"]
    assert len(listed) == 2 and [s["current"] for s in listed] == [False, True]  # adopted, then listed
    legacy = next(s for s in listed if s["current"])
    assert legacy["client"] is None and legacy["ipPrefix"] is None
    assert legacy["createdAt"] == clock_mod.iso(int(clock.now() - 100))
    r = api.post("/v1/auth/sessions/revoke-others", {})
    assert r.json()["sessionsEnded"] == 1
    envelope(used.get("/v1/auth/me"), 401, "unauthorized")
    envelope(idle.get("/v1/auth/me"), 401, "unauthorized")  # never listed, ended all the same
    assert api.get("/v1/auth/me").status == 200
