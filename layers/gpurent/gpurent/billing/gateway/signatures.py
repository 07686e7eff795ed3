"""Stripe's webhook deliveries: checking a payload's `Stripe-Signature` and reading its event."""

from __future__ import annotations

import json
from typing import Any

from gpurent.billing.gateway import client
from gpurent.billing.gateway.client import InvalidSignature

WEBHOOK_TOLERANCE_SECONDS = 300


def verify_event(payload: bytes, sig_header: str | None) -> dict[str, Any]:
    """The event of a webhook delivery, as a plain dict, after checking its
    `Stripe-Signature` against the webhook secret (tolerance 300 s)."""
    secret = client.webhook_secret()
    if not secret:
        raise InvalidSignature("webhook secret not configured")
    if not sig_header:
        raise InvalidSignature("missing Stripe-Signature header")
    import stripe

    try:
        payload.decode("utf-8")  # Stripe signs UTF-8 JSON; anything else is not a Stripe delivery
        stripe.WebhookSignature.verify_header(payload, sig_header, secret, WEBHOOK_TOLERANCE_SECONDS)
    except UnicodeDecodeError as exc:
        raise InvalidSignature("payload is not UTF-8") from exc
    except stripe.SignatureVerificationError as exc:
        raise InvalidSignature(str(exc) or "bad signature") from exc
    try:
        event = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidSignature("payload is not JSON") from exc
    if not isinstance(event, dict) or not isinstance(event.get("type"), str) or not isinstance(
            event.get("data"), dict) or not isinstance(event["data"].get("object"), dict):
        raise InvalidSignature("payload is not a Stripe event")
    return event
