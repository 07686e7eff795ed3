"""Admin routes (ADMIN_EMAILS only)."""

from __future__ import annotations

from typing import Any

from gpurent import admin
from gpurent.api import Request, Router, idempotency_key

router = Router()


@router.route("POST /v1/admin/adjustments", admin=True)
def adjustments(req: Request) -> dict[str, Any]:
    body = req.parse(admin.Adjustment)
    return admin.adjust(req.user_id, body, idempotency_key(req))


handler = router.handler
