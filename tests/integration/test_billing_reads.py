"""Redundant reads on the billing paths (issue 17 item 5): what a request reads, counted at the
store's DynamoDB client, through the real handler and the local Stripe."""

from __future__ import annotations

from collections import Counter
from typing import Any

from gpurent.store import dynamo
from tests.conftest import Api
from tests.integration.test_billing import add_card


def test_a_checkout_reads_the_wallet_item_once(api: Api, user: dict[str, Any], local_stripe: Any) -> None:
    """The Stripe customer and the card on file are both on the wallet item: one read of it."""
    add_card(api, local_stripe)
    reads: Counter[str] = Counter()

    def count(params: dict[str, Any], **kwargs: Any) -> None:
        key = params.get("Key", {})
        reads[f"{key.get('pk', {}).get('S', '')}/{key.get('sk', {}).get('S', '')}"] += 1

    dynamo.client().meta.events.register("provide-client-params.dynamodb.GetItem", count)
    r = api.post("/v1/billing/checkout", {"amountCents": 1500, "useCheckout": True})
    assert r.status == 200, r.body
    wallet_reads = {k: v for k, v in reads.items() if k.endswith("/WALLET")}
    assert wallet_reads == {f"USER#{user['id']}/WALLET": 1}, reads
