"""Catalog routes: listings, facets, families, templates, and the launch preview."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import gpurent
from gpurent import catalog, templates
from gpurent.api import CURSOR_QUERY, Body, Request, Response, Router, page_size_query, query_int
from gpurent.errors import ApiError
from gpurent.regions import REGION_PATTERN
from gpurent.telemetry import API, lambda_handler

if TYPE_CHECKING:
    from gpurent.bodies import Preview

router = Router()

PREVIEW: Body[Preview] = Body("Preview")


def _number(req: Request, name: str, integer: bool) -> float | None:
    raw = req.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = -1
    if value < 0 or value != value or value > 10**9:
        kind = "a non-negative integer" if integer else "a non-negative number"
        raise ApiError("validation_failed", f"{name} must be {kind}", {name: f"must be {kind}"})
    return value


@router.route("GET /v1/catalog/listings", summary="Live listings, cheapest first", response="ListingPage",
              errors=("invalid_count",), query={
                  "model": {"type": "string", "maxLength": 64, "pattern": "^[A-Za-z0-9_-]*$"},
                  "minVramGb": {"type": "number", "minimum": 0, "maximum": 10**9},
                  "gpuCount": {"type": "integer", "enum": [1, 2, 4, 8]},
                  "region": {"type": "string", "pattern": REGION_PATTERN.replace(")$", ")?$"),  # or empty
                             "description": "ISO country code or us, eu, apac"},
                  "maxPricePerHourCents": {"type": "number", "minimum": 0, "maximum": 10**9},
                  "cursor": CURSOR_QUERY, "pageSize": page_size_query()})
def listings(req: Request) -> dict[str, Any]:
    count = _number(req, "gpuCount", integer=True)
    max_price = _number(req, "maxPricePerHourCents", integer=False)
    model = req.query.get("model") or None
    if model is not None and (len(model) > 64 or not model.replace("_", "").replace("-", "").isalnum()):
        raise ApiError("validation_failed", "model must be a model code like H100_SXM_80GB",
                       {"model": "must be a model code like H100_SXM_80GB"})
    filters = catalog.Filters(
        model=model,
        min_vram_gb=_number(req, "minVramGb", integer=False),
        gpu_count=catalog.check_gpu_count(int(count)) if count is not None else None,
        region=catalog.check_region(req.query.get("region") or None),
        max_price_cents=max_price,
    )
    size = query_int(req, "pageSize", 50, 1, 200)
    return catalog.listings_page(req.user_id, filters, req.query.get("cursor") or None, size)


@router.route("GET /v1/catalog/facets", summary="Counts per model, region, provider; the price range",
              response="Facets")
def facets(req: Request) -> dict[str, Any]:
    return catalog.facets()


@router.route("GET /v1/catalog/families", summary="GPU families and their live offer", response="FamilyList")
def families(req: Request) -> dict[str, Any]:
    return {"families": catalog.families_public()}


@router.route("GET /v1/templates", summary="The pod templates", response="TemplateList")
def template_list(req: Request) -> dict[str, Any]:
    return {"templates": [templates.public(t) for t in templates.TEMPLATES]}


@router.route("POST /v1/rentals/preview", summary="What a launch would pick and cost (reserves nothing)",
              body=PREVIEW, response="PreviewAnswer", errors=("invalid_count", "model_unavailable"))
def preview(req: Request) -> dict[str, Any]:
    body = req.parse(PREVIEW)
    catalog.check_family(body.familyId)
    catalog.check_gpu_count(body.gpuCount)
    if templates.get_template(body.templateId) is None:
        known = ", ".join(t.id for t in templates.TEMPLATES)
        raise ApiError("validation_failed", f"templateId must be one of {known}", {"templateId": f"one of {known}"})
    return catalog.preview(body.familyId, body.gpuCount, catalog.check_region(body.region),
                           body.maxPricePerHourCents)


_openapi: str | None = None


@router.route("GET /v1/openapi.json", auth=False, summary="This API's OpenAPI 3.1 document", response="OpenApiDocument")
def openapi(req: Request) -> Response:
    """The document `python -m infra.openapi` generated, shipped in the layer (read once per container)."""
    global _openapi
    if _openapi is None:
        with open(os.path.join(os.path.dirname(gpurent.__file__), "openapi.json"), encoding="utf-8") as f:
            _openapi = f.read()
    return Response(200, raw_body=_openapi, headers={"content-type": "application/json"})


handler = lambda_handler(router.handler, API)
