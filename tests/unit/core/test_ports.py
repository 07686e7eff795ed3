"""The ports and their fakes: every fake has every member of its port with the adapter's
parameters (mypy checks the adapters in the layer; this keeps the fakes honest too), and the
Stripe fake behaves like Stripe where billing relies on it."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from gpurent import ports
from gpurent.billing import gateway, invoices
from gpurent.billing import ports as billing_ports
from gpurent.store import identity as real_identity
from gpurent.store import money as real_money
from gpurent.store import outbox as real_outbox
from gpurent.store import rental_items
from gpurent.store import rentals as real_rentals
from tests.fakes.identity import FakeUsers
from tests.fakes.money import FakeMoneyStore
from tests.fakes.outbox import FakeOutboxStore
from tests.fakes.rentals import FakeRentalStore
from tests.fakes.stripe import FakeStripeGateway
from tests.fakes.world import FakeWorld

PAIRS = [
    (ports.RentalStore, real_rentals, FakeRentalStore()),
    (ports.MoneyStore, real_money, FakeMoneyStore()),
    (ports.OutboxStore, real_outbox, FakeOutboxStore(FakeMoneyStore())),
    (billing_ports.StripeGateway, gateway, FakeStripeGateway()),
    (ports.UserDirectory, real_identity, FakeUsers()),
]


def _members(port: type) -> list[str]:
    return [n for n, v in vars(port).items() if callable(v) and not n.startswith("_")]


@pytest.mark.parametrize(("port", "adapter", "fake"), PAIRS, ids=lambda x: getattr(x, "__name__", ""))
def test_adapter_and_fake_have_every_member_of_the_port(port: type, adapter: Any, fake: Any) -> None:
    for name in _members(port):
        want = [p for p in inspect.signature(getattr(port, name)).parameters if p != "self"]
        assert [p for p in inspect.signature(getattr(adapter, name)).parameters] == want, (adapter, name)
        assert [p for p in inspect.signature(getattr(fake, name)).parameters] == want, (fake, name)


def test_the_stripe_fake_is_idempotent_and_declines() -> None:
    stripe = FakeStripeGateway()
    cus = stripe.create_customer("usr_1", "a@example.test", "k-cus")
    assert stripe.create_customer("usr_1", "a@example.test", "k-cus") == cus
    card = stripe.add_card(cus)
    paid = stripe.charge_saved_card(customer_id=cus, payment_method_id=card.pm_id, amount_cents=2500,
                                    metadata={"user_id": "usr_1"}, idempotency_key="k-pay")
    assert paid == stripe.charge_saved_card(customer_id=cus, payment_method_id=card.pm_id, amount_cents=2500,
                                            metadata={"user_id": "usr_1"}, idempotency_key="k-pay")
    assert stripe.get_payment_intent(paid.payment_intent_id).amount == 2500
    stripe.declining.add(card.pm_id)
    with pytest.raises(gateway.CardDeclined) as e:
        stripe.charge_saved_card(customer_id=cus, payment_method_id=card.pm_id, amount_cents=100, metadata={},
                                 idempotency_key="k-declined")
    assert e.value.decline_code == "insufficient_funds"
    inv = stripe.create_invoice(customer_id=cus, amount_cents=700, description="d", metadata={}, idempotency_key="i")
    assert stripe.void_invoice(inv.id).status == "void"
    with pytest.raises(gateway.InvoiceNotVoidable):
        stripe.void_invoice(inv.id)


def test_an_overage_invoice_is_mirrored_once_through_the_stripe_port(world: FakeWorld,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from gpurent.billing import cards

    stripe = FakeStripeGateway()
    for name in _members(billing_ports.StripeGateway):
        monkeypatch.setattr(gateway, name, getattr(stripe, name))
    monkeypatch.setattr(cards, "ensure_customer", lambda uid: stripe.create_customer(uid, "x@example.test",
                                                                                      f"customer:{uid}"))
    inv = invoices.issue(invoices.new_invoice("usr_inv", "overage", 1234, "Usage beyond the wallet balance"),
                         "invoice:usr_inv")
    first = invoices.mirror(inv)
    again = world.invoices.get("usr_inv", inv.id)
    assert again is not None and invoices.mirror(again) == again  # mirrored already: no second invoice
    assert stripe.calls.count("create_invoice") == 1
    row = world.invoices.get("usr_inv", inv.id)
    (mirrored,) = stripe.invoices.values()
    assert row is not None
    assert (row.stripe_invoice_id, row.hosted_invoice_url) == (mirrored.id, mirrored.hosted_invoice_url)
    assert (first.stripe_invoice_id, first.invoice_pdf_url) == (mirrored.id, mirrored.invoice_pdf)
    stored = world.money.get_wallet("usr_inv") or {}
    assert (stored["openInvoicesCents"], stored["openInvoiceCount"]) == (1234, 1)


def test_a_new_rental_is_stored_with_exactly_the_attributes_of_the_untyped_launch() -> None:
    """The typed record changed no stored row: a launch writes the attributes it always wrote."""
    from gpurent.store.dynamo import to_item
    from tests.unit.core.conftest import OFFER, T0, rental

    launched = rental(status="provisioning", running_at=None, metered_until=None, last_healthy_at=None,
                      instance_id=None, name=None, region_filter="us", allocating_until=T0 + 60, ssh_key_count=1,
                      idempotency_key=None)
    item = to_item(rental_items.rental_item(launched))
    assert set(item) == {
        "id", "userId", "status", "familyId", "gpuCount", "templateId", "regionFilter", "pricePerHourCents",
        "listingId", "provider", "region", "regionCode", "model", "offer", "createdAt", "reserveCents",
        "chargedCents", "billedSeconds", "refundedCents", "overageCents", "sshKeyCount", "attempts", "version",
        "allocatingUntil",
    }
    assert set(item["offer"]["M"]) == {"id", "provider", "offerKey", "gpuName", "family", "model", "vramGb",
                                       "gpuCount", "costCentsPerHour", "pricePerHourCents", "region", "regionCode",
                                       "interconnect"}
    assert rental_items.rental_from_item(rental_items.rental_item(launched)) == launched
    assert rental_items.rental_from_item(rental_items.rental_item(launched)).offer == OFFER
