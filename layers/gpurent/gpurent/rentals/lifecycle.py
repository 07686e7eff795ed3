"""A live rental moved on from what its provider says (the reconciler, GET, follow-up
timers): provisioning → running (or failed), health checks and limit stops of running
rentals, stopping → stopped once the provider confirms termination.

A launch that died is finished from here: an instance found by label is adopted (a crash
between "allocated" and "recorded"). The pass over every live rental, and the orphans it
terminates, are `gpurent.reconciler`'s.
"""

from __future__ import annotations

from gpurent import clock, timers, wallet
from gpurent.providers import registry
from gpurent.providers.base import Instance, ProviderError
from gpurent.records import Rental, RentalChanges
from gpurent.rentals import instances, launching, settlement
from gpurent.rentals.settlement import FOLLOW_UP
from gpurent.store import rentals as store
from gpurent.telemetry import count, logger

ADOPT_GRACE = 300  # a provisioning rental with no instance found by label after this long fails
# A running pod is degraded, not failed, until this many consecutive bad health checks
# spanning at least this long (vast `rebooting`/`unknown`, Lambda `unhealthy`, a RunPod pod
# whose port is gone for a while): one miss never terminates a machine.
HEALTH_BAD_CHECKS = 3
HEALTH_GRACE_SECONDS = 120
POLL_EVERY = 2.0  # GET refreshes a provisioning rental from its provider at most this often
FOLLOW_UP_FOR = 600  # … and again every FOLLOW_UP seconds for this long; then the reconciler's minute is enough


def advance(r: Rental, listed: instances.Listed | None = None) -> Rental:
    """Move one live rental forward from what its provider says (`listed`: what this
    reconcile pass's list of its provider showed; None: ask the provider)."""
    status = r.status
    try:
        if status == "provisioning":
            return _advance_provisioning(r, listed)
        if status == "running":
            return _check_running(r, listed)
        if status == "stopping":
            return _finish_stopping(r, listed)
    except ProviderError as exc:
        logger.warning("provider check failed", extra={"rentalId": r.id, "kind": exc.kind})
    return r


def _advance_provisioning(r: Rental, listed: instances.Listed | None = None) -> Rental:
    now = clock.now()
    inst: Instance | None
    if r.instance_id:
        inst = instances.current(r, listed)
    else:
        if now < r.allocating_until:
            return r  # a launch is calling the provider right now
        if not r.allocation_uncertain:
            return launching.continue_launch(r, listed)  # its launch died before the provider call finished
        inst = instances.find_by_label(r, listed)
        if inst is not None:
            r = launching.adopt(r, inst)
            if r.status != "provisioning":
                return r
        elif now - r.created_at > ADOPT_GRACE:
            return settlement.fail(r, "Provision failed: the provider never created the instance")
        else:
            return r
    if inst is None or inst.status in ("failed", "terminated", "stopped"):
        why = inst.error if inst and inst.error else "the instance did not start"
        found = settlement.fail(r, f"Provision failed: {why}")
        if inst is not None:
            instances.terminate_quietly(found)
        return found
    if inst.status == "running":
        return mark_running(r, inst)
    deadline = registry.provision_deadline(r.provider)
    if now - r.created_at > deadline:
        # Stuck before running (an image that never pulls, a status we do not know):
        # never billed, the reserve back, the machine terminated.
        logger.warning("provisioning deadline passed", extra={"rentalId": r.id, "provider": r.provider,
                                                              "deadlineSeconds": deadline})
        count("ProvisionDeadlines")
        found = settlement.fail(r, f"Provision failed: the instance was not running {deadline // 60} minutes "
                                   "after launch")
        instances.terminate_quietly(found)
        return found
    try:  # still booting: note the check (GET asks the provider at most every POLL_EVERY)
        return store.update(r.user_id, r.id, {"last_checked_at": now}, ("provisioning",))
    except store.StaleRental as exc:
        return exc.current or r  # someone else moved it on meanwhile


def mark_running(r: Rental, inst: Instance) -> Rental:
    now = clock.now()
    changes: RentalChanges = {
        "status": "running", "host": inst.host, "port": inst.ssh_port, "running_at": now,
        "metered_until": now, "last_healthy_at": now, "instance_id": inst.instance_id,
        # The offer served the allocation; the running item (rewritten by every metering tick)
        # does without it. Listing, provider, region, model and price stay on the rental.
        "offer": None,
    }
    if inst.cost_cents_per_hour is not None:
        changes["provider_cost_cents_per_hour"] = inst.cost_cents_per_hour
        if r.offer is not None and inst.cost_cents_per_hour > r.offer.cost_cents_per_hour:
            # The provider bills more than it quoted: our margin pays; the user keeps the locked price.
            logger.warning("provider bills more than its quote", extra={
                "rentalId": r.id, "provider": r.provider, "quotedCents": r.offer.cost_cents_per_hour,
                "billedCents": inst.cost_cents_per_hour})
            count("ProviderPriceDrift")
    try:
        found = store.update(r.user_id, r.id, changes, ("provisioning",), r.version)
    except store.StaleRental as exc:
        return exc.current or r
    # Billing starts: have the wallet looked at now, so a deadline before the next sweep
    # (a short autoStop, a wallet that this rental drains fast) gets its timer.
    timers.arm(r.user_id, now)
    return found


def _check_running(r: Rental, listed: instances.Listed | None = None) -> Rental:
    now = clock.now()
    deadline = settlement.limit_deadline(r)
    if deadline is not None and now >= deadline[0]:
        return settlement.enforce_limit(r)
    inst = instances.current(r, listed)
    if inst is not None and inst.status == "running":
        healthy: RentalChanges = {"last_healthy_at": now}
        if r.bad_checks or r.unhealthy_since is not None:
            logger.info("pod healthy again", extra={"rentalId": r.id, "badChecks": r.bad_checks})
            healthy.update({"bad_checks": 0, "unhealthy_since": None})
        try:
            return store.update(r.user_id, r.id, healthy, ("running",))
        except store.StaleRental as exc:
            return exc.current or r
    lost = inst is None or inst.status == "terminated" or inst.ending
    if not lost:
        # Degraded: not failed until HEALTH_BAD_CHECKS bad checks in a row spanning
        # HEALTH_GRACE_SECONDS; metered as usual meanwhile (see docs/decisions.md).
        assert inst is not None
        since = r.unhealthy_since if r.unhealthy_since is not None else now
        bad = r.bad_checks + 1
        if bad < HEALTH_BAD_CHECKS or now - since < HEALTH_GRACE_SECONDS:
            logger.warning("pod degraded", extra={"rentalId": r.id, "provider": r.provider, "status": inst.status,
                                                  "badChecks": bad, "error": inst.error})
            try:
                return store.update(r.user_id, r.id, {"bad_checks": bad, "unhealthy_since": since}, ("running",))
            except store.StaleRental as exc:
                return exc.current or r
    # The provider lost it, or it stayed bad through the grace period: billed up to the
    # last moment it was known healthy.
    error = f"The provider reported the pod {inst.status if inst else 'gone'}"
    if inst is not None and inst.error:
        error += f": {inst.error}"
    try:
        found = settlement.settle(r, "provider_failure", until=r.last_healthy_at or r.running_at,
                                  to_status="failed", error=error)
    except (settlement.Settled, wallet.BusinessConditionFailed, wallet.IdempotencyMismatch):
        return store.get(r.user_id, r.id) or r
    instances.terminate_quietly(found)
    return found


def _finish_stopping(r: Rental, listed: instances.Listed | None = None) -> Rental:
    adapter = registry.adapter(r.provider)
    inst: Instance | None
    seen = listed.get(r.instance_id) if listed is not None and r.instance_id else None
    if seen is not None and seen.status == "terminated":
        inst = seen  # the list confirms it: no call needed
    elif r.instance_id:  # terminate (again), then confirm: a stopping rental costs two calls
        instances.run(adapter.terminate(r.instance_id))
        inst = instances.run(adapter.get_instance(r.instance_id))
    else:
        inst = instances.find_by_label(r, listed)
        if inst is not None:
            instances.run(adapter.terminate(inst.instance_id))
            inst = instances.run(adapter.get_instance(inst.instance_id))
        elif clock.now() - r.created_at <= ADOPT_GRACE:
            return r  # an allocation may still surface under our label
    if inst is None or inst.status == "terminated":
        try:
            return store.update(r.user_id, r.id, {"status": "stopped", "terminated_at": clock.now()}, ("stopping",))
        except store.StaleRental as exc:
            return exc.current or r
    return r


def on_timer(user_id: str, rental_id: str) -> dict[str, int]:
    """A follow-up timer: move a stopping rental on; until the provider confirms, ask again soon."""
    r = store.get(user_id, rental_id)
    if r is None or r.status != "stopping":
        return {"followed": 0}
    r = advance(r)
    if r.status == "stopping" and clock.now() - (r.stopped_at or 0) < FOLLOW_UP_FOR:
        timers.arm(user_id, clock.now() + FOLLOW_UP, rental_id)
    return {"followed": 1}


def refresh_if_provisioning(r: Rental) -> Rental:
    """GET /v1/rentals/{id}: a provisioning rental is checked with its provider (at most every 2 s)."""
    if r.status != "provisioning":
        return r
    if clock.now() - (r.last_checked_at or 0) < POLL_EVERY:
        return r
    return advance(r)


def reconcile() -> dict[str, int]:
    """One whole reconcile pass in this process: every configured provider's
    (`gpurent.reconciler`; deployed, the schedule hands each provider to a worker)."""
    from gpurent import reconciler  # it moves rentals with this module

    return dict(reconciler.run_all())
