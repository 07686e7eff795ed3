"""How long an optimistic money write keeps trying when concurrent writers beat it.

A money operation re-plans from a fresh read whenever another writer changed
the wallet first (`gpurent.wallet.apply`). Who is waiting decides how long it
may keep trying:

- a person's request (`interactive()`, set by the API edge for the whole
  request) gives up after `REQUEST.attempts` and answers 503
  `service_unavailable` with `Retry-After` (nothing was written);
- everyone else (metering sweeps and timers, stops and top-ups run by the
  timer function, webhooks) is background work that must not lose to its
  peers: `BACKGROUND` allows far more attempts.

The pauses are "decorrelated jitter" (each pause is random between the base and
three times the previous one, capped), which spreads racing writers out instead
of having them collide again in lockstep; and each pause is scaled by how long
the lost attempt itself took, so a slow (loaded) database gets proportionally
longer pauses rather than more collisions.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

_interactive: ContextVar[bool] = ContextVar("gpurent_interactive", default=False)


@dataclass(frozen=True)
class Backoff:
    attempts: int
    base: float  # seconds: the shortest pause
    cap: float  # seconds: the longest pause

    def next_pause(self, previous: float, attempt_seconds: float, rng: random.Random | None = None) -> float:
        """The pause before the next attempt: decorrelated jitter whose floor is the longer of
        `base` and how long the lost attempt took (`previous` 0.0 before the first retry)."""
        floor = min(self.cap, max(self.base, attempt_seconds))
        return min(self.cap, (rng or random).uniform(floor, max(floor, previous * 3)))


REQUEST = Backoff(attempts=16, base=0.005, cap=0.25)
BACKGROUND = Backoff(attempts=120, base=0.01, cap=1.0)
RETRY_AFTER_SECONDS = 1  # what a refused request is told to wait


@contextmanager
def interactive() -> Iterator[None]:
    """Mark the enclosed work as a person's request (bounded retries, then 503)."""
    token = _interactive.set(True)
    try:
        yield
    finally:
        _interactive.reset(token)


def policy() -> Backoff:
    return REQUEST if _interactive.get() else BACKGROUND
