// Saving a card. The server never sees card numbers: a SetupIntent is confirmed by
// Stripe.js in production (Stripe Elements, loaded from js.stripe.com only now, when a
// publishable key is configured). The local stack has no network, so there its local
// Stripe's own dev route plays Stripe.js's part, behind a clearly marked test form.
import { useEffect, useRef, useState, type FormEvent } from "react";
import { api, ok } from "../api/client";
import { describe } from "../api/errors";

export const LOCAL_PUBLISHABLE_KEY = "pk_test_local"; // infra/local/stripe_local.py
const CARD_WAIT_MS = 20_000; // the card shows up once Stripe's webhook has landed

const TEST_CARDS = [
  { number: "4242424242424242", what: "succeeds" },
  { number: "4000000000000341", what: "saves, then declines when charged" },
  { number: "4000000000000002", what: "declined" },
];

interface StripeJs {
  elements(opts: { clientSecret: string }): {
    create(kind: "payment"): { mount(el: HTMLElement): void; destroy(): void };
  };
  confirmSetup(opts: {
    elements: unknown;
    redirect: "if_required";
    confirmParams: { return_url: string };
  }): Promise<{ error?: { message?: string } }>;
}

let stripeJs: Promise<(key: string) => StripeJs> | null = null;
function loadStripe(): Promise<(key: string) => StripeJs> {
  stripeJs ??= new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = "https://js.stripe.com/v3/";
    s.async = true;
    s.onload = () => {
      const w = window as unknown as { Stripe?: (key: string) => StripeJs };
      if (w.Stripe) resolve(w.Stripe);
      else reject(new Error("Stripe.js did not load"));
    };
    s.onerror = () => {
      stripeJs = null;
      reject(new Error("Could not reach Stripe. Check your connection and retry."));
    };
    document.head.appendChild(s);
  });
  return stripeJs;
}

async function waitForCard(previousPm: string | null): Promise<boolean> {
  const until = Date.now() + CARD_WAIT_MS;
  while (Date.now() < until) {
    const card = await ok(api.GET("/v1/billing/card"));
    if (card.pmId && card.pmId !== previousPm) return true;
    await new Promise((r) => setTimeout(r, 700));
  }
  return false;
}

export function CardForm({
  previousPm,
  onSaved,
  onCancel,
}: {
  previousPm: string | null;
  onSaved: () => void;
  onCancel: () => void;
}) {
  const [intent, setIntent] = useState<{ clientSecret: string; publishableKey: string } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [number, setNumber] = useState(TEST_CARDS[0]!.number);
  const mount = useRef<HTMLDivElement>(null);
  const stripe = useRef<{ js: StripeJs; elements: unknown } | null>(null);

  useEffect(() => {
    let live = true;
    ok(api.POST("/v1/billing/setup-intent"))
      .then((i) => live && setIntent(i))
      .catch((e) => live && setError(describe(e)));
    return () => {
      live = false;
    };
  }, []);

  const local = intent?.publishableKey === LOCAL_PUBLISHABLE_KEY;

  useEffect(() => {
    if (!intent || local || !intent.publishableKey || !mount.current) return;
    let element: { destroy(): void } | null = null;
    loadStripe()
      .then((Stripe) => {
        const js = Stripe(intent.publishableKey);
        const elements = js.elements({ clientSecret: intent.clientSecret });
        const payment = elements.create("payment");
        payment.mount(mount.current!);
        element = payment;
        stripe.current = { js, elements };
      })
      .catch((e: Error) => setError(e.message));
    return () => element?.destroy();
  }, [intent, local]);

  const save = async (e: FormEvent) => {
    e.preventDefault();
    if (!intent) return;
    setBusy(true);
    setError(null);
    try {
      if (local) {
        const id = intent.clientSecret.split("_secret_")[0]!;
        const res = await fetch(`/dev/stripe/setup-intents/${encodeURIComponent(id)}/confirm`, {
          method: "POST",
          credentials: "same-origin",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ card: number.replace(/\s/g, "") }),
        });
        if (!res.ok) {
          const body = (await res.json().catch(() => ({}))) as { error?: { message?: string } | string; message?: string };
          const msg = typeof body.error === "object" ? body.error?.message : body.message;
          throw new Error(msg ? `Card not saved: ${msg}` : "Card not saved.");
        }
      } else {
        if (!stripe.current) throw new Error("The card form is still loading.");
        const out = await stripe.current.js.confirmSetup({
          elements: stripe.current.elements,
          redirect: "if_required",
          confirmParams: { return_url: `${window.location.origin}/app/billing` },
        });
        if (out.error) throw new Error(out.error.message ?? "Card not saved.");
      }
      if (!(await waitForCard(previousPm))) throw new Error("Stripe has not confirmed the card yet. Reload in a minute.");
      onSaved();
    } catch (err) {
      setError(describe(err));
      setBusy(false);
    }
  };

  return (
    <form onSubmit={save} className="stack" aria-label="Add a card">
      {!intent && !error ? <p className="muted">Preparing a secure form…</p> : null}
      {intent && local ? (
        <div className="note note-warn">
          <span className="local-badge">Local test card</span> This is the local stack: no real card and no Stripe.js.
          The number goes to the local Stripe only.
          <label htmlFor="card-number">Test card number</label>
          <input
            id="card-number"
            inputMode="numeric"
            autoComplete="off"
            value={number}
            onChange={(e) => setNumber(e.target.value)}
            aria-describedby="card-hint"
          />
          <ul className="hint" id="card-hint">
            {TEST_CARDS.map((c) => (
              <li key={c.number}>
                <code>{c.number}</code> {c.what}
              </li>
            ))}
          </ul>
        </div>
      ) : null}
      {intent && !local ? <div ref={mount} className="stripe-element" /> : null}
      {error ? (
        <p className="field-error" role="alert">
          {error}
        </p>
      ) : null}
      <div className="row">
        <button type="submit" className="btn btn-primary" disabled={!intent || busy}>
          {busy ? "Saving…" : "Save card"}
        </button>
        <button type="button" className="btn" onClick={onCancel} disabled={busy}>
          Cancel
        </button>
      </div>
    </form>
  );
}
