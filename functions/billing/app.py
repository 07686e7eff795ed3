"""Billing routes: balance and ledger."""

from __future__ import annotations

from typing import Any

from gpurent import ledger
from gpurent.api import Request, Router, query_int

router = Router()


@router.route("GET /v1/billing/balance")
def balance(req: Request) -> dict[str, Any]:
    return ledger.balance(req.user_id)


@router.route("GET /v1/billing/ledger")
def ledger_page(req: Request) -> dict[str, Any]:
    size = query_int(req, "pageSize", 50, 1, 200)
    return ledger.page(req.user_id, req.query.get("cursor") or None, size, req.query.get("type") or None)


handler = router.handler
