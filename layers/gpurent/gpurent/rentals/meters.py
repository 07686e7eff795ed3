"""Where a running rental's meter lives: on its wallet's item once metering has ticked it.

A metering tick moves the wallet and the rental's meter (reserve, charged, overage, billed
seconds, metered until) together. Keeping the meter on the rental's own item made every
tick write three items (wallet, rental, ledger row); kept on the wallet item
(`WalletItem.meters`), a tick writes the wallet and the ledger row only, and the wallet's
version alone makes the tick exactly-once (docs/decisions.md "Metering writes").

- Before its first tick a rental's meter is its own item's fields (the launch's reserve,
  nothing charged). The first tick writes the rental item too, under a condition on its
  version and status, as every tick did before, and puts the meter on the wallet; the
  ticks after it write only the wallet.
- Settlement (a stop, a limit, a crash) writes the final numbers on the rental item and
  removes the meter from the wallet, in the same transaction as the status change: so a
  meter on the wallet means the rental is running and unsettled, and a planner that sees
  it on the wallet it read (whose version the write is conditioned on) may charge it.
- Whoever plans money on a running rental takes its meter from the wallet it planned on
  (`of`); the API's views compute a running rental's charge from its running time and
  read the meter only once it is settled (on its item).
- The wallet keeps at most `MAX_ON_WALLET` meters (~62 B each): a user's further running
  rentals keep their meter on their own item, and their ticks write it there under its
  version, as a first tick does. So the wallet item stays small (every money operation
  rewrites it whole, and DynamoDB refuses an item over 400 KB) however many pods one user
  runs; a meter moves to the wallet at a later tick once there is room.
- The setting `meters_on_wallet` (a deployment's `MetersOnWallet`, off until the release is
  fully live: docs/deploy.md) switched off, every tick moves a meter on the wallet back to its
  rental, so older code, which reads meters from rentals only, can run again.
"""

from __future__ import annotations

from dataclasses import replace

from gpurent.records import MeterItem, Rental
from gpurent.store import money as money_store
from gpurent.store import rentals as store
from gpurent.wallet_plan import Wallet

MAX_ON_WALLET = 300  # meters a wallet item keeps: ~19 KB, 38 write units a rewrite


def item(r: Rental) -> MeterItem:
    """A rental's meter as the wallet item keeps it."""
    return {"r": r.reserve_cents, "c": r.charged_cents, "o": r.overage_cents, "b": r.billed_seconds,
            "u": float(r.metered_until if r.metered_until is not None else (r.running_at or 0.0))}


def with_meter(r: Rental, m: MeterItem) -> Rental:
    """The rental with this meter."""
    return replace(r, reserve_cents=m["r"], charged_cents=m["c"], overage_cents=m["o"], billed_seconds=m["b"],
                   metered_until=m["u"])


def of(w: Wallet, r: Rental) -> Rental:
    """The rental with its meter as of the wallet `w`: the wallet's copy once it has one, else
    its own item's."""
    m = w.meters.get(r.id)
    return r if m is None else with_meter(r, m)


def on_wallet(w: Wallet, r: Rental) -> bool:
    return r.id in w.meters


def current(user_id: str, rental_id: str) -> Rental | None:
    """The rental as stored, with its meter where it is now (two reads: for checks and tools,
    not for the hot paths, which plan on the wallet they read anyway)."""
    r = store.get(user_id, rental_id)
    if r is None or r.status != "running":
        return r
    return of(Wallet.from_record(user_id, money_store.get_wallet(user_id)), r)
