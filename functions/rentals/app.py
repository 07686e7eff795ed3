"""Rental routes: launch, list, get, stop, meter."""

from __future__ import annotations

from typing import Any

from gpurent import rentals
from gpurent.api import Request, Response, Router, idempotency_key, query_int

router = Router()


@router.route("POST /v1/rentals")
def launch(req: Request) -> Response:
    body, status = rentals.launch(req.user_id, req.parse(rentals.Launch), idempotency_key(req))
    return Response(status, body)


@router.route("GET /v1/rentals")
def list_rentals(req: Request) -> dict[str, Any]:
    size = query_int(req, "pageSize", 50, 1, 200)
    return rentals.list_page(req.user_id, req.query.get("status") or None, req.query.get("cursor") or None, size)


@router.route("GET /v1/rentals/{id}")
def get_rental(req: Request) -> dict[str, Any]:
    r = rentals.get_owned(req.user_id, req.path_params.get("id", ""))
    return rentals.public(rentals.refresh_if_provisioning(r))


@router.route("POST /v1/rentals/{id}/stop")
def stop(req: Request) -> dict[str, Any]:
    return rentals.stop(req.user_id, req.path_params.get("id", ""))


@router.route("GET /v1/rentals/{id}/meter")
def meter(req: Request) -> dict[str, Any]:
    return rentals.meter(rentals.get_owned(req.user_id, req.path_params.get("id", "")))


handler = router.handler
