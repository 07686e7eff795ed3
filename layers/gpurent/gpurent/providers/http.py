"""The HTTP client every adapter shares: timeouts, bounded retries, JSON decoding.

Retry rules (why they differ by call):

- A connection that never got established (connect error, connect or pool timeout)
  never reached the provider: every call may be retried.
- 429 and 503 mean "refused, not processed": every call may be retried (honouring
  ``Retry-After``, capped).
- A read timeout, a dropped connection, 502 and 504 may come **after** the provider
  acted. Only idempotent calls (GET, list, terminate) are retried on them. A create is
  not: it raises ``transient`` at once and the caller reconciles by label, because a
  second create could start a second billed machine.
- After the last attempt a retryable failure is ``ProviderError(kind="transient")``.

Every other status is handed back to the adapter, which classifies it with the
provider's own error vocabulary (``status_kind`` is the fallback).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import certifi
import httpx

from gpurent.providers.base import ErrorKind, ProviderError

log = logging.getLogger("gpurent.providers")

Sleep = Callable[[float], Awaitable[None]]

RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Statuses that say the request was not processed: safe to repeat even for a create.
NOT_PROCESSED_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class HttpPolicy:
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    max_attempts: int = 4  # tries in all, for a retryable failure
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    retry_after_cap: float = 30.0


class Malformed(Exception):
    """An answer is missing a field or has the wrong type."""


_tls_context: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    """One TLS context per process: building one loads the CA bundle (~30 ms), and a
    client per call would otherwise pay that on every provider request."""
    global _tls_context
    if _tls_context is None:
        _tls_context = ssl.create_default_context(cafile=certifi.where())
    return _tls_context


# One pooled client per event loop that asked for one (`pooled`): an invocation that makes many
# provider calls (the reconciler, the catalog refresh) reuses connections (one TLS handshake per
# provider host, not per request). Calls from a loop without one get a client of their own.
_pools: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
POOL_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=32, keepalive_expiry=30.0)


@contextlib.asynccontextmanager
async def pooled() -> AsyncIterator[httpx.AsyncClient]:
    """Every provider call made in this event loop meanwhile shares one client (and its
    connections); closed at the end."""
    loop = asyncio.get_running_loop()
    client = httpx.AsyncClient(trust_env=False, verify=_tls(), limits=POOL_LIMITS)
    _pools[loop] = client
    try:
        yield client
    finally:
        _pools.pop(loop, None)
        await client.aclose()


def status_kind(status: int) -> ErrorKind:
    """The error kind an HTTP status says when the body says nothing we know."""
    if status in (401, 403):
        return "auth"
    if status in (404, 410):
        return "not_found"
    if status == 402:
        return "quota"
    if 400 <= status < 500 and status != 429:
        return "invalid"
    return "transient"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class JsonHttp:
    """One provider's HTTP endpoint: base URL, auth headers, policy and sleep."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        *,
        policy: HttpPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        client: httpx.AsyncClient | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers)
        self.policy = policy or HttpPolicy()
        self._sleep = sleep
        self._client = client
        self._rand = rand

    def _timeout(self, read_timeout: float | None) -> httpx.Timeout:
        p = self.policy
        rt = p.read_timeout if read_timeout is None else read_timeout
        return httpx.Timeout(connect=p.connect_timeout, read=rt, write=rt, pool=p.connect_timeout)

    async def _once(self, method: str, url: str, json: Any, params: Mapping[str, str] | None,
                    timeout: httpx.Timeout) -> httpx.Response:
        kwargs: dict[str, Any] = {"headers": self.headers, "params": params, "timeout": timeout}
        if json is not None:
            kwargs["json"] = json
        shared = self._client or _pools.get(asyncio.get_running_loop())
        if shared is not None:
            return await shared.request(method, url, **kwargs)
        # No pool in this loop (one API request's call or two): a client for this call. A
        # pooled client must not outlive the loop it was made in (`pooled`).
        async with httpx.AsyncClient(trust_env=False, verify=_tls()) as client:
            return await client.request(method, url, **kwargs)

    def _backoff(self, attempt: int, response: httpx.Response | None) -> float:
        p = self.policy
        if response is not None:
            ra = parse_retry_after(response.headers.get("retry-after"))
            if ra is not None:
                return min(ra, p.retry_after_cap)
        ceiling = min(p.backoff_cap, p.backoff_base * 2.0 ** (attempt - 1))
        return ceiling / 2 + self._rand() * ceiling / 2

    def _error(self, kind: ErrorKind, message: str) -> ProviderError:
        return ProviderError(self.provider, kind, message)

    async def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        idempotent: bool,
        read_timeout: float | None = None,
        retryable: Callable[[httpx.Response], bool] | None = None,
    ) -> httpx.Response:
        """Send one request with the retry rules above; return the final response.

        ``retryable`` may veto retrying a response whose status is otherwise retryable
        (vast's 429 ``search_quota_exceeded`` is a quota, not a blip).
        """
        url = self.base_url + path
        what = f"{method} {path}"
        timeout = self._timeout(read_timeout)
        attempts = max(1, self.policy.max_attempts)
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= attempts
            try:
                response = await self._once(method, url, json, params, timeout)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
                if last:
                    raise self._error("transient", f"cannot reach {what}: {type(e).__name__}") from e
                log.warning("%s: %s failed to connect (%s), retrying", self.provider, what, type(e).__name__)
                await self._sleep(self._backoff(attempt, None))
                continue
            except httpx.TransportError as e:
                # Read/write timeout, dropped connection: the provider may have acted.
                if idempotent and not last:
                    log.warning("%s: %s %s, retrying", self.provider, what, type(e).__name__)
                    await self._sleep(self._backoff(attempt, None))
                    continue
                note = "" if idempotent else " (it may have taken effect)"
                raise self._error("transient", f"{what} failed: {type(e).__name__}{note}") from e
            status = response.status_code
            if (
                status in RETRY_STATUSES
                and (idempotent or status in NOT_PROCESSED_STATUSES)
                and (retryable is None or retryable(response))
            ):
                if last:
                    raise self._error("transient", f"{what} answered HTTP {status} after {attempt} attempts")
                log.warning("%s: %s answered HTTP %s, retrying", self.provider, what, status)
                await self._sleep(self._backoff(attempt, response))
                continue
            return response

    def decode(self, response: httpx.Response) -> Any:
        """The JSON body, or ``ProviderError(transient)`` when it is not JSON."""
        try:
            return response.json()
        except ValueError as e:
            snippet = response.text[:120].replace("\n", " ")
            raise self._error(
                "transient", f"malformed JSON (HTTP {response.status_code}) from {self.provider}: {snippet!r}"
            ) from e


def unrecognised_refusal(provider: str, what: str, raw: str) -> ProviderError:
    """A refusal in words (or a code) we do not know: ``transient``, logged with its raw
    text so the wording can be added to the adapter's table."""
    text = " ".join(str(raw).split())[:300]
    log.warning("%s: %s refused in words we do not know (treated as transient): %r", provider, what, text)
    return ProviderError(provider, "transient", f"{what} failed: {text}")


# --- reading fields out of decoded JSON ------------------------------------------------


def obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{what} is not an object")
    return value


def arr(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise Malformed(f"{what} is not a list")
    return value


def get_str(d: Mapping[str, Any], key: str, *, optional: bool = False) -> str | None:
    v = d.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str) or (not v and not optional):
        raise Malformed(f"{key!r} is missing or not a string")
    return v


def req_str(d: Mapping[str, Any], key: str) -> str:
    v = get_str(d, key)
    assert v is not None
    return v


def get_num(d: Mapping[str, Any], key: str, *, optional: bool = False) -> float | None:
    v = d.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise Malformed(f"{key!r} is missing or not a number")
    return v


def req_num(d: Mapping[str, Any], key: str) -> float:
    v = get_num(d, key)
    assert v is not None
    return v


def get_int(d: Mapping[str, Any], key: str, *, optional: bool = False) -> int | None:
    v = d.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, str) and v.strip().isdigit():
            return int(v.strip())
        raise Malformed(f"{key!r} is missing or not an integer")
    return v


def req_int(d: Mapping[str, Any], key: str) -> int:
    v = get_int(d, key)
    assert v is not None
    return v
