"""Money operations against moto and DynamoDB Local: atomicity, idempotency
and races. The races run on both: DynamoDB Local applies each request atomically, and so
does the tests' moto (`tests/moto_fast.py` handles one request at a time; without that,
two conditional writes at once both passed their condition)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from gpurent import wallet
from gpurent.errors import ApiError
from gpurent.store import money as store
from tests.walletkit import check_invariants, rental_put, rental_reserve_update

U = "usr_01JCONFORMANCE000000000000"


def test_credit_reserve_charge_release_debit_round_trip(backend: str) -> None:
    wallet.credit(U, 10_000, "stripe_topup", "deposit_pi_1", {"stripeChargeId": "ch_1"})
    wallet.reserve(U, 280, "reserve:r1", rental_put(U, "r1"))
    check_invariants(U)
    r = wallet.charge(U, 280, 47, 280, "charge:r1:1", {"rentalId": "r1"}, rental_reserve_update(U, "r1", 280))
    assert (r.available, r.reserved) == (10_000 - 280 - 47, 280)
    assert r.entries[0]["amountCents"] == -47 and r.entries[0]["balanceAfterCents"] == 10_000 - 47
    wallet.release(U, 280, "release:r1", rental_reserve_update(U, "r1", 280, release=True))
    wallet.debit(U, 53, "adj:1", {"description": "fix"})
    w = check_invariants(U)
    assert (w.available, w.reserved) == (9_900, 0)


def test_a_reserve_beyond_available_fails_and_writes_nothing(backend: str) -> None:
    wallet.credit(U, 100, "adjustment", "a1")
    with pytest.raises(ApiError) as err:
        wallet.reserve(U, 101, "reserve:r1", rental_put(U, "r1"))
    assert err.value.code == "insufficient_balance"
    assert store.get_op("reserve:r1") is None
    assert check_invariants(U).available == 100


def test_a_failing_business_row_cancels_the_whole_operation(backend: str) -> None:
    wallet.credit(U, 1000, "adjustment", "a1")
    wallet.reserve(U, 300, "reserve:r1", rental_put(U, "r1"))
    with pytest.raises(wallet.BusinessConditionFailed):
        # The rental no longer holds 999: someone else moved it on.
        wallet.charge(U, 300, 10, 300, "charge:r1:x", {"rentalId": "r1"}, rental_reserve_update(U, "r1", 999))
    assert store.get_op("charge:r1:x") is None
    w = check_invariants(U)
    assert (w.available, w.reserved) == (700, 300)


def test_replays_answer_the_same_and_apply_once(backend: str) -> None:
    first = wallet.credit(U, 500, "stripe_topup", "deposit_pi_9", {"stripeChargeId": "ch_9"})
    again = wallet.credit(U, 500, "stripe_topup", "deposit_pi_9", {"stripeChargeId": "ch_9"})
    assert again.replayed and again.entries == first.entries and again.total == first.total == 500
    with pytest.raises(wallet.IdempotencyMismatch):
        wallet.credit(U, 501, "stripe_topup", "deposit_pi_9", {"stripeChargeId": "ch_9"})
    assert check_invariants(U).total == 500


def test_concurrent_replays_of_one_key_apply_once(backend: str) -> None:
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: wallet.credit(U, 250, "stripe_topup", "deposit_pi_x"), range(10)))
    assert {r.total for r in results} == {250}
    assert sum(not r.replayed for r in results) == 1
    assert len(store.all_ledger(U)) == 1
    check_invariants(U)


def test_32_concurrent_reserves_succeed_exactly_as_far_as_the_money_goes(backend: str) -> None:
    wallet.credit(U, 1_000, "adjustment", "fund")
    barrier = threading.Barrier(32)

    def one(i: int) -> str:
        barrier.wait()
        try:
            wallet.reserve(U, 100, f"reserve:r{i}", rental_put(U, f"r{i}"))
            return "ok"
        except ApiError as exc:
            return exc.code

    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(one, range(32)))
    assert outcomes.count("ok") == 10
    assert outcomes.count("insufficient_balance") == 22
    w = check_invariants(U)
    assert (w.available, w.reserved) == (0, 1_000)


def test_concurrent_credits_and_debits_all_land(backend: str) -> None:
    workers = 1 if backend == "moto" else 16
    wallet.credit(U, 10_000, "adjustment", "fund")
    ops = [(i, 100 if i % 2 else -50) for i in range(40)]

    def one(op: tuple[int, int]) -> None:
        i, amount = op
        wallet.adjust(U, amount, f"adj:{i}", {"description": "race"})

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, ops))
    w = check_invariants(U)
    assert w.total == 10_000 + sum(a for _, a in ops)
