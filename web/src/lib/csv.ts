// The ledger as CSV: the whole history, oldest first, amounts in integer cents (exact)
// and in dollars (for spreadsheets), RFC 4180 quoting, and no cell a spreadsheet would
// run as a formula.
import type { Schemas } from "../api/client";
import { plainDollars } from "./money";

type Entry = Schemas["LedgerEntry"];

export const LEDGER_COLUMNS = [
  "id",
  "createdAt",
  "type",
  "amountCents",
  "amountUsd",
  "balanceAfterCents",
  "balanceAfterUsd",
  "rentalId",
  "invoiceId",
  "stripeChargeId",
  "description",
] as const;

function cell(value: string | number | null | undefined): string {
  if (value === null || value === undefined) return "";
  let text = String(value);
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** `entries` newest first (as the API lists them); the CSV is oldest first. */
export function ledgerCsv(entries: Entry[]): string {
  const lines = [LEDGER_COLUMNS.join(",")];
  for (const e of [...entries].reverse()) {
    lines.push(
      [
        cell(e.id),
        cell(e.createdAt),
        cell(e.type),
        e.amountCents,
        plainDollars(e.amountCents),
        e.balanceAfterCents,
        plainDollars(e.balanceAfterCents),
        cell(e.rentalId),
        cell(e.invoiceId),
        cell(e.stripeChargeId),
        cell(e.description),
      ].join(","),
    );
  }
  return `${lines.join("\r\n")}\r\n`;
}

export function download(filename: string, text: string, type = "text/csv;charset=utf-8") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
