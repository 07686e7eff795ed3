"""Install the fakes where the money core looks its ports up, on a manual clock."""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from gpurent import clock, config, metering, outbox, timers, wallet
from gpurent.billing import invoices
from gpurent.providers import registry
from gpurent.rentals import launching, lifecycle, settlement, views
from tests.fakes.identity import FakeUsers
from tests.fakes.invoices import FakeInvoiceStore
from tests.fakes.money import FakeMoneyStore
from tests.fakes.outbox import FakeOutboxStore
from tests.fakes.provider import FakeProvider
from tests.fakes.rentals import FakeRentalStore


@dataclass
class FakeWorld:
    money: FakeMoneyStore
    rentals: FakeRentalStore
    invoices: FakeInvoiceStore
    provider: FakeProvider
    users: FakeUsers
    clock: clock.ManualClock
    outbox: FakeOutboxStore


def install(monkeypatch: pytest.MonkeyPatch, start: float = 1_780_000_000.0) -> FakeWorld:
    """Every port of the money core faked (the undo of `monkeypatch` puts the real ones back)."""
    money = FakeMoneyStore()
    world = FakeWorld(money, FakeRentalStore(), FakeInvoiceStore(money), FakeProvider(), FakeUsers(),
                      clock.ManualClock(start), FakeOutboxStore(money))
    monkeypatch.setattr(wallet, "store", world.money)
    monkeypatch.setattr(launching, "money_store", world.money)
    for module in (launching, settlement, lifecycle, views, metering):
        monkeypatch.setattr(module, "store", world.rentals)
    monkeypatch.setattr(invoices, "store", world.invoices)
    monkeypatch.setattr(wallet, "outbox_store", world.outbox)
    monkeypatch.setattr(outbox, "store", world.outbox)
    monkeypatch.setattr(outbox, "identity", world.users)
    monkeypatch.setattr(outbox, "rental_store", world.rentals)
    monkeypatch.setattr(outbox, "invoice_store", world.invoices)
    # retries do not wait (raising=False: where the wallet sleeps between attempts may move)
    monkeypatch.setattr(wallet, "time", SimpleNamespace(sleep=lambda seconds: None, monotonic=time.monotonic),
                        raising=False)
    monkeypatch.setenv("STAGE", "test")  # no Stripe: an invoice stays local
    monkeypatch.setenv("MAIL_MODE", "console")  # notices go to the in-process mailbox
    for name in ("STRIPE_SECRET_KEY", "STRIPE_SECRET_KEY_PARAM"):
        monkeypatch.delenv(name, raising=False)
    config.reset()
    monkeypatch.setattr(clock, "_clock", world.clock)
    monkeypatch.setattr(registry, "_adapters", {world.provider.code: world.provider})
    timers.clear()
    return world
