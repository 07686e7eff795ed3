"""Pure money planning: the rolling-reserve split and the plans built on it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpurent import wallet
from gpurent.wallet import Wallet, split_charge

cents = st.integers(0, 10**7)


@given(cents, cents, cents, cents)
def test_a_split_accounts_for_every_cent(available: int, held: int, charge: int, target: int) -> None:
    s = split_charge(available, held, charge, target)
    assert s.from_reserve + s.from_available + s.overage == charge
    assert s.charged == charge - s.overage
    assert s.from_reserve == min(charge, held)  # the reserve pays first
    assert s.overage == 0 or (s.from_available == available and s.from_reserve == held)  # overage: both ran dry
    assert s.reserve_after == held - s.from_reserve + s.topup
    assert s.from_available + s.topup <= available
    assert s.reserve_after <= max(target, held)  # topped up to the target, never beyond
    assert s.topup == 0 or s.reserve_after == target or s.from_available + s.topup == available


@pytest.mark.parametrize(("available", "held", "charge", "target", "expected"), [
    (1000, 250, 100, 250, (100, 100, 0, 0, 100, 250)),  # a tick: the reserve pays, then is topped back up
    (50, 250, 400, 250, (300, 250, 50, 100, 0, 0)),  # both run dry: 100 of overage
    (0, 0, 0, 0, (0, 0, 0, 0, 0, 0)),
    (10, 0, 0, 250, (0, 0, 0, 0, 10, 10)),  # a top-up as far as available goes
])
def test_split_examples(available: int, held: int, charge: int, target: int,
                        expected: tuple[int, int, int, int, int, int]) -> None:
    s = split_charge(available, held, charge, target)
    assert (s.charged, s.from_reserve, s.from_available, s.overage, s.topup, s.reserve_after) == expected


def test_a_split_refuses_negative_amounts() -> None:
    with pytest.raises(ValueError):
        split_charge(-1, 0, 0, 0)


@given(cents, cents, cents, cents)
def test_a_charge_plan_moves_exactly_what_its_ledger_row_says(available: int, held: int, charge: int,
                                                              target: int) -> None:
    w = Wallet("u", available, held)
    step = wallet.plan_charge(w, held, charge, target, {"rentalId": "rent_1"})
    assert sum(e.amount for e in step.entries) == step.available_delta + step.reserved_delta
    assert available + step.available_delta >= 0 and held + step.reserved_delta >= 0
    assert [e.type for e in step.entries] == (["rental_charge"] if step.info["split"].charged else [])


def test_plans_refuse_what_the_wallet_cannot_do() -> None:
    w = Wallet("u", 100, 50)
    with pytest.raises(wallet.InsufficientBalance):
        wallet.plan_reserve(w, 101)
    with pytest.raises(wallet.InsufficientBalance):
        wallet.plan_debit(w, 101)
    with pytest.raises(ValueError):
        wallet.plan_release(w, 51)
    with pytest.raises(ValueError):
        wallet.plan_credit(w, 10, "rental_charge")  # not a credit type
    with pytest.raises(ValueError):
        wallet.plan_credit(w, 0, "refund")
    reserve = wallet.plan_reserve(w, 100)
    assert (reserve.available_delta, reserve.reserved_delta, reserve.entries) == (-100, 100, ())
    release = wallet.plan_release(w, 50)
    assert (release.available_delta, release.reserved_delta, release.entries) == (50, -50, ())
