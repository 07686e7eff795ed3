"""Billing routes: balance, ledger, top-ups, the card on file, auto-topup, invoices."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpurent import ledger
from gpurent.api import CURSOR_QUERY, Body, Request, Router, idempotency_key, page_size_query, query_int
from gpurent.billing import autotopup, cards, invoices, topups
from gpurent.ledger import LEDGER_TYPES
from gpurent.telemetry import API, lambda_handler

if TYPE_CHECKING:
    from gpurent.bodies import AutoTopup, Checkout

router = Router()

CHECKOUT: Body[Checkout] = Body("Checkout")
AUTO_TOPUP: Body[AutoTopup] = Body("AutoTopup")


@router.route("GET /v1/billing/balance", summary="The wallet: available, reserved, total, open invoices",
              response="Balance")
def balance(req: Request) -> dict[str, Any]:
    return ledger.balance(req.user_id)


@router.route("GET /v1/billing/ledger", summary="Ledger entries, newest first", response="LedgerPage",
              query={"cursor": CURSOR_QUERY, "pageSize": page_size_query(),
                     "type": {"type": "string", "enum": [*LEDGER_TYPES, ""]}})
def ledger_page(req: Request) -> dict[str, Any]:
    size = query_int(req, "pageSize", 50, 1, 200)
    return ledger.page(req.user_id, req.query.get("cursor") or None, size, req.query.get("type") or None)


@router.route("POST /v1/billing/checkout", summary="Top up: Stripe Checkout, or charge the saved card",
              body=CHECKOUT, response="CheckoutAnswer", headers=("Idempotency-Key",),
              errors=("invalid_amount", "billing_disabled", "card_declined", "rate_limited"))
def checkout(req: Request) -> dict[str, Any]:
    return topups.checkout(req.user_id, req.parse(CHECKOUT), idempotency_key(req))


@router.route("POST /v1/billing/setup-intent", summary="A SetupIntent to save a card", response="SetupIntentAnswer",
              errors=("billing_disabled",))
def setup_intent(req: Request) -> dict[str, Any]:
    return cards.setup_intent(req.user_id)


@router.route("GET /v1/billing/card", summary="The card on file (all null without one)", response="Card")
def card(req: Request) -> dict[str, Any]:
    return cards.card_public(req.user_id)


@router.route("DELETE /v1/billing/card", summary="Remove the card on file (switches auto-topup off)", response="Ok")
def delete_card(req: Request) -> dict[str, Any]:
    return cards.delete_card(req.user_id)


@router.route("GET /v1/billing/auto-topup", summary="Auto-topup settings", response="AutoTopupSettings")
def get_auto_topup(req: Request) -> dict[str, Any]:
    return autotopup.get(req.user_id)


@router.route("PUT /v1/billing/auto-topup", summary="Set auto-topup", body=AUTO_TOPUP,
              response="AutoTopupAnswer", errors=("billing_disabled",))
def put_auto_topup(req: Request) -> dict[str, Any]:
    return autotopup.put(req.user_id, req.parse(AUTO_TOPUP))


@router.route("GET /v1/billing/invoices", summary="Invoices, newest first (drafts hidden)", response="InvoicePage",
              query={"status": {"type": "string", "enum": [*invoices.LISTED, ""]},
                     "limit": page_size_query(), "cursor": CURSOR_QUERY})
def list_invoices(req: Request) -> dict[str, Any]:
    limit = query_int(req, "limit", 50, 1, 200)
    return invoices.list_page(req.user_id, req.query.get("status") or None, limit, req.query.get("cursor") or None)


@router.route("GET /v1/billing/invoices/{id}", summary="One invoice", response="Invoice",
              errors=("invoice_not_found",))
def get_invoice(req: Request) -> dict[str, Any]:
    return invoices.public(invoices.get_owned(req.user_id, req.path_params["id"]))


@router.route("GET /v1/billing/invoices/{id}/pay-url", summary="A fresh Stripe pay page for an open invoice",
              response="PayUrl", errors=("invoice_not_found",))
def pay_url(req: Request) -> dict[str, Any]:
    return invoices.pay_url(req.user_id, req.path_params["id"])


handler = lambda_handler(router.handler, API)
