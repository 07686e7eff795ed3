"""The ports: what the domain needs from the stores and from Stripe, as Protocols.

The adapters are modules (`store.rentals`, `store.money`, `billing.gateway`); each one
is checked against its port by mypy (a `TYPE_CHECKING` assignment at its end), and the
tests have in-memory fakes of the same ports (`tests/fakes/`), so the money core runs
in milliseconds without DynamoDB or Stripe. The provider port is
`providers.base.ProviderAdapter`; the clock's is `clock.Clock`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from gpurent.records import OpMarker, Rental, RentalChanges, RentalStatus

if TYPE_CHECKING:
    from gpurent.billing.gateway import Card, CheckoutSession, InvoiceMirror, Payment, PaymentIntent, SetupIntent

TransactItem = dict[str, Any]  # one write of a transaction, as the money store builds it


class RentalStore(Protocol):
    """Rental rows (`store/rentals.py`)."""

    def get(self, user_id: str, rental_id: str) -> Rental | None: ...

    def find_by_id(self, rental_id: str) -> Rental | None: ...

    def list_for_user(self, user_id: str, before: str | None, limit: int,
                      status: RentalStatus | None) -> tuple[list[Rental], bool]: ...

    def live(self, status: RentalStatus | None = None) -> list[Rental]: ...

    def live_for_user(self, user_id: str, status: RentalStatus) -> list[Rental]: ...

    def update(self, user_id: str, rental_id: str, changes: RentalChanges, expected_status: tuple[RentalStatus, ...],
               expected_version: int | None = None) -> Rental:
        """A conditional write on its own; `StaleRental` when the rental moved on."""
        ...

    def put_item(self, r: Rental) -> TransactItem:
        """The new rental as a write of a money transaction."""
        ...

    def update_item(self, user_id: str, rental_id: str, changes: RentalChanges,
                    expected_status: tuple[RentalStatus, ...], expected_version: int | None = None) -> TransactItem:
        """The conditional write as a write of a money transaction."""
        ...

    def owner_item(self, rental_id: str, user_id: str) -> TransactItem: ...


class MoneyStore(Protocol):
    """Wallets, operation markers and ledger rows, written in one transaction (`store/money.py`).

    `transact` raises `TransactionCancelled` (a condition failed: `codes[i]`, `items[i]`)
    or `TransactionConflict` (another writer at the same time); nothing is applied.
    """

    def get_wallet(self, user_id: str) -> dict[str, Any] | None: ...

    def get_op(self, op_key: str) -> dict[str, Any] | None: ...

    def get_op_marker(self, op_key: str) -> OpMarker | None: ...

    def wallet_update(self, user_id: str, state: dict[str, Any], expected_version: int) -> TransactItem: ...

    def op_put(self, op_key: str, record: dict[str, Any]) -> TransactItem: ...

    def ledger_put(self, user_id: str, row: dict[str, Any]) -> TransactItem: ...

    def money_put(self, item: dict[str, Any], condition: str | None = ...) -> TransactItem: ...

    def transact(self, items: list[TransactItem], token: str | None = None) -> None: ...

    def query_ledger(self, user_id: str, start_after: str | None, limit: int,
                     entry_type: str | None) -> tuple[list[dict[str, Any]], bool]: ...

    def all_ledger(self, user_id: str) -> list[dict[str, Any]]: ...


class UserDirectory(Protocol):
    """What the money paths read of a user (`store/identity.py`): the email a notice goes to."""

    def get_user(self, user_id: str) -> dict[str, Any] | None: ...


class StripeGateway(Protocol):
    """Stripe (`billing/gateway.py`): the calls billing makes, in its own small types."""

    def enabled(self) -> bool: ...

    def publishable_key(self) -> str: ...

    def webhook_secret(self) -> str: ...

    def create_customer(self, user_id: str, email: str, idempotency_key: str) -> str: ...

    def create_checkout_session(self, *, customer_id: str | None, user_id: str, amount_cents: int,
                                success_url: str, cancel_url: str, save_card: bool,
                                idempotency_key: str) -> CheckoutSession: ...

    def charge_saved_card(self, *, customer_id: str, payment_method_id: str, amount_cents: int,
                          metadata: dict[str, str], idempotency_key: str) -> Payment: ...

    def get_payment_intent(self, pi_id: str) -> PaymentIntent: ...

    def create_setup_intent(self, *, customer_id: str, user_id: str) -> SetupIntent: ...

    def get_card(self, payment_method_id: str) -> Card: ...

    def set_default_payment_method(self, customer_id: str, pm_id: str) -> None: ...

    def detach_payment_method(self, pm_id: str) -> None: ...

    def create_invoice(self, *, customer_id: str, amount_cents: int, description: str, metadata: dict[str, str],
                       idempotency_key: str) -> InvoiceMirror: ...

    def get_invoice(self, invoice_id: str) -> InvoiceMirror: ...

    def void_invoice(self, invoice_id: str) -> InvoiceMirror: ...

    def verify_event(self, payload: bytes, sig_header: str | None) -> dict[str, Any]: ...
