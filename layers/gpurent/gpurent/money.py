"""Integer-cent money arithmetic. No float ever touches money."""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, Decimal, InvalidOperation


def round_half_up_div(numerator: int, denominator: int) -> int:
    """round_half_up(numerator / denominator) for non-negative integers, exactly."""
    if numerator < 0 or denominator <= 0:
        raise ValueError("round_half_up_div takes a non-negative numerator and a positive denominator")
    return (2 * numerator + denominator) // (2 * denominator)


def charge_for_seconds(billed_seconds: int, price_per_hour_cents: int) -> int:
    """What `billed_seconds` of a rental at `price_per_hour_cents` costs, in cents."""
    return round_half_up_div(billed_seconds * price_per_hour_cents, 3600)


def whole_seconds(duration: float) -> int:
    """The whole seconds of a running time: its floor (a second is billed once it has been run
    in full), never negative. The one rule for ticks, settlement, limits and the meter."""
    return max(0, math.floor(duration))


def seconds_within_cap(cap_cents: int, price_per_hour_cents: int) -> int:
    """The most seconds whose charge does not exceed `cap_cents` (a per-rental spend cap)."""
    if price_per_hour_cents <= 0:
        raise ValueError("a rate is positive")
    # charge(s) <= cap  <=>  2*s*rate + 3600 < 7200*(cap + 1)
    limit = 7200 * (cap_cents + 1) - 3600
    return max(0, -(-limit // (2 * price_per_hour_cents)) - 1)


def dollars(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}${cents // 100}.{cents % 100:02d}"


def dollars_to_cents_up(amount: float | str | Decimal) -> int:
    """Dollars → whole cents, rounding **up** (never bill below cost), exactly.

    Providers quote dollars; goes through ``Decimal(str(x))`` so a float from JSON is
    taken at its shortest decimal spelling ("0.3569"), not its binary expansion.
    """
    try:
        d = amount if isinstance(amount, Decimal) else Decimal(str(amount).strip())
    except InvalidOperation as e:
        raise ValueError(f"not a price: {amount!r}") from e
    if not d.is_finite() or d < 0:
        raise ValueError(f"not a price: {amount!r}")
    return int((d * 100).to_integral_value(rounding=ROUND_CEILING))
