"""Request rate limits: per credential and per user when signed in, else per source address;
the `X-RateLimit-*` headers and the 429 with its Retry-After."""

from __future__ import annotations

from gpurent import clock
from gpurent.auth import Principal
from gpurent.config import settings
from gpurent.errors import ApiError
from gpurent.store import rate_limits as limit_store

# Per user, across all of the user's sessions and tokens: by default this many times
# the per-credential limits (RATE_LIMIT_PER_MINUTE / _PER_HOUR, so they follow them);
# USER_RATE_LIMIT_PER_MINUTE / _PER_HOUR set them directly.
USER_RATE_LIMIT_FACTOR = 2


def enforce_request_limits(principal: Principal | None, source_ip: str) -> dict[str, str]:
    """Count an API request: per credential and per user when signed in, else per source IP.

    Each window is one conditional write; a request refused by the user's window is given
    back to the credential's, so a refused request counts nowhere. Returns the
    `X-RateLimit-*` headers of the tighter minute window.
    """
    s = settings()
    if principal is None:
        return enforce_rate_limit(f"IP#{source_ip}", s.ip_rate_limit_per_minute, s.ip_rate_limit_per_hour)
    now = clock.now()
    own = (f"P#{principal.bucket}", s.rate_limit_per_minute, s.rate_limit_per_hour)
    user = (f"U#{principal.user_id}", s.user_rate_limit_per_minute or s.rate_limit_per_minute * USER_RATE_LIMIT_FACTOR,
            s.user_rate_limit_per_hour or s.rate_limit_per_hour * USER_RATE_LIMIT_FACTOR)
    own_hit = limit_store.hit_rate_limit(own[0], now, own[1], own[2])
    if not own_hit.allowed:
        raise _rate_limited(own_hit, own[1], own[2], now)
    user_hit = limit_store.hit_rate_limit(user[0], now, user[1], user[2])
    if not user_hit.allowed:
        limit_store.unhit_rate_limit(own[0], now)
        raise _rate_limited(user_hit, user[1], user[2], now)
    if user[1] - user_hit.minute_count < own[1] - own_hit.minute_count:
        return _rate_headers(user_hit, user[1], now)
    return _rate_headers(own_hit, own[1], now)


def enforce_rate_limit(bucket: str, per_minute: int, per_hour: int) -> dict[str, str]:
    """Count the request in one bucket; 429 when a window is full. Returns the `X-RateLimit-*` headers."""
    now = clock.now()
    hit = limit_store.hit_rate_limit(bucket, now, per_minute, per_hour)
    if not hit.allowed:
        raise _rate_limited(hit, per_minute, per_hour, now)
    return _rate_headers(hit, per_minute, now)


def _rate_headers(hit: limit_store.Hit, per_minute: int, now: float) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(per_minute),
        "x-ratelimit-remaining": str(max(0, per_minute - hit.minute_count)),
        "x-ratelimit-reset": str(int(now) // 60 * 60 + 60),
    }


def _rate_limited(hit: limit_store.Hit, per_minute: int, per_hour: int, now: float) -> ApiError:
    headers = _rate_headers(hit, per_minute, now)
    if hit.minute_count >= per_minute:
        retry = max(1, int(now) // 60 * 60 + 60 - int(now))
    else:
        retry = max(1, int(now) // 3600 * 3600 + 3600 - int(now))
    headers["retry-after"] = str(retry)
    headers["x-ratelimit-remaining"] = "0"
    return ApiError("rate_limited", f"Too many requests. Retry after {retry} seconds.", headers=headers)
