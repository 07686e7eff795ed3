"""Sign-in routes: one-time codes, sessions, OAuth, personal API tokens."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gpurent import auth, oauth
from gpurent.api import Request, Response, Router, redirect
from gpurent.clock import iso

router = Router()


class RequestCode(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    email: str = Field(max_length=320)
    intent: str | None = Field(default=None, pattern="^(login|signup)$")


class VerifyCode(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    email: str = Field(max_length=320)
    code: str = Field(max_length=32)


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=64)
    expiresInDays: int | None = Field(default=None, ge=1, le=3650)


@router.route("POST /v1/auth/request-code", auth=False, summary="Mail a one-time sign-in code", body=RequestCode,
              response="RequestCodeAnswer", errors=("invalid_email", "code_request_rate_limited"))
def request_code(req: Request) -> dict[str, Any]:
    body = req.parse(RequestCode)
    return auth.request_code(body.email)


@router.route("POST /v1/auth/verify-code", auth=False, summary="Sign in with the mailed code (sets `sid`)",
              body=VerifyCode, response="SessionAnswer", errors=("invalid_email", "code_invalid", "code_expired"))
def verify_code(req: Request) -> Response:
    body = req.parse(VerifyCode)
    user, sid, expires_at = auth.verify_code(body.email, body.code)
    return Response(200, {"user": auth.user_public(user), "expiresAt": iso(expires_at)},
                    cookies=[auth.session_cookie(sid)])


@router.route("GET /v1/auth/me", summary="The signed-in user (and whether they are an admin)", response="MeAnswer")
def me(req: Request) -> dict[str, Any]:
    assert req.principal is not None
    return auth.me(req.principal)


@router.route("GET /v1/auth/providers", auth=False, summary="How one signs in here: the configured OAuth providers",
              response="AuthProviders",
              description="Extension for the dashboard's sign-in page: it shows a provider's button only when listed.")
def providers(req: Request) -> dict[str, Any]:
    return {"oauth": oauth.configured()}


@router.route("POST /v1/auth/logout", summary="End this session (clears `sid`)", response="Ok")
def logout(req: Request) -> Response:
    assert req.principal is not None
    auth.logout(req.principal)
    return Response(200, {"ok": True}, cookies=[auth.cleared_cookie()])


@router.route("GET /v1/auth/oauth/{provider}", auth=False, summary="Start OAuth sign-in (browser redirect)",
              response="redirect", errors=("not_found",))
def oauth_start(req: Request) -> Response:
    location, cookie = oauth.start(req.path_params.get("provider", ""))
    return redirect(location, [cookie] if cookie else [])


@router.route("GET /v1/auth/oauth/{provider}/callback", auth=False, summary="OAuth callback (browser redirect)",
              response="redirect", errors=("not_found",),
              query={"code": {"type": "string"}, "state": {"type": "string"}, "error": {"type": "string"}})
def oauth_callback(req: Request) -> Response:
    location, cookies = oauth.callback(req.path_params.get("provider", ""), req.query, req.cookies)
    return redirect(location, cookies)


@router.route("POST /v1/auth/tokens", summary="Create a personal API token (shown once)", body=NewToken,
              response="NewTokenAnswer")
def create_token(req: Request) -> dict[str, Any]:
    body = req.parse(NewToken)
    return auth.create_token(req.user_id, body.name.strip() or "token", body.expiresInDays)


@router.route("GET /v1/auth/tokens", summary="Live personal API tokens, newest first", response="TokenList")
def list_tokens(req: Request) -> dict[str, Any]:
    return {"tokens": auth.list_tokens(req.user_id)}


@router.route("DELETE /v1/auth/tokens/{id}", summary="Revoke a personal API token", response="Ok",
              errors=("token_not_found",))
def revoke_token(req: Request) -> dict[str, Any]:
    auth.revoke_token(req.user_id, req.path_params.get("id", ""))
    return {"ok": True}


handler = router.handler
