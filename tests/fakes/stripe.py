"""A fake of `billing.ports.StripeGateway` (`billing/gateway/`): customers, cards, payments and
invoices in dicts, with Stripe's idempotency (same key → same object) and declines."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from gpurent.billing.gateway import (
    Card,
    CardDeclined,
    CheckoutSession,
    InvalidSignature,
    InvoiceMirror,
    InvoiceNotVoidable,
    Payment,
    PaymentIntent,
    SetupIntent,
    StripeError,
)


class FakeStripeGateway:
    def __init__(self, *, on: bool = True, publishable: str = "pk_test_fake", secret: str = "whsec_fake") -> None:
        self.on = on
        self.publishable = publishable
        self.secret = secret
        self.customers: dict[str, dict[str, Any]] = {}
        self.cards: dict[str, Card] = {}
        self.payments: dict[str, PaymentIntent] = {}
        self.invoices: dict[str, InvoiceMirror] = {}
        self.declining: set[str] = set()  # payment method ids whose charges are declined
        self.calls: list[str] = []
        self._by_key: dict[str, Any] = {}
        self._ids = itertools.count(1)

    def _id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids)}"

    def _once(self, key: str, make: Any) -> Any:
        """Stripe's idempotency: a repeated key answers the first answer."""
        if key not in self._by_key:
            self._by_key[key] = make()
        return self._by_key[key]

    def add_card(self, customer_id: str, brand: str = "visa", last4: str = "4242") -> Card:
        card = Card(self._id("pm"), brand, last4, 12, 2034, customer_id)
        self.cards[card.pm_id] = card
        return card

    # ---------------------------------------------------------------- the port

    def enabled(self) -> bool:
        return self.on

    def publishable_key(self) -> str:
        return self.publishable

    def webhook_secret(self) -> str:
        return self.secret

    def create_customer(self, user_id: str, email: str, idempotency_key: str) -> str:
        self.calls.append("create_customer")

        def make() -> str:
            cid = self._id("cus")
            self.customers[cid] = {"user_id": user_id, "email": email, "default_pm": None}
            return cid

        return str(self._once(idempotency_key, make))

    def create_checkout_session(self, *, customer_id: str | None, user_id: str, amount_cents: int,
                                success_url: str, cancel_url: str, save_card: bool,
                                idempotency_key: str) -> CheckoutSession:
        self.calls.append("create_checkout_session")
        sid = self._id("cs")
        return self._once(idempotency_key, lambda: CheckoutSession(sid, f"https://checkout.fake/{sid}"))  # type: ignore[no-any-return]

    def charge_saved_card(self, *, customer_id: str, payment_method_id: str, amount_cents: int,
                          metadata: dict[str, str], idempotency_key: str) -> Payment:
        self.calls.append("charge_saved_card")

        def make() -> Payment | CardDeclined:
            pi = self._id("pi")
            if payment_method_id in self.declining:
                self.payments[pi] = PaymentIntent(pi, "requires_payment_method", amount_cents, None,
                                                  payment_method_id, False, dict(metadata))
                return CardDeclined("card_declined", "insufficient_funds", "Your card was declined.", pi)
            charge = self._id("ch")
            self.payments[pi] = PaymentIntent(pi, "succeeded", amount_cents, charge, payment_method_id, False,
                                              dict(metadata))
            return Payment(pi, "succeeded", charge, f"https://receipt.fake/{charge}")

        out = self._once(idempotency_key, make)
        if isinstance(out, CardDeclined):
            raise out
        return out  # type: ignore[no-any-return]

    def get_payment_intent(self, pi_id: str) -> PaymentIntent:
        if pi_id not in self.payments:
            raise StripeError(f"No such payment_intent: {pi_id}", code="resource_missing", http_status=404)
        return self.payments[pi_id]

    def create_setup_intent(self, *, customer_id: str, user_id: str) -> SetupIntent:
        seti = self._id("seti")
        return SetupIntent(seti, f"{seti}_secret")

    def get_card(self, payment_method_id: str) -> Card:
        if payment_method_id not in self.cards:
            raise StripeError(f"No such payment_method: {payment_method_id}", code="resource_missing",
                              http_status=404)
        return self.cards[payment_method_id]

    def set_default_payment_method(self, customer_id: str, pm_id: str) -> None:
        self.customers[customer_id]["default_pm"] = pm_id

    def detach_payment_method(self, pm_id: str) -> None:
        self.cards.pop(pm_id, None)  # already detached or unknown is not an error

    def create_invoice(self, *, customer_id: str, amount_cents: int, description: str, metadata: dict[str, str],
                       idempotency_key: str) -> InvoiceMirror:
        self.calls.append("create_invoice")

        def make() -> InvoiceMirror:
            iid = self._id("in")
            inv = InvoiceMirror(iid, "open", f"https://invoice.fake/{iid}", f"https://invoice.fake/{iid}.pdf")
            self.invoices[iid] = inv
            return inv

        return self._once(idempotency_key, make)  # type: ignore[no-any-return]

    def get_invoice(self, invoice_id: str) -> InvoiceMirror:
        return self.invoices[invoice_id]

    def void_invoice(self, invoice_id: str) -> InvoiceMirror:
        inv = self.invoices[invoice_id]
        if inv.status not in ("open", "uncollectible"):
            raise InvoiceNotVoidable(f"invoice {invoice_id} is {inv.status}", http_status=400)
        self.invoices[invoice_id] = InvoiceMirror(inv.id, "void", inv.hosted_invoice_url, inv.invoice_pdf)
        return self.invoices[invoice_id]

    def verify_event(self, payload: bytes, sig_header: str | None) -> dict[str, Any]:
        raise InvalidSignature("the fake gateway verifies no webhooks")


if TYPE_CHECKING:  # mypy checks the fake fits its port
    from gpurent.billing import ports

    _port: ports.StripeGateway = FakeStripeGateway()
