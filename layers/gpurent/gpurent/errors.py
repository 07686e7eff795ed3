"""Domain errors and the one table that maps them to HTTP.

Every error the API returns is an `ApiError` with a documented snake_case code;
its HTTP status comes from `STATUS` and nowhere else.
"""

from __future__ import annotations

from typing import Any

STATUS: dict[str, int] = {
    "invalid_email": 400,
    "invalid_amount": 400,
    "weak_key": 400,
    "duplicate_key": 400,
    "invalid_count": 400,
    "model_unavailable": 400,
    "billing_disabled": 400,
    "validation_failed": 400,
    "invalid_signature": 400,
    "card_declined": 400,
    "unauthorized": 401,
    "code_invalid": 401,
    "code_expired": 401,
    "oauth_state_mismatch": 401,
    "forbidden": 403,
    "insufficient_balance": 403,
    "not_found": 404,
    "rental_not_found": 404,
    "key_not_found": 404,
    "token_not_found": 404,
    "session_not_found": 404,
    "invoice_not_found": 404,
    "user_not_found": 404,
    "already_stopped": 409,
    "card_already_on_file": 409,
    "conflict": 409,
    "rate_limited": 429,
    "code_request_rate_limited": 429,
    "internal_error": 500,
    # Extension: the work could not be done now and nothing was written (a wallet busy with
    # concurrent writers, Stripe unreachable); retry after `Retry-After` seconds.
    "service_unavailable": 503,
}

DEFAULT_MESSAGE: dict[str, str] = {
    "unauthorized": "Not signed in",
    "forbidden": "Not permitted",
    "not_found": "Not found",
    "internal_error": "Internal error, please retry",
    "validation_failed": "Request validation failed",
    "rate_limited": "Too many requests",
    "service_unavailable": "Busy right now; nothing was done, retry in a moment",
}


class ApiError(Exception):
    """An error with a documented code; `status` follows from the code."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if code not in STATUS:
            raise ValueError(f"undocumented error code {code!r}")
        self.code = code
        self.message = message or DEFAULT_MESSAGE.get(code, code.replace("_", " ").capitalize())
        self.details = details
        self.headers = headers or {}
        super().__init__(f"{code}: {self.message}")

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details is not None:
            out["details"] = self.details
        return out


def validation(field: str, message: str) -> ApiError:
    return ApiError("validation_failed", f"{field}: {message}", {field: message})


class ConflictRetryExhausted(Exception):
    """Another writer kept winning; the operation was applied neither twice nor half."""
