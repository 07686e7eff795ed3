"""Stripe's webhook: `POST /v1/webhooks/stripe` (alias `/v1/billing/stripe/webhook`).

Its own function so that Stripe's signature library is loaded only here and a
flood of events cannot starve the user-facing routes. No session, no Origin
check, no per-IP limit: the Stripe signature is the authentication.
"""

from __future__ import annotations

from typing import Any

from gpurent.api import Request, Router
from gpurent.billing import webhook
from gpurent.telemetry import API, lambda_handler

router = Router()


def _receive(req: Request) -> dict[str, Any]:
    return webhook.handle(req.body, req.headers.get("stripe-signature"))


_DOC: dict[str, Any] = {"body": "StripeEvent", "response": "WebhookAnswer", "errors": ("invalid_signature",),
                        "headers": ("Stripe-Signature",)}
router.route("POST /v1/webhooks/stripe", auth=False, rate_limited=False, summary="Stripe webhook", **_DOC)(_receive)
router.route("POST /v1/billing/stripe/webhook", auth=False, rate_limited=False,
             summary="Stripe webhook (alias of /v1/webhooks/stripe)", **_DOC)(_receive)

handler = lambda_handler(router.handler, API)
