"""Refunds and disputes of top-ups, made at Stripe, reversed in the wallet (`docs/decisions.md`
"Refunds and disputes").

- `charge.refunded`: the charge's `amount_refunded` is cumulative, so the reversal is
  what it says minus what this charge already had reversed (`REVERSAL#<charge>` keeps
  that, written in the same transaction): a redelivered, repeated or late (smaller)
  event reverses nothing more. Ledger type `topup_refund` (−).
- `charge.dispute.created`: the disputed amount is reversed once per dispute
  (`DISPUTE#<dp>`). Ledger type `dispute` (−).
- `charge.dispute.closed`: `won` gives back what the dispute took from the wallet
  (`dispute_won`, +) and voids its invoice (or, if that was paid meanwhile, gives its
  amount back too); `lost` keeps the reversal (and makes it, if the dispute's
  `created` event never came).

A reversal takes what it can from *available* (never the reserve of a running pod, never
below zero); the rest becomes a `manual` invoice (paying it clears the debt, it does not
credit the wallet). Only top-ups are reversed: a charge whose PaymentIntent does not carry
our `user_id` (an invoice's payment) is acknowledged and left to an admin. A top-up not yet
credited when its refund or dispute arrives is credited first (it did succeed), so the
order of Stripe's events never matters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpurent import wallet
from gpurent.billing import gateway, invoices, topups
from gpurent.money import dollars
from gpurent.records import Invoice, LedgerRefs
from gpurent.store import billing as store
from gpurent.store import identity
from gpurent.store.money import TransactItem
from gpurent.telemetry import count, logger


def _top_up_of(pi_id: str | None) -> tuple[str, gateway.PaymentIntent] | None:
    """(user, PaymentIntent) when the PaymentIntent is one of our users' top-ups, credited (now,
    if it was not yet); None when it is not ours."""
    if not pi_id:
        return None
    try:
        pi = gateway.get_payment_intent(pi_id)
    except gateway.StripeError as exc:
        if exc.http_status == 404 and not isinstance(exc, gateway.StripeUnavailable):
            return None  # not a payment of this account
        raise
    user_id = pi.metadata.get("user_id", "")
    if not user_id or identity.get_user(user_id) is None or pi.status != "succeeded":
        return None
    entry_type = "auto_topup" if pi.metadata.get("kind") == "auto_topup" else "stripe_topup"
    topups.deposit(user_id, pi.id, pi.amount, entry_type, pi.charge_id)  # replays when already credited
    return user_id, pi


Records = Callable[[int, "str | None"], list[TransactItem]]


def _reverse(user_id: str, op_key: str, amount: int, entry_type: str, refs: LedgerRefs, description: str,
             records: Records) -> tuple[int, str | None]:
    """Take `amount` back: from available as far as it goes, the rest as a `manual` invoice, in
    one transaction with `records(taken, invoice id)` (the event marker, the charge's or the
    dispute's own record). Returns (taken from the wallet, invoice id or None)."""
    invoice: list[Invoice] = []  # the invoice of what the wallet could not cover (at most one)
    taken: list[int] = []

    def planner(w: wallet.Wallet) -> list[wallet.Step]:
        take = min(amount, w.available)
        owed = amount - take
        taken[:] = [take]
        steps: list[wallet.Step] = []
        if take:
            entry = wallet.Entry(entry_type, -take, {**refs, "description": description})
            steps.append(wallet.Step(-take, 0, (entry,)))
        invoice.clear()
        if owed:
            invoice.append(invoices.new_invoice(user_id, "manual", owed,
                                                f"{description}: {dollars(owed)} beyond the wallet balance"))
            steps.append(invoices.plan_open(invoice[0]))
        return steps

    def items(w: wallet.Wallet, steps: Any) -> list[TransactItem]:
        return [*records(taken[0], invoice[0].id if invoice else None),
                *(invoices.open_items(invoice[0]) if invoice else [])]

    def effects(w: wallet.Wallet, steps: Any) -> list[wallet.Effect]:
        out: list[wallet.Effect] = [("email", {
            "subject": f"{description} of {dollars(amount)}",
            "body": f"{description}: {dollars(amount)} was taken back from your gpurent wallet"
                    + (f" ({dollars(taken[0])} from the balance)" if invoice else "") + ".\n"
                    + (f"The remaining {dollars(invoice[0].amount_cents)} is on an invoice "
                       "(Billing → Invoices).\n" if invoice else "")})]
        if invoice:
            out.append(("invoice_mirror", {"invoiceId": invoice[0].id}))
        return out

    result = wallet.apply(user_id, op_key, {"op": entry_type, "amount": amount, "refs": refs}, planner, items,
                          effects=effects)
    if result.replayed:
        step = next((s for s in result.steps if s.get("invoiceId")), None)
        took = -sum(int(e["amountCents"]) for e in result.entries)
        return took, str(step["invoiceId"]) if step else None
    count("TopupReversals")
    return taken[0], invoice[0].id if invoice else None


# ---------------------------------------------------------------- charge.refunded

def charge_refunded(mark: Any, charge: dict[str, Any]) -> bool:
    """Returns True when the event changed nothing (a duplicate in effect)."""
    found = _top_up_of(charge.get("payment_intent") if isinstance(charge.get("payment_intent"), str) else None)
    if found is None:
        logger.warning("a refund of a charge that is not a top-up: left to an admin",
                       extra={"chargeId": charge.get("id")})
        return not mark([])
    user_id, pi = found
    charge_id = str(charge["id"])
    target = min(int(charge.get("amount_refunded") or 0), pi.amount)
    for _ in range(5):
        record = store.get_reversal(charge_id) or {}
        done = int(record.get("reversedCents", 0))
        if target <= done:
            return not mark([])  # nothing more than what was already reversed
        def records(taken: int, invoice_id: str | None, done: int = done) -> list[TransactItem]:
            return [store.reversal_item(charge_id, user_id, done, target), mark.item()]

        try:
            _reverse(user_id, f"topup_refund_{charge_id}_{target}", target - done, "topup_refund",
                     {"stripeChargeId": charge_id, "paymentIntentId": pi.id}, f"Top-up {charge_id} refunded at Stripe",
                     records)
        except wallet.BusinessConditionFailed:
            continue  # another event of this charge moved it on: look again
        return False
    raise RuntimeError(f"charge {charge_id}: refund events kept racing")


# ---------------------------------------------------------------- disputes

def _dispute_top_up(dispute: dict[str, Any]) -> tuple[str, gateway.PaymentIntent] | None:
    pi_id = dispute.get("payment_intent")
    if not isinstance(pi_id, str) and dispute.get("charge"):
        try:
            pi_id = gateway.payment_intent_of_charge(str(dispute["charge"]))
        except gateway.StripeError as exc:
            if exc.http_status == 404 and not isinstance(exc, gateway.StripeUnavailable):
                return None  # not a charge of this account
            raise
    return _top_up_of(pi_id if isinstance(pi_id, str) else None)


def _withdraw(user_id: str, dispute: dict[str, Any], pi: gateway.PaymentIntent, status: str,
              extra: list[TransactItem]) -> None:
    """Reverse the disputed amount, the dispute's record (what it took, its invoice) written with it."""
    dp = str(dispute["id"])
    amount = min(int(dispute.get("amount") or pi.amount), pi.amount)
    charge_id = str(dispute.get("charge") or pi.charge_id or "")
    _reverse(user_id, f"dispute_{dp}", amount, "dispute", {"stripeChargeId": charge_id, "paymentIntentId": pi.id},
             f"Top-up {charge_id} disputed at your bank",
             lambda taken, invoice_id: [store.new_dispute_item(dp, user_id, charge_id, status, taken, invoice_id),
                                        *extra])


def dispute_created(mark: Any, dispute: dict[str, Any]) -> bool:
    if store.get_dispute(str(dispute["id"])) is not None:
        return not mark([])  # handled already (or closed first)
    found = _dispute_top_up(dispute)
    if found is None:
        logger.warning("a dispute of a charge that is not a top-up: left to an admin",
                       extra={"disputeId": dispute.get("id")})
        return not mark([])
    user_id, pi = found
    try:
        _withdraw(user_id, dispute, pi, "open", [mark.item()])
    except wallet.BusinessConditionFailed:
        return not mark([])  # the dispute's record was written meanwhile
    return False


def dispute_closed(mark: Any, dispute: dict[str, Any]) -> bool:
    dp, status = str(dispute["id"]), str(dispute.get("status") or "")
    record = store.get_dispute(dp)
    if record is None:
        found = _dispute_top_up(dispute)
        if found is None:
            return not mark([])
        user_id, pi = found
        if status == "lost":  # its `created` never came: the funds were withdrawn all the same
            _withdraw(user_id, dispute, pi, "lost", [])
        else:  # won (or warning_closed) before we saw it open: nothing was reversed, nothing to restore
            store.put_dispute(dp, user_id, str(dispute.get("charge") or ""), status)
        return not mark([])
    if record.get("status") not in ("open",):
        return not mark([])  # closed already
    user_id = str(record["userId"])
    if status != "won":
        store.set_dispute_status(dp, "open", status)
        return not mark([])
    give_back = int(record.get("debitedCents", 0))
    invoice_id = record.get("invoiceId")
    if invoice_id:
        from gpurent.store import invoices as invoice_store

        inv = invoice_store.get(user_id, str(invoice_id))
        if inv is not None and inv.status == "paid":
            give_back += inv.amount_cents
        elif inv is not None and inv.status in ("open", "draft"):
            invoices.close(user_id, str(invoice_id), "void")
    if give_back:
        wallet.apply(user_id, f"dispute_won_{dp}", {"op": "dispute_won", "dispute": dp, "amount": give_back},
                     lambda w: [wallet.plan_credit(w, give_back, "dispute_won",
                                                   {"stripeChargeId": record.get("chargeId"),
                                                    "description": "Dispute won: top-up restored"})],
                     lambda w, steps: [store.dispute_status_item(dp, "open", "won")])
    else:
        store.set_dispute_status(dp, "open", "won")
    mark([])
    return False
