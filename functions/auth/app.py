"""Sign-in routes: one-time codes, sessions, OAuth, personal API tokens, and the
person's own list of sessions and tokens ("sign out everywhere")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpurent import auth, credentials, oauth, sign_in
from gpurent.api import Body, Request, Response, Router, redirect
from gpurent.clock import iso
from gpurent.telemetry import API, lambda_handler

if TYPE_CHECKING:
    from gpurent.bodies import NewToken, RequestCode, RevokeOthers, VerifyCode

router = Router()

REQUEST_CODE: Body[RequestCode] = Body("RequestCode")
VERIFY_CODE: Body[VerifyCode] = Body("VerifyCode")
NEW_TOKEN: Body[NewToken] = Body("NewToken")
REVOKE_OTHERS: Body[RevokeOthers] = Body("RevokeOthers")


@router.route("POST /v1/auth/request-code", auth=False, summary="Mail a one-time sign-in code", body=REQUEST_CODE,
              response="RequestCodeAnswer", errors=("invalid_email", "code_request_rate_limited"),
              description="No code is mailed while the address's wrong guesses of the day are used up "
                          "(429 `rate_limited` with `Retry-After`).")
def request_code(req: Request) -> dict[str, Any]:
    body = req.parse(REQUEST_CODE)
    return sign_in.request_code(body.email)


@router.route("POST /v1/auth/verify-code", auth=False, summary="Sign in with the mailed code (sets `sid`)",
              body=VERIFY_CODE, response="SessionAnswer", errors=("invalid_email", "code_invalid", "code_expired"),
              description="20 wrong codes a day per address and 100 per source address (rolling 24 hours): "
                          "beyond them, 429 `rate_limited` with `Retry-After`.")
def verify_code(req: Request) -> Response:
    body = req.parse(VERIFY_CODE)
    user, sid, expires_at = sign_in.verify_code(body.email, body.code, req.source_ip, req.headers.get("user-agent"))
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
    location, cookies = oauth.callback(req.path_params.get("provider", ""), req.query, req.cookies,
                                       user_agent=req.headers.get("user-agent"), source_ip=req.source_ip)
    return redirect(location, cookies)


@router.route("POST /v1/auth/tokens", session_only=True, summary="Create a personal API token (shown once)",
              body=NEW_TOKEN, response="NewTokenAnswer")
def create_token(req: Request) -> dict[str, Any]:
    assert req.principal is not None
    body = req.parse(NEW_TOKEN)
    return credentials.create_token(req.principal, body.name, body.expiresInDays)


@router.route("GET /v1/auth/tokens", session_only=True, summary="Live personal API tokens, newest first",
              response="TokenList")
def list_tokens(req: Request) -> dict[str, Any]:
    return {"tokens": credentials.list_tokens(req.user_id)}


@router.route("DELETE /v1/auth/tokens/{id}", session_only=True, summary="Revoke a personal API token",
              response="Ok", errors=("token_not_found",))
def revoke_token(req: Request) -> dict[str, Any]:
    credentials.revoke_token(req.user_id, req.path_params.get("id", ""))
    return {"ok": True}


@router.route("GET /v1/auth/sessions", session_only=True, summary="Live sessions, newest first (current marked)",
              response="SessionList")
def list_sessions(req: Request) -> dict[str, Any]:
    assert req.principal is not None
    return {"sessions": credentials.list_sessions(req.principal)}


@router.route("DELETE /v1/auth/sessions/{id}", session_only=True,
              summary="End one session (the current one: clears `sid`)", response="Ok",
              errors=("session_not_found",))
def end_session(req: Request) -> Response:
    assert req.principal is not None
    current = credentials.end_session(req.principal, req.path_params.get("id", ""))
    return Response(200, {"ok": True}, cookies=[auth.cleared_cookie()] if current else [])


@router.route("POST /v1/auth/sessions/revoke-others", session_only=True, body=REVOKE_OTHERS,
              summary="Sign out everywhere else (and revoke every API token with `tokens: true`)",
              response="RevokeOthersAnswer")
def revoke_others(req: Request) -> dict[str, Any]:
    assert req.principal is not None
    body = req.parse(REVOKE_OTHERS)
    return credentials.revoke_others(req.principal, body.tokens)


handler = lambda_handler(router.handler, API)
