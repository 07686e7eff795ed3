"""The identity store's conditional writes, against moto and DynamoDB Local."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from gpurent.store import identity as store


def workers(backend: str) -> int:
    """moto's in-process backend has no locking, so races are real only on DynamoDB Local."""
    return 1 if backend == "moto" else 8


def test_user_and_email_lookup_are_created_together_once(backend: str) -> None:
    store.create_user("usr_A", "a@example.com", 1000.0)
    with pytest.raises(store.AlreadyExists):
        store.create_user("usr_B", "a@example.com", 1001.0)
    assert store.get_user_id_by_email("a@example.com", consistent=True) == "usr_A"
    assert store.get_user("usr_B") is None  # the losing transaction wrote nothing


def test_code_request_interval_is_enforced_by_a_condition(backend: str) -> None:
    rec = {"codeHash": "h1", "salt": "s", "attempts": 0, "requestedAt": 1000, "expiresAt": 1600}
    store.put_code("a@example.com", rec, not_requested_since=900)
    with pytest.raises(store.ConditionFailed) as err:
        store.put_code("a@example.com", {**rec, "codeHash": "h2", "requestedAt": 1010}, not_requested_since=980)
    assert err.value.old is not None and err.value.old["requestedAt"] == 1000
    store.put_code("a@example.com", {**rec, "codeHash": "h3", "requestedAt": 1031}, not_requested_since=1001)
    assert store.get_code("a@example.com")["codeHash"] == "h3"  # type: ignore[index]


def test_wrong_guesses_stop_at_the_limit_and_kill_the_code(backend: str) -> None:
    rec = {"codeHash": "h", "salt": "s", "attempts": 0, "requestedAt": 1000, "expiresAt": 1600}
    store.put_code("a@example.com", rec, not_requested_since=900)
    counts = [store.count_failed_attempt("a@example.com", "h", 5) for _ in range(7)]
    assert counts == [1, 2, 3, 4, 5, 5, 5]
    assert store.get_code("a@example.com")["attempts"] == 5  # type: ignore[index]
    assert store.consume_code("a@example.com", "h", 5) is False


def test_a_code_is_consumed_exactly_once(backend: str) -> None:
    rec = {"codeHash": "h", "salt": "s", "attempts": 0, "requestedAt": 1000, "expiresAt": 1600}
    store.put_code("a@example.com", rec, not_requested_since=900)
    with ThreadPoolExecutor(workers(backend)) as pool:
        results = list(pool.map(lambda _: store.consume_code("a@example.com", "h", 5), range(8)))
    assert results.count(True) == 1


def test_rate_limit_counts_both_windows_atomically(backend: str) -> None:
    now = 7200.0 + 61  # minute 1 of an hour
    with ThreadPoolExecutor(workers(backend)) as pool:
        hits = list(pool.map(lambda _: store.hit_rate_limit("S#x", now, 10, 1000), range(25)))
    assert sum(h.allowed for h in hits) == 10
    # The next minute has a fresh minute window; the hour keeps counting.
    h = store.hit_rate_limit("S#x", now + 60, 10, 11)
    assert h.allowed and h.minute_count == 1 and h.hour_count == 11
    assert not store.hit_rate_limit("S#x", now + 61, 10, 11).allowed


def test_ssh_key_fingerprint_is_unique_per_user(backend: str) -> None:
    rec = {"id": "key_1", "name": "a", "fingerprint": "SHA256:x", "algorithm": "ssh-ed25519", "publicKey": "k",
           "createdAt": 1}
    store.put_ssh_key("usr_A", rec)
    with pytest.raises(store.AlreadyExists):
        store.put_ssh_key("usr_A", {**rec, "id": "key_2"})
    store.put_ssh_key("usr_B", {**rec, "id": "key_3"})  # another user may hold the same key
    assert [k["id"] for k in store.list_ssh_keys("usr_A")] == ["key_1"]
    store.delete_ssh_key("usr_A", "key_1")
    with pytest.raises(store.NotFound):
        store.delete_ssh_key("usr_A", "key_1")
    store.put_ssh_key("usr_A", {**rec, "id": "key_4"})  # the marker went with the key


def test_sessions_slide_once_under_concurrency(backend: str) -> None:
    store.put_session("hash", "usr_A", 1000.0, 5000.0)
    with ThreadPoolExecutor(workers(backend)) as pool:
        results = list(pool.map(lambda _: store.slide_session("hash", 1000, 4700.0, 9000.0), range(6)))
    assert results.count(True) == 1
    assert store.get_session("hash")["expiresAt"] == 9000  # type: ignore[index]
    store.delete_session("hash")
    assert store.get_session("hash") is None


def test_tokens_are_found_by_hash_and_revoked_whole(backend: str) -> None:
    store.put_token("usr_A", "tok_1", "th", {"id": "tok_1", "name": "ci", "createdAt": 1, "hint": "gpr_…"})
    assert store.get_token("th")["userId"] == "usr_A"  # type: ignore[index]
    assert [t["id"] for t in store.list_tokens("usr_A")] == ["tok_1"]
    with pytest.raises(store.NotFound):
        store.delete_token("usr_B", "tok_1")
    store.delete_token("usr_A", "tok_1")
    assert store.get_token("th") is None
    assert store.list_tokens("usr_A") == []
