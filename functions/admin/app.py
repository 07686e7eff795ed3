"""Admin routes (ADMIN_EMAILS only): wallet adjustments and invoices, audited."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpurent import admin
from gpurent.api import CURSOR_QUERY, Body, Request, Router, idempotency_key, page_size_query, query_int
from gpurent.telemetry import API, lambda_handler

if TYPE_CHECKING:
    from gpurent.bodies import Adjustment, ManualInvoice

router = Router()

ADJUSTMENT: Body[Adjustment] = Body("Adjustment")
MANUAL_INVOICE: Body[ManualInvoice] = Body("ManualInvoice")


@router.route("POST /v1/admin/adjustments", admin=True, summary="Adjust a wallet (admin)", body=ADJUSTMENT,
              response="AdjustmentAnswer", headers=("Idempotency-Key",),
              errors=("user_not_found", "invalid_email", "insufficient_balance"))
def adjustments(req: Request) -> dict[str, Any]:
    body = req.parse(ADJUSTMENT)
    return admin.adjust(req.user_id, body, idempotency_key(req))


@router.route("POST /v1/admin/invoices", admin=True, summary="Issue a manual invoice (admin)",
              body=MANUAL_INVOICE, response="Invoice", headers=("Idempotency-Key",),
              errors=("user_not_found", "invalid_email"))
def manual_invoice(req: Request) -> dict[str, Any]:
    return admin.manual_invoice(req.user_id, req.parse(MANUAL_INVOICE), idempotency_key(req))


@router.route("POST /v1/admin/invoices/{id}/void", admin=True, summary="Void an open invoice (admin)",
              response="Ok", errors=("invoice_not_found", "conflict"))
def void_invoice(req: Request) -> dict[str, Any]:
    return admin.void_invoice(req.user_id, req.path_params["id"])


@router.route("GET /v1/admin/audit", admin=True, summary="What admins did in a month, newest first (admin)",
              response="AuditPage",
              query={"month": {"type": "string", "pattern": "^([0-9]{4}-[0-9]{2})?$",
                               "description": "YYYY-MM (empty: this month)"},
                     "cursor": CURSOR_QUERY, "pageSize": page_size_query(50, 200)})
def audit(req: Request) -> dict[str, Any]:
    return admin.audit_list(req.user_id, req.query.get("month") or None, req.query.get("cursor") or None,
                            query_int(req, "pageSize", 50, 1, 200))


handler = lambda_handler(router.handler, API)
