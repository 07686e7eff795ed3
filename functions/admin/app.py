"""Admin routes (ADMIN_EMAILS only): wallet adjustments and invoices, audited."""

from __future__ import annotations

from typing import Any

from gpurent import admin
from gpurent.api import Request, Router, idempotency_key

router = Router()


@router.route("POST /v1/admin/adjustments", admin=True)
def adjustments(req: Request) -> dict[str, Any]:
    body = req.parse(admin.Adjustment)
    return admin.adjust(req.user_id, body, idempotency_key(req))


@router.route("POST /v1/admin/invoices", admin=True)
def manual_invoice(req: Request) -> dict[str, Any]:
    return admin.manual_invoice(req.user_id, req.parse(admin.ManualInvoice), idempotency_key(req))


@router.route("POST /v1/admin/invoices/{id}/void", admin=True)
def void_invoice(req: Request) -> dict[str, Any]:
    return admin.void_invoice(req.user_id, req.path_params["id"])


handler = router.handler
