"""What admins do (users whose email is in ADMIN_EMAILS): every act audited in
the same transaction as its effect."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from gpurent import auth, clock, ids, text, timers, wallet
from gpurent.errors import ApiError
from gpurent.ledger import entry_public
from gpurent.money import dollars
from gpurent.records import LedgerRefs
from gpurent.store import identity
from gpurent.store import money as store
from gpurent.telemetry import logger

if TYPE_CHECKING:
    from gpurent.bodies import Adjustment, ManualInvoice  # the request bodies (`gpurent.bodies`)


def audit_row(admin_id: str, action: str, target_user: str, details: dict[str, Any]) -> store.TransactItem:
    now = clock.now()
    month = clock.iso(now)[:7]
    return store.money_put(
        {
            "pk": f"AUDIT#{month}",
            "sk": ids.new_id("aud"),
            "adminId": admin_id,
            "action": action,
            "userId": target_user,
            "createdAt": now,
            **details,
        }
    )


def resolve_user(user_id: str | None, email: str | None) -> dict[str, Any]:
    if (user_id is None) == (email is None):
        raise ApiError("validation_failed", "Give exactly one of userId or email",
                       {"userId": "give exactly one of userId or email"})
    if user_id is not None:
        if not ids.is_id(user_id, "usr"):
            raise ApiError("user_not_found", "No such user")
        found = identity.get_user(user_id)
    else:
        uid = identity.get_user_id_by_email(auth.normalise_email(email))
        found = identity.get_user(uid) if uid else None
    if found is None:
        raise ApiError("user_not_found", "No such user")
    return found


def adjust(admin_id: str, body: Adjustment, idempotency_key: str | None) -> dict[str, Any]:
    if body.amountCents == 0:
        raise ApiError("validation_failed", "amountCents must not be 0", {"amountCents": "must not be 0"})
    reason = body.reason.strip()
    if not reason or not text.is_printable(reason):
        raise ApiError("validation_failed", "reason must be printable text", {"reason": "must be printable text"})
    target = resolve_user(body.userId, body.email)
    key = f"adjust:{admin_id}:{idempotency_key}" if idempotency_key else f"adjust:{ids.new_id('adj')}"
    refs: LedgerRefs = {"description": reason, "adminId": admin_id}
    verb = "added to" if body.amountCents > 0 else "taken from"

    def email(w: wallet.Wallet, steps: Any) -> list[wallet.Effect]:
        return [("email", {"subject": "An adjustment to your gpurent balance",
                           "body": f"{dollars(abs(body.amountCents))} was {verb} your gpurent wallet.\n\n"
                                   f"Reason: {reason}\n\n"
                                   f"Your balance is now {dollars(wallet.total_after(w, steps))}."})]

    result = wallet.adjust(
        target["id"], body.amountCents, key, refs,
        extras=lambda w, steps: [audit_row(admin_id, "adjustment", target["id"],
                                           {"amountCents": body.amountCents, "reason": reason, "opKey": key})],
        effects=email,
    )
    # The money moved: nothing below may fail the request (the email is an outbox effect).
    if not result.replayed and body.amountCents < 0:
        try:
            timers.arm(target["id"], clock.now())  # less money: running pods may now run dry sooner
        except Exception:
            logger.exception("arming the metering timer failed; the next sweep meters the wallet")
    return {
        "entry": entry_public(result.entries[0]),
        "userId": target["id"],
        "availableCents": result.available,
        "reservedCents": result.reserved,
        "totalCents": result.total,
    }


# ---------------------------------------------------------------- audit list

AUDIT_DETAILS = ("amountCents", "reason", "invoiceId")


def audit_list(admin_id: str, month: str | None, raw_cursor: str | None, page_size: int) -> dict[str, Any]:
    """What admins did in one month (default: this one), newest first, with the emails of
    the admin and the user each act concerned (admin-only, like the rest of this module)."""
    from gpurent import cursor

    month = month or clock.iso(clock.now())[:7]
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}", month) or not 1 <= int(month[5:]) <= 12:
        raise ApiError("validation_failed", "month must look like 2026-01", {"month": "must look like 2026-01"})
    after = None
    if raw_cursor:
        after = str(cursor.decode("audit", f"{admin_id}:{month}", raw_cursor).get("after") or "") or None
    rows, more = store.query_audit(month, after, page_size)
    emails: dict[str, str | None] = {}

    def email(user_id: str) -> str | None:
        if user_id not in emails:
            found = identity.get_user(user_id) if user_id else None
            emails[user_id] = str(found["email"]) if found else None
        return emails[user_id]

    entries = [{
        "id": r["sk"],
        "action": r["action"],
        "createdAt": clock.iso(float(r["createdAt"])),
        "adminId": r["adminId"],
        "adminEmail": email(str(r["adminId"])),
        "userId": r["userId"],
        "userEmail": email(str(r["userId"])),
        **{k: r.get(k) for k in AUDIT_DETAILS},
    } for r in rows]
    next_cursor = cursor.encode("audit", f"{admin_id}:{month}", {"after": rows[-1]["sk"]}) if more and rows else None
    return {"month": month, "entries": entries, "nextCursor": next_cursor}


# ---------------------------------------------------------------- invoices

def manual_invoice(admin_id: str, body: ManualInvoice, idempotency_key: str | None) -> dict[str, Any]:
    from gpurent.billing import invoices

    description = body.description.strip()
    if not description or not text.is_printable(description):
        raise ApiError("validation_failed", "description must be printable text",
                       {"description": "must be printable text"})
    target = resolve_user(body.userId, body.email)
    inv = invoices.new_invoice(target["id"], "manual", body.amountCents, description,
                               credits_wallet=body.creditsWallet)
    key = f"manual_invoice:{admin_id}:{idempotency_key}" if idempotency_key else f"manual_invoice:{inv.id}"
    audit = audit_row(admin_id, "invoice", target["id"], {"invoiceId": inv.id, "amountCents": body.amountCents,
                                                          "opKey": key})
    email = ("invoice_email", {
        "invoiceId": inv.id, "subject": "A new gpurent invoice",
        "body": f"An invoice of {dollars(body.amountCents)} was issued to you: {description}\n\n",
        "linkLine": "Pay it here: {link}\n", "noLinkLine": "It is under Billing → Invoices.\n"})
    inv = invoices.issue(inv, key, [audit], effects=[email])  # the email (with the pay link): an outbox effect
    # the Stripe copy now if Stripe answers (never raises; the effect retries)
    return invoices.public(invoices.mirror_quietly(inv) or inv)


def void_invoice(admin_id: str, invoice_id: str) -> dict[str, Any]:
    """Best-effort void at Stripe (only an open Stripe invoice can be voided), then here, audited."""
    from gpurent.billing import gateway, invoices
    from gpurent.store import invoices as invoice_store

    owner = invoice_store.owner_of(invoice_id) if ids.is_id(invoice_id, "inv") else None
    if owner is None:
        raise ApiError("invoice_not_found", "No invoice with that id")
    inv = invoices.get_owned(owner, invoice_id)
    if inv.status == "void":
        return {"ok": True}
    if inv.status not in ("open", "draft"):
        raise ApiError("conflict", f"The invoice is {inv.status}; only an open invoice can be voided")
    if inv.stripe_invoice_id and gateway.enabled():
        try:
            gateway.void_invoice(inv.stripe_invoice_id)
        except gateway.InvoiceNotVoidable:
            if gateway.get_invoice(inv.stripe_invoice_id).status == "paid":
                raise ApiError("conflict", "The invoice was paid at Stripe; refund instead of voiding") from None
    audit = audit_row(admin_id, "invoice_void", owner, {"invoiceId": invoice_id})
    invoices.close(owner, invoice_id, "void", extras=[audit])
    return {"ok": True}
