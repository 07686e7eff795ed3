"""Redundant reads on the billing paths (issue 17 item 5): what a request reads, counted at the
store's DynamoDB client, through the real handler and the local Stripe."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from gpurent import wallet
from gpurent.billing import autotopup
from gpurent.store import billing as billing_store
from gpurent.store import dynamo
from tests.conftest import Api
from tests.integration.test_billing import add_card, deliver, ledger
from tests.walletkit import check_invariants


@dataclass
class Requests:
    """Every DynamoDB request the product's client sends, with its parameters."""

    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def by_operation(self) -> Counter[str]:
        return Counter(op for op, _ in self.sent)

    def wallet_reads(self, user_id: str) -> int:
        wanted = {"pk": {"S": f"USER#{user_id}"}, "sk": {"S": "WALLET"}}
        return sum(op == "GetItem" and params.get("Key") == wanted for op, params in self.sent)

    def transactions(self) -> list[list[dict[str, Any]]]:
        return [params["TransactItems"] for op, params in self.sent if op == "TransactWriteItems"]

    def clear(self) -> None:
        self.sent.clear()


@pytest.fixture
def requests(aws: None) -> Iterator[Requests]:
    seen = Requests()

    def note(event_name: str, params: dict[str, Any], **kwargs: Any) -> None:
        seen.sent.append((event_name.rsplit(".", 1)[-1], params))

    events = dynamo.client().meta.events
    events.register("provide-client-params.dynamodb.*", note)
    yield seen
    events.unregister("provide-client-params.dynamodb.*", note)


def _paid_checkout(api: Api, ls: Any, amount: int, save_card: bool = True) -> tuple[Any, Any]:
    """A Checkout Session paid on the local Stripe: its checkout.session.completed and
    payment_intent.succeeded deliveries (this payment's, whatever other tests sent)."""
    session = api.post("/v1/billing/checkout", {"amountCents": amount, "useCheckout": True}).json()
    paid = ls.complete_checkout(session["sessionId"], "4242424242424242", save_card=save_card)
    return (ls.wait_for("checkout.session.completed", lambda o: o["id"] == session["sessionId"]),
            ls.wait_for("payment_intent.succeeded", lambda o: o["id"] == paid["payment_intent"]))


def test_a_checkout_reads_the_wallet_item_once(api: Api, user: dict[str, Any], local_stripe: Any,
                                               requests: Requests) -> None:
    """The Stripe customer and the card on file are both on the wallet item: one read of it."""
    add_card(api, local_stripe)
    requests.clear()
    r = api.post("/v1/billing/checkout", {"amountCents": 1500, "useCheckout": True})
    assert r.status == 200, r.body
    assert requests.wallet_reads(user["id"]) == 1, requests.sent


def test_a_saved_card_top_up_credits_on_the_wallet_item_it_read(api: Api, user: dict[str, Any], local_stripe: Any,
                                                                requests: Requests) -> None:
    """The request reads the wallet item for the customer and the card; the credit plans on that
    read instead of reading the wallet again."""
    add_card(api, local_stripe)
    requests.clear()
    r = api.post("/v1/billing/checkout", {"amountCents": 1500}, headers={"idempotency-key": "k1"})
    assert r.status == 200 and r.json()["status"] == "succeeded", r.body
    assert requests.wallet_reads(user["id"]) == 1, requests.sent
    assert len(requests.transactions()) == 1  # the credit, its ledger row and the intent's outcome
    assert api.get("/v1/billing/balance").json()["availableCents"] == 1500
    # The same key again answers the recorded outcome, and credits nothing more.
    assert api.post("/v1/billing/checkout", {"amountCents": 1500}, headers={"idempotency-key": "k1"}).json() == \
        r.json()
    assert api.get("/v1/billing/balance").json()["availableCents"] == 1500
    check_invariants(user["id"])


def test_a_checkout_event_that_saves_the_card_credits_on_the_wallet_item_it_read(
        api: Api, user: dict[str, Any], local_stripe: Any, requests: Requests) -> None:
    d, _ = _paid_checkout(api, local_stripe, 2500)
    requests.clear()
    assert deliver(d).json() == {"received": True}
    assert requests.wallet_reads(user["id"]) == 1, requests.sent  # read for the card, credited on it
    assert api.get("/v1/billing/card").json()["last4"] == "4242"
    assert api.get("/v1/billing/balance").json()["availableCents"] == 2500
    check_invariants(user["id"])


def test_an_auto_topup_credit_does_not_read_the_wallet_again(api: Api, user: dict[str, Any], local_stripe: Any,
                                                            requests: Requests) -> None:
    add_card(api, local_stripe)
    wallet.credit(user["id"], 3000, "adjustment", "seed", {"description": "seed"})
    assert api.put("/v1/billing/auto-topup",
                   {"enabled": True, "thresholdCents": 1000, "topupAmountCents": 2000}).status == 200
    wallet.debit(user["id"], 2500, "d1", {"description": "test debit"})  # 500 < 1000: due
    requests.clear()
    assert autotopup.run(user["id"]) == wallet.DUE
    # run's look at the state; the claim answers the item it wrote, which fire charges and the
    # credit plans on: no read after it.
    assert requests.wallet_reads(user["id"]) == 1, requests.sent
    assert any(op == "UpdateItem" and params.get("ReturnValues") == "ALL_NEW" for op, params in requests.sent)
    assert api.get("/v1/billing/balance").json()["availableCents"] == 500 + 2000
    check_invariants(user["id"])


def _written(requests: Requests) -> list[list[str]]:
    """Per transaction, what each of its items wrote (its key's prefix: USER, OP, STRIPE_EVENT...)."""
    out = []
    for items in requests.transactions():
        ops = [i.get("Put") or i.get("Update") or i.get("ConditionCheck") or {} for i in items]
        out.append([str((op.get("Item") or op.get("Key") or {})["pk"]["S"]).split("#")[0] for op in ops])
    return out


def test_the_payment_event_after_the_checkout_event_sends_no_credit_transaction(
        api: Api, user: dict[str, Any], local_stripe: Any, requests: Requests) -> None:
    """The event's first read also reads the payment's credit marker: the second event of a
    credited payment writes its own marker, and nothing else (no user read, no wallet read, no
    credit transaction its marker could only cancel)."""
    checkout_event, payment_event = _paid_checkout(api, local_stripe, 2500)
    assert deliver(checkout_event).json() == {"received": True}
    requests.clear()
    assert deliver(payment_event).json() == {"received": True, "duplicate": True}
    assert requests.by_operation() == Counter({"BatchGetItem": 1, "TransactWriteItems": 1}), requests.sent
    assert _written(requests) == [["STRIPE_EVENT"]]
    requests.clear()
    assert deliver(payment_event).json() == {"received": True, "duplicate": True}  # a redelivery
    assert requests.by_operation() == Counter({"BatchGetItem": 1}), requests.sent
    rows = [e for e in ledger(api) if e["type"] == "stripe_topup"]
    assert len(rows) == 1 and rows[0]["amountCents"] == 2500
    check_invariants(user["id"])


def test_the_checkout_event_after_the_payment_event_saves_the_card_and_sends_no_credit_transaction(
        api: Api, user: dict[str, Any], local_stripe: Any, requests: Requests) -> None:
    checkout_event, payment_event = _paid_checkout(api, local_stripe, 2500)
    assert deliver(payment_event).json() == {"received": True}
    requests.clear()
    assert deliver(checkout_event).json() == {"received": True}
    assert _written(requests) == [["STRIPE_EVENT"]], requests.sent
    assert requests.by_operation()["BatchGetItem"] == 1
    assert api.get("/v1/billing/card").json()["last4"] == "4242"  # the card is still saved
    assert billing_store.wallet_item(user["id"])["card"]["last4"] == "4242"
    assert api.get("/v1/billing/balance").json()["availableCents"] == 2500
    check_invariants(user["id"])


def test_the_payment_event_of_a_saved_card_top_up_sends_no_credit_transaction(
        api: Api, user: dict[str, Any], local_stripe: Any, requests: Requests) -> None:
    add_card(api, local_stripe)
    body = api.post("/v1/billing/checkout", {"amountCents": 5000}, headers={"idempotency-key": "k1"}).json()
    d = local_stripe.wait_for("payment_intent.succeeded", lambda o: o["id"] == body["paymentIntentId"])
    requests.clear()
    assert deliver(d).json() == {"received": True, "duplicate": True}
    assert requests.by_operation() == Counter({"BatchGetItem": 1, "TransactWriteItems": 1}), requests.sent
    assert api.get("/v1/billing/balance").json()["availableCents"] == 5000
    check_invariants(user["id"])


def test_the_first_event_of_a_payment_still_credits_it(api: Api, user: dict[str, Any], local_stripe: Any,
                                                       requests: Requests) -> None:
    """The fast path only answers what is already credited: a payment's first event credits it,
    in one transaction with the event's marker."""
    _, payment_event = _paid_checkout(api, local_stripe, 1200, save_card=False)
    requests.clear()
    assert deliver(payment_event).json() == {"received": True}
    kinds = _written(requests)
    assert len(kinds) == 1 and "STRIPE_EVENT" in kinds[0] and "OP" in kinds[0], kinds
    assert api.get("/v1/billing/balance").json()["availableCents"] == 1200
