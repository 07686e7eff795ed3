"""The Stripe gateway through the real stripe library against the local Stripe
(localstripe + the gap-filling proxy) on loopback, and the gateway's parsing of
Stripe's documented object shapes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gpurent.billing import gateway
from infra.local.server import LocalServer
from infra.local.stripe_local import LocalStripe, LocalStripeError, _form, sign, unflatten
from tests.stripe_fixtures import WEBHOOK_SECRET, stripe_get

# the fixtures (pytest finds them as module attributes)

ROOT = Path(__file__).resolve().parents[2]
OK_CARD = "4242424242424242"
CHARGE_DECLINED = "4000000000000341"
DECLINED = "4000000000000002"
THREE_DS = "4000002760003184"


def _customer(tag: str) -> str:
    return gateway.create_customer(f"usr_{tag}", f"{tag}@example.test", f"cus-{tag}-{time.time_ns()}")


def _saved_card(ls: LocalStripe, customer: str, card: str = OK_CARD) -> str:
    si = gateway.create_setup_intent(customer_id=customer, user_id="usr_card")
    out = ls.confirm_setup_intent(si.id, card)
    assert out["status"] == "succeeded"
    return str(out["payment_method"])


def _verified(ls: LocalStripe, type_: str, object_id: str, timeout: float = 5.0) -> dict[str, Any]:
    d = ls.wait_for(type_, lambda o: o.get("id") == object_id, timeout=timeout)
    event = gateway.verify_event(d.body, d.signature)
    assert event["type"] == type_
    assert event["data"]["object"]["id"] == object_id
    return event


# ------------------------------------------------------------------ customers


def test_create_customer_carries_user_id_and_is_idempotent(local_stripe: LocalStripe) -> None:
    key = f"cus-idem-{time.time_ns()}"
    cus = gateway.create_customer("usr_1", "one@example.test", key)
    assert cus.startswith("cus_")
    again = gateway.create_customer("usr_1", "one@example.test", key)
    assert again == cus
    got = stripe_get(local_stripe, f"/v1/customers/{cus}")
    assert got["email"] == "one@example.test"
    assert got["metadata"] == {"user_id": "usr_1"}


def test_reusing_an_idempotency_key_with_other_parameters_is_refused(local_stripe: LocalStripe) -> None:
    key = f"cus-mismatch-{time.time_ns()}"
    gateway.create_customer("usr_2", "two@example.test", key)
    # Stripe's 400 idempotency_error is a refusal, never "Stripe unavailable" (which would be
    # retried with the same key, forever). It stays a StripeError, so an auto-topup attempt that
    # meets it ends like any other refusal (item 3); the checkout route answers it as a client
    # reusing its own Idempotency-Key for another request: 400 `validation_failed`
    # (tests/integration/test_billing.py).
    with pytest.raises(gateway.IdempotencyKeyReused) as info:
        gateway.create_customer("usr_2", "other@example.test", key)
    assert info.value.http_status == 400
    assert isinstance(info.value, gateway.StripeError) and not isinstance(info.value, gateway.StripeUnavailable)


def test_an_idempotency_key_still_in_use_is_unavailable_not_a_refusal() -> None:
    """Stripe's 409 (another request with this key is in progress) means "try again with the same
    key": an auto-topup attempt that meets it stays pending; only the 400 is a refusal."""
    import stripe

    translate = gateway.client._translate
    busy = translate(stripe.IdempotencyError("Keys for idempotent requests can only be used once at a time",
                                             http_status=409))
    assert isinstance(busy, gateway.StripeUnavailable)
    reused = translate(stripe.IdempotencyError("Keys for idempotent requests can only be used with the same "
                                               "parameters", http_status=400))
    assert isinstance(reused, gateway.IdempotencyKeyReused)


def test_settings_and_not_configured(local_stripe: LocalStripe, monkeypatch: pytest.MonkeyPatch) -> None:
    assert gateway.enabled()
    assert gateway.publishable_key() == "pk_test_local"
    assert gateway.webhook_secret() == WEBHOOK_SECRET
    monkeypatch.delenv("STRIPE_SECRET_KEY")
    gateway.reset()
    assert not gateway.enabled()
    with pytest.raises(gateway.StripeError) as info:
        gateway.create_customer("usr_x", "x@example.test", "k")
    assert info.value.code == "billing_disabled"


def test_secret_key_from_ssm_parameter(local_stripe: LocalStripe, monkeypatch: pytest.MonkeyPatch) -> None:
    """STRIPE_SECRET_KEY_PARAM names an SSM SecureString (moto); stripe's HTTP still reaches loopback."""
    from moto import mock_aws

    from gpurent import config
    from gpurent.store import secrets

    monkeypatch.delenv("STRIPE_SECRET_KEY")
    monkeypatch.setenv("STRIPE_SECRET_KEY_PARAM", "/gpurent/test/stripe-secret-key")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET_PARAM", "/gpurent/test/stripe-webhook-secret")
    config.reset()
    secrets.reset_client()
    gateway.reset()
    try:
        with mock_aws():
            import boto3

            ssm = boto3.client("ssm", region_name="us-east-1")
            ssm.put_parameter(Name="/gpurent/test/stripe-secret-key", Value="sk_test_from_ssm", Type="SecureString")
            ssm.put_parameter(Name="/gpurent/test/stripe-webhook-secret", Value="whsec_ssm", Type="SecureString")
            assert gateway.enabled()
            assert gateway.webhook_secret() == "whsec_ssm"
            assert gateway.create_customer("usr_ssm", "ssm@example.test", f"ssm-{time.time_ns()}").startswith("cus_")
    finally:
        secrets.reset_client()
        config.reset()


def test_missing_ssm_parameter_is_unavailable(local_stripe: LocalStripe, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import mock_aws

    from gpurent import config
    from gpurent.store import secrets

    monkeypatch.delenv("STRIPE_SECRET_KEY")
    monkeypatch.setenv("STRIPE_SECRET_KEY_PARAM", "/gpurent/test/absent")
    config.reset()
    secrets.reset_client()
    gateway.reset()
    try:
        with mock_aws(), pytest.raises(gateway.StripeUnavailable):
            gateway.create_customer("usr_x", "x@example.test", "k-absent")
    finally:
        secrets.reset_client()
        config.reset()


# -------------------------------------------------------------- failures


class _Answer500(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps({"error": {"type": "api_error", "message": "boom"}}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def stripe_500(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Answer500]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer500)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Answer500.calls = 0
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_local")
    monkeypatch.setenv("STRIPE_API_BASE", f"http://127.0.0.1:{server.server_address[1]}")
    gateway.reset()
    yield _Answer500
    server.shutdown()
    server.server_close()
    gateway.reset()


def test_stripe_5xx_is_unavailable(stripe_500: type[_Answer500]) -> None:
    with pytest.raises(gateway.StripeUnavailable) as info:
        gateway.create_customer("usr_x", "x@example.test", "k-500")
    assert info.value.http_status == 500
    assert stripe_500.calls == 1 + gateway.MAX_NETWORK_RETRIES


class _Answer409(_Answer500):
    """Stripe's answer while another request with the same idempotency key is in progress."""

    def do_POST(self) -> None:
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps({"error": {"type": "idempotency_error", "message": (
            "There is currently another in-progress request using this Stripe API Idempotency Key. "
            "Please try again later.")}}).encode()
        self.send_response(409)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_an_idempotency_key_in_progress_is_unavailable_not_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (issue 15, item 3): the 409 "in progress" answer means "try again later", so an
    auto-topup attempt that meets it stays pending instead of ending as a refusal."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer409)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_local")
    monkeypatch.setenv("STRIPE_API_BASE", f"http://127.0.0.1:{server.server_address[1]}")
    gateway.reset()
    try:
        with pytest.raises(gateway.StripeUnavailable) as info:
            gateway.create_customer("usr_x", "x@example.test", "k-409")
        assert info.value.http_status == 409
    finally:
        server.shutdown()
        server.server_close()
        gateway.reset()


def test_unreachable_stripe_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), _Answer500) as probe:
        port = probe.server_address[1]
    # the port is closed now: connection refused
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_local")
    monkeypatch.setenv("STRIPE_API_BASE", f"http://127.0.0.1:{port}")
    gateway.reset()
    try:
        with pytest.raises(gateway.StripeUnavailable):
            gateway.create_customer("usr_x", "x@example.test", "k-closed")
    finally:
        gateway.reset()


def test_bad_key_is_a_plain_stripe_error(local_stripe: LocalStripe, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", "pk_test_local")  # a publishable key cannot call the API
    gateway.reset()
    with pytest.raises(gateway.StripeError) as info:
        gateway.create_customer("usr_x", "x@example.test", "k-pk")
    assert info.value.http_status == 401
    assert not isinstance(info.value, gateway.StripeUnavailable)


# ---------------------------------------------------------------- cards


def test_setup_intent_confirm_saves_the_card(local_stripe: LocalStripe) -> None:
    cus = _customer("si")
    si = gateway.create_setup_intent(customer_id=cus, user_id="usr_si")
    assert si.id.startswith("seti_") and si.client_secret.startswith(si.id + "_secret_")
    out = local_stripe.confirm_setup_intent(si.id, OK_CARD)
    pm = out["payment_method"]
    event = _verified(local_stripe, "setup_intent.succeeded", si.id)
    obj = event["data"]["object"]
    assert (obj["customer"], obj["payment_method"], obj["metadata"]) == (cus, pm, {"user_id": "usr_si"})
    assert obj["status"] == "succeeded"

    card = gateway.get_card(pm)
    assert (card.pm_id, card.brand, card.last4, card.exp_month) == (pm, "visa", "4242", 12)
    assert card.exp_year > time.gmtime().tm_year
    # attached to the customer (localstripe alone does not attach on confirm)
    listed = stripe_get(local_stripe, f"/v1/payment_methods?customer={cus}&type=card")
    assert [p["id"] for p in listed["data"]] == [pm]

    gateway.set_default_payment_method(cus, pm)
    assert stripe_get(local_stripe, f"/v1/customers/{cus}")["invoice_settings"]["default_payment_method"] == pm

    gateway.detach_payment_method(pm)
    assert stripe_get(local_stripe, f"/v1/payment_methods?customer={cus}&type=card")["data"] == []
    gateway.detach_payment_method(pm)  # already detached: fine
    gateway.detach_payment_method("pm_doesnotexist")  # unknown: fine


def test_setup_intent_with_declined_card_fails_and_says_so(local_stripe: LocalStripe) -> None:
    cus = _customer("si-declined")
    si = gateway.create_setup_intent(customer_id=cus, user_id="usr_si2")
    with pytest.raises(LocalStripeError) as info:
        local_stripe.confirm_setup_intent(si.id, DECLINED)
    assert info.value.status == 402
    assert info.value.body["error"]["decline_code"] == "generic_decline"
    assert not [d for d in local_stripe.deliveries() if d.type == "setup_intent.succeeded"]
    assert stripe_get(local_stripe, f"/v1/payment_methods?customer={cus}&type=card")["data"] == []


def test_setup_intent_through_stripe_api_confirm_also_attaches(local_stripe: LocalStripe) -> None:
    """A client confirming with the API (as Stripe.js does) gets the same gap-filling."""
    import stripe

    cus = _customer("si-api")
    si = gateway.create_setup_intent(customer_id=cus, user_id="usr_si3")
    client = stripe.StripeClient("sk_test_local", base_addresses={"api": local_stripe.api_base})
    pm = client.v1.payment_methods.create({"type": "card", "card": {
        "number": OK_CARD, "exp_month": 1, "exp_year": 2031, "cvc": "123"}})
    confirmed = client.v1.setup_intents.confirm(si.id, {"payment_method": pm.id})
    assert confirmed.status == "succeeded"
    _verified(local_stripe, "setup_intent.succeeded", si.id)
    assert gateway.get_card(pm.id).exp_year == 2031
    assert stripe_get(local_stripe, f"/v1/payment_methods/{pm.id}")["customer"] == cus


# -------------------------------------------------------------- charges


def test_charge_saved_card_succeeds(local_stripe: LocalStripe) -> None:
    cus = _customer("charge")
    pm = _saved_card(local_stripe, cus)
    key = f"topup-{time.time_ns()}"
    pay = gateway.charge_saved_card(customer_id=cus, payment_method_id=pm, amount_cents=2500,
                                    metadata={"user_id": "usr_charge", "kind": "auto_topup"}, idempotency_key=key)
    assert pay.status == "succeeded"
    assert pay.payment_intent_id.startswith("pi_")
    assert pay.charge_id is not None and pay.charge_id.startswith("ch_")
    assert pay.receipt_url
    # a retry with the same key is the same payment, not a second one
    again = gateway.charge_saved_card(customer_id=cus, payment_method_id=pm, amount_cents=2500,
                                      metadata={"user_id": "usr_charge", "kind": "auto_topup"}, idempotency_key=key)
    assert again == pay
    event = _verified(local_stripe, "payment_intent.succeeded", pay.payment_intent_id)
    obj = event["data"]["object"]
    assert obj["amount"] == 2500 and obj["currency"] == "usd" and obj["customer"] == cus
    assert obj["metadata"] == {"user_id": "usr_charge", "kind": "auto_topup"}
    assert obj["latest_charge"] == pay.charge_id  # an ID, as Stripe sends it
    mine = [d for d in local_stripe.deliveries()
            if d.type == "payment_intent.succeeded" and d.object["customer"] == cus]
    assert len(mine) == 1


def test_charge_declined_card_raises_card_declined(local_stripe: LocalStripe) -> None:
    cus = _customer("charge-declined")
    pm = _saved_card(local_stripe, cus, CHARGE_DECLINED)  # attaches fine
    with pytest.raises(gateway.CardDeclined) as info:
        gateway.charge_saved_card(customer_id=cus, payment_method_id=pm, amount_cents=1000,
                                  metadata={"user_id": "usr_d"}, idempotency_key=f"d-{time.time_ns()}")
    err = info.value
    assert not isinstance(err, gateway.AuthenticationRequired)
    assert (err.code, err.decline_code) == ("card_declined", "generic_decline")
    assert err.payment_intent_id and err.payment_intent_id.startswith("pi_")
    assert stripe_get(local_stripe, f"/v1/payment_intents/{err.payment_intent_id}")["status"] == \
        "requires_payment_method"
    _verified(local_stripe, "payment_intent.payment_failed", err.payment_intent_id)


def test_charge_card_needing_3ds_raises_authentication_required(local_stripe: LocalStripe) -> None:
    cus = _customer("charge-3ds")
    pm = _saved_card(local_stripe, cus, THREE_DS)  # the setup passes 3-D Secure
    with pytest.raises(gateway.AuthenticationRequired) as info:
        gateway.charge_saved_card(customer_id=cus, payment_method_id=pm, amount_cents=1000,
                                  metadata={"user_id": "usr_3ds"}, idempotency_key=f"3ds-{time.time_ns()}")
    err = info.value
    assert err.code == "authentication_required"
    assert err.payment_intent_id and err.payment_intent_id.startswith("pi_")
    assert stripe_get(local_stripe, f"/v1/payment_intents/{err.payment_intent_id}")["status"] == \
        "requires_payment_method"
    _verified(local_stripe, "payment_intent.payment_failed", err.payment_intent_id)


# ------------------------------------------------------------- checkout


def test_checkout_session_complete_credits_through_signed_events(local_stripe: LocalStripe) -> None:
    cus = _customer("checkout")
    cs = gateway.create_checkout_session(customer_id=cus, user_id="usr_co", amount_cents=2500,
                                         success_url="https://app.test/billing?session=success",
                                         cancel_url="https://app.test/billing?session=cancel", save_card=True,
                                         idempotency_key=f"co-{time.time_ns()}")
    assert cs.id.startswith("cs_test_") and cs.url
    raw = stripe_get(local_stripe, f"/v1/checkout/sessions/{cs.id}")
    assert (raw["object"], raw["mode"], raw["status"], raw["payment_status"]) == (
        "checkout.session", "payment", "open", "unpaid")
    assert (raw["amount_total"], raw["currency"], raw["customer"]) == (2500, "usd", cus)
    assert raw["metadata"] == {"user_id": "usr_co"}

    done = local_stripe.complete_checkout(cs.id, OK_CARD, save_card=True)
    assert (done["status"], done["payment_status"]) == ("complete", "paid")
    pi_id = done["payment_intent"]
    assert pi_id.startswith("pi_")

    event = _verified(local_stripe, "checkout.session.completed", cs.id)
    obj = event["data"]["object"]
    assert (obj["amount_total"], obj["metadata"], obj["payment_intent"]) == (2500, {"user_id": "usr_co"}, pi_id)
    pi_event = _verified(local_stripe, "payment_intent.succeeded", pi_id)
    assert pi_event["data"]["object"]["metadata"] == {"user_id": "usr_co"}
    # the card was saved (setup_future_usage + "save card" ticked)
    saved = stripe_get(local_stripe, f"/v1/payment_methods?customer={cus}&type=card")["data"]
    assert [p["card"]["last4"] for p in saved] == ["4242"]
    # a second completion is refused
    with pytest.raises(LocalStripeError) as info:
        local_stripe.complete_checkout(cs.id, OK_CARD)
    assert info.value.status == 400


def test_checkout_without_save_card_keeps_no_card(local_stripe: LocalStripe) -> None:
    cus = _customer("checkout-nosave")
    cs = gateway.create_checkout_session(customer_id=cus, user_id="usr_ns", amount_cents=1000,
                                         success_url="https://app.test/s", cancel_url="https://app.test/c",
                                         save_card=False, idempotency_key=f"ns-{time.time_ns()}")
    local_stripe.complete_checkout(cs.id, OK_CARD, save_card=True)  # no setup_future_usage: nothing saved
    _verified(local_stripe, "checkout.session.completed", cs.id)
    assert stripe_get(local_stripe, f"/v1/payment_methods?customer={cus}&type=card")["data"] == []


@pytest.mark.parametrize("card", [DECLINED, CHARGE_DECLINED])
def test_checkout_with_declined_card_completes_nothing(local_stripe: LocalStripe, card: str) -> None:
    cus = _customer("checkout-declined")
    cs = gateway.create_checkout_session(customer_id=cus, user_id="usr_cd", amount_cents=1000,
                                         success_url="https://app.test/s", cancel_url="https://app.test/c",
                                         save_card=True, idempotency_key=f"cd-{time.time_ns()}")
    with pytest.raises(LocalStripeError) as info:
        local_stripe.complete_checkout(cs.id, card, save_card=True)
    assert info.value.status == 402
    assert info.value.body["error"]["type"] == "card_error"
    assert info.value.body["error"]["code"] == "card_declined"
    raw = stripe_get(local_stripe, f"/v1/checkout/sessions/{cs.id}")
    assert (raw["status"], raw["payment_status"], raw["payment_intent"]) == ("open", "unpaid", None)
    assert not [d for d in local_stripe.deliveries() if d.type == "checkout.session.completed"]
    assert stripe_get(local_stripe, f"/v1/payment_methods?customer={cus}&type=card")["data"] == []


def test_hosted_checkout_page_pays_and_redirects(local_stripe: LocalStripe) -> None:
    cs = gateway.create_checkout_session(customer_id=_customer("hosted"), user_id="usr_h", amount_cents=500,
                                         success_url="https://app.test/ok", cancel_url="https://app.test/c",
                                         save_card=False, idempotency_key=f"h-{time.time_ns()}")
    with urllib.request.urlopen(cs.url, timeout=10) as page:
        assert b"Pay 5.00 USD" in page.read()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as info:
        opener.open(urllib.request.Request(cs.url, data=b"card=4242424242424242", method="POST"), timeout=10)
    assert info.value.code == 303
    assert info.value.headers["Location"] == "https://app.test/ok"
    _verified(local_stripe, "checkout.session.completed", cs.id)


# ------------------------------------------------------------- invoices


def _invoice(tag: str, amount: int = 5000) -> tuple[str, gateway.InvoiceMirror]:
    cus = _customer(tag)
    inv = gateway.create_invoice(customer_id=cus, amount_cents=amount,
                                 description="Auto-topup of $50.00 (card declined)",
                                 metadata={"gpurent_invoice_id": f"inv_{tag}", "reason": "topup_failed"},
                                 idempotency_key=f"inv-{tag}-{time.time_ns()}")
    return cus, inv


def test_invoice_create_finalize_pay(local_stripe: LocalStripe) -> None:
    cus, inv = _invoice("pay")
    assert inv.id.startswith("in_") and inv.status == "open"
    assert inv.hosted_invoice_url and inv.invoice_pdf and inv.receipt_url is None
    raw = stripe_get(local_stripe, f"/v1/invoices/{inv.id}")
    assert (raw["collection_method"], raw["customer"], raw["amount_due"], raw["currency"]) == (
        "send_invoice", cus, 5000, "usd")
    assert raw["metadata"] == {"gpurent_invoice_id": "inv_pay", "reason": "topup_failed"}
    assert [li["amount"] for li in raw["lines"]["data"]] == [5000]
    assert abs(raw["due_date"] - raw["status_transitions"]["finalized_at"] - 7 * 86400) <= 1
    assert "payments" not in raw  # includable only
    _verified(local_stripe, "invoice.finalized", inv.id)

    with pytest.raises(LocalStripeError) as declined:
        local_stripe.pay_invoice(inv.id, CHARGE_DECLINED)
    assert declined.value.status == 402
    _verified(local_stripe, "invoice.payment_failed", inv.id)
    assert gateway.get_invoice(inv.id).status == "open"

    local_stripe.pay_invoice(inv.id, OK_CARD)
    paid = _verified(local_stripe, "invoice.paid", inv.id)["data"]["object"]
    assert (paid["status"], paid["amount_paid"], paid["amount_remaining"]) == ("paid", 5000, 0)
    _verified(local_stripe, "invoice.payment_succeeded", inv.id)
    got = gateway.get_invoice(inv.id)
    assert got.status == "paid" and got.receipt_url
    assert got.hosted_invoice_url == inv.hosted_invoice_url
    # the invoice's own payment carries no wallet metadata (Stripe's invoice PIs have none)
    pi_event = local_stripe.wait_for("payment_intent.succeeded", lambda o: o.get("customer") == cus)
    assert pi_event.object["metadata"] == {} and pi_event.object["amount"] == 5000

    with pytest.raises(gateway.InvoiceNotVoidable):
        gateway.void_invoice(inv.id)


def test_invoice_create_is_idempotent_per_key(local_stripe: LocalStripe) -> None:
    cus = _customer("inv-idem")
    key = f"inv-idem-{time.time_ns()}"
    a = gateway.create_invoice(customer_id=cus, amount_cents=700, description="x", metadata={}, idempotency_key=key)
    b = gateway.create_invoice(customer_id=cus, amount_cents=700, description="x", metadata={}, idempotency_key=key)
    assert a == b
    assert stripe_get(local_stripe, f"/v1/invoices/{a.id}")["amount_due"] == 700


def test_invoice_void(local_stripe: LocalStripe) -> None:
    _, inv = _invoice("void")
    voided = gateway.void_invoice(inv.id)
    assert (voided.id, voided.status) == (inv.id, "void")
    _verified(local_stripe, "invoice.voided", inv.id)
    with pytest.raises(gateway.InvoiceNotVoidable):
        gateway.void_invoice(inv.id)
    with pytest.raises(LocalStripeError):
        local_stripe.pay_invoice(inv.id, OK_CARD)


def test_void_of_an_unknown_invoice_is_not_invoice_not_voidable(local_stripe: LocalStripe) -> None:
    with pytest.raises(gateway.StripeError) as info:
        gateway.void_invoice("in_doesnotexist")
    assert not isinstance(info.value, gateway.InvoiceNotVoidable)
    assert info.value.http_status == 404


def test_dev_routes_over_the_local_server(local_stripe: LocalStripe) -> None:
    """/dev/stripe/… as `make dev` serves them (registered the way start_stripe does)."""
    server = LocalServer("127.0.0.1", 0)
    server.add_dev_route("POST", "/dev/stripe/", local_stripe.dev_route, prefix=True)
    server.add_dev_route("GET", "/dev/stripe/events", local_stripe.dev_route)
    server.start()

    def post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(server.url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    try:
        cus = _customer("dev")
        cs = gateway.create_checkout_session(customer_id=cus, user_id="usr_dev", amount_cents=1500,
                                             success_url="https://app.test/s", cancel_url="https://app.test/c",
                                             save_card=True, idempotency_key=f"dev-{time.time_ns()}")
        status, body = post(f"/dev/stripe/checkout/{cs.id}/complete", {"card": DECLINED, "saveCard": True})
        assert status == 402 and body["error"]["decline_code"] == "generic_decline"
        status, body = post(f"/dev/stripe/checkout/{cs.id}/complete", {"card": OK_CARD, "saveCard": True})
        assert status == 200 and body["payment_status"] == "paid"

        si = gateway.create_setup_intent(customer_id=cus, user_id="usr_dev")
        status, body = post(f"/dev/stripe/setup-intents/{si.id}/confirm", {"card": OK_CARD})
        assert status == 200 and body["status"] == "succeeded"
        _verified(local_stripe, "setup_intent.succeeded", si.id)

        inv = gateway.create_invoice(customer_id=cus, amount_cents=900, description="overage", metadata={},
                                     idempotency_key=f"dev-inv-{time.time_ns()}")
        status, body = post(f"/dev/stripe/invoices/{inv.id}/mark-uncollectible", {})
        assert status == 200 and body["status"] == "uncollectible"
        _verified(local_stripe, "invoice.marked_uncollectible", inv.id)
        status, body = post(f"/dev/stripe/invoices/{inv.id}/pay", {"card": OK_CARD})
        assert status == 200 and body["status"] == "paid"
        _verified(local_stripe, "invoice.paid", inv.id)

        status, body = post("/dev/stripe/nothing/here", {})
        assert status == 404
        with urllib.request.urlopen(server.url + "/dev/stripe/events", timeout=10) as r:
            listed = json.loads(r.read())
        assert "checkout.session.completed" in [e["type"] for e in listed["data"]]
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------- webhooks


def _event_body(type_: str = "checkout.session.completed") -> bytes:
    return json.dumps({"id": "evt_test_1", "object": "event", "type": type_,
                       "data": {"object": {"id": "cs_test_1", "object": "checkout.session"}}}).encode()


@pytest.fixture
def webhook_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET_PARAM", raising=False)
    gateway.reset()
    yield
    gateway.reset()


def test_verify_event_accepts_a_good_signature(webhook_env: None) -> None:
    body = _event_body()
    event = gateway.verify_event(body, sign(WEBHOOK_SECRET, body))
    assert isinstance(event, dict) and event["type"] == "checkout.session.completed"
    assert event["data"]["object"]["id"] == "cs_test_1"


@pytest.mark.parametrize("case", ["tampered", "wrong_secret", "stale", "missing", "empty", "garbage"])
def test_verify_event_rejects(webhook_env: None, case: str) -> None:
    body = _event_body()
    header: str | None = sign(WEBHOOK_SECRET, body)
    if case == "tampered":
        body = body.replace(b"cs_test_1", b"cs_test_2")
    elif case == "wrong_secret":
        header = sign("whsec_other", body)
    elif case == "stale":
        header = sign(WEBHOOK_SECRET, body, int(time.time()) - 301)
    elif case == "missing":
        header = None
    elif case == "empty":
        header = ""
    elif case == "garbage":
        header = "v1=deadbeef"
    with pytest.raises(gateway.InvalidSignature):
        gateway.verify_event(body, header)


def test_verify_event_rejects_signed_non_json_and_non_events(webhook_env: None) -> None:
    for body in (b"not json", b"[1, 2]", json.dumps({"id": "evt_1", "type": "x"}).encode()):
        with pytest.raises(gateway.InvalidSignature):
            gateway.verify_event(body, sign(WEBHOOK_SECRET, body))


def test_verify_event_without_a_secret_rejects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET_PARAM", raising=False)
    gateway.reset()
    body = _event_body()
    with pytest.raises(gateway.InvalidSignature):
        gateway.verify_event(body, sign("", body))


# ------------------------------------------------------- documented shapes


def test_payment_from_documented_intents() -> None:
    ok = gateway.payment_from_intent({"id": "pi_1", "object": "payment_intent", "status": "succeeded",
                                      "latest_charge": "ch_1"})
    assert ok == gateway.Payment("pi_1", "succeeded", "ch_1", None)
    expanded = gateway.payment_from_intent({"id": "pi_2", "status": "succeeded", "latest_charge": {
        "id": "ch_2", "object": "charge", "receipt_url": "https://pay.stripe.com/receipts/x"}})
    assert (expanded.charge_id, expanded.receipt_url) == ("ch_2", "https://pay.stripe.com/receipts/x")
    with pytest.raises(gateway.AuthenticationRequired) as auth:
        gateway.payment_from_intent({"id": "pi_3", "status": "requires_action",
                                     "next_action": {"type": "use_stripe_sdk"}})
    assert auth.value.payment_intent_id == "pi_3"
    with pytest.raises(gateway.CardDeclined) as declined:
        gateway.payment_from_intent({"id": "pi_4", "status": "requires_payment_method", "last_payment_error": {
            "type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds."}})
    assert not isinstance(declined.value, gateway.AuthenticationRequired)
    assert (declined.value.decline_code, declined.value.payment_intent_id) == ("insufficient_funds", "pi_4")
    with pytest.raises(gateway.AuthenticationRequired):
        gateway.payment_from_intent({"id": "pi_5", "status": "requires_payment_method", "last_payment_error": {
            "type": "card_error", "code": "authentication_required", "decline_code": "authentication_required"}})


def test_card_error_bodies_as_stripe_documents_them() -> None:
    off_session_3ds = {"error": {
        "type": "card_error", "code": "authentication_required", "decline_code": "authentication_required",
        "message": "This payment required an authentication action to complete, but `error_on_requires_action` "
                   "was set.", "payment_intent": {"id": "pi_9", "object": "payment_intent",
                                                  "status": "requires_payment_method"}}}
    err = gateway.client.card_error(off_session_3ds, "")
    assert isinstance(err, gateway.AuthenticationRequired) and err.payment_intent_id == "pi_9"
    plain = gateway.client.card_error({"error": {"type": "card_error", "code": "expired_card",
                                           "message": "Your card has expired."}}, "")
    assert type(plain) is gateway.CardDeclined
    assert (plain.code, plain.decline_code, plain.payment_intent_id) == ("expired_card", None, None)


def test_invoice_and_card_shapes() -> None:
    inv = {"id": "in_1", "object": "invoice", "status": "paid", "hosted_invoice_url": "https://invoice.stripe.com/i/x",
           "invoice_pdf": "https://pay.stripe.com/invoice/x/pdf", "payments": {"object": "list", "data": [
               {"id": "inpay_1", "object": "invoice_payment", "status": "paid",
                "payment": {"type": "payment_intent", "payment_intent": "pi_7"}}]}}
    assert gateway.paid_payment_intent_id(inv) == "pi_7"
    assert gateway.paid_payment_intent_id({"id": "in_2", "status": "open"}) is None
    assert gateway.invoice_from_object(inv) == gateway.InvoiceMirror(
        "in_1", "paid", "https://invoice.stripe.com/i/x", "https://pay.stripe.com/invoice/x/pdf", None)
    draft = gateway.invoice_from_object({"id": "in_3", "status": "draft", "hosted_invoice_url": None})
    assert draft.hosted_invoice_url is None
    card = gateway.card_from_payment_method({"id": "pm_1", "object": "payment_method", "type": "card", "card": {
        "brand": "mastercard", "last4": "4444", "exp_month": 3, "exp_year": 2031}})
    assert card == gateway.Card("pm_1", "mastercard", "4444", 3, 2031)


def test_form_encoding_round_trip() -> None:
    params = {"line_items": [{"price_data": {"currency": "usd", "unit_amount": 100}, "quantity": 1}],
              "metadata": {"user_id": "u"}, "expand": ["payments"], "off_session": True}
    pairs = urllib.parse.parse_qsl(_form(params).decode())
    assert unflatten(pairs) == {"line_items": [{"price_data": {"currency": "usd", "unit_amount": "100"},
                                                "quantity": "1"}],
                                "metadata": {"user_id": "u"}, "expand": ["payments"], "off_session": "true"}
    assert unflatten([("expand[]", "a"), ("expand[]", "b")]) == {"expand": ["a", "b"]}


def test_importing_the_gateway_does_not_import_stripe() -> None:
    code = "import sys; import gpurent.billing.gateway; print('stripe' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": f"{ROOT / 'layers' / 'gpurent'}", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ------------------------------------------------------- start_stripe (make dev)

START_STRIPE_SCRIPT = textwrap.dedent("""
    import json, os, sys, threading, urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    sys.path.insert(0, {root!r}); sys.path.insert(0, {layer!r})
    from gpurent import clock
    from gpurent.billing import gateway
    from infra.local.dev import Stack
    from infra.local.server import LocalServer
    from infra.local.stripe_local import start_stripe

    got = []
    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            got.append((self.path, body, self.headers.get("Stripe-Signature")))
            self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
        def log_message(self, *a): pass
    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    os.environ["STAGE"] = "local"  # as `make dev` sets it (a deployment stage needs every setting)
    os.environ["PUBLIC_URL"] = "http://127.0.0.1:%d" % hook.server_address[1]
    os.environ["STRIPE_WEBHOOK_SECRET"] = "whsec_given"
    server = LocalServer("127.0.0.1", 0)
    stack = Stack(server=server, clock=clock.OffsetClock(), env={{}})
    stop = start_stripe(stack)
    server.start()
    cus = gateway.create_customer("usr_dev", "dev@example.test", "k1")
    cs = gateway.create_checkout_session(customer_id=cus, user_id="usr_dev", amount_cents=1000,
        success_url="http://x/s", cancel_url="http://x/c", save_card=True, idempotency_key="k2")
    req = urllib.request.Request(server.url + "/dev/stripe/checkout/%s/complete" % cs.id,
        data=json.dumps({{"card": "4242424242424242", "saveCard": True}}).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        status = r.status
    events = []
    for path, body, sig in got:
        events.append((path, gateway.verify_event(body, sig)["type"]))
    print(json.dumps({{"status": status, "events": events,
        "env": {{k: os.environ[k] for k in ("STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY", "STRIPE_API_BASE",
                                           "STRIPE_WEBHOOK_SECRET")}}}}))
    stop(); server.shutdown(); hook.shutdown()
""")


def test_start_stripe_for_make_dev() -> None:
    """start_stripe sets the environment, keeps a given webhook secret, serves /dev/stripe/…
    and POSTs signed events to {PUBLIC_URL}/v1/webhooks/stripe (in a child process: one
    LocalStripe per process, and the session's is running)."""
    script = START_STRIPE_SCRIPT.format(root=str(ROOT), layer=str(ROOT / "layers" / "gpurent"))
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == 200
    env = result["env"]
    assert env["STRIPE_SECRET_KEY"] == "sk_test_local" and env["STRIPE_PUBLISHABLE_KEY"] == "pk_test_local"
    assert env["STRIPE_WEBHOOK_SECRET"] == "whsec_given"
    assert env["STRIPE_API_BASE"].startswith("http://127.0.0.1:")
    assert ["/v1/webhooks/stripe", "checkout.session.completed"] in result["events"]
