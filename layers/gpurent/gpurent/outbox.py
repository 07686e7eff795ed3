"""Side effects owed after money moved, done by the timer function, never by the request.

A money operation that owes an email or a Stripe invoice mirror writes it as an
outbox item *in its own transaction* (`wallet.apply(effects=…)`, `store.outbox`),
then arms an `outbox` timer for the user. The timer function drains that
user's outbox (`drain`): each effect is leased (so two drainers do not both
send it), done, then deleted. A failed effect keeps its lease, which doubles as
"not before" for the next try (30 s, doubling up to an hour); after
`MAX_ATTEMPTS` it is dropped and logged. Every metering sweep re-arms the timer
of any user whose effects are overdue (`rearm_overdue`), so a timer that was
never armed (the process died right after the commit) only delays an effect.

So effects are at least once (an email may, rarely, arrive twice: the process
died after sending and before deleting), never lost, and never the reason a
request failed: the request answered when its transaction committed.

Kinds:
- `email` `{subject, body}`: to the user's current address;
- `invoice_mirror` `{invoiceId}`: the Stripe copy of an invoice (pay page, PDF);
- `invoice_email` `{invoiceId, subject, body, linkLine, noLinkLine}`: mirror the
  invoice if it is not yet, then email with its pay link when there is one;
- `exhausted_email` `{since}`: the courtesy email after an empty wallet stopped the
  user's pods (the list is read when the email is written).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpurent import clock, notify, timers
from gpurent.billing import invoices
from gpurent.money import dollars
from gpurent.rentals import views
from gpurent.store import identity
from gpurent.store import invoices as invoice_store
from gpurent.store import outbox as store
from gpurent.store import rentals as rental_store
from gpurent.telemetry import count, logger

MAX_ATTEMPTS = 10
FIRST_RETRY = 30.0
MAX_RETRY = 3600.0
OVERDUE = 30.0  # an effect not done this long after it was written gets its timer re-armed


def kick(user_id: str) -> None:
    """Arm the user's outbox timer now (after a commit that wrote effects). Never raises:
    the money moved already, and the sweep's `rearm_overdue` is the safety net."""
    try:
        timers.arm(user_id, clock.now(), kind=timers.OUTBOX)
    except Exception:
        logger.exception("arming the outbox timer failed; the sweep re-arms it", extra={"userId": user_id})


def add(user_id: str, kind: str, payload: dict[str, Any]) -> None:
    """Owe an effect that no money transaction carries (then kick the drain)."""
    store.put(user_id, kind, payload, clock.now())
    kick(user_id)


def _lease_seconds(attempts: int) -> float:
    return float(min(MAX_RETRY, FIRST_RETRY * 2.0 ** max(0, attempts)))


def drain(user_id: str) -> dict[str, int]:
    """Do the user's pending effects, oldest first."""
    done = failed = 0
    for item in store.for_user(user_id):
        now = clock.now()
        attempts = int(item.get("attempts", 0))
        if not store.lease(item, now, _lease_seconds(attempts)):
            continue  # another drainer has it, or its retry is not due yet
        try:
            run(item)
        except Exception:
            failed += 1
            if attempts + 1 >= MAX_ATTEMPTS:
                logger.exception("an effect failed for the last time; dropped",
                                 extra={"userId": user_id, "kind": item.get("kind"), "attempts": attempts + 1})
                count("OutboxEffectsDropped")
                store.done(item)
            else:
                logger.exception("an effect failed; retried later", extra={"userId": user_id, "kind": item.get("kind")})
                timers.arm(user_id, now + _lease_seconds(attempts), kind=timers.OUTBOX)
            continue
        store.done(item)
        done += 1
    count("OutboxEffectsDone", done)
    return {"effects": done, "failed": failed}


def rearm_overdue() -> int:
    """The safety net (every metering sweep): re-arm the outbox timer of every user with an
    effect overdue (never picked up, or its retry is due). One query a shard when all is well."""
    now = clock.now()
    users: set[str] = set()
    for n in range(store.shards()):
        for item in store.in_shard(n):
            lease = item.get("leaseUntil")
            overdue = float(lease) <= now if lease is not None else float(item["createdAt"]) <= now - OVERDUE
            if overdue:
                users.add(str(item["userId"]))
    for user_id in sorted(users):
        kick(user_id)
    return len(users)


# ---------------------------------------------------------------- the effects

def _email_of(user_id: str) -> str | None:
    user = identity.get_user(user_id)
    return str(user["email"]) if user is not None else None


def _email(user_id: str, p: dict[str, Any]) -> None:
    to = _email_of(user_id)
    if to is not None:
        notify.send(to, str(p["subject"]), str(p["body"]))


def _invoice_mirror(user_id: str, p: dict[str, Any]) -> None:
    inv = invoice_store.get(user_id, str(p["invoiceId"]))
    if inv is not None and inv.status == "open":
        invoices.mirror(inv)


def _invoice_email(user_id: str, p: dict[str, Any]) -> None:
    inv = invoice_store.get(user_id, str(p["invoiceId"]))
    link = None
    if inv is not None:
        mirrored = invoices.mirror_quietly(inv) if inv.status == "open" else inv
        link = mirrored.hosted_invoice_url if mirrored else None
    line = str(p["linkLine"]).replace("{link}", str(link)) if link else str(p["noLinkLine"])
    to = _email_of(user_id)
    if to is not None:
        notify.send(to, str(p["subject"]), str(p["body"]) + line)


def _exhausted_email(user_id: str, p: dict[str, Any]) -> None:
    since = float(p["since"])
    stopped = []
    for status in ("stopping", "stopped"):
        stopped += [r for r in rental_store.list_for_user(user_id, None, 200, status)[0]
                    if r.stop_reason == "insufficient_balance" and (r.stopped_at or 0.0) >= since]
    to = _email_of(user_id)
    if not stopped or to is None:
        return
    lines = "\n".join(f"- {r.id}: charged {dollars(views.metered_cents(r))}" for r in stopped)
    notify.send(to, "Your gpurent pods were stopped: the wallet is empty",
                f"Your wallet ran out of money, so we stopped your running pods:\n{lines}\n\n"
                "Any usage beyond your balance is on an overage invoice (see Billing → Invoices).\n"
                "Top up to launch again.")


KINDS: dict[str, Callable[[str, dict[str, Any]], None]] = {
    "email": _email,
    "invoice_mirror": _invoice_mirror,
    "invoice_email": _invoice_email,
    "exhausted_email": _exhausted_email,
}


def run(item: dict[str, Any]) -> None:
    handler = KINDS.get(str(item.get("kind")))
    if handler is None:
        raise ValueError(f"unknown effect kind {item.get('kind')!r}")
    handler(str(item["userId"]), dict(item.get("payload") or {}))
