"""Timers: "look at this wallet again at that second".

The metering sweep runs once a minute, but a wallet must stop within 5 s of
its money running out, and `autoStopAfterHours` / `maxTotalCents` stops are
due at exact seconds. So whoever learns of a deadline that falls before the
next sweep (the sweep itself, a rental turning `running`, a debit) arms a
timer for that second, and the timer function meters that wallet then
(`gpurent.metering.on_timer`). A timer carries no authority: it only says
"look now"; the metering code decides from the stored state, so a duplicate,
early or stale timer is harmless.

In AWS a timer is an SQS message with `DelaySeconds` (`store.timers`). Without
a queue (tests, the local stack) timers wait in this process, and whoever owns
the clock fires them: `due(now)` pops those whose moment has come, in order.
"""

from __future__ import annotations

import heapq
import math
import threading
from dataclasses import dataclass, field

from gpurent import clock
from gpurent.config import settings
from gpurent.telemetry import count

AUTO_TOPUP = "auto_topup"  # run the auto-topup: finish a pending attempt, or claim and fire a due one
OUTBOX = "outbox"  # do the user's pending side effects (emails, Stripe mirrors): `gpurent.outbox`
WINDOW = 90.0  # arm deadlines within this many seconds: the next sweep (60 s) re-arms the later ones


@dataclass(order=True, frozen=True)
class Timer:
    due: float
    user_id: str = field(compare=True)
    rental_id: str = ""  # set: follow one rental (a stop waiting for the provider); unset: meter the wallet
    kind: str = ""  # AUTO_TOPUP or OUTBOX (unset: meter the wallet, or follow the rental)

    def body(self) -> dict[str, object]:
        out: dict[str, object] = {"userId": self.user_id, "due": self.due}
        if self.rental_id:
            out["rentalId"] = self.rental_id
        if self.kind:
            out["kind"] = self.kind
        return out


_lock = threading.Lock()
_pending: list[Timer] = []
_armed: set[tuple[str, str, str, int]] = set()  # (user, second) already pending: the sweep re-arms each minute


def arm(user_id: str, due: float, rental_id: str = "", kind: str = "") -> None:
    """Have `user_id`'s wallet metered (or, with `rental_id`, that rental followed up) at
    `due` (epoch seconds; now or later)."""
    now = clock.now()
    timer = Timer(max(due, now), user_id, rental_id, kind)
    queue_url = settings().timer_queue_url
    count("TimersArmed")
    if queue_url:
        from gpurent.store import timers as store

        store.send(queue_url, timer.body(), math.ceil(timer.due - now))
        return
    key = (user_id, rental_id, kind, int(timer.due))
    with _lock:
        if key not in _armed:
            _armed.add(key)
            heapq.heappush(_pending, timer)


def due(now: float) -> list[Timer]:
    """Pop the in-process timers whose moment has come, earliest first."""
    out = []
    with _lock:
        while _pending and _pending[0].due <= now:
            timer = heapq.heappop(_pending)
            _armed.discard((timer.user_id, timer.rental_id, timer.kind, int(timer.due)))
            out.append(timer)
    return out


def next_due() -> float | None:
    with _lock:
        return _pending[0].due if _pending else None


def pending_count() -> int:
    with _lock:
        return len(_pending)


def clear() -> None:
    with _lock:
        _pending.clear()
        _armed.clear()
