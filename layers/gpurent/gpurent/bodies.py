"""The request bodies of the HTTP API: the pydantic models the handlers validate JSON bodies
against (`gpurent.api.Request.parse`), and the source of their schemas in the OpenAPI
document (`infra/openapi.py`).

Imported at the first body a function validates, never at cold start: a handler names its
model with `gpurent.api.Body("Launch")`, so no function imports pydantic (and its model
machinery, the bulk of a cold start after boto3) until a request brings a body, and a
function's requests without one never do (`docs/decisions.md` "Cold starts: no pydantic at
import"). Every model is built lazily too (`defer_build`): the first body validated with a
model pays for its validator.

Keep this module light: only pydantic and modules a cold start has already imported, or
cheap ones (`templates`, `regions`). A model has no docstring: it would become the schema's
description in the published document.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gpurent.regions import REGION_PATTERN
from gpurent.templates import DEFAULT_TEMPLATE

MAX_ADJUSTMENT_CENTS = 10_000_000  # $100,000: a typo guard, not a policy

_STRICT = ConfigDict(extra="forbid", strict=True, defer_build=True)


# ---------------------------------------------------------------- sign-in (AuthFunction)

class RequestCode(BaseModel):
    model_config = _STRICT
    email: str = Field(max_length=320)
    intent: str | None = Field(default=None, pattern="^(login|signup)$")


class VerifyCode(BaseModel):
    model_config = _STRICT
    email: str = Field(max_length=320)
    code: str = Field(max_length=32)


class NewToken(BaseModel):
    model_config = _STRICT
    name: str = Field(min_length=1, max_length=64)
    expiresInDays: int | None = Field(default=None, ge=1, le=3650)


class RevokeOthers(BaseModel):
    model_config = _STRICT
    tokens: bool = Field(default=False, description="Revoke every personal API token too")


# ---------------------------------------------------------------- catalog and rentals

class _Placement(BaseModel):
    """What a preview and a launch both ask for: a family, a GPU count, a template, a region."""

    model_config = _STRICT
    familyId: str = Field(max_length=64)
    gpuCount: int
    templateId: str = Field(default=DEFAULT_TEMPLATE, max_length=64)
    region: str | None = Field(default=None, max_length=8, pattern=REGION_PATTERN)


class Preview(_Placement):
    maxPricePerHourCents: int | None = Field(default=None, ge=1, le=100_000_000)


class Launch(_Placement):
    name: str | None = Field(default=None, max_length=64)
    autoStopAfterHours: float | None = Field(default=None, gt=0, le=720)
    maxTotalCents: int | None = Field(default=None, ge=1, le=100_000_000)
    # Price tolerance: failover may place the rental on any listing up to this (default:
    # the quote). The rate charged and reserved is the one obtained.
    maxPricePerHourCents: int | None = Field(default=None, ge=1, le=100_000_000)


# ---------------------------------------------------------------- SSH keys

class NewKey(BaseModel):
    model_config = _STRICT
    name: str = Field(min_length=1, max_length=64)
    publicKey: str = Field(min_length=1, max_length=16384)


# ---------------------------------------------------------------- billing

class Checkout(BaseModel):
    model_config = _STRICT

    amountCents: int
    useCheckout: bool = False


class AutoTopup(BaseModel):
    model_config = _STRICT

    enabled: bool
    thresholdCents: int | None = None
    topupAmountCents: int | None = None


# ---------------------------------------------------------------- admin

class Adjustment(BaseModel):
    model_config = _STRICT
    userId: str | None = None
    email: str | None = Field(default=None, max_length=320)
    amountCents: int = Field(ge=-MAX_ADJUSTMENT_CENTS, le=MAX_ADJUSTMENT_CENTS)
    reason: str = Field(min_length=1, max_length=500)


class ManualInvoice(BaseModel):
    model_config = _STRICT
    userId: str | None = None
    email: str | None = Field(default=None, max_length=320)
    amountCents: int = Field(ge=100, le=MAX_ADJUSTMENT_CENTS)
    description: str = Field(min_length=1, max_length=500)
    creditsWallet: bool = False  # paying it adds the amount to the wallet (e.g. a wire top-up)
