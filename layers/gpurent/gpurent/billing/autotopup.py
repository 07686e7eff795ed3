"""Auto-topup: charge the saved card when available drops below the user's threshold
(`spec/decisions.md` "Auto-topup").

Whether an auto-topup is due is a state of the wallet item, not a transition
(`gpurent.wallet.Wallet.auto_topup_state`: below the threshold, not cooling
down, no attempt pending). Every debit of available, every metering sweep and
every metering timer asks it, and when the answer is "due" (or an attempt is
stuck) they arm a timer (`timers.AUTO_TOPUP`); the timer function runs `run`
here. Stripe and the mailer are only ever called from that timer, never
inside a launch, a stop, a settlement or the sweep. Firing:

1. claim the attempt with one conditional write whose condition *is* the due
   state (at most one per 5 minutes per user, counted from the attempt): of
   many racing timers exactly one wins;
2. one off-session PaymentIntent whose Stripe idempotency key names the user
   and the attempt (a retry of the same attempt cannot charge twice); the
   claim is the durable intent: a timer (and every sweep) resumes an attempt
   whose outcome was not recorded, under the same key;
3. success → an `auto_topup` credit under `deposit_<pi>` (the webhook for the
   same payment replays it); decline, authentication required or any other
   refusal (a detached card, a deleted customer: `payment_failed`) → auto-topup
   off (`disabledReason`), a `topup_failed` invoice for the amount, an email
   with its pay link. Only "Stripe unreachable" (network, 5xx, 429, 409
   idempotency-in-progress: `gateway.StripeUnavailable`) keeps the attempt
   pending; its timer tries again 30 s later.

After an outcome the wallet is metered again at once, so a stop that waited
for the attempt (`metering.meter_wallet`) is decided on the new balance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpurent import clock, timers, wallet
from gpurent.billing import cards, gateway, invoices, topups
from gpurent.errors import ApiError
from gpurent.money import dollars
from gpurent.records import AutoTopupRule, WalletItem
from gpurent.store import billing as store
from gpurent.telemetry import count, logger

if TYPE_CHECKING:
    from gpurent.bodies import AutoTopup  # the request body (`PUT /v1/billing/auto-topup`)

COOLDOWN = wallet.AUTO_TOPUP_COOLDOWN
RESUME_AFTER = wallet.AUTO_TOPUP_RESUME_AFTER  # an attempt with no recorded outcome by then is resumed
RETRY_AFTER = 30  # Stripe unreachable: the attempt's timer tries again this much later
MIN_THRESHOLD, MAX_THRESHOLD = 100, 100_000
MIN_AMOUNT, MAX_AMOUNT = 1000, 500_000


def public(item: WalletItem) -> dict[str, Any]:
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
    auto = (item.get("autoTopup") or AutoTopupRule()).copy()
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
        timers.arm(user_id, clock.now(), kind=timers.AUTO_TOPUP)  # already below the new threshold: fires now
    return {"enabled": out["enabled"], "thresholdCents": out["thresholdCents"],
            "topupAmountCents": out["topupAmountCents"]}


def run(user_id: str) -> str:
    """The auto-topup timer: finish a pending attempt, or claim and fire a due one.
    Returns the state it found (for the timer's log)."""
    item = store.wallet_item(user_id)
    now = clock.now()
    state = wallet.Wallet.from_record(user_id, item or None).auto_topup_state(now)
    if state == wallet.PENDING:
        fire(user_id, item)
    elif state == wallet.DUE and (claimed := claim(user_id, item, now)) is not None:
        fire(user_id, claimed)
    return state


def claim(user_id: str, item: WalletItem, now: float) -> WalletItem | None:
    """Claim a new attempt if the wallet is in the DUE state, with one conditional write
    whose condition is that very state (so racing claimers cannot both win). Returns the
    wallet item as the claim wrote it (None: not claimed)."""
    auto = item.get("autoTopup") or {}
    card = cards.card_of(item)
    if not auto.get("enabled") or card is None or not item.get("stripeCustomerId") or not gateway.enabled():
        return None
    attempt = f"{int(now * 1000)}"
    claimed = store.update_settings_returning(
        user_id, {"autoTopupAttemptAt": now, "autoTopupAttempt": attempt,
                  "autoTopupAttemptAmountCents": int(auto["topupAmountCents"]),
                  "autoTopupAttemptPmId": str(card["pmId"])},
        condition="attribute_exists(autoTopupThresholdCents)"
                  " AND (attribute_not_exists(availableCents) OR availableCents < autoTopupThresholdCents)"
                  " AND (attribute_not_exists(autoTopupAttemptAt) OR autoTopupAttemptAt <= :cool)"
                  " AND (attribute_not_exists(autoTopupAttempt) OR autoTopupAttemptDone = autoTopupAttempt)",
        cond_values={":cool": now - COOLDOWN})
    if claimed is not None:
        # The claim is the durable intent: if this invocation dies from here on, the timer (or the
        # next sweep) resumes this very attempt under the same Stripe idempotency key.
        timers.arm(user_id, now + RESUME_AFTER, kind=timers.AUTO_TOPUP)
    return claimed


def resume(user_id: str) -> None:
    """Finish the user's claimed attempt if it has no recorded outcome (idempotent)."""
    item = store.wallet_item(user_id)
    if wallet.Wallet.from_record(user_id, item or None).auto_topup_pending:
        fire(user_id, item)


def fire(user_id: str, item: WalletItem) -> None:
    """Charge the claimed attempt (same Stripe key every time) and record its outcome.
    `item` is the wallet item read (or written by the claim) a moment ago: the attempt's
    fields change only when an attempt is claimed, which needs this one done first; the
    credit plans on it and re-plans if the wallet has moved since (`wallet.apply`)."""
    attempt = str(item["autoTopupAttempt"])
    amount = int(item["autoTopupAttemptAmountCents"])
    count("AutoTopupsFired")
    try:
        payment = topups.charge_once(
            customer_id=str(item["stripeCustomerId"]), payment_method_id=str(item["autoTopupAttemptPmId"]),
            amount_cents=amount, metadata={"user_id": user_id, "kind": "auto_topup", "attempt": attempt},
            idempotency_key=f"autotopup:{user_id}:{attempt}", first_tried_at=float(item["autoTopupAttemptAt"]),
        )
    except gateway.CardDeclined as exc:
        _failed(user_id, attempt, amount, "authentication_required" if isinstance(
            exc, gateway.AuthenticationRequired) else "card_declined", exc.message)
        return
    except gateway.StripeUnavailable:
        logger.warning("auto-topup could not reach Stripe; its timer retries the attempt",
                       extra={"userId": user_id})
        timers.arm(user_id, clock.now() + RETRY_AFTER, kind=timers.AUTO_TOPUP)
        return
    except gateway.StripeError as exc:
        # A refusal that retrying cannot change (an invalid request, a missing card or customer):
        # the attempt ends here, as a decline does.
        logger.warning("auto-topup refused by Stripe", extra={"userId": user_id, "code": exc.code,
                                                              "httpStatus": exc.http_status})
        _failed(user_id, attempt, amount, "payment_failed", exc.message)
        return
    if payment.status == "succeeded":
        topups.deposit(user_id, payment.payment_intent_id, amount, "auto_topup", payment.charge_id, known=item)
    # `processing`: the payment_intent.succeeded webhook credits it under the same key.
    store.update_settings(user_id, {"autoTopupAttemptDone": attempt})
    timers.arm(user_id, clock.now())  # meter the wallet again now: a stop may have waited for this


def _failed(user_id: str, attempt: str, amount: int, reason: str, message: str) -> None:
    """Invoice the amount (`topup_failed`; its Stripe copy and the email with its pay link are
    outbox effects of the same transaction), then switch auto-topup off — in that order, each
    step idempotent, so a crash between them is finished by the resume."""
    count("AutoTopupsFailed")
    what = {"card_declined": "card declined", "authentication_required": "authentication required"}.get(
        reason, "payment refused")
    record = invoices.new_invoice(user_id, "topup_failed", amount, f"Auto-topup of {dollars(amount)} ({what})")
    email = ("invoice_email", {
        "invoiceId": record.id, "subject": "Your gpurent auto-topup failed",
        "body": f"We could not charge your card {dollars(amount)} ({what}: {message}).\n"
                "Auto-topup is now off; switch it back on once the card is fixed.\n\n",
        "linkLine": "Pay the amount here (no sign-in needed): {link}\n",
        "noLinkLine": "The invoice is under Billing → Invoices.\n"})
    invoices.issue(record, f"autotopup_failed:{user_id}:{attempt}", effects=[email])
    item = store.wallet_item(user_id)
    auto = (item.get("autoTopup") or AutoTopupRule()).copy()
    auto.update({"enabled": False, "disabledReason": reason, "disabledAt": clock.now()})
    store.update_settings(user_id, {"autoTopup": auto, "autoTopupAttemptDone": attempt},
                          remove=("autoTopupThresholdCents",))
    timers.arm(user_id, clock.now())  # meter the wallet again now: a stop may have waited for this
