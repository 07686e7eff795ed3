"""A rental: one pod's life from launch to settlement.

- `launching`: the reserve and the row, then the provider call (failover, resume, adopt);
- `settlement`: the money of a stop (plan, settle, limits, a failed launch);
- `lifecycle`: moving live rentals on from what providers say (reconcile, health, timers);
- `views`: the answers (public, meter, list) and what a rental cost;
- `instances`: the provider calls they share.

No machine is ever lost:
- the rental row (status `provisioning`, locked price, listing, provider) is
  written in the same transaction that takes the one-hour reserve, *before*
  any provider call;
- our rental id is the instance's label at the provider, and the provider's
  instance id is stored as soon as it is known;
- the reconciler adopts an instance it finds by label (a crash between
  "allocated" and "recorded"), and terminates any labelled instance that has
  no live rental;
- a rental is `stopped` only once the provider confirms termination.

Every status change is a conditional write on the status the actor saw, so two
actors can never both move the same rental.

The names below are the package's API (handlers, metering, tests); monkeypatch a
function in the module that defines it.
"""

from gpurent.records import STATUSES
from gpurent.rentals.launching import ALLOCATION_LEASE, MAX_ATTEMPTS, launch
from gpurent.rentals.lifecycle import (
    ADOPT_GRACE,
    FOLLOW_UP_FOR,
    POLL_EVERY,
    advance,
    mark_running,
    on_timer,
    reconcile,
    refresh_if_provisioning,
)
from gpurent.rentals.settlement import (
    FOLLOW_UP,
    REFUND_WINDOW,
    SHORT_RUN_ALLOWANCE,
    SHORT_RUN_PERIOD,
    Settled,
    Settlement,
    enforce_limit,
    fail,
    limit_deadline,
    plan_settlement,
    settle,
    stop,
)
from gpurent.rentals.views import (
    charged_now,
    get_owned,
    launch_answer,
    list_page,
    meter,
    metered_cents,
    public,
    usage_cents,
)

__all__ = [
    "ADOPT_GRACE",
    "ALLOCATION_LEASE",
    "FOLLOW_UP",
    "FOLLOW_UP_FOR",
    "MAX_ATTEMPTS",
    "POLL_EVERY",
    "REFUND_WINDOW",
    "SHORT_RUN_ALLOWANCE",
    "SHORT_RUN_PERIOD",
    "STATUSES",
    "Settled",
    "Settlement",
    "advance",
    "charged_now",
    "enforce_limit",
    "fail",
    "get_owned",
    "launch",
    "launch_answer",
    "limit_deadline",
    "list_page",
    "mark_running",
    "meter",
    "metered_cents",
    "on_timer",
    "plan_settlement",
    "public",
    "reconcile",
    "refresh_if_provisioning",
    "settle",
    "stop",
    "usage_cents",
]
