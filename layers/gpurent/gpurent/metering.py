"""The metering sweep: every running rental charged up to now, one
transaction per wallet per tick.

For each wallet, its running rentals (read from the sparse `ActiveIndex`,
never a Scan) are charged in one `TransactWriteItems` (chunked under the
100-item limit): per rental, `round_half_up(billedSeconds × rate / 3600)` minus
what it was already charged, taken from its reserve, the reserve topped back
up to one hour out of available (`spec/decisions.md` "Money"). Each rental's
`meteredUntil` / `chargedCents` move only inside that transaction, under a
condition on the rental's version, so a sweep killed halfway, two sweeps
overlapping or a retried invocation never charge twice nor skip.

A wallet that cannot pay (available 0 and a reserve that could not cover its
charge) is exhausted: all of its running rentals are stopped with reason
`insufficient_balance`.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from gpurent import clock, notify, rentals, wallet
from gpurent.money import charge_for_seconds, dollars, whole_seconds
from gpurent.store import identity
from gpurent.store import rentals as store
from gpurent.telemetry import count, logger

CHUNK = 45  # rentals per transaction: 2 items each (row update + ledger row) + wallet + marker


def billable_seconds(r: dict[str, Any], now: float) -> int:
    """Seconds run so far, never past the rental's own limits."""
    end = now
    deadline = rentals.limit_deadline(r)
    if deadline is not None:
        end = min(end, deadline[0])
    return whole_seconds(end - float(r["runningAt"]))


def charge_wallet(user_id: str, batch: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """Charge these running rentals of one wallet in one transaction."""
    plans: dict[str, tuple[int, int]] = {}  # rental → (seconds, delta)
    for r in batch:
        seconds = billable_seconds(r, now)
        total = charge_for_seconds(seconds, int(r["pricePerHourCents"]))
        plans[r["id"]] = (seconds, max(0, total - int(r.get("chargedCents", 0))))

    def planner(w: wallet.Wallet) -> list[wallet.Step]:
        steps = []
        cur = w
        for r in batch:
            _, delta = plans[r["id"]]
            step = wallet.plan_charge(cur, int(r.get("reserveCents", 0)), delta, int(r["pricePerHourCents"]),
                                      {"rentalId": r["id"]})
            steps.append(wallet.with_step_info(step, rentalId=r["id"]))
            cur = wallet.Wallet(user_id, cur.available + step.available_delta, cur.reserved + step.reserved_delta)
        return steps

    def extras(w: wallet.Wallet, steps: Any) -> list[Any]:
        items = []
        for r, step in zip(batch, steps, strict=True):
            split = step.info["split"]
            seconds, _ = plans[r["id"]]
            items.append(store.update_item(r["userId"], r["id"], {
                "chargedCents": int(r.get("chargedCents", 0)) + split.charged,
                "reserveCents": split.reserve_after,
                "billedSeconds": seconds,
                "meteredUntil": now,
                "overageCents": int(r.get("overageCents", 0)) + split.overage,
            }, ("running",), int(r["version"])))
        return items

    result = wallet.apply(user_id, f"meter:{user_id}:{uuid.uuid4().hex}", {"op": "meter"}, planner, extras)
    splits = [s["split"] for s in result.steps]  # dicts: ChargeSplit as the operation stored it
    exhausted = result.available == 0 and any(s["overage"] > 0 or s["reserve_after"] == 0 for s in splits)
    return {"charged": sum(int(s["charged"]) for s in splits), "exhausted": exhausted}


def sweep() -> dict[str, int]:
    """One tick over every running rental."""
    now = clock.now()
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in store.live("running"):
        if r.get("runningAt") is not None:
            by_user[str(r["userId"])].append(r)
    report = {"wallets": 0, "rentals": 0, "chargedCents": 0, "conflicts": 0, "exhausted": 0}
    for user_id, rs in by_user.items():
        report["wallets"] += 1
        exhausted = False
        for start in range(0, len(rs), CHUNK):
            batch = rs[start:start + CHUNK]
            try:
                out = charge_wallet(user_id, batch, now)
            except wallet.BusinessConditionFailed:
                # A rental moved on (stopped, or another sweep charged it): re-read and retry once.
                report["conflicts"] += 1
                fresh = [x for x in (store.get(user_id, r["id"]) for r in batch) if x and x["status"] == "running"]
                if not fresh:
                    continue
                try:
                    out = charge_wallet(user_id, fresh, now)
                except wallet.BusinessConditionFailed:
                    continue
            report["rentals"] += len(batch)
            report["chargedCents"] += int(out["charged"])
            exhausted = exhausted or bool(out["exhausted"])
        if exhausted:
            report["exhausted"] += 1
            stop_all(user_id)
    count("RentalsMetered", report["rentals"])
    return report


def stop_all(user_id: str) -> None:
    """The wallet ran dry: stop every running rental of the user (server-initiated), then a courtesy email."""
    stopped = []
    for r in store.live_for_user(user_id, "running"):
        try:
            stopped.append(rentals.stop(user_id, str(r["id"]), reason="insufficient_balance"))
        except Exception:
            logger.exception("empty-wallet stop failed; the next sweep retries", extra={"rentalId": r["id"]})
    if stopped:
        user = identity.get_user(user_id)
        if user is not None:
            lines = "\n".join(f"- {s['id']}: charged {dollars(s['finalChargedCents'])}" for s in stopped)
            notify.send(user["email"], "Your gpurent pods were stopped: the wallet is empty",
                        f"Your wallet ran out of money, so we stopped your running pods:\n{lines}\n\n"
                        "Top up to launch again.")
