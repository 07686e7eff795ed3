"""The local Stripe (localstripe + the gap-filling proxy, `infra/local/stripe_local.py`)
for tests, on loopback.

Use it from a test module (or a conftest) by importing the fixtures:

    from tests.stripe_fixtures import local_stripe, local_stripe_server  # noqa: F401

- `local_stripe_server` (session): one LocalStripe for the whole run (only one can run
  per process), webhook URL None: events are recorded, never POSTed; replay them with
  `replay_args(delivery)` into the webhook handler.
- `local_stripe` (function): points the gateway at it (STRIPE_SECRET_KEY,
  STRIPE_PUBLISHABLE_KEY, STRIPE_API_BASE, STRIPE_WEBHOOK_SECRET; the *_PARAM variants
  removed), resets the gateway's cache before and after, and forgets earlier deliveries.
  localstripe sends its own events (payment_intent.*) about a second after the call:
  wait for them with `local_stripe.wait_for(type, match)` and match on object ids,
  since a late event of an earlier test may still arrive.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from gpurent.billing import gateway
from infra.local.stripe_local import PUBLISHABLE_KEY, SECRET_KEY, Delivery, LocalStripe

WEBHOOK_SECRET = "whsec_test_local"


@pytest.fixture(scope="session")
def local_stripe_server() -> Iterator[LocalStripe]:
    ls = LocalStripe.start(webhook_url=None, secret=WEBHOOK_SECRET)
    try:
        yield ls
    finally:
        ls.stop()


@pytest.fixture
def local_stripe(local_stripe_server: LocalStripe, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStripe]:
    monkeypatch.setenv("STRIPE_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("STRIPE_PUBLISHABLE_KEY", PUBLISHABLE_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", local_stripe_server.api_base)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.delenv("STRIPE_SECRET_KEY_PARAM", raising=False)
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET_PARAM", raising=False)
    gateway.reset()
    local_stripe_server.clear_deliveries()
    yield local_stripe_server
    gateway.reset()


def replay_args(delivery: Delivery) -> tuple[bytes, str]:
    """(raw body, Stripe-Signature header) of a delivery, to POST into a webhook handler."""
    return delivery.body, delivery.signature


def stripe_get(ls: LocalStripe, path: str) -> dict[str, Any]:
    """GET a Stripe object straight from the local Stripe (no stripe-python), e.g. to
    check what the gateway sent."""
    req = urllib.request.Request(ls.api_base + path, headers={"Authorization": f"Bearer {SECRET_KEY}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # loopback only
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"GET {path}: {exc.code} {exc.read()!r}") from exc
