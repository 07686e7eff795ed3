"""A hypothesis state machine drives random money operations, retries and
faults against the real store (moto) and checks invariants 1-4 and 8 of
`spec/decisions.md` after every step.

Faults injected: a transaction that fails before it reaches DynamoDB, one that
commits but whose answer is lost (the caller retries with the same key), a
retry of an operation that did succeed, and a concurrent writer that changes
the wallet between our read and our write.

Examples: `HYPOTHESIS_PROFILE=thorough` runs thousands instead of hundreds.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from gpurent import config, wallet
from gpurent.errors import ApiError
from gpurent.store import money as store
from infra.local import template
from tests.conftest import create_tables
from tests.walletkit import check_invariants, rental_put, rental_reserve_update

settings.register_profile("ci", max_examples=60, stateful_step_count=15, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=2000, stateful_step_count=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")

USERS = ("A", "B")  # each example gets fresh user ids (the store is shared between examples)


class Fault(Exception):
    pass


class WalletMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0
        self.run_id = uuid.uuid4().hex[:12]
        self.rentals: dict[str, tuple[str, int]] = {}  # rental → (user, reserve held)
        self.applied: list[tuple[str, str, dict[str, Any], Any, wallet.Result]] = []  # (user, key, desc, call, result)
        self.fault: str | None = None
        self.real_transact = store.transact
        store.transact = self._transact
        # Fresh, empty tables per example (a copy of moto's, `tests.conftest.create_tables`):
        # no example sees another's items.
        self.names = template.default_table_names("pwallet")
        self.saved_env = {v: os.environ.get(v) for v in template.TABLE_ENV.values()}
        os.environ.update({template.TABLE_ENV[k]: v for k, v in self.names.items()})
        config.reset()
        create_tables(self.names)

    def teardown(self) -> None:
        store.transact = self.real_transact
        for k, v in self.saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        config.reset()

    def _transact(self, items: list[Any], token: str | None = None) -> None:
        fault, self.fault = self.fault, None
        if fault == "before":
            raise Fault("network error before the transaction reached DynamoDB")
        self.real_transact(items, token)
        if fault == "after":
            raise Fault("the transaction committed but its answer was lost")

    def key(self, kind: str) -> str:
        self.n += 1
        return f"{self.run_id}:{kind}:{self.n}"

    def uid(self, user: str) -> str:
        return f"usr_{self.run_id}{user}"

    def run(self, user: str, key: str, call: Callable[[str], wallet.Result]) -> wallet.Result | None:
        """Run an operation; on an injected fault, retry it with the same key like a caller would."""
        try:
            result = call(key)
        except Fault:
            result = call(key)  # the retry: applied exactly once in all
        except ApiError as exc:
            assert exc.code == "insufficient_balance"
            assert store.get_op(key) is None
            return None
        self.applied.append((user, key, {}, call, result))
        return result

    @initialize()
    def fund(self) -> None:
        for u in USERS:
            wallet.credit(self.uid(u), 5_000, "adjustment", self.key("fund"))

    @rule(user=st.sampled_from(USERS), amount=st.integers(1, 20_000),
          kind=st.sampled_from(["stripe_topup", "auto_topup", "refund", "adjustment"]))
    def credit(self, user: str, amount: int, kind: str) -> None:
        user = self.uid(user)
        self.run(user, self.key("credit"), lambda k: wallet.credit(user, amount, kind, k))

    @rule(user=st.sampled_from(USERS), amount=st.integers(1, 3_000))
    def debit(self, user: str, amount: int) -> None:
        user = self.uid(user)
        self.run(user, self.key("debit"), lambda k: wallet.debit(user, amount, k))

    @rule(user=st.sampled_from(USERS), amount=st.integers(1, 4_000))
    def reserve(self, user: str, amount: int) -> None:
        user = self.uid(user)
        rid = f"r{self.n}"
        result = self.run(user, self.key("reserve"), lambda k: wallet.reserve(user, amount, k, rental_put(user, rid)))
        if result is not None:
            self.rentals[rid] = (user, amount)

    @precondition(lambda self: self.rentals)
    @rule(data=st.data(), amount=st.integers(0, 6_000), goal=st.integers(0, 4_000))
    def charge(self, data: st.DataObject, amount: int, goal: int) -> None:
        rid = data.draw(st.sampled_from(sorted(self.rentals)))
        user, held = self.rentals[rid]
        result = self.run(user, self.key("charge"), lambda k: wallet.charge(
            user, held, amount, goal, k, {"rentalId": rid}, rental_reserve_update(user, rid, held)))
        assert result is not None
        split = result.steps[0]["split"]
        assert split["charged"] + split["overage"] == amount
        self.rentals[rid] = (user, split["reserve_after"])

    @precondition(lambda self: self.rentals)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(sorted(self.rentals)))
        user, held = self.rentals.pop(rid)
        self.run(user, self.key("release"),
                 lambda k: wallet.release(user, held, k, rental_reserve_update(user, rid, held, release=True)))

    @rule(where=st.sampled_from(["before", "after"]))
    def next_transaction_faults(self, where: str) -> None:
        self.fault = where

    @precondition(lambda self: self.applied)
    @rule(data=st.data())
    def replay_a_succeeded_operation(self, data: st.DataObject) -> None:
        user, key, _, call, result = data.draw(st.sampled_from(self.applied))
        before = wallet.get(user)
        try:
            again = call(key)
        except Fault:
            again = call(key)
        assert again.replayed
        assert (again.entries, again.available, again.reserved) == (result.entries, result.available, result.reserved)
        assert wallet.get(user).version == before.version

    @rule(user=st.sampled_from(USERS), amount=st.integers(1, 500))
    def a_concurrent_writer_wins_the_race(self, user: str, amount: int) -> None:
        user = self.uid(user)
        self.fault = None  # the fault rules aim at our transaction, not the other writer's
        fired: list[bool] = []

        def other_writer() -> None:
            if not fired:
                fired.append(True)
                wallet.credit(user, 1, "adjustment", self.key("other"))

        key = self.key("raced")
        result = wallet.apply(user, key, {"op": "credit", "amount": amount},
                              lambda w: [wallet.plan_credit(w, amount, "adjustment")], before_write=other_writer)
        assert not result.replayed and fired

    @invariant()
    def invariants_hold(self) -> None:
        for u in USERS:
            check_invariants(self.uid(u))


@pytest.mark.usefixtures("aws")
def test_wallet_state_machine() -> None:
    run_state_machine_as_test(WalletMachine, settings=settings.get_profile(PROFILE))
