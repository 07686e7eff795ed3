"""The HTTP edge shared by every API function: API Gateway HTTP API (payload
2.0) events in, responses out.

A function declares its routes by `routeKey` (exactly as `template.yaml` and
API Gateway name them, e.g. `GET /v1/rentals/{id}`), so dispatch is one dict
look-up. Here, and only here: authentication, the Origin check, rate limits,
body parsing and validation, and the mapping of `ApiError` to the documented
envelope.

No pydantic here: a body's model is named (`Body`) and imported, with pydantic, at the first
body the function validates (`gpurent.bodies`), not at cold start.
"""

from __future__ import annotations

import base64
import importlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from gpurent import auth, clock, rate_limits, retry, text
from gpurent.config import settings
from gpurent.errors import ApiError, ConflictRetryExhausted
from gpurent.telemetry import count, logger

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

MAX_BODY_BYTES = 64 * 1024
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

M = TypeVar("M", bound="BaseModel")


@dataclass(frozen=True)
class Body(Generic[M]):
    """A request body's model, by its name in `gpurent.bodies`: `Request.parse` validates
    with it and `Router.route(body=…)` documents it. The module (and pydantic) is imported
    at the first body validated, not when a function's routes are declared: a cold start
    does not pay pydantic's model machinery, the first request with a body does.

        LAUNCH: Body[Launch] = Body("Launch")  # `Launch` imported under TYPE_CHECKING
    """

    name: str

    def model(self) -> type[M]:
        return cast("type[M]", getattr(importlib.import_module("gpurent.bodies"), self.name))


_IDEMPOTENCY_KEY = re.compile(text.IDEMPOTENCY_KEY_PATTERN.removeprefix("^").removesuffix("$"))


def _json_number(raw: str) -> int | float:
    """A JSON number written with a fraction or exponent. JSON Schema's `integer` is any number
    with a zero fraction (`55714.0`, `1e3`), so those are integers here too (up to 2**53,
    where a double is still exact); anything else stays a float."""
    value = float(raw)
    if value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


@dataclass
class Request:
    route_key: str
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    path_params: dict[str, str]
    cookies: dict[str, str]
    body: bytes
    source_ip: str
    request_id: str
    principal: auth.Principal | None = None

    @property
    def user_id(self) -> str:
        if self.principal is None:
            raise ApiError("unauthorized")
        return self.principal.user_id

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body, parse_float=_json_number)
        except (ValueError, RecursionError) as exc:
            raise ApiError("validation_failed", "Body is not valid JSON", {"body": "not valid JSON"}) from exc

    def parse(self, body: Body[M]) -> M:
        """Validate the JSON body against `body`'s model (unknown fields rejected)."""
        data = self.json()
        if not isinstance(data, dict):
            raise ApiError("validation_failed", "Body must be a JSON object", {"body": "must be a JSON object"})
        model = body.model()  # imports pydantic at a process's first body

        from pydantic import ValidationError

        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc) from None


@dataclass
class Response:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)
    raw_body: str | None = None


def validation_error(exc: ValidationError) -> ApiError:
    details: dict[str, str] = {}
    for err in exc.errors(include_url=False, include_input=False):
        name = ".".join(str(p) for p in err["loc"]) or "body"
        msg = "unknown field" if err["type"] == "extra_forbidden" else str(err["msg"])
        details.setdefault(name, msg)
    first = next(iter(details.items()))
    return ApiError("validation_failed", f"{first[0]}: {first[1]}", details)


def query_int(req: Request, name: str, default: int, low: int, high: int) -> int:
    raw = req.query.get(name)
    if raw is None or raw == "":
        return default
    # str.isdigit() is True for '²' and other non-ASCII digits that int() refuses.
    if not (raw.isascii() and raw.isdigit()) or not (low <= int(raw) <= high):
        raise ApiError("validation_failed", f"{name} must be an integer from {low} to {high}",
                       {name: f"must be an integer from {low} to {high}"})
    return int(raw)


def idempotency_key(req: Request) -> str | None:
    """The `Idempotency-Key` header (Stripe's semantics), if given."""
    key = req.headers.get("idempotency-key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError("validation_failed", "Idempotency-Key must be 1-255 printable ASCII characters",
                       {"Idempotency-Key": "must be 1-255 printable ASCII characters"})
    return key


Handler = Callable[[Request], "Response | dict[str, Any]"]

# JSON schemas of query parameters shared by list routes (route documentation only). An empty
# query value means the parameter was not given (`?status=` lists all), so enums include "".
CURSOR_QUERY: dict[str, Any] = {"type": "string", "maxLength": 2048,
                                "description": "The `nextCursor` of the previous page"}


def page_size_query(default: int = 50, maximum: int = 200) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}


@dataclass(frozen=True)
class RouteDoc:
    """What the OpenAPI document says about a route (`infra/openapi.py` reads it).

    Plain data, never used to serve a request: `body` is the request model the
    handler parses (a `Body` of `gpurent.bodies`; or the name, a string, of a
    model in `infra/contract.py` for a body the handler does not parse with
    pydantic), `query` maps each query
    parameter to its JSON schema, `response` names the answer's model in
    `infra/contract.py`, `errors` are the route-specific documented error
    codes (the generic ones follow from auth/admin/rate limits/body), and
    `headers` names the documented request headers (`Idempotency-Key`, …).
    """

    summary: str = ""
    body: Body[Any] | str | None = None
    query: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    response: str | None = None
    errors: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Route:
    fn: Handler
    auth: bool
    admin: bool
    rate_limited: bool
    doc: RouteDoc = field(default_factory=RouteDoc)
    session_only: bool = False  # a signed-in session, not an API token (403 `forbidden`)


class Router:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}

    def route(
        self,
        route_key: str,
        *,
        auth: bool = True,
        admin: bool = False,
        rate_limited: bool = True,
        session_only: bool = False,
        summary: str = "",
        description: str = "",
        body: Body[Any] | str | None = None,
        query: Mapping[str, Mapping[str, Any]] | None = None,
        response: str | None = None,
        errors: tuple[str, ...] = (),
        headers: tuple[str, ...] = (),
    ) -> Callable[[Handler], Handler]:
        """Register `fn` for `route_key`; the keyword-only doc fields only feed the OpenAPI document."""
        doc = RouteDoc(summary, body, query or {}, response, errors, headers, description)

        def register(fn: Handler) -> Handler:
            self.routes[route_key] = Route(fn, auth or admin or session_only, admin, rate_limited, doc, session_only)
            return fn

        return register

    def handler(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        started = time.perf_counter()
        req: Request | None = None
        extra_headers: dict[str, str] = {}
        try:
            req = parse_event(event)
            route = self.routes.get(req.route_key)
            if route is None:
                raise ApiError("not_found")
            with retry.interactive():  # a person is waiting: bounded retries, then 503
                resp = self._run(route, req, extra_headers)
        except ApiError as err:
            resp = Response(err.status, err.body(), dict(err.headers))
        except ConflictRetryExhausted:
            logger.warning("a money transaction kept losing to concurrent writers",
                           extra={"routeKey": event.get("routeKey")})
            busy = ApiError("service_unavailable", "The wallet is busy with other operations; nothing was done. "
                            f"Retry in {retry.RETRY_AFTER_SECONDS} s",
                            headers={"Retry-After": str(retry.RETRY_AFTER_SECONDS)})
            resp = Response(busy.status, busy.body(), dict(busy.headers))
        except Exception:
            logger.exception("unhandled error", extra={"routeKey": event.get("routeKey")})
            internal = ApiError("internal_error")
            resp = Response(internal.status, internal.body())
        resp.headers.update({k: v for k, v in extra_headers.items() if k not in resp.headers})
        out = render(resp)
        if resp.status >= 500:
            count("ServerErrors")
        elif resp.status == 429:
            count("RateLimited")
        logger.info(
            "request",
            extra={
                "routeKey": event.get("routeKey"),
                "status": resp.status,
                "ms": round((time.perf_counter() - started) * 1000, 1),
                "userId": req.principal.user_id if req and req.principal else None,
            },
        )
        return out

    def _run(self, route: Route, req: Request, extra_headers: dict[str, str]) -> Response:
        if route.auth:
            req.principal = auth.authenticate(req.cookies.get("sid"), bearer_token(req.headers))
            if req.principal.via == "session" and req.method in MUTATING:
                check_origin(req.headers.get("origin"))
        elif req.method in MUTATING and route.rate_limited:
            check_origin(req.headers.get("origin"))
        if route.rate_limited:
            extra_headers.update(rate_limits.enforce_request_limits(req.principal, req.source_ip))
        if route.admin:
            auth.require_admin(req.principal)
        if route.session_only:
            auth.require_session(req.principal)
        result = route.fn(req)
        resp = result if isinstance(result, Response) else Response(200, result)
        if req.principal is not None and req.principal.refreshed_cookie:
            resp.cookies.append(req.principal.refreshed_cookie)
        return resp


def check_origin(origin: str | None) -> None:
    """CSRF guard: a browser request from an origin not on the allow-list is refused.

    Requests without `Origin` (curl, scripts) pass, as documented.
    """
    if origin is None:
        return
    allowed = set(settings().allowed_origins) | {settings().public_url}
    if origin.rstrip("/") not in allowed:
        raise ApiError("forbidden", "Origin not allowed")


def bearer_token(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization", "")
    if value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return None


def parse_event(event: dict[str, Any]) -> Request:
    ctx = event.get("requestContext") or {}
    http = ctx.get("http") or {}
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    raw = event.get("body") or ""
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode("utf-8")
    if len(body) > MAX_BODY_BYTES:
        raise ApiError("validation_failed", "Body larger than 64 KiB", {"body": "larger than 64 KiB"})
    cookies: dict[str, str] = {}
    for c in event.get("cookies") or []:
        name, _, value = c.partition("=")
        cookies.setdefault(name.strip(), value.strip())
    return Request(
        route_key=str(event.get("routeKey", "")),
        method=str(http.get("method", "GET")).upper(),
        path=str(event.get("rawPath") or http.get("path") or "/"),
        headers=headers,
        query={str(k): str(v) for k, v in (event.get("queryStringParameters") or {}).items()},
        path_params={str(k): str(v) for k, v in (event.get("pathParameters") or {}).items()},
        cookies=cookies,
        body=body,
        source_ip=str(http.get("sourceIp", "0.0.0.0")),  # noqa: S104 - a value, not a bind address
        request_id=str(ctx.get("requestId", "")),
    )


def render(resp: Response) -> dict[str, Any]:
    headers = {"cache-control": "no-store", **{k.lower(): v for k, v in resp.headers.items()}}
    if resp.raw_body is not None:
        body = resp.raw_body
    elif resp.body is None:
        body = ""
    else:
        headers.setdefault("content-type", "application/json")
        body = json.dumps(resp.body, separators=(",", ":"))
    out: dict[str, Any] = {"statusCode": resp.status, "headers": headers, "body": body, "isBase64Encoded": False}
    if resp.cookies:
        out["cookies"] = resp.cookies
    return out


def redirect(location: str, cookies: list[str] | None = None) -> Response:
    return Response(302, None, {"location": location}, cookies or [])


def now_iso() -> str:
    return clock.now_iso()
