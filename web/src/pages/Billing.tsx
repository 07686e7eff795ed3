import { useEffect, useState, type FormEvent } from "react";
import { api, newKey, ok, type Schemas } from "../api/client";
import { describe } from "../api/errors";
import { CardForm } from "../components/CardForm";
import { Chip, Confirm, Empty, ErrorNote, Kpi, Loading, Money, Pager, usePager } from "../components/ui";
import { download, ledgerCsv } from "../lib/csv";
import { useLoad, useTitle } from "../lib/hooks";
import { formatCents, parseDollars } from "../lib/money";
import { navigate, useLocation } from "../lib/router";
import { formatTime, zoneName } from "../lib/time";
import { useBalance, useToast } from "../state";

type Invoice = Schemas["Invoice"];
type LedgerType = Schemas["LedgerEntry"]["type"];

const PRESETS = [1000, 2500, 5000, 10000];
const MIN_TOPUP = 100;
const MAX_TOPUP = 500_000;
const LEDGER_PAGE = 25;
const LEDGER_TYPES: { id: LedgerType; label: string }[] = [
  { id: "stripe_topup", label: "Top-ups" },
  { id: "auto_topup", label: "Auto top-ups" },
  { id: "rental_charge", label: "Rental charges" },
  { id: "refund", label: "Refunds" },
  { id: "adjustment", label: "Adjustments" },
];
const TYPE_LABEL: Record<string, string> = {
  stripe_topup: "Top-up",
  auto_topup: "Auto top-up",
  rental_charge: "Rental charge",
  refund: "Refund",
  adjustment: "Adjustment",
};
const INVOICE_TONE = { open: "red", paid: "green", void: "grey", uncollectible: "yellow", draft: "grey" } as const;
const INVOICE_REASON: Record<string, string> = {
  topup_failed: "Auto top-up declined",
  overage: "Usage beyond your balance",
  manual: "Invoice",
};
const DISABLED_REASON: Record<string, string> = {
  card_declined: "Switched off because your card was declined. Update the card, then switch it back on.",
  card_removed: "Switched off because the card was removed.",
  authentication_required: "Switched off because your bank asked to confirm a charge. Update the card, then switch it back on.",
};

export default function Billing() {
  useTitle("Billing");
  const { query } = useLocation();
  const session = query.get("session");
  const { balance, refresh: refreshBalance } = useBalance();
  const card = useLoad(() => ok(api.GET("/v1/billing/card")), []);
  const hasCard = !!card.data?.pmId;

  // Back from Checkout: the credit lands with Stripe's webhook, within seconds.
  useEffect(() => {
    if (session !== "success") return;
    let n = 0;
    const id = window.setInterval(() => {
      void refreshBalance();
      if (++n >= 10) window.clearInterval(id);
    }, 2000);
    return () => window.clearInterval(id);
  }, [session, refreshBalance]);

  return (
    <section>
      <div className="page-head">
        <div>
          <h1 tabIndex={-1}>Billing</h1>
          <p className="muted">A prepaid wallet: top it up, and pods draw from it per second.</p>
        </div>
      </div>
      {session === "success" ? (
        <div className="note note-ok" role="status" data-testid="checkout-return">
          Payment received, thank you. Your balance updates within a few seconds of Stripe confirming it.{" "}
          <button type="button" className="btn btn-link" onClick={() => navigate("/app/billing", { replace: true })}>
            Dismiss
          </button>
        </div>
      ) : session === "cancel" ? (
        <div className="note" role="status" data-testid="checkout-return">
          Checkout cancelled: nothing was charged.{" "}
          <button type="button" className="btn btn-link" onClick={() => navigate("/app/billing", { replace: true })}>
            Dismiss
          </button>
        </div>
      ) : null}

      <div className="kpis" aria-label="Balance">
        <Kpi label="Available" hint="spendable on new pods">
          {balance ? formatCents(balance.availableCents) : "\u2014"}
        </Kpi>
        <Kpi label="Reserved" hint="held for running pods">
          {balance ? formatCents(balance.reservedCents) : "\u2014"}
        </Kpi>
        <Kpi label="Total">{balance ? formatCents(balance.totalCents) : "\u2014"}</Kpi>
        <Kpi label="Outstanding" hint={balance?.openInvoiceCount ? `${balance.openInvoiceCount} open invoice(s)` : "no open invoices"}>
          {balance ? formatCents(balance.openInvoicesCents) : "\u2014"}
        </Kpi>
      </div>

      <div className="grid-2">
        <TopUp hasCard={hasCard} last4={card.data?.last4 ?? null} />
        <div>
          <CardOnFile card={card.data} reload={card.reload} />
          <AutoTopup hasCard={hasCard} />
        </div>
      </div>
      <Invoices />
      <Ledger />
    </section>
  );
}

// ------------------------------------------------------------------ top-up

function TopUp({ hasCard, last4 }: { hasCard: boolean; last4: string | null }) {
  const toast = useToast();
  const { query } = useLocation();
  const { refresh: refreshBalance } = useBalance();
  const suggested = Number(query.get("topup") ?? "0");
  const suggestedDollars = Number.isSafeInteger(suggested) && suggested > 0 ? Math.ceil(suggested / 100) : 0;
  const [preset, setPreset] = useState<number | null>(suggestedDollars ? null : 2500);
  const [custom, setCustom] = useState(suggestedDollars ? String(Math.max(1, suggestedDollars)) : "");
  const [busy, setBusy] = useState<"card" | "checkout" | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [key, setKey] = useState(() => newKey("topup"));

  const amount = preset ?? (custom.trim() ? parseDollars(custom) : null);
  const bad = amount === null || amount < MIN_TOPUP || amount > MAX_TOPUP;

  const pay = async (useCheckout: boolean) => {
    if (bad || amount === null) return;
    setBusy(useCheckout ? "checkout" : "card");
    setError(null);
    try {
      const out = await ok(
        api.POST("/v1/billing/checkout", {
          params: { header: { "Idempotency-Key": `${key}-${useCheckout ? "checkout" : "card"}` } },
          body: { amountCents: amount, useCheckout },
        }),
      );
      if (out.checkoutUrl) {
        window.location.assign(out.checkoutUrl);
        return;
      }
      setKey(newKey("topup"));
      if (out.status === "succeeded") {
        toast(`Added ${formatCents(amount)} to your wallet.`, "success");
      } else {
        toast(`Payment ${out.status ?? "pending"}: your balance updates once it completes.`, "info");
      }
      await refreshBalance();
      window.setTimeout(() => void refreshBalance(), 2000);
      setBusy(null);
    } catch (e) {
      setError(describe(e));
      setBusy(null);
    }
  };

  const onSubmit = (e: FormEvent) => {
    e.preventDefault();
    void pay(!hasCard);
  };

  return (
    <form className="card" onSubmit={onSubmit} noValidate aria-labelledby="topup-title">
      <h2 id="topup-title">Add credit</h2>
      <div className="presets" role="group" aria-label="Amount">
        {PRESETS.map((p) => (
          <button
            key={p}
            type="button"
            className="btn"
            aria-pressed={preset === p}
            onClick={() => {
              setPreset(p);
              setCustom("");
            }}
          >
            <span className="num">{formatCents(p).replace(/\.00$/, "")}</span>
          </button>
        ))}
      </div>
      <label htmlFor="topup-custom">Other amount ($1 – $5,000)</label>
      <input
        id="topup-custom"
        inputMode="decimal"
        placeholder="e.g. 75"
        value={custom}
        onChange={(e) => {
          setCustom(e.target.value);
          setPreset(null);
        }}
        aria-invalid={(preset === null && custom !== "" && bad) || undefined}
        aria-describedby="topup-hint"
      />
      <p className={preset === null && custom !== "" && bad ? "field-error" : "hint"} id="topup-hint">
        {preset === null && custom !== "" && bad ? "Enter an amount from $1 to $5,000" : "Credit never expires."}
      </p>
      <ErrorNote error={error} />
      {hasCard ? (
        <div className="stack">
          <button type="submit" className="btn btn-primary btn-block" disabled={bad || busy !== null}>
            {busy === "card" ? "Charging…" : `Charge ${amount && !bad ? formatCents(amount) : ""} to card •••• ${last4 ?? ""}`}
          </button>
          <button type="button" className="btn btn-link" disabled={bad || busy !== null} onClick={() => void pay(true)}>
            {busy === "checkout" ? "Opening Checkout…" : "Pay with Stripe Checkout instead"}
          </button>
        </div>
      ) : (
        <button type="submit" className="btn btn-primary btn-block" disabled={bad || busy !== null}>
          {busy ? "Opening Checkout…" : `Continue to Checkout${amount && !bad ? ` (${formatCents(amount)})` : ""}`}
        </button>
      )}
      <p className="hint">
        {hasCard ? "Your saved card is charged at once, no redirect." : "Stripe Checkout saves your card for next time."}
      </p>
    </form>
  );
}

// ------------------------------------------------------------------ card

function CardOnFile({ card, reload }: { card: Schemas["Card"] | undefined; reload: () => Promise<void> }) {
  const toast = useToast();
  const [adding, setAdding] = useState(false);
  const [removing, setRemoving] = useState(false);
  const [busy, setBusy] = useState(false);
  const remove = async () => {
    setBusy(true);
    try {
      await ok(api.DELETE("/v1/billing/card"));
      toast("Card removed. Auto top-up is off.", "success");
      await reload();
    } catch (e) {
      toast(describe(e), "error");
    } finally {
      setBusy(false);
      setRemoving(false);
    }
  };
  return (
    <div className="card" aria-labelledby="card-title">
      <div className="card-head">
        <h2 id="card-title">Card on file</h2>
      </div>
      {!card ? (
        <Loading what="your card" />
      ) : adding ? (
        <CardForm
          previousPm={card.pmId}
          onCancel={() => setAdding(false)}
          onSaved={() => {
            setAdding(false);
            toast("Card saved.", "success");
            void reload();
          }}
        />
      ) : card.pmId ? (
        <div className="row" data-testid="card-on-file">
          <span>
            <strong>{(card.brand ?? "card").toUpperCase()}</strong> •••• <span className="num">{card.last4}</span>
            <span className="muted num">
              {" "}
              · expires {String(card.expMonth ?? "").padStart(2, "0")}/{String(card.expYear ?? "").slice(-2)}
            </span>
          </span>
          <span className="spacer" />
          <button type="button" className="btn btn-small" onClick={() => setAdding(true)}>
            Replace
          </button>
          <button type="button" className="btn btn-small" onClick={() => setRemoving(true)}>
            Remove
          </button>
        </div>
      ) : (
        <div>
          <p className="muted">No card saved. A saved card tops up without a redirect and enables auto top-up.</p>
          <button type="button" className="btn" onClick={() => setAdding(true)}>
            Add a card
          </button>
        </div>
      )}
      <Confirm
        open={removing}
        title="Remove this card?"
        confirmLabel="Remove card"
        danger
        busy={busy}
        onCancel={() => setRemoving(false)}
        onConfirm={() => void remove()}
      >
        <p>Auto top-up switches off, and the next top-up goes through Checkout.</p>
      </Confirm>
    </div>
  );
}

// ------------------------------------------------------------------ auto-topup

function AutoTopup({ hasCard }: { hasCard: boolean }) {
  const toast = useToast();
  const settings = useLoad(() => ok(api.GET("/v1/billing/auto-topup")), [hasCard]);
  const [enabled, setEnabled] = useState(false);
  const [threshold, setThreshold] = useState("10");
  const [amount, setAmount] = useState("25");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    const s = settings.data;
    if (!s) return;
    setEnabled(s.enabled);
    if (s.thresholdCents) setThreshold(formatCents(s.thresholdCents).slice(1).replace(/\.00$/, ""));
    if (s.topupAmountCents) setAmount(formatCents(s.topupAmountCents).slice(1).replace(/\.00$/, "").replace(/,/g, ""));
  }, [settings.data]);

  const thresholdCents = parseDollars(threshold);
  const amountCents = parseDollars(amount);
  const thresholdBad = thresholdCents === null || thresholdCents < 100 || thresholdCents > 100_000;
  const amountBad = amountCents === null || amountCents < 1000 || amountCents > 500_000;

  const save = async (e: FormEvent) => {
    e.preventDefault();
    if (enabled && (thresholdBad || amountBad)) return;
    setBusy(true);
    setError(null);
    try {
      await ok(
        api.PUT("/v1/billing/auto-topup", {
          body: enabled
            ? { enabled: true, thresholdCents: thresholdCents!, topupAmountCents: amountCents! }
            : { enabled: false },
        }),
      );
      toast(enabled ? "Auto top-up is on." : "Auto top-up is off.", "success");
      await settings.reload();
    } catch (err) {
      setError(describe(err));
    } finally {
      setBusy(false);
    }
  };

  const s = settings.data;
  const dirty =
    !!s &&
    (s.enabled !== enabled ||
      (enabled && (s.thresholdCents !== thresholdCents || s.topupAmountCents !== amountCents)));
  return (
    <form className="card" onSubmit={save} noValidate aria-labelledby="auto-title">
      <div className="card-head">
        <h2 id="auto-title">Auto top-up</h2>
        {s ? <Chip tone={s.enabled ? "green" : "grey"}>{s.enabled ? "On" : "Off"}</Chip> : null}
      </div>
      {!s ? (
        <Loading what="auto top-up" />
      ) : (
        <>
          {s.disabledReason && !s.enabled ? (
            <p className="note note-warn">{DISABLED_REASON[s.disabledReason] ?? `Switched off: ${s.disabledReason}.`}</p>
          ) : null}
          <label className="check">
            <input
              type="checkbox"
              checked={enabled}
              disabled={!hasCard && !s.enabled}
              onChange={(e) => setEnabled(e.target.checked)}
            />
            Top up automatically when my balance runs low
          </label>
          {!hasCard ? <p className="hint">Needs a saved card.</p> : null}
          <div className="fields">
            <div>
              <label htmlFor="auto-threshold">When available drops below ($)</label>
              <input
                id="auto-threshold"
                inputMode="decimal"
                value={threshold}
                disabled={!enabled}
                onChange={(e) => setThreshold(e.target.value)}
                aria-invalid={(enabled && thresholdBad) || undefined}
                aria-describedby="auto-threshold-hint"
              />
              <p className={enabled && thresholdBad ? "field-error" : "hint"} id="auto-threshold-hint">
                $1 to $1,000
              </p>
            </div>
            <div>
              <label htmlFor="auto-amount">Add ($)</label>
              <input
                id="auto-amount"
                inputMode="decimal"
                value={amount}
                disabled={!enabled}
                onChange={(e) => setAmount(e.target.value)}
                aria-invalid={(enabled && amountBad) || undefined}
                aria-describedby="auto-amount-hint"
              />
              <p className={enabled && amountBad ? "field-error" : "hint"} id="auto-amount-hint">
                $10 to $5,000, at most once every 5 minutes
              </p>
            </div>
          </div>
          <ErrorNote error={error} />
          <button type="submit" className="btn btn-primary" disabled={busy || !dirty || (enabled && (thresholdBad || amountBad))}>
            {busy ? "Saving…" : "Save auto top-up"}
          </button>
          {s.lastAttemptAt ? <p className="hint">Last attempt: {formatTime(s.lastAttemptAt)}</p> : null}
        </>
      )}
    </form>
  );
}

// ------------------------------------------------------------------ invoices

function Invoices() {
  const toast = useToast();
  const pager = usePager();
  const { balance } = useBalance();
  const list = useLoad(
    () => ok(api.GET("/v1/billing/invoices", { params: { query: { limit: 20, ...(pager.cursor ? { cursor: pager.cursor } : {}) } } })),
    [pager.cursor, balance?.openInvoiceCount, balance?.openInvoicesCents],
  );
  const [paying, setPaying] = useState<string | null>(null);

  const pay = async (inv: Invoice) => {
    // A tab opened right away (a popup blocker allows it), pointed at the fresh URL once known.
    const tab = window.open("", "_blank");
    setPaying(inv.id);
    try {
      const { url } = await ok(api.GET("/v1/billing/invoices/{id}/pay-url", { params: { path: { id: inv.id } } }));
      if (!url) {
        tab?.close();
        toast("This invoice is not ready to pay yet. Try again in a minute.", "info");
      } else if (tab) {
        tab.opener = null;
        tab.location.href = url;
      } else {
        window.location.assign(url);
      }
    } catch (e) {
      tab?.close();
      toast(describe(e), "error");
    } finally {
      setPaying(null);
    }
  };

  const rows = list.data?.data ?? [];
  return (
    <div className="card" id="invoices" aria-labelledby="invoices-title">
      <div className="card-head">
        <h2 id="invoices-title">Invoices</h2>
      </div>
      {balance && balance.openInvoiceCount > 0 ? (
        <div className="note note-error" role="alert">
          <strong>
            {formatCents(balance.openInvoicesCents)} outstanding on {balance.openInvoiceCount} open invoice
            {balance.openInvoiceCount === 1 ? "" : "s"}.
          </strong>{" "}
          Pay on Stripe's page with any card. Paying an overage invoice settles the debt; it does not add credit.
        </div>
      ) : null}
      {list.error && !list.data ? (
        <ErrorNote error={describe(list.error)} />
      ) : !list.data ? (
        <Loading what="invoices" />
      ) : rows.length === 0 ? (
        <Empty title="No invoices">Invoices appear only when the wallet alone could not cover something.</Empty>
      ) : (
        <div className="table-wrap" tabIndex={0} role="region" aria-label="Invoices table">
          <table className="stack-narrow">
            <thead>
              <tr>
                <th scope="col">Date ({zoneName()})</th>
                <th scope="col">For</th>
                <th scope="col" className="right">
                  Amount
                </th>
                <th scope="col">Status</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {rows.map((inv) => (
                <tr key={inv.id} data-invoice={inv.id} data-status={inv.status}>
                  <td className="num" data-label="Date">
                    {formatTime(inv.createdAt)}
                  </td>
                  <td className="cell-title">
                    {INVOICE_REASON[inv.reason] ?? inv.reason}
                    <div className="row-sub">{inv.lineItems[0]?.description ?? inv.id}</div>
                  </td>
                  <td className="right cell-aside">
                    <Money cents={inv.amountCents} />
                  </td>
                  <td data-label="Status">
                    <span className="cell-value">
                      <Chip tone={INVOICE_TONE[inv.status]}>{inv.status}</Chip>
                      {inv.status === "open" && inv.dueAt ? (
                        <span className="row-sub block">due {formatTime(inv.dueAt)}</span>
                      ) : null}
                    </span>
                  </td>
                  <td className="cell-actions">
                    <div className="row">
                      {inv.status === "open" || inv.status === "uncollectible" ? (
                        <button
                          type="button"
                          className="btn btn-small btn-primary"
                          disabled={paying === inv.id}
                          onClick={() => void pay(inv)}
                        >
                          {paying === inv.id ? "Opening…" : "Pay ↗"}
                        </button>
                      ) : null}
                      {inv.receiptUrl ? (
                        <a className="btn btn-small" href={inv.receiptUrl} target="_blank" rel="noopener noreferrer">
                          Receipt ↗
                        </a>
                      ) : null}
                      {inv.invoicePdfUrl ? (
                        <a className="btn btn-small" href={inv.invoicePdfUrl} target="_blank" rel="noopener noreferrer">
                          PDF ↗
                        </a>
                      ) : null}
                    </div>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Pager
        label="Invoices"
        page={pager.page}
        hasNext={!!list.data?.nextCursor}
        onPrev={pager.prev}
        onNext={() => list.data?.nextCursor && pager.next(list.data.nextCursor)}
      />
    </div>
  );
}

// ------------------------------------------------------------------ ledger

const EXPORT_PAGES = 500; // 100,000 rows: far beyond any real history, a stop for a runaway loop

function Ledger() {
  const toast = useToast();
  const { balance } = useBalance();
  const [type, setType] = useState<LedgerType | "">("");
  const pager = usePager();
  const [exporting, setExporting] = useState(false);
  const page = useLoad(
    () =>
      ok(
        api.GET("/v1/billing/ledger", {
          params: { query: { pageSize: LEDGER_PAGE, ...(type ? { type } : {}), ...(pager.cursor ? { cursor: pager.cursor } : {}) } },
        }),
      ),
    [type, pager.cursor, pager.page === 1 ? balance?.updatedAt : null],
  );

  const exportCsv = async () => {
    setExporting(true);
    try {
      const entries: Schemas["LedgerEntry"][] = [];
      let cursor: string | undefined;
      for (let i = 0; i < EXPORT_PAGES; i++) {
        const p = await ok(api.GET("/v1/billing/ledger", { params: { query: { pageSize: 200, ...(cursor ? { cursor } : {}) } } }));
        entries.push(...p.entries);
        if (!p.nextCursor) break;
        cursor = p.nextCursor;
      }
      const day = new Date().toISOString().slice(0, 10);
      download(`gpurent-ledger-${day}.csv`, ledgerCsv(entries));
      toast(`Exported ${entries.length} ledger ${entries.length === 1 ? "entry" : "entries"}.`, "success");
    } catch (e) {
      toast(describe(e), "error");
    } finally {
      setExporting(false);
    }
  };

  const rows = page.data?.entries ?? [];
  return (
    <div className="card" aria-labelledby="ledger-title">
      <div className="card-head">
        <h2 id="ledger-title">Ledger</h2>
        <div className="row">
          <label htmlFor="ledger-type" className="visually-hidden">
            Entry type
          </label>
          <select
            id="ledger-type"
            value={type}
            onChange={(e) => {
              setType(e.target.value as LedgerType | "");
              pager.reset();
            }}
          >
            <option value="">All entries</option>
            {LEDGER_TYPES.map((t) => (
              <option key={t.id} value={t.id}>
                {t.label}
              </option>
            ))}
          </select>
          <button type="button" className="btn" onClick={() => void exportCsv()} disabled={exporting}>
            {exporting ? "Exporting…" : "Export all (CSV)"}
          </button>
        </div>
      </div>
      <p className="hint">Every movement of your wallet, newest first. Balance is the wallet total right after each entry.</p>
      {page.error && !page.data ? (
        <ErrorNote error={describe(page.error)} />
      ) : !page.data ? (
        <Loading what="the ledger" />
      ) : rows.length === 0 ? (
        <Empty title={type ? "No entries of this type" : "No wallet movements yet"} />
      ) : (
        <div className="table-wrap" tabIndex={0} role="region" aria-label="Ledger table">
          <table className="stack-narrow">
            <thead>
              <tr>
                <th scope="col">Date ({zoneName()})</th>
                <th scope="col">Type</th>
                <th scope="col">Details</th>
                <th scope="col" className="right">
                  Amount
                </th>
                <th scope="col" className="right">
                  Balance
                </th>
              </tr>
            </thead>
            <tbody>
              {rows.map((e) => (
                <tr key={e.id} data-entry={e.id}>
                  <td className="num" data-label="Date">
                    {formatTime(e.createdAt)}
                  </td>
                  <td className="cell-title">{TYPE_LABEL[e.type] ?? e.type}</td>
                  <td data-label="Details">
                    <span className="cell-value">
                      {e.description ?? "\u2014"}
                      <span className="row-sub mono block">{e.rentalId ?? e.invoiceId ?? e.stripeChargeId ?? e.id}</span>
                    </span>
                  </td>
                  <td className={`right cell-aside ${e.amountCents > 0 ? "amount-pos" : ""}`}>
                    <Money cents={e.amountCents} sign />
                  </td>
                  <td className="right" data-label="Balance">
                    <Money cents={e.balanceAfterCents} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Pager
        label="Ledger"
        page={pager.page}
        hasNext={!!page.data?.nextCursor}
        onPrev={pager.prev}
        onNext={() => page.data?.nextCursor && pager.next(page.data.nextCursor)}
      />
    </div>
  );
}
