"""Billing routes: balance, ledger, top-ups, the card on file, auto-topup, invoices."""

from __future__ import annotations

from typing import Any

from gpurent import ledger
from gpurent.api import Request, Router, idempotency_key, query_int
from gpurent.billing import autotopup, cards, invoices, topups

router = Router()


@router.route("GET /v1/billing/balance")
def balance(req: Request) -> dict[str, Any]:
    return ledger.balance(req.user_id)


@router.route("GET /v1/billing/ledger")
def ledger_page(req: Request) -> dict[str, Any]:
    size = query_int(req, "pageSize", 50, 1, 200)
    return ledger.page(req.user_id, req.query.get("cursor") or None, size, req.query.get("type") or None)


@router.route("POST /v1/billing/checkout")
def checkout(req: Request) -> dict[str, Any]:
    return topups.checkout(req.user_id, req.parse(topups.Checkout), idempotency_key(req))


@router.route("POST /v1/billing/setup-intent")
def setup_intent(req: Request) -> dict[str, Any]:
    return cards.setup_intent(req.user_id)


@router.route("GET /v1/billing/card")
def card(req: Request) -> dict[str, Any]:
    return cards.card_public(req.user_id)


@router.route("DELETE /v1/billing/card")
def delete_card(req: Request) -> dict[str, Any]:
    return cards.delete_card(req.user_id)


@router.route("GET /v1/billing/auto-topup")
def get_auto_topup(req: Request) -> dict[str, Any]:
    return autotopup.get(req.user_id)


@router.route("PUT /v1/billing/auto-topup")
def put_auto_topup(req: Request) -> dict[str, Any]:
    return autotopup.put(req.user_id, req.parse(autotopup.AutoTopup))


@router.route("GET /v1/billing/invoices")
def list_invoices(req: Request) -> dict[str, Any]:
    limit = query_int(req, "limit", 50, 1, 200)
    return invoices.list_page(req.user_id, req.query.get("status") or None, limit, req.query.get("cursor") or None)


@router.route("GET /v1/billing/invoices/{id}")
def get_invoice(req: Request) -> dict[str, Any]:
    return invoices.public(invoices.get_owned(req.user_id, req.path_params["id"]))


@router.route("GET /v1/billing/invoices/{id}/pay-url")
def pay_url(req: Request) -> dict[str, Any]:
    return invoices.pay_url(req.user_id, req.path_params["id"])


handler = router.handler
