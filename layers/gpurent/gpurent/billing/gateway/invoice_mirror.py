"""The Stripe mirror of an invoice: a one-off Stripe Invoice for an amount billed beyond the
wallet (sent, due in 7 days), read back for its status and receipt, voided when forgiven."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpurent.billing.gateway import client
from gpurent.billing.gateway.client import CURRENCY, InvoiceNotVoidable, StripeError

INVOICE_DAYS_UNTIL_DUE = 7


@dataclass(frozen=True)
class InvoiceMirror:
    id: str
    status: str
    hosted_invoice_url: str | None
    invoice_pdf: str | None
    receipt_url: str | None = None


def invoice_from_object(inv: Mapping[str, Any], receipt_url: str | None = None) -> InvoiceMirror:
    hosted = inv.get("hosted_invoice_url")
    pdf = inv.get("invoice_pdf")
    return InvoiceMirror(
        id=str(inv.get("id") or ""),
        status=str(inv.get("status") or "draft"),
        hosted_invoice_url=str(hosted) if hosted else None,
        invoice_pdf=str(pdf) if pdf else None,
        receipt_url=receipt_url,
    )


def paid_payment_intent_id(inv: Mapping[str, Any]) -> str | None:
    """The PaymentIntent that paid the invoice, from its (expanded) `payments` list."""
    payments = inv.get("payments")
    data = payments.get("data") if isinstance(payments, Mapping) else None
    for p in data if isinstance(data, list) else []:
        if not isinstance(p, Mapping) or p.get("status") != "paid":
            continue
        payment = p.get("payment")
        if isinstance(payment, Mapping):
            pi = client.id_of(payment.get("payment_intent"))
            if pi:
                return pi
    return None


def create_invoice(*, customer_id: str, amount_cents: int, description: str, metadata: dict[str, str],
                   idempotency_key: str) -> InvoiceMirror:
    """A one-off Stripe Invoice for `amount_cents` USD (send_invoice, due in 7 days), finalized.

    Draft invoice, then its invoice item, then finalize; each step has its own
    idempotency key derived from `idempotency_key`, so a retry resumes."""
    api = client.stripe_client()
    draft = client.call(lambda: api.v1.invoices.create(
        {
            "customer": customer_id,
            "collection_method": "send_invoice",
            "days_until_due": INVOICE_DAYS_UNTIL_DUE,
            "currency": CURRENCY,
            "description": description,
            "metadata": dict(metadata),
            "pending_invoice_items_behavior": "exclude",
        },
        {"idempotency_key": f"{idempotency_key}:invoice"},
    ))
    invoice_id = str(draft.id)
    client.call(lambda: api.v1.invoice_items.create(
        {
            "customer": customer_id,
            "invoice": invoice_id,
            "amount": amount_cents,
            "currency": CURRENCY,
            "description": description,
            "metadata": dict(metadata),
        },
        {"idempotency_key": f"{idempotency_key}:item"},
    ))
    final = client.call(lambda: api.v1.invoices.finalize_invoice(
        invoice_id, None, {"idempotency_key": f"{idempotency_key}:finalize"}))
    return invoice_from_object(client.as_dict(final))


def get_invoice(invoice_id: str) -> InvoiceMirror:
    """The invoice as Stripe has it now; `receipt_url` (of the paying charge) when paid, else None."""
    api = client.stripe_client()
    inv = client.as_dict(client.call(lambda: api.v1.invoices.retrieve(invoice_id, {"expand": ["payments"]})))
    receipt: str | None = None
    if inv.get("status") == "paid":
        pi_id = paid_payment_intent_id(inv)
        if pi_id:
            pi = client.as_dict(client.call(
                lambda: api.v1.payment_intents.retrieve(pi_id, {"expand": ["latest_charge"]})))
            charge = pi.get("latest_charge")
            if isinstance(charge, Mapping) and charge.get("receipt_url"):
                receipt = str(charge["receipt_url"])
    return invoice_from_object(inv, receipt)


def void_invoice(invoice_id: str) -> InvoiceMirror:
    """Void an open invoice. InvoiceNotVoidable when Stripe refuses (it is paid, void, or a draft)."""
    import stripe

    try:
        inv = client.call(lambda: client.stripe_client().v1.invoices.void_invoice(invoice_id))
    except StripeError as exc:
        cause = exc.__cause__
        if isinstance(cause, stripe.InvalidRequestError) and exc.http_status == 400:
            raise InvoiceNotVoidable(exc.message, code=exc.code, http_status=exc.http_status) from cause
        raise
    return invoice_from_object(client.as_dict(inv))
