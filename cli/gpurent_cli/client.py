"""A small HTTP client for the gpurent `/v1` API: credentials, the error
envelope, exit codes and bounded retries on 429 (honouring `Retry-After`)."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from .config import Credential

# Exit codes (documented in cli/README.md and `gpurent --help`).
EXIT_OK = 0
EXIT_API_ERROR = 1  # the API refused the request (400, 403, 409, other 4xx)
EXIT_USAGE = 2  # bad command line (argparse's own code)
EXIT_AUTH = 3  # not signed in, or the API answered 401
EXIT_NOT_FOUND = 4  # the API answered 404
EXIT_SERVER = 5  # 5xx, network failure, or still rate-limited after the retries
EXIT_RENTAL_FAILED = 6  # launch --wait: the rental failed, or was not running before --timeout

MAX_RETRIES = 3  # after the first attempt, as the docs recommend
MAX_RETRY_WAIT = 60.0  # a Retry-After longer than this is not waited for
FALLBACK_RETRY_WAIT = 30.0  # the documented fallback when Retry-After is missing or unreadable
TIMEOUT = 30.0
USER_AGENT = "gpurent-cli/0.1.0"

# Indirection so tests can make retries instant.
sleep: Callable[[float], None] = time.sleep


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# Every wait is said out loud (stderr, so stdout stays what a script captures).
notify: Callable[[str], None] = _to_stderr


class CliError(Exception):
    """Anything that ends a command with a message on stderr and a non-zero exit code."""

    def __init__(self, message: str, exit_code: int, *, envelope: dict[str, Any] | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.envelope = envelope
        self.status = status


class NotSignedIn(CliError):
    def __init__(self, api: str) -> None:
        super().__init__(f"Not signed in to {api}. Run `gpurent login` first.", EXIT_AUTH)


def exit_code_for_status(status: int) -> int:
    if status == 401:
        return EXIT_AUTH
    if status == 404:
        return EXIT_NOT_FOUND
    if status == 429 or status >= 500:
        return EXIT_SERVER
    return EXIT_API_ERROR


def api_error(resp: httpx.Response) -> CliError:
    """The API's error envelope as a CliError, its message verbatim."""
    envelope: dict[str, Any] | None = None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        envelope = body
        message = body.get("message")
        text = message if isinstance(message, str) and message else body["error"]
    else:
        snippet = resp.text.strip().splitlines()[0][:200] if resp.text.strip() else ""
        text = f"HTTP {resp.status_code} {resp.reason_phrase}" + (f": {snippet}" if snippet else "")
    return CliError(text, exit_code_for_status(resp.status_code), envelope=envelope, status=resp.status_code)


def retry_after(resp: httpx.Response) -> float:
    raw = resp.headers.get("retry-after")
    if raw is not None:
        try:
            value = float(raw.strip())
        except ValueError:
            return FALLBACK_RETRY_WAIT
        if value >= 0:
            return value
    return FALLBACK_RETRY_WAIT


def new_idempotency_key() -> str:
    return f"cli-{uuid.uuid4()}"


class Client:
    def __init__(self, api: str, credential: Credential | None = None, *,
                 transport: httpx.BaseTransport | None = None, timeout: float = TIMEOUT) -> None:
        self.api = api
        self.credential = credential
        self._http = httpx.Client(base_url=api, timeout=timeout, transport=transport,
                                  headers={"user-agent": USER_AGENT, "accept": "application/json"})
        # A session the server re-issued (sliding expiry) or a new one from verify-code.
        self.new_sid: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None,
                auth: bool = True, idempotency_key: str | None = None) -> Any:
        """One API call: the decoded JSON body of a 2xx answer, else a CliError.

        429 is retried up to MAX_RETRIES times after `Retry-After` seconds (30 when absent), unless the
        server asks for more than MAX_RETRY_WAIT. A retried mutation sends the same Idempotency-Key.
        """
        headers: dict[str, str] = {}
        if auth:
            if self.credential is None:
                raise NotSignedIn(self.api)
            headers.update(self.credential.headers())
        if idempotency_key is not None:
            headers["idempotency-key"] = idempotency_key
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            try:
                resp = self._http.request(method, path, json=json_body, params=clean, headers=headers)
            except httpx.TimeoutException as exc:
                raise CliError(f"Timed out talking to {self.api} ({exc.__class__.__name__})", EXIT_SERVER) from None
            except httpx.HTTPError as exc:
                raise CliError(f"Cannot reach {self.api}: {exc}", EXIT_SERVER) from None
            if resp.status_code == 429 and attempt < MAX_RETRIES:
                wait = retry_after(resp)
                if wait <= MAX_RETRY_WAIT:
                    attempt += 1
                    told = "Retry-After" if resp.headers.get("retry-after") is not None else "no Retry-After given"
                    notify(f"Rate limited on {method} {path}: waiting {wait:g} s ({told}) before retry "
                           f"{attempt} of {MAX_RETRIES}…")
                    sleep(wait)
                    continue
            break
        sid = resp.cookies.get("sid")
        if sid:
            self.new_sid = sid
        if resp.status_code >= 400:
            raise api_error(resp)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise CliError(f"The API answered {resp.status_code} with a body that is not JSON", EXIT_SERVER) from None

    def get(self, path: str, params: dict[str, Any] | None = None, *, auth: bool = True) -> Any:
        return self.request("GET", path, params=params, auth=auth)

    def post(self, path: str, body: Any = None, *, auth: bool = True, idempotency_key: str | None = None) -> Any:
        return self.request("POST", path, json_body=body, auth=auth, idempotency_key=idempotency_key)

    def pages(self, path: str, key: str, params: dict[str, Any] | None = None,
              limit: int | None = None) -> Iterator[tuple[dict[str, Any], list[Any]]]:
        """Every page of a cursor-paginated list: (page, its items), following `nextCursor`."""
        query = dict(params or {})
        seen = 0
        while True:
            page = self.get(path, query)
            if not isinstance(page, dict):
                raise CliError(f"Unexpected answer from {path}: {json.dumps(page)[:200]}", EXIT_SERVER)
            items = page.get(key) or []
            yield page, items
            seen += len(items)
            cursor = page.get("nextCursor")
            if not cursor or (limit is not None and seen >= limit):
                return
            query["cursor"] = cursor
