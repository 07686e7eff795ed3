"""Prefixed ULID ids: `rent_01J…` (prefix + 26-character ULID).

ULIDs take their time from the injectable clock, so ids sort by the same time
the records carry, in tests and in the local stack's test clock too.
"""

from __future__ import annotations

import re
import secrets

from gpurent import clock

PREFIXES = frozenset({"usr", "rent", "key", "led", "inv", "li", "lst", "ses", "tok", "adj", "aud"})
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ULID_RE = "[0-9A-HJKMNP-TV-Z]{26}"


def _encode(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def ulid_at(ts: float) -> str:
    ms = int(ts * 1000)
    return _encode(ms, 10) + _encode(secrets.randbits(80), 16)


def new_id(prefix: str) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return f"{prefix}_{ulid_at(clock.now())}"


def next_ulid_after(previous: str | None, ts: float) -> str:
    """A ULID at `ts` that sorts strictly after `previous` (monotonic per owner)."""
    candidate = ulid_at(ts)
    if previous is None or candidate > previous:
        return candidate
    value = 0
    for ch in previous:
        value = value * 32 + _CROCKFORD.index(ch)
    return _encode(value + 1, 26)


def is_id(value: object, prefix: str) -> bool:
    return isinstance(value, str) and re.fullmatch(f"{prefix}_{_ULID_RE}", value) is not None
