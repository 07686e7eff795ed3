"""One home for each concept: the copies elsewhere are derived from it, and stay so."""

from __future__ import annotations

from typing import cast, get_args

from gpurent_cli.output import ledger_types

from gpurent import ledger, wallet, wallet_plan
from infra import contract, openapi


def test_ledger_types_are_defined_once_and_derived_everywhere() -> None:
    assert set(ledger.CREDIT_TYPES) <= set(ledger.LEDGER_TYPES)
    # The point is the modules' own bindings of these names (imported, not re-exported): mypy sees no attribute.
    assert wallet.LEDGER_TYPES is ledger.LEDGER_TYPES  # type: ignore[attr-defined]
    assert wallet_plan.CREDIT_TYPES is ledger.CREDIT_TYPES  # type: ignore[attr-defined]
    # pydantic declares `annotation` a `type[Any] | None`; here it is the Literal alias itself
    assert cast(object, contract.LedgerEntry.model_fields["type"].annotation) is ledger.LedgerType
    assert get_args(contract.LedgerEntry.model_fields["type"].annotation) == ledger.LEDGER_TYPES
    doc = openapi.build()
    assert tuple(doc["components"]["schemas"]["LedgerEntry"]["properties"]["type"]["enum"]) == ledger.LEDGER_TYPES
    assert ledger_types() == ledger.LEDGER_TYPES  # the CLI reads the packaged document


def test_rental_and_invoice_vocabularies_have_one_home() -> None:
    from gpurent import records, rentals
    from gpurent.billing import invoices

    # The point is contract's own bindings of records' names (imported, not re-exported): mypy sees no attribute.
    assert rentals.STATUSES == get_args(records.RentalStatus) == get_args(contract.RentalStatus)  # type: ignore[attr-defined]
    assert contract.StopReason is records.StopReason  # type: ignore[attr-defined]
    assert (contract.InvoiceStatus, contract.InvoiceReason) == (records.InvoiceStatus, records.InvoiceReason)  # type: ignore[attr-defined]
    # billing keeps its own tuples for now: they must say the same
    assert invoices.STATUSES == get_args(records.InvoiceStatus) and invoices.REASONS == get_args(records.InvoiceReason)
