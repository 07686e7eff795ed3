"""Rental routes: launch, list, get, stop, meter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpurent import rentals
from gpurent.api import CURSOR_QUERY, Body, Request, Response, Router, idempotency_key, page_size_query, query_int
from gpurent.telemetry import API, lambda_handler

if TYPE_CHECKING:
    from gpurent.bodies import Launch

router = Router()

LAUNCH: Body[Launch] = Body("Launch")


@router.route("POST /v1/rentals", summary="Launch a pod (reserves one hour)", body=LAUNCH,
              response="LaunchAnswer", headers=("Idempotency-Key",),
              errors=("invalid_count", "model_unavailable", "insufficient_balance"))
def launch(req: Request) -> Response:
    body, status = rentals.launch(req.user_id, req.parse(LAUNCH), idempotency_key(req))
    return Response(status, body)


@router.route("GET /v1/rentals", summary="Rentals, newest first", response="RentalPage",
              query={"status": {"type": "string", "enum": [*rentals.STATUSES, ""]}, "cursor": CURSOR_QUERY,
                     "pageSize": page_size_query()})
def list_rentals(req: Request) -> dict[str, Any]:
    size = query_int(req, "pageSize", 50, 1, 200)
    return rentals.list_page(req.user_id, req.query.get("status") or None, req.query.get("cursor") or None, size)


@router.route("GET /v1/rentals/{id}", summary="One rental", response="Rental", errors=("rental_not_found",))
def get_rental(req: Request) -> dict[str, Any]:
    r = rentals.get_owned(req.user_id, req.path_params.get("id", ""))
    return rentals.public(rentals.refresh_if_provisioning(r))


@router.route("POST /v1/rentals/{id}/stop", summary="Stop a rental (permanent)", response="StopAnswer",
              errors=("rental_not_found", "already_stopped"))
def stop(req: Request) -> dict[str, Any]:
    return rentals.stop(req.user_id, req.path_params.get("id", ""))


@router.route("GET /v1/rentals/{id}/meter", summary="Live metering of a rental", response="Meter",
              errors=("rental_not_found",))
def meter(req: Request) -> dict[str, Any]:
    return rentals.meter(rentals.get_owned(req.user_id, req.path_params.get("id", "")))


handler = lambda_handler(router.handler, API)
