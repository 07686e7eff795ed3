"""Formatting: money as dollars with two decimals, plain-text tables, CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

CENT = Decimal("0.01")


def money(cents: object) -> str:
    """Integer cents as dollars: 5000 → "$50.00", -47 → "-$0.47"; None → "-"."""
    if cents is None or isinstance(cents, bool):
        return "-"
    if not isinstance(cents, int):
        try:
            cents = int(Decimal(str(cents)).to_integral_value(ROUND_HALF_UP))
        except (InvalidOperation, ValueError):
            return str(cents)
    sign = "-" if cents < 0 else ""
    dollars, rest = divmod(abs(cents), 100)
    return f"{sign}${dollars:,}.{rest:02d}"


def plain_dollars(cents: object) -> str:
    """Integer cents as a bare decimal for spreadsheets: -47 → "-0.47"; None → ""."""
    if cents is None or isinstance(cents, bool) or not isinstance(cents, int):
        return ""
    sign = "-" if cents < 0 else ""
    dollars, rest = divmod(abs(cents), 100)
    return f"{sign}{dollars}.{rest:02d}"


def dollars_value(value: object) -> str:
    """A dollar amount the API gives as a number (the meter's `ratePerHour`): 2.8 → "$2.80"."""
    if value is None or isinstance(value, bool):
        return "-"
    try:
        d = Decimal(str(value)).quantize(CENT, ROUND_HALF_UP)
    except (InvalidOperation, ValueError):
        return str(value)
    sign = "-" if d < 0 else ""
    return f"{sign}${abs(d):,.2f}"


def per_hour(cents: object) -> str:
    return "-" if cents is None else f"{money(cents)}/hr"


def parse_dollars(text: str) -> int:
    """A dollar amount typed by a user ("25", "25.5", "$1,000.00") as integer cents.

    More than two decimals, negatives, zero and non-numbers are refused (ValueError).
    """
    cleaned = text.strip().removeprefix("$").replace(",", "").strip()
    try:
        d = Decimal(cleaned)
    except InvalidOperation:
        raise ValueError(f"not a dollar amount: {text!r}") from None
    if not d.is_finite():
        raise ValueError(f"not a dollar amount: {text!r}")
    if d <= 0:
        raise ValueError(f"must be more than $0: {text!r}")
    cents = d * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"at most two decimals (whole cents): {text!r}")
    return int(cents)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], right: Iterable[int] = ()) -> str:
    """A plain-text table, columns padded to their widest cell; columns in `right` are right-aligned."""
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    right_cols = set(right)

    def line(values: Sequence[str]) -> str:
        out = [v.rjust(widths[i]) if i in right_cols else v.ljust(widths[i]) for i, v in enumerate(values)]
        return "  ".join(out).rstrip()

    return "\n".join([line(list(headers)), *(line(r) for r in cells)])


LEDGER_COLUMNS = ("id", "createdAt", "type", "amount", "balanceAfter", "amountCents", "balanceAfterCents",
                  "rentalId", "stripeChargeId", "invoiceId", "description")


def ledger_types() -> tuple[str, ...]:
    """The ledger entry types, read from the API's own OpenAPI document (shipped with the
    `gpurent` package and generated from `gpurent.ledger`, their one definition)."""
    from importlib import resources

    doc = json.loads(resources.files("gpurent").joinpath("openapi.json").read_text(encoding="utf-8"))
    return tuple(doc["components"]["schemas"]["LedgerEntry"]["properties"]["type"]["enum"])


def ledger_csv(entries: Iterable[dict[str, Any]]) -> str:
    """Ledger entries as CSV (RFC 4180, header row): amounts in dollars and in cents."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LEDGER_COLUMNS)
    for e in entries:
        writer.writerow([
            e.get("id", ""), e.get("createdAt", ""), e.get("type", ""),
            plain_dollars(e.get("amountCents")), plain_dollars(e.get("balanceAfterCents")),
            e.get("amountCents", ""), e.get("balanceAfterCents", ""),
            e.get("rentalId") or "", e.get("stripeChargeId") or "", e.get("invoiceId") or "",
            _csv_safe(e.get("description") or ""),
        ])
    return buf.getvalue()


def _csv_safe(text: str) -> str:
    """Neutralise spreadsheet formulas in free text (an adjustment reason could start with `=`)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def short_time(iso: object) -> str:
    """`2026-06-07T08:14:22Z` → `2026-06-07 08:14:22`."""
    if not isinstance(iso, str) or not iso:
        return "-"
    return iso.replace("T", " ").removesuffix("Z")
