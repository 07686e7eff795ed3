"""`wallet.apply` on the fake money store: once per key, replays, conflicts, refusals."""

from __future__ import annotations

import pytest

from gpurent import retry, wallet
from gpurent.errors import ConflictRetryExhausted
from tests.fakes.world import FakeWorld

USER = "usr_apply"


def credit(amount: int, key: str) -> wallet.Result:
    return wallet.credit(USER, amount, "adjustment", key, {"description": "test"})


def test_an_operation_writes_wallet_marker_and_ledger_row_together(world: FakeWorld) -> None:
    result = credit(500, "k1")
    assert (result.available, result.reserved, result.replayed) == (500, 0, False)
    assert world.money.wallet(USER) == (500, 0)
    (row,) = world.money.all_ledger(USER)
    assert (row["type"], row["amountCents"], row["balanceAfterCents"], row["opKey"]) == ("adjustment", 500, 500, "k1")
    marker = world.money.get_op_marker("k1")
    assert marker is not None and marker.user_id == USER and marker.result.available == 500
    assert world.money.transactions == 1


def test_a_retried_key_answers_the_first_answer_and_moves_nothing(world: FakeWorld) -> None:
    first = credit(500, "k1")
    again = credit(500, "k1")
    assert again.replayed and (again.available, again.entries) == (first.available, first.entries)
    assert world.money.wallet(USER) == (500, 0) and len(world.money.all_ledger(USER)) == 1


def test_a_key_reused_with_other_parameters_is_refused(world: FakeWorld) -> None:
    credit(500, "k1")
    with pytest.raises(wallet.IdempotencyMismatch):
        credit(501, "k1")
    assert world.money.wallet(USER) == (500, 0)


def test_a_concurrent_writer_makes_it_replan_on_a_fresh_read(world: FakeWorld) -> None:
    credit(1_000, "seed")
    # Between this operation's read and its write, another operation lands (the wallet's version moves).
    def concurrent() -> None:
        credit(100, "concurrent")

    world.money.before_transact.append(concurrent)
    result = wallet.debit(USER, 300, "k-debit")
    assert (result.available, result.replayed) == (800, False)
    assert world.money.wallet(USER) == (800, 0)
    assert [r["amountCents"] for r in world.money.all_ledger(USER)] == [1_000, 100, -300]
    assert [r["balanceAfterCents"] for r in world.money.all_ledger(USER)] == [1_000, 1_100, 800]


def test_transaction_conflicts_are_retried_then_fail_loudly(world: FakeWorld) -> None:
    credit(1_000, "seed")
    world.money.conflicts = 3
    assert wallet.debit(USER, 10, "k-ok").available == 990
    world.money.conflicts = retry.REQUEST.attempts  # a person's request gives up first (then 503)
    with retry.interactive(), pytest.raises(ConflictRetryExhausted):
        wallet.debit(USER, 10, "k-never")
    assert world.money.conflicts == 0
    world.money.conflicts = retry.REQUEST.attempts  # background work outlasts it
    assert wallet.debit(USER, 10, "k-background").available == 980
    world.money.conflicts = retry.BACKGROUND.attempts
    with pytest.raises(ConflictRetryExhausted):
        wallet.debit(USER, 10, "k-never")
    assert world.money.wallet(USER) == (980, 0) and world.money.get_op("k-never") is None


def test_a_refusal_after_the_operation_happened_is_its_replay(world: FakeWorld) -> None:
    credit(100, "seed")
    first = wallet.debit(USER, 100, "k-all")
    assert first.available == 0
    again = wallet.debit(USER, 100, "k-all")  # would be refused (available 0): it already happened
    assert again.replayed and again.available == 0
    with pytest.raises(wallet.InsufficientBalance):
        wallet.debit(USER, 100, "k-new")


def test_a_failed_business_row_cancels_the_whole_operation(world: FakeWorld) -> None:
    credit(100, "seed")
    taken = world.money.money_put({"pk": "ROW#1", "sk": "ROW", "v": 1})
    world.money.transact([taken])
    with pytest.raises(wallet.BusinessConditionFailed) as e:
        wallet.debit(USER, 40, "k-row", extras=lambda w, steps: [world.money.money_put({"pk": "ROW#1", "sk": "ROW"})])
    assert e.value.index == 0 and e.value.old == {"pk": "ROW#1", "sk": "ROW", "v": 1}
    assert world.money.wallet(USER) == (100, 0) and world.money.get_op("k-row") is None
