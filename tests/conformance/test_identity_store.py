"""The identity store's conditional writes, against moto and DynamoDB Local."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from gpurent.store import identity, rate_limits, sessions, sign_in_codes, ssh_keys, tokens


def workers(backend: str) -> int:
    """moto's in-process backend has no locking, so races are real only on DynamoDB Local."""
    return 1 if backend == "moto" else 8


def test_user_and_email_lookup_are_created_together_once(backend: str) -> None:
    identity.create_user("usr_A", "a@example.com", 1000.0)
    with pytest.raises(identity.AlreadyExists):
        identity.create_user("usr_B", "a@example.com", 1001.0)
    assert identity.get_user_id_by_email("a@example.com", consistent=True) == "usr_A"
    assert identity.get_user("usr_B") is None  # the losing transaction wrote nothing


def test_code_request_interval_is_enforced_by_a_condition(backend: str) -> None:
    rec = {"codeHash": "h1", "salt": "s", "attempts": 0, "requestedAt": 1000, "expiresAt": 1600}
    sign_in_codes.put_code("a@example.com", rec, not_requested_since=900)
    with pytest.raises(identity.ConditionFailed) as err:
        sign_in_codes.put_code("a@example.com", {**rec, "codeHash": "h2", "requestedAt": 1010}, not_requested_since=980)
    assert err.value.old is not None and err.value.old["requestedAt"] == 1000
    sign_in_codes.put_code("a@example.com", {**rec, "codeHash": "h3", "requestedAt": 1031}, not_requested_since=1001)
    assert sign_in_codes.get_code("a@example.com")["codeHash"] == "h3"  # type: ignore[index]


def _code(attempts: int = 0) -> dict[str, object]:
    return {"codeHash": "h", "salt": "s", "attempts": attempts, "requestedAt": 1000, "expiresAt": 1600}


# Times near the wall clock: DynamoDB Local expires items by `ttl` against it.
T = int(time.time()) // 3600 * 3600
HOUR = T  # an hour start
EMAIL_PK, IP_PK = "GUESS#EMAIL#a@example.com", "GUESS#IP#192.0.2.1"


def _reserve(limit: int, hour: int = HOUR, attempts: int | None = None) -> int:
    """Read the code and the counters, then reserve one guess (as `sign_in.verify_code` does)."""
    code, items = sign_in_codes.read_sign_in("a@example.com", [EMAIL_PK, IP_PK])
    assert code is not None
    counters = [(sign_in_codes.guess_counter(pk, items[pk], hour, 24), limit) for pk in (EMAIL_PK, IP_PK)]
    seen = int(code["attempts"]) if attempts is None else attempts
    return sign_in_codes.reserve_guess("a@example.com", "h", seen, hour, counters, hour + 25 * 3600)


def test_a_guess_is_counted_on_the_code_and_both_counters_together(backend: str) -> None:
    sign_in_codes.put_code("a@example.com", _code(), not_requested_since=900)
    assert [_reserve(20) for _ in range(3)] == [1, 2, 3]
    assert sign_in_codes.get_code("a@example.com")["attempts"] == 3  # type: ignore[index]
    for pk in (EMAIL_PK, IP_PK):
        assert sign_in_codes.get_guess_item(pk)[f"h{HOUR}"] == 3  # type: ignore[index]
    # A stale read of the code's attempts writes nothing anywhere.
    with pytest.raises(identity.ConditionFailed):
        _reserve(20, attempts=1)
    assert sign_in_codes.get_guess_item(EMAIL_PK)[f"h{HOUR}"] == 3  # type: ignore[index]
    # Consuming the code gives the guess back to both counters, in the same transaction.
    assert sign_in_codes.consume_code("a@example.com", "h", HOUR, [EMAIL_PK, IP_PK]) is True
    assert sign_in_codes.get_code("a@example.com") is None
    assert sign_in_codes.get_guess_item(IP_PK)[f"h{HOUR}"] == 2  # type: ignore[index]
    assert sign_in_codes.consume_code("a@example.com", "h", HOUR, [EMAIL_PK, IP_PK]) is False


def test_a_full_window_refuses_and_writes_nothing(backend: str) -> None:
    sign_in_codes.put_code("a@example.com", _code(), not_requested_since=900)
    assert _reserve(2) == 1 and _reserve(2) == 2
    with pytest.raises(identity.ConditionFailed):
        _reserve(2)
    assert sign_in_codes.get_code("a@example.com")["attempts"] == 2  # type: ignore[index]
    assert sign_in_codes.get_guess_item(IP_PK)[f"h{HOUR}"] == 2  # type: ignore[index]


def test_guesses_are_counted_over_a_rolling_day(backend: str) -> None:
    """Hours of the last day count; older ones leave the window and the item."""
    sign_in_codes.put_code("a@example.com", _code(), not_requested_since=900)
    _reserve(10, hour=HOUR)
    _reserve(10, hour=HOUR + 12 * 3600)
    later = HOUR + 24 * 3600
    item = sign_in_codes.get_guess_item(EMAIL_PK)
    counter = sign_in_codes.guess_counter(EMAIL_PK, item, later, 24)
    assert counter.seen == {HOUR + 12 * 3600: 1} and counter.stale == (HOUR,) and counter.current == 0
    sign_in_codes.put_code("a@example.com", _code(), not_requested_since=2000)
    _reserve(10, hour=later)
    item = sign_in_codes.get_guess_item(EMAIL_PK)
    assert f"h{HOUR}" not in item and item[f"h{later}"] == 1  # type: ignore[operator,index]


def test_a_counter_moved_since_it_was_read_is_read_again(backend: str) -> None:
    """A request still in the previous hour counts there after our read: our reservation must
    not trust the sum it read."""
    sign_in_codes.put_code("a@example.com", _code(), not_requested_since=900)
    _, items = sign_in_codes.read_sign_in("a@example.com", [EMAIL_PK, IP_PK])
    hour = HOUR + 3600
    counters = [(sign_in_codes.guess_counter(pk, items[pk], hour, 24), 20) for pk in (EMAIL_PK, IP_PK)]
    _reserve(20, hour=HOUR)  # the straggler, in the previous hour
    with pytest.raises(identity.ConditionFailed):
        sign_in_codes.reserve_guess("a@example.com", "h", 1, hour, counters, hour + 25 * 3600)


def test_concurrent_guesses_never_exceed_the_window(backend: str) -> None:
    """Many guesses at once against 8 codes and one shared source counter capped at 10."""
    emails = [f"u{i}@example.com" for i in range(8)]
    for e in emails:
        sign_in_codes.put_code(e, _code(), not_requested_since=900)

    def guess(e: str) -> bool:
        for _ in range(20):
            code, items = sign_in_codes.read_sign_in(e, [IP_PK])
            if code is None or int(code["attempts"]) >= 5:
                return False
            counter = sign_in_codes.guess_counter(IP_PK, items[IP_PK], HOUR, 24)
            if sum(counter.seen.values()) + counter.current >= 10:
                return False
            try:
                sign_in_codes.reserve_guess(e, "h", int(code["attempts"]), HOUR, [(counter, 10)], HOUR + 25 * 3600)
                return True
            except identity.ConditionFailed:
                continue
        return False

    with ThreadPoolExecutor(workers(backend)) as pool:
        results = list(pool.map(guess, [e for e in emails for _ in range(3)]))
    assert sum(results) == 10
    assert sign_in_codes.get_guess_item(IP_PK)[f"h{HOUR}"] == 10  # type: ignore[index]
    # misc: mypy reports the same optional index again through sum()'s overloads
    assert sum(int(sign_in_codes.get_code(e)["attempts"]) for e in emails) == 10  # type: ignore[index, misc]


def test_a_code_is_consumed_exactly_once(backend: str) -> None:
    sign_in_codes.put_code("a@example.com", _code(), not_requested_since=900)
    with ThreadPoolExecutor(workers(backend)) as pool:
        results = list(pool.map(lambda _: sign_in_codes.consume_code("a@example.com", "h", HOUR, []), range(8)))
    assert results.count(True) == 1


def test_rate_limit_counts_both_windows_atomically(backend: str) -> None:
    now = 7200.0 + 61  # minute 1 of an hour
    with ThreadPoolExecutor(workers(backend)) as pool:
        hits = list(pool.map(lambda _: rate_limits.hit_rate_limit("S#x", now, 10, 1000), range(25)))
    assert sum(h.allowed for h in hits) == 10
    # The next minute has a fresh minute window; the hour keeps counting.
    h = rate_limits.hit_rate_limit("S#x", now + 60, 10, 11)
    assert h.allowed and h.minute_count == 1 and h.hour_count == 11
    assert not rate_limits.hit_rate_limit("S#x", now + 61, 10, 11).allowed
    rate_limits.unhit_rate_limit("S#x", now + 60)  # given back: the next request fits again
    h = rate_limits.hit_rate_limit("S#x", now + 61, 10, 11)
    assert h.allowed and h.minute_count == 1 and h.hour_count == 11


def test_ssh_key_fingerprint_is_unique_per_user(backend: str) -> None:
    rec = {"id": "key_1", "name": "a", "fingerprint": "SHA256:x", "algorithm": "ssh-ed25519", "publicKey": "k",
           "createdAt": 1}
    ssh_keys.put_ssh_key("usr_A", rec)
    with pytest.raises(identity.AlreadyExists):
        ssh_keys.put_ssh_key("usr_A", {**rec, "id": "key_2"})
    ssh_keys.put_ssh_key("usr_B", {**rec, "id": "key_3"})  # another user may hold the same key
    assert [k["id"] for k in ssh_keys.list_ssh_keys("usr_A")] == ["key_1"]
    ssh_keys.delete_ssh_key("usr_A", "key_1")
    with pytest.raises(identity.NotFound):
        ssh_keys.delete_ssh_key("usr_A", "key_1")
    ssh_keys.put_ssh_key("usr_A", {**rec, "id": "key_4"})  # the marker went with the key


def test_sessions_slide_once_under_concurrency(backend: str) -> None:
    sessions.put_session("hash", "usr_A", T + 1000.0, T + 5000.0, "ses_1", "Firefox on Linux", "192.0.2.0/24")
    with ThreadPoolExecutor(workers(backend)) as pool:
        results = list(pool.map(
            lambda _: sessions.slide_session("hash", T + 1000, T + 4700.0, T + 9000.0, "usr_A", "ses_1"), range(6)))
    assert results.count(True) == 1
    assert sessions.get_session("hash")["expiresAt"] == T + 9000  # type: ignore[index]
    (listed,) = sessions.list_sessions("usr_A")
    assert (listed["lastUsedAt"], listed["expiresAt"], listed["hash"]) == (T + 4700, T + 9000, "hash")
    sessions.delete_session("hash", "usr_A", "ses_1")
    assert sessions.get_session("hash") is None and sessions.list_sessions("usr_A") == []
    # An ended session does not slide back to life.
    assert sessions.slide_session("hash", T + 4700, T + 9000.0, T + 20000.0, "usr_A", "ses_1") is False
    assert sessions.get_session("hash") is None and sessions.list_sessions("usr_A") == []


def test_a_session_is_ended_by_its_id_by_its_owner_only(backend: str) -> None:
    sessions.put_session("h1", "usr_A", T + 1000.0, T + 5000.0, "ses_1")
    with pytest.raises(identity.NotFound):
        sessions.end_session("usr_B", "ses_1")
    assert sessions.end_session("usr_A", "ses_1")["hash"] == "h1"
    assert sessions.get_session("h1") is None
    with pytest.raises(identity.NotFound):
        sessions.end_session("usr_A", "ses_1")


def test_sessions_from_before_the_index_are_adopted_once(backend: str) -> None:
    identity.create_user("usr_A", "a@example.com", 900.0)
    old = {"pk": "SESSION#h1", "sk": "SESSION", "userId": "usr_A", "createdAt": T, "slidAt": T,
           "expiresAt": T + 5000}
    from gpurent.config import settings
    from gpurent.store.dynamo import client, to_item

    client().put_item(TableName=settings().identity_table, Item=to_item(old))
    session = sessions.get_session("h1")
    assert session is not None
    with ThreadPoolExecutor(workers(backend)) as pool:
        results = list(pool.map(lambda i: sessions.adopt_session("h1", session, f"ses_{i}"), range(4)))
    assert results.count(True) == 1
    (listed,) = sessions.list_sessions("usr_A")
    assert sessions.get_session("h1")["sessionId"] == listed["id"]  # type: ignore[index]
    # After "sign out everywhere", a session never adopted is over.
    client().put_item(TableName=settings().identity_table, Item=to_item({**old, "pk": "SESSION#h2"}))
    sessions.mark_sessions_revoked("usr_A", T + 2000.0)
    with pytest.raises(sessions.SessionsRevoked):
        sessions.adopt_session("h2", sessions.get_session("h2"), "ses_9")  # type: ignore[arg-type]
    assert len(sessions.list_sessions("usr_A")) == 1


def test_listed_sessions_and_tokens_are_deleted_in_batches(backend: str) -> None:
    for i in range(30):
        sessions.put_session(f"h{i}", "usr_A", T + 1000.0 + i, T + 5000.0, f"ses_{i:02d}")
        tokens.put_token("usr_A", f"tok_{i:02d}", f"th{i}", {"id": f"tok_{i:02d}", "name": "ci", "createdAt": 1,
                                                           "hint": "gpr_…"})
    sessions.put_session("other", "usr_B", T + 1000.0, T + 5000.0, "ses_b")
    listed = sessions.list_sessions("usr_A")
    assert len(listed) == 30
    identity.delete_listed("usr_A", listed, "SESSION")
    identity.delete_listed("usr_A", tokens.list_tokens("usr_A"), "TOKEN")
    assert sessions.list_sessions("usr_A") == [] and tokens.list_tokens("usr_A") == []
    assert all(sessions.get_session(f"h{i}") is None and tokens.get_token(f"th{i}") is None for i in range(30))
    assert sessions.get_session("other") is not None
    identity.delete_listed("usr_A", listed, "SESSION")  # idempotent


def test_tokens_are_found_by_hash_and_revoked_whole(backend: str) -> None:
    tokens.put_token("usr_A", "tok_1", "th", {"id": "tok_1", "name": "ci", "createdAt": 1, "hint": "gpr_…"})
    assert tokens.get_token("th")["userId"] == "usr_A"  # type: ignore[index]
    assert [t["id"] for t in tokens.list_tokens("usr_A")] == ["tok_1"]
    with ThreadPoolExecutor(workers(backend)) as pool:
        touched = list(pool.map(lambda _: tokens.touch_token("th", "usr_A", "tok_1", None, 5000.0), range(4)))
    assert touched.count(True) == 1
    assert tokens.get_token("th")["lastUsedAt"] == 5000 == tokens.list_tokens("usr_A")[0]["lastUsedAt"]  # type: ignore[index]
    with pytest.raises(identity.NotFound):
        tokens.delete_token("usr_B", "tok_1")
    tokens.delete_token("usr_A", "tok_1")
    assert tokens.get_token("th") is None
    assert tokens.list_tokens("usr_A") == []
    assert tokens.touch_token("th", "usr_A", "tok_1", 5000, 9000.0) is False  # a revoked token stays gone
    assert tokens.get_token("th") is None and tokens.list_tokens("usr_A") == []
