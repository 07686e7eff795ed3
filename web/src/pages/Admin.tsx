import { useRef, useState, type FormEvent } from "react";
import { api, newKey, ok } from "../api/client";
import { describe } from "../api/errors";
import { Confirm, Empty, ErrorNote, Loading, Money, Pager, usePager } from "../components/ui";
import { useLoad, useTitle } from "../lib/hooks";
import { formatCents, parseDollars } from "../lib/money";
import { formatTime, zoneName } from "../lib/time";
import { useBalance, useMe, useToast } from "../state";

const ACTIONS: Record<string, string> = {
  adjustment: "Adjustment",
  invoice: "Manual invoice",
  invoice_void: "Void",
};

/** "-12.50" -> -1250; signed dollars as text, never through a float. */
function parseSigned(text: string): number | null {
  const t = text.trim();
  const negative = t.startsWith("-") || t.startsWith("\u2212");
  const cents = parseDollars(negative ? t.slice(1) : t);
  return cents === null ? null : negative ? -cents : cents;
}

/** Someone is either an email or a usr_… id. */
function target(who: string): { email: string } | { userId: string } {
  const w = who.trim();
  return w.startsWith("usr_") ? { userId: w } : { email: w };
}

function thisMonth(): string {
  return new Date().toISOString().slice(0, 7);
}

function shiftMonth(month: string, by: number): string {
  const [y, m] = month.split("-").map(Number) as [number, number];
  const d = new Date(Date.UTC(y, m - 1 + by, 1));
  return d.toISOString().slice(0, 7);
}

export default function Admin() {
  useTitle("Admin");
  const me = useMe();
  if (!me.isAdmin) {
    return (
      <section>
        <h1 tabIndex={-1}>Admin</h1>
        <p className="note note-error">Only admins can open this page.</p>
      </section>
    );
  }
  return (
    <section>
      <div className="page-head">
        <div>
          <h1 tabIndex={-1}>Admin</h1>
          <p className="muted">Every action here is audited and emailed to the user concerned.</p>
        </div>
      </div>
      <div className="grid-2">
        <Adjust />
        <div>
          <ManualInvoice />
          <VoidInvoice />
        </div>
      </div>
      <Audit />
    </section>
  );
}

function Adjust() {
  const toast = useToast();
  const { refresh } = useBalance();
  const [who, setWho] = useState("");
  const [amount, setAmount] = useState("");
  const [reason, setReason] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const intent = JSON.stringify([who, amount, reason]);
  const key = useRef({ intent, key: newKey("adjust") });
  if (key.current.intent !== intent) key.current = { intent, key: newKey("adjust") };

  const cents = parseSigned(amount);
  const bad = amount.trim() !== "" && (cents === null || cents === 0);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (cents === null || cents === 0 || !who.trim() || !reason.trim()) return;
    setBusy(true);
    setError(null);
    try {
      const out = await ok(
        api.POST("/v1/admin/adjustments", {
          params: { header: { "Idempotency-Key": key.current.key } },
          body: { ...target(who), amountCents: cents, reason: reason.trim() },
        }),
      );
      toast(
        `${formatCents(cents, { sign: true })} for ${who.trim()}: their balance is now ${formatCents(out.totalCents)}.`,
        "success",
      );
      setAmount("");
      setReason("");
      void refresh();
    } catch (err) {
      setError(describe(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="card" onSubmit={submit} noValidate aria-labelledby="adjust-title">
      <h2 id="adjust-title">Adjust a wallet</h2>
      <label htmlFor="adj-who">User (email or usr_… id)</label>
      <input id="adj-who" autoComplete="off" value={who} onChange={(e) => setWho(e.target.value)} />
      <label htmlFor="adj-amount">Amount ($, negative to take)</label>
      <input
        id="adj-amount"
        inputMode="decimal"
        placeholder="50.00 or -12.50"
        value={amount}
        onChange={(e) => setAmount(e.target.value)}
        aria-invalid={bad || undefined}
        aria-describedby="adj-amount-hint"
      />
      <p className={bad ? "field-error" : "hint"} id="adj-amount-hint">
        {bad ? "Enter dollars (not zero), like 50 or -12.50" : "Credits or debits the available balance, in the ledger as an adjustment."}
      </p>
      <label htmlFor="adj-reason">Reason (the user sees it)</label>
      <input id="adj-reason" maxLength={500} value={reason} onChange={(e) => setReason(e.target.value)} />
      <ErrorNote error={error} />
      <button type="submit" className="btn btn-primary btn-block" disabled={busy || bad || !who.trim() || !reason.trim() || cents === null}>
        {busy ? "Applying…" : "Apply adjustment"}
      </button>
    </form>
  );
}

function ManualInvoice() {
  const toast = useToast();
  const [who, setWho] = useState("");
  const [amount, setAmount] = useState("");
  const [description, setDescription] = useState("");
  const [credits, setCredits] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const intent = JSON.stringify([who, amount, description, credits]);
  const key = useRef({ intent, key: newKey("invoice") });
  if (key.current.intent !== intent) key.current = { intent, key: newKey("invoice") };

  const cents = amount.trim() ? parseDollars(amount) : null;
  const bad = amount.trim() !== "" && (cents === null || cents < 100);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (cents === null || bad || !who.trim() || !description.trim()) return;
    setBusy(true);
    setError(null);
    try {
      const inv = await ok(
        api.POST("/v1/admin/invoices", {
          params: { header: { "Idempotency-Key": key.current.key } },
          body: { ...target(who), amountCents: cents, description: description.trim(), creditsWallet: credits },
        }),
      );
      toast(`Invoice ${inv.id} of ${formatCents(inv.amountCents)} issued to ${who.trim()}.`, "success");
      setAmount("");
      setDescription("");
    } catch (err) {
      setError(describe(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="card" onSubmit={submit} noValidate aria-labelledby="inv-title">
      <h2 id="inv-title">Issue an invoice</h2>
      <div className="fields">
        <div>
          <label htmlFor="inv-who">User (email or usr_… id)</label>
          <input id="inv-who" autoComplete="off" value={who} onChange={(e) => setWho(e.target.value)} />
        </div>
        <div>
          <label htmlFor="inv-amount">Amount ($)</label>
          <input
            id="inv-amount"
            inputMode="decimal"
            value={amount}
            onChange={(e) => setAmount(e.target.value)}
            aria-invalid={bad || undefined}
            aria-describedby="inv-amount-hint"
          />
          <p className={bad ? "field-error" : "hint"} id="inv-amount-hint">
            At least $1
          </p>
        </div>
      </div>
      <label htmlFor="inv-desc">Description</label>
      <input id="inv-desc" maxLength={500} value={description} onChange={(e) => setDescription(e.target.value)} />
      <label className="check">
        <input type="checkbox" checked={credits} onChange={(e) => setCredits(e.target.checked)} />
        Paying it adds the amount to their wallet (e.g. a wire top-up)
      </label>
      <ErrorNote error={error} />
      <button type="submit" className="btn btn-primary" disabled={busy || bad || cents === null || !who.trim() || !description.trim()}>
        {busy ? "Issuing…" : "Issue invoice"}
      </button>
    </form>
  );
}

function VoidInvoice() {
  const toast = useToast();
  const [id, setId] = useState("");
  const [confirm, setConfirm] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const valid = /^inv_[0-9A-Za-z]+$/.test(id.trim());

  const submit = async () => {
    setBusy(true);
    setError(null);
    try {
      await ok(api.POST("/v1/admin/invoices/{id}/void", { params: { path: { id: id.trim() } } }));
      toast(`Invoice ${id.trim()} voided.`, "success");
      setId("");
    } catch (err) {
      setError(describe(err));
    } finally {
      setBusy(false);
      setConfirm(false);
    }
  };

  return (
    <form
      className="card"
      noValidate
      aria-labelledby="void-title"
      onSubmit={(e) => {
        e.preventDefault();
        if (valid) setConfirm(true);
      }}
    >
      <h2 id="void-title">Void an invoice</h2>
      <p className="hint">Only an open invoice can be voided. Prefer a refund (a positive adjustment) when it was paid.</p>
      <label htmlFor="void-id">Invoice id</label>
      <input id="void-id" autoComplete="off" placeholder="inv_…" value={id} onChange={(e) => setId(e.target.value)} />
      <ErrorNote error={error} />
      <button type="submit" className="btn btn-danger" disabled={!valid || busy}>
        Void invoice
      </button>
      <Confirm
        open={confirm}
        title="Void this invoice?"
        confirmLabel="Void invoice"
        danger
        busy={busy}
        onCancel={() => setConfirm(false)}
        onConfirm={() => void submit()}
      >
        <p>
          <span className="mono">{id.trim()}</span> will no longer be payable, and the user no longer owes it.
        </p>
      </Confirm>
    </form>
  );
}

function Audit() {
  const [month, setMonth] = useState(thisMonth);
  const pager = usePager();
  const list = useLoad(
    () => ok(api.GET("/v1/admin/audit", { params: { query: { month, pageSize: 50, ...(pager.cursor ? { cursor: pager.cursor } : {}) } } })),
    [month, pager.cursor],
    30_000,
  );
  const go = (by: number) => {
    setMonth((m) => shiftMonth(m, by));
    pager.reset();
  };
  const rows = list.data?.entries ?? [];
  return (
    <div className="card" aria-labelledby="audit-title">
      <div className="card-head">
        <h2 id="audit-title">Audit log</h2>
        <div className="row" role="group" aria-label="Month">
          <button type="button" className="btn btn-small" onClick={() => go(-1)} aria-label="Previous month">
            ←
          </button>
          <span className="num" aria-live="polite">
            {month}
          </span>
          <button type="button" className="btn btn-small" onClick={() => go(1)} disabled={month >= thisMonth()} aria-label="Next month">
            →
          </button>
        </div>
      </div>
      {list.error && !list.data ? (
        <ErrorNote error={describe(list.error)} />
      ) : !list.data ? (
        <Loading what="the audit log" />
      ) : rows.length === 0 ? (
        <Empty title="Nothing audited this month" />
      ) : (
        <div className="table-wrap" tabIndex={0} role="region" aria-label="Audit table">
          <table>
            <thead>
              <tr>
                <th scope="col">When ({zoneName()})</th>
                <th scope="col">Action</th>
                <th scope="col">User</th>
                <th scope="col" className="right">
                  Amount
                </th>
                <th scope="col">Details</th>
                <th scope="col">By</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((a) => (
                <tr key={a.id}>
                  <td className="num">{formatTime(a.createdAt)}</td>
                  <td>{ACTIONS[a.action] ?? a.action}</td>
                  <td>{a.userEmail ?? a.userId}</td>
                  <td className="right">{a.amountCents !== null ? <Money cents={a.amountCents} sign={a.action === "adjustment"} /> : "\u2014"}</td>
                  <td>
                    {a.reason ?? ""}
                    {a.invoiceId ? <span className="mono"> {a.invoiceId}</span> : null}
                  </td>
                  <td>{a.adminEmail ?? a.adminId}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Pager
        label="Audit"
        page={pager.page}
        hasNext={!!list.data?.nextCursor}
        onPrev={pager.prev}
        onNext={() => list.data?.nextCursor && pager.next(list.data.nextCursor)}
      />
    </div>
  );
}
