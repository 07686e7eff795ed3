"""Money arithmetic: exact integer rounding, the rolling reserve split, the spend cap."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from hypothesis import given
from hypothesis import strategies as st

from gpurent.money import charge_for_seconds, round_half_up_div, seconds_within_cap
from gpurent.wallet import split_charge


@given(st.integers(0, 10**9), st.integers(1, 10**6))
def test_round_half_up_matches_decimal(n: int, d: int) -> None:
    expected = int((Decimal(n) / Decimal(d)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert round_half_up_div(n, d) == expected


def test_documented_examples() -> None:
    assert charge_for_seconds(4827, 280) == 375  # the meter sample: 4827 s at $2.80/h
    assert charge_for_seconds(3600, 65) == 65
    assert charge_for_seconds(0, 65) == 0


@given(st.integers(1, 100_000), st.integers(1, 20_000))
def test_cap_is_the_last_second_within_it(cap: int, rate: int) -> None:
    s = seconds_within_cap(cap, rate)
    assert charge_for_seconds(s, rate) <= cap
    assert charge_for_seconds(s + 1, rate) > cap


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_split_charge_conserves_money(available: int, reserve: int, charge: int, target: int) -> None:
    s = split_charge(available, reserve, charge, target)
    assert s.charged + s.overage == charge
    assert s.from_reserve + s.from_available == s.charged
    assert s.from_reserve <= reserve and s.from_available + s.topup <= available
    assert s.reserve_after == reserve - s.from_reserve + s.topup
    assert s.overage == 0 or (s.from_reserve == reserve and s.from_available == available)
    assert s.reserve_after <= max(target, reserve - s.from_reserve)


def test_whole_seconds_are_the_floor() -> None:
    """One rule for every billed second: a second counts once it has been run in full."""
    from gpurent.money import whole_seconds

    assert [whole_seconds(x) for x in (0.4, 0.5, 0.999, 1.0, 1.5, 2.5, 59.5, 59.99, 60.0, -3.0)] == [
        0, 0, 0, 1, 1, 2, 59, 59, 60, 0]
