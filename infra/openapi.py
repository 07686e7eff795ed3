"""The OpenAPI 3.1 document of the HTTP API, generated from the code.

    python -m infra.openapi > docs/openapi.json

prints the document and writes the same bytes to
`layers/gpurent/gpurent/openapi.json`, the copy the catalog function serves at
`GET /v1/openapi.json`. `tests/unit/test_openapi.py` fails when either is stale.

Sources, so the document cannot drift from what is deployed and served:
- the routes: `template.yaml` (`infra.local.template.routes()`);
- per route, the function's `Router` entry: auth / admin / rate limit, and the
  doc fields of `Router.route(...)` (summary, request model, query parameters,
  response model name, route-specific error codes, request headers);
- request bodies: the pydantic models the handlers parse (`model_json_schema`);
- answers: the models of `infra/contract.py`;
- errors: the envelope, and each status's codes from `gpurent.errors.STATUS`.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from collections.abc import Iterable
from typing import Any, cast

from pydantic import BaseModel

from gpurent import families, templates, text
from gpurent.api import MUTATING, Body, Route, Router
from gpurent.auth import EMAIL_PATTERN
from gpurent.billing import autotopup, topups
from gpurent.catalog import GPU_COUNTS
from gpurent.errors import STATUS
from infra import contract
from infra.local.functions import load_handler
from infra.local.template import ROOT, routes

PACKAGED = ROOT / "layers" / "gpurent" / "gpurent" / "openapi.json"
COMMITTED = ROOT / "docs" / "openapi.json"
REF = "#/components/schemas/{model}"

DESCRIPTION = """\
gpurent: rent GPUs from several providers through one prepaid wallet.

Money is integer US cents (fields end in `Cents`), times are ISO 8601 UTC with
a `Z`, ids carry a type prefix (`rent_`, `key_`, `inv_`, …). Every error is
`{"error": "<code>", "message": "…", "details"?: {…}}`; the HTTP status
follows from the code. Authenticated routes take the `sid` session cookie or a
personal API token (`Authorization: Bearer gpr_…`, `POST /v1/auth/tokens`).
Rate limits: 100 requests a minute and 1,000 an hour per session or token,
and 200 a minute and 2,000 an hour per user across all of them;
unauthenticated routes per source IP. `X-RateLimit-*` describe the tighter
minute window; a 429 carries `Retry-After`.
"""

REQUEST_HEADERS: dict[str, dict[str, Any]] = {
    "Idempotency-Key": {
        "description": "Makes a retry of this request answer the first result instead of acting twice "
                       "(1-255 printable ASCII characters)",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": text.IDEMPOTENCY_KEY_PATTERN},
    },
    "Stripe-Signature": {
        "description": "Stripe's signature of the raw body (the webhook's only authentication)",
        "schema": {"type": "string"},
    },
}

RATE_HEADERS: dict[str, Any] = {
    "X-RateLimit-Limit": {"description": "Requests allowed in the current minute",
                          "schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"description": "Requests left in the current minute",
                              "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"description": "Unix time (seconds) when the minute window ends",
                          "schema": {"type": "integer"}},
}

# Request-body fields whose accepted values the handlers check beyond the model's type, so the
# document says all that the API accepts (a request valid by the document is never refused
# as malformed). Per field name, or per (model, field) where one name means different rules.
_PRINTABLE = {"pattern": text.printable_pattern(nonblank=True),
              "description": "Printable text: not blank; no control, invisible-format or line-separator "
                             "characters"}
FIELD_REFINEMENTS: dict[str, dict[str, Any]] = {
    "familyId": {"enum": [f.id for f in families.FAMILIES]},
    "templateId": {"enum": [t.id for t in templates.TEMPLATES]},
    "gpuCount": {"enum": list(GPU_COUNTS)},
    "region": {"pattern": "^([A-Za-z]{2}|[Aa][Pp][Aa][Cc])$",
               "description": "ISO country code (US, DE, JP…) or us, eu, apac"},
    "email": {"pattern": EMAIL_PATTERN, "maxLength": 254, "description": "An email address (user@host.tld)"},
    "userId": {"pattern": "^usr_[0-9A-Za-z]+$"},
    "name": _PRINTABLE,
    "reason": _PRINTABLE,
    "description": _PRINTABLE,
    "Checkout.amountCents": {"minimum": topups.MIN_TOPUP, "maximum": topups.MAX_TOPUP},
    "Adjustment.amountCents": {"not": {"const": 0}, "description": "Positive credits, negative debits; not 0"},
    "AutoTopup.thresholdCents": {"minimum": autotopup.MIN_THRESHOLD, "maximum": autotopup.MAX_THRESHOLD},
    "AutoTopup.topupAmountCents": {"minimum": autotopup.MIN_AMOUNT, "maximum": autotopup.MAX_AMOUNT},
}
# Whole-body rules beyond single fields.
MODEL_REFINEMENTS: dict[str, dict[str, Any]] = {
    # Turning auto-topup on needs both amounts.
    **{model: {"anyOf": [  # exactly one of userId or email
        {"required": ["userId"], "properties": {"userId": {"type": "string"}, "email": {"type": "null"}}},
        {"required": ["email"], "properties": {"email": {"type": "string"}, "userId": {"type": "null"}}},
    ]} for model in ("Adjustment", "ManualInvoice")},
    "AutoTopup": {"anyOf": [
        {"properties": {"enabled": {"const": False}}},
        {"required": ["thresholdCents", "topupAmountCents"],
         "properties": {"thresholdCents": {"type": "integer"}, "topupAmountCents": {"type": "integer"}}},
    ]},
}

PATH_ID_PREFIX = {
    "/v1/rentals/": "rent_", "/v1/ssh-keys/": "key_", "/v1/auth/tokens/": "tok_", "/v1/auth/sessions/": "ses_",
    "/v1/billing/invoices/": "inv_", "/v1/admin/invoices/": "inv_",
}


def function_routes() -> dict[str, Route]:
    """Every API route's `Router` entry, from the functions template.yaml names."""
    out: dict[str, Route] = {}
    for r in routes():
        handler = load_handler(r.code_uri, r.handler)
        router = cast(Router, getattr(inspect.unwrap(handler), "__self__", None))
        if not isinstance(router, Router):
            raise TypeError(f"{r.code_uri}{r.handler} is not a Router's handler")
        if r.route_key not in router.routes:
            raise KeyError(f"{r.route_key} is in template.yaml but {r.code_uri} does not serve it")
        out[r.route_key] = router.routes[r.route_key]
    return out


class _Schemas:
    """components/schemas, filled on demand; a name may mean only one schema."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def add(self, model: type[BaseModel], refine: bool = False) -> dict[str, str]:
        schema = model.model_json_schema(ref_template=REF, mode="validation" if refine else "serialization")
        for name, sub in schema.pop("$defs", {}).items():
            self._put(name, sub)
        if refine:
            for name, prop in schema.get("properties", {}).items():
                rule = FIELD_REFINEMENTS.get(f"{model.__name__}.{name}") or FIELD_REFINEMENTS.get(name)
                if rule:
                    branches = prop.get("anyOf")
                    target = next((b for b in branches if b.get("type") != "null"), prop) if branches else prop
                    target.update(rule)
            schema.update(MODEL_REFINEMENTS.get(model.__name__, {}))
        self._put(model.__name__, schema)
        return {"$ref": REF.format(model=model.__name__)}

    def _put(self, name: str, schema: dict[str, Any]) -> None:
        if name in self.items and self.items[name] != schema:
            raise ValueError(f"two different schemas are named {name}")
        self.items[name] = schema


def _model(name: str) -> type[BaseModel]:
    try:
        return contract.MODELS[name]
    except KeyError:
        raise KeyError(f"no model {name!r} in infra/contract.py") from None


def _error_response(codes: Iterable[str], schemas: _Schemas, retry_after: bool) -> dict[str, Any]:
    ordered = sorted(set(codes))
    envelope = schemas.add(contract.ErrorEnvelope)
    out: dict[str, Any] = {
        "description": ", ".join(f"`{c}`" for c in ordered),
        "content": {"application/json": {"schema": {
            "allOf": [envelope], "properties": {"error": {"type": "string", "enum": ordered}},
        }}},
    }
    if retry_after:
        out["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying", "required": True,
                                          "schema": {"type": "integer", "minimum": 1}}}
    return out


def error_codes(route_key: str, route: Route) -> dict[int, set[str]]:
    """HTTP status → the error codes this route documents."""
    method, path = route_key.split(" ", 1)
    doc = route.doc
    codes: set[str] = {"internal_error", *doc.errors}
    if method in MUTATING:
        codes.add("service_unavailable")  # nothing done now (a busy wallet, Stripe unreachable): Retry-After
    if route.auth:
        codes.add("unauthorized")
        if method in MUTATING:
            codes.add("forbidden")  # Origin check on cookie-authenticated mutations
    elif method in MUTATING and route.rate_limited:
        codes.add("forbidden")  # Origin check on the sign-in routes (login CSRF)
    if route.admin or route.session_only:
        codes.add("forbidden")
    if route.rate_limited:
        codes.add("rate_limited")
    if doc.body is not None or doc.query or "Idempotency-Key" in doc.headers:
        codes.add("validation_failed")
    if "{id}" in path and not any(STATUS[c] == 404 for c in codes):
        codes.add("not_found")
    out: dict[int, set[str]] = {}
    for code in codes:
        out.setdefault(STATUS[code], set()).add(code)
    return out


def operation(route_key: str, route: Route, function: str, schemas: _Schemas) -> dict[str, Any]:
    path = route_key.split(" ", 1)[1]
    doc = route.doc
    op: dict[str, Any] = {
        "operationId": re.sub(r"[^a-zA-Z0-9]+", "_", route_key.lower()).strip("_"),
        "tags": [function.removesuffix("Function")],
        "summary": doc.summary or route_key,
    }
    if doc.description:
        op["description"] = doc.description
    params: list[dict[str, Any]] = []
    for name in re.findall(r"\{([^}+]+)\+?\}", path):
        prefix = next((p for k, p in PATH_ID_PREFIX.items() if path.startswith(k)), None)
        param = {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        if name == "provider":
            param["description"] = "google or github"
        elif prefix:
            param["description"] = f"An id starting {prefix}"
        params.append(param)
    for name, schema in doc.query.items():
        params.append({"name": name, "in": "query", "required": False, "schema": dict(schema)})
    for name in doc.headers:
        params.append({"name": name, "in": "header", "required": False, **REQUEST_HEADERS[name]})
    if params:
        op["parameters"] = params
    if doc.body is not None:
        model = doc.body.model() if isinstance(doc.body, Body) else _model(doc.body)
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": schemas.add(model, refine=isinstance(doc.body, Body))}}}
    if route.session_only:
        op["security"] = [{"sessionCookie": []}]
        op["description"] = (op.get("description", "") + "\n\nA signed-in session only: an API token gets 403 "
                             "`forbidden`.").strip()
    elif route.auth:
        op["security"] = [{"sessionCookie": []}, {"bearerToken": []}]
    else:
        op["security"] = []
    if route.admin:
        op["description"] = (op.get("description", "") + "\n\nAdmins only (`ADMIN_EMAILS`).").strip()

    responses: dict[str, Any] = {}
    rate_headers = dict(RATE_HEADERS) if route.rate_limited else {}
    if doc.response == "redirect":
        responses["302"] = {"description": "A browser redirect",
                            "headers": {"Location": {"required": True, "schema": {"type": "string"}}}}
    else:
        if doc.response is None:
            raise ValueError(f"{route_key} documents no response model")
        ok: dict[str, Any] = {"description": "OK", "content": {"application/json": {
            "schema": schemas.add(_model(doc.response))}}}
        if rate_headers:
            ok["headers"] = rate_headers
        responses["200"] = ok
    for status, codes in sorted(error_codes(route_key, route).items()):
        responses[str(status)] = _error_response(codes, schemas, retry_after=status in (429, 503))
    op["responses"] = responses
    return op


def build() -> dict[str, Any]:
    schemas = _Schemas()
    served = function_routes()
    paths: dict[str, dict[str, Any]] = {}
    for r in sorted(routes(), key=lambda r: (r.path, r.method)):
        paths.setdefault(r.path, {})[r.method.lower()] = operation(r.route_key, served[r.route_key], r.function,
                                                                  schemas)
    schemas.add(contract.ErrorEnvelope)
    return {
        "openapi": "3.1.0",
        "info": {"title": "gpurent", "version": "1", "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items.items())),
            "securitySchemes": {
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "sid",
                                  "description": "The session cookie set by verify-code or OAuth"},
                "bearerToken": {"type": "http", "scheme": "bearer",
                                "description": "A personal API token (gpr_…) from POST /v1/auth/tokens"},
            },
        },
    }


def render(doc: dict[str, Any] | None = None) -> str:
    return json.dumps(build() if doc is None else doc, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    text = render()
    PACKAGED.write_text(text, encoding="utf-8")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
