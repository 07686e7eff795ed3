"""The ports: what the domain needs from the stores, as Protocols.

The adapters are modules (`store.rentals`, `store.money`, `store.outbox`, `store.identity`);
the first three are checked against their port by mypy (a `TYPE_CHECKING` assignment at their end), and
the tests have in-memory fakes of the same ports (`tests/fakes/`), so the money core runs
in milliseconds without DynamoDB. The other ports: Stripe's is `billing.ports.StripeGateway`
(beside billing, so the money core never names billing), the providers' is
`providers.base.ProviderAdapter`, the clock's `clock.Clock`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from gpurent.records import LaunchAnswer, LedgerRow, OpMarker, Rental, RentalChanges, RentalStatus, WalletItem

TransactItem = dict[str, Any]  # one write of a transaction, as the money store builds it


class RentalStore(Protocol):
    """Rental rows (`store/rentals.py`)."""

    def get(self, user_id: str, rental_id: str) -> Rental | None: ...

    def find_by_id(self, rental_id: str) -> Rental | None: ...

    def list_for_user(self, user_id: str, before: str | None, limit: int,
                      status: RentalStatus | None) -> tuple[list[Rental], bool]: ...

    def live(self, status: RentalStatus | None = None) -> list[Rental]: ...

    def live_in_shard(self, n: int, status: RentalStatus | None = None) -> list[Rental]: ...

    def live_keys_in_shard(self, n: int, status: RentalStatus | None = None) -> list[tuple[str, str]]:
        """(user, rental id) of the shard's live rentals, from the index alone."""
        ...

    def get_many(self, keys: Sequence[tuple[str, str]]) -> list[Rental]:
        """The rentals named by (user, rental id), read whole, in that order (absent ones left out)."""
        ...

    def live_for_user(self, user_id: str, status: RentalStatus) -> list[Rental]: ...

    def update(self, user_id: str, rental_id: str, changes: RentalChanges, expected_status: tuple[RentalStatus, ...],
               expected_version: int | None = None) -> Rental:
        """A conditional write on its own; `StaleRental` when the rental moved on."""
        ...

    def put_item(self, r: Rental) -> TransactItem:
        """The new rental as a write of a money transaction."""
        ...

    def update_item(self, user_id: str, rental_id: str, changes: RentalChanges,
                    expected_status: tuple[RentalStatus, ...], expected_version: int | None = None,
                    not_metered_past: float | None = None) -> TransactItem:
        """The conditional write as a write of a money transaction (`not_metered_past`: and the
        stored `meteredUntil` is at most this)."""
        ...

    def owner_item(self, rental_id: str, user_id: str) -> TransactItem: ...


class MoneyStore(Protocol):
    """Wallets, operation markers and ledger rows, written in one transaction (`store/money.py`).

    `transact` raises `TransactionCancelled` (a condition failed: `codes[i]`, `items[i]`)
    or `TransactionConflict` (another writer at the same time); nothing is applied.
    """

    def get_wallet(self, user_id: str) -> WalletItem | None: ...

    def get_wallets(self, user_ids: Sequence[str]) -> dict[str, WalletItem]: ...

    def wallet_from_item(self, item: Mapping[str, Any] | None) -> WalletItem | None:
        """A raw wallet item (a cancelled transaction's) → the fields the wallet reads."""
        ...

    def get_op(self, op_key: str) -> dict[str, Any] | None: ...

    def get_op_marker(self, op_key: str) -> OpMarker | None: ...

    def set_launch_answer(self, op_key: str, answer: LaunchAnswer) -> bool: ...

    def wallet_update(self, user_id: str, state: WalletItem, expected_version: int) -> TransactItem: ...

    def op_put(self, marker: OpMarker) -> TransactItem: ...

    def ledger_put(self, user_id: str, row: LedgerRow) -> TransactItem: ...

    def money_put(self, item: dict[str, Any], condition: str | None = ...) -> TransactItem: ...

    def transact(self, items: list[TransactItem], token: str | None = None) -> None: ...

    def query_ledger(self, user_id: str, start_after: str | None, limit: int,
                     entry_type: str | None) -> tuple[list[LedgerRow], str | None]:
        """A page of ledger rows, newest first, and where the next page resumes (None: no more)."""
        ...

    def all_ledger(self, user_id: str) -> list[LedgerRow]: ...


class OutboxStore(Protocol):
    """Side effects owed after money moved (`store/outbox.py`, drained by `gpurent.outbox`)."""

    def put_item(self, user_id: str, kind: str, payload: dict[str, Any], now: float,
                 seq: int = ...) -> TransactItem:
        """A new effect as a write of the money transaction that owes it."""
        ...

    def put(self, user_id: str, kind: str, payload: dict[str, Any], now: float) -> None: ...

    def for_user(self, user_id: str) -> list[dict[str, Any]]: ...

    def shards(self) -> int: ...

    def in_shard(self, n: int) -> list[dict[str, Any]]: ...

    def lease(self, item: dict[str, Any], now: float, seconds: float) -> bool: ...

    def done(self, item: dict[str, Any]) -> None: ...


class UserDirectory(Protocol):
    """What the money paths read of a user (`store/identity.py`): the email a notice goes to."""

    def get_user(self, user_id: str) -> dict[str, Any] | None: ...
