"""Auto-topup: charge the saved card when available drops below the user's threshold
(`spec/decisions.md` "Auto-topup").

`gpurent.wallet` calls `after_debit` after every debit of available that left
it below the threshold kept on the wallet item (`autoTopupThresholdCents`,
present only while auto-topup is on), so the check costs no read. Firing:

1. claim the attempt with one conditional write (at most one per 5 minutes
   per user, counted from the attempt): of many racing debits exactly one wins;
2. one off-session PaymentIntent whose Stripe idempotency key names the user
   and the attempt (a retry of the same attempt cannot charge twice); the
   claim is the durable intent: a timer (and the next debit) resumes an
   attempt whose outcome was not recorded, under the same key;
3. success → an `auto_topup` credit under `deposit_<pi>` (the webhook for the
   same payment replays it); decline or authentication required → auto-topup
   off (`disabledReason`), a `topup_failed` invoice for the amount, an email
   with its pay link. Stripe unreachable: nothing changes; the next debit
   after the cooldown tries again.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from gpurent import clock, notify, timers, wallet
from gpurent.billing import cards, gateway, invoices, topups
from gpurent.errors import ApiError
from gpurent.money import dollars
from gpurent.store import billing as store
from gpurent.store import identity
from gpurent.telemetry import count, logger

COOLDOWN = 300
RESUME_AFTER = 60  # seconds: an attempt with no recorded outcome by then is resumed by its timer
MIN_THRESHOLD, MAX_THRESHOLD = 100, 100_000
MIN_AMOUNT, MAX_AMOUNT = 1000, 500_000


class AutoTopup(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool
    thresholdCents: int | None = None
    topupAmountCents: int | None = None


def public(item: dict[str, Any]) -> dict[str, Any]:
    auto = item.get("autoTopup") or {}
    return {
        "enabled": bool(auto.get("enabled", False)),
        "thresholdCents": int(auto["thresholdCents"]) if auto.get("thresholdCents") is not None else None,
        "topupAmountCents": int(auto["topupAmountCents"]) if auto.get("topupAmountCents") is not None else None,
        # extensions
        "disabledReason": auto.get("disabledReason"),
        "lastAttemptAt": clock.iso(float(item["autoTopupAttemptAt"])) if item.get("autoTopupAttemptAt") else None,
    }


def get(user_id: str) -> dict[str, Any]:
    return public(store.wallet_item(user_id))


def put(user_id: str, body: AutoTopup) -> dict[str, Any]:
    errors: dict[str, str] = {}
    if body.enabled and body.thresholdCents is None:
        errors["thresholdCents"] = "required when enabled"
    if body.enabled and body.topupAmountCents is None:
        errors["topupAmountCents"] = "required when enabled"
    if body.thresholdCents is not None and not MIN_THRESHOLD <= body.thresholdCents <= MAX_THRESHOLD:
        errors["thresholdCents"] = f"must be between {MIN_THRESHOLD} and {MAX_THRESHOLD}"
    if body.topupAmountCents is not None and not MIN_AMOUNT <= body.topupAmountCents <= MAX_AMOUNT:
        errors["topupAmountCents"] = f"must be between {MIN_AMOUNT} and {MAX_AMOUNT}"
    if errors:
        raise ApiError("validation_failed", "; ".join(f"{k} {v}" for k, v in errors.items()), errors)
    item = store.wallet_item(user_id)
    if body.enabled:
        cards.require_enabled()
        if cards.card_of(item) is None:
            raise ApiError("validation_failed", "Auto-topup needs a saved card: add one first",
                           {"card": "a saved card is required"})
    auto = dict(item.get("autoTopup") or {})
    auto["enabled"] = body.enabled
    if body.thresholdCents is not None:
        auto["thresholdCents"] = body.thresholdCents
    if body.topupAmountCents is not None:
        auto["topupAmountCents"] = body.topupAmountCents
    if body.enabled:
        auto["disabledReason"] = None
        store.update_settings(user_id, {"autoTopup": auto, "autoTopupThresholdCents": auto["thresholdCents"]})
    else:
        store.update_settings(user_id, {"autoTopup": auto}, remove=("autoTopupThresholdCents",))
    out = public({**item, "autoTopup": auto})
    if body.enabled:
        after_debit(user_id, wallet.get(user_id).available)  # already below the new threshold: fire now
    return {"enabled": out["enabled"], "thresholdCents": out["thresholdCents"],
            "topupAmountCents": out["topupAmountCents"]}


def after_debit(user_id: str, available: int) -> None:
    """The auto-topup check after a debit: resume an unfinished attempt, or fire a new one
    if below the threshold and not cooling down."""
    item = store.wallet_item(user_id)
    if _pending(item):
        resume(user_id)
        return
    auto = item.get("autoTopup") or {}
    card = cards.card_of(item)
    if not auto.get("enabled") or card is None or available >= int(auto.get("thresholdCents") or 0):
        return
    if not gateway.enabled() or not item.get("stripeCustomerId"):
        return
    now = clock.now()
    attempt = f"{int(now * 1000)}"
    claimed = store.update_settings(
        user_id, {"autoTopupAttemptAt": now, "autoTopupAttempt": attempt,
                  "autoTopupAttemptAmountCents": int(auto["topupAmountCents"]),
                  "autoTopupAttemptPmId": str(card["pmId"])},
        condition="attribute_not_exists(autoTopupAttemptAt) OR autoTopupAttemptAt <= :cool",
        cond_values={":cool": now - COOLDOWN})
    if not claimed:
        return  # another debit fired it (or it fired less than 5 minutes ago)
    # The claim is the durable intent: if this invocation dies from here on, the timer (or the
    # next debit) resumes this very attempt under the same Stripe idempotency key.
    timers.arm(user_id, now + RESUME_AFTER, kind=timers.AUTO_TOPUP)
    fire(user_id)


def _pending(item: dict[str, Any]) -> bool:
    attempt = item.get("autoTopupAttempt")
    return bool(attempt) and item.get("autoTopupAttemptDone") != attempt


def resume(user_id: str) -> None:
    """Finish the user's claimed attempt if it has no recorded outcome (idempotent)."""
    if _pending(store.wallet_item(user_id)):
        fire(user_id)


def fire(user_id: str) -> None:
    """Charge the claimed attempt (same Stripe key every time) and record its outcome."""
    item = store.wallet_item(user_id)
    attempt = str(item["autoTopupAttempt"])
    amount = int(item["autoTopupAttemptAmountCents"])
    count("AutoTopupsFired")
    try:
        payment = gateway.charge_saved_card(
            customer_id=str(item["stripeCustomerId"]), payment_method_id=str(item["autoTopupAttemptPmId"]),
            amount_cents=amount, metadata={"user_id": user_id, "kind": "auto_topup", "attempt": attempt},
            idempotency_key=f"autotopup:{user_id}:{attempt}",
        )
    except gateway.CardDeclined as exc:
        _failed(user_id, attempt, amount, "authentication_required" if isinstance(
            exc, gateway.AuthenticationRequired) else "card_declined", exc.message)
        return
    except gateway.StripeError:
        logger.warning("auto-topup could not reach Stripe; the timer or the next debit retries the attempt",
                       extra={"userId": user_id})
        return
    if payment.status == "succeeded":
        topups.deposit(user_id, payment.payment_intent_id, amount, "auto_topup", payment.charge_id)
    # `processing`: the payment_intent.succeeded webhook credits it under the same key.
    store.update_settings(user_id, {"autoTopupAttemptDone": attempt})


def _failed(user_id: str, attempt: str, amount: int, reason: str, message: str) -> None:
    """Invoice the amount (`topup_failed`), switch auto-topup off, email the pay link — in
    that order, each step idempotent, so a crash between them is finished by the resume."""
    count("AutoTopupsFailed")
    what = "card declined" if reason == "card_declined" else "authentication required"
    record = invoices.new_record(user_id, "topup_failed", amount, f"Auto-topup of {dollars(amount)} ({what})")
    invoices.issue(record, f"autotopup_failed:{user_id}:{attempt}")
    mirrored = invoices.mirror_quietly(record)
    link = mirrored.get("hostedInvoiceUrl") if mirrored else None
    item = store.wallet_item(user_id)
    auto = dict(item.get("autoTopup") or {})
    auto.update({"enabled": False, "disabledReason": reason, "disabledAt": clock.now()})
    store.update_settings(user_id, {"autoTopup": auto, "autoTopupAttemptDone": attempt},
                          remove=("autoTopupThresholdCents",))
    user = identity.get_user(user_id)
    if user is not None:
        notify.send(str(user["email"]), "Your gpurent auto-topup failed",
                    f"We could not charge your card {dollars(amount)} ({what}: {message}).\n"
                    "Auto-topup is now off; switch it back on once the card is fixed.\n\n"
                    + (f"Pay the amount here (no sign-in needed): {link}\n" if link else
                       "The invoice is under Billing → Invoices.\n"))
