import { useEffect, useRef, useState, type ReactNode } from "react";
import { api, ok } from "../api/client";
import { describe } from "../api/errors";
import { formatCents } from "../lib/money";
import { Link, navigate, useLocation } from "../lib/router";
import { BalanceProvider, SessionContext, useBalance, useToast, type Me } from "../state";
import { LocalBar } from "./LocalBar";
import { Loading } from "./ui";

export const LOW_BALANCE_CENTS = 500; // the pill turns yellow below $5

/** The available balance; yellow below $5, red while an invoice is open. */
export function BalancePill() {
  const { balance } = useBalance();
  if (!balance) {
    return (
      <span className="pill pill-loading num" aria-label="Available balance loading">
        $—.——
      </span>
    );
  }
  const tone = balance.openInvoiceCount > 0 ? "red" : balance.availableCents < LOW_BALANCE_CENTS ? "yellow" : "ok";
  const why =
    tone === "red"
      ? `, ${balance.openInvoiceCount} open invoice${balance.openInvoiceCount === 1 ? "" : "s"}`
      : tone === "yellow"
        ? ", running low"
        : "";
  return (
    <Link
      to="/app/billing"
      className={`pill pill-${tone}`}
      data-testid="balance-pill"
      data-tone={tone}
      aria-label={`Available balance ${formatCents(balance.availableCents)}${why}. Open billing`}
    >
      <span className="pill-label" aria-hidden="true">
        Available
      </span>{" "}
      <span className="num" aria-hidden="true">
        {formatCents(balance.availableCents)}
      </span>
    </Link>
  );
}

function InvoiceBanner() {
  const { balance } = useBalance();
  if (!balance || balance.openInvoiceCount === 0) return null;
  const n = balance.openInvoiceCount;
  return (
    <div className="banner banner-red" role="alert" data-testid="invoice-banner">
      <strong>
        {n === 1 ? "An invoice is" : `${n} invoices are`} open: {formatCents(balance.openInvoicesCents)} outstanding.
      </strong>{" "}
      <Link to="/app/billing#invoices">Review and pay</Link>
    </div>
  );
}

const NAV = [
  { to: "/app", label: "Create" },
  { to: "/app/rentals", label: "Rentals" },
  { to: "/app/billing", label: "Billing" },
  { to: "/app/settings", label: "Settings" },
];

function TopBar({ me }: { me: Me }) {
  const { path } = useLocation();
  const toast = useToast();
  const [busy, setBusy] = useState(false);
  const items = me.isAdmin ? [...NAV, { to: "/app/admin", label: "Admin" }] : NAV;
  const signOut = async () => {
    setBusy(true);
    try {
      await ok(api.POST("/v1/auth/logout"));
      navigate("/login", { replace: true });
    } catch (e) {
      toast(describe(e), "error");
      setBusy(false);
    }
  };
  return (
    <header className="topbar">
      <div className="topbar-row">
        <Link to="/app" className="brand" aria-label="gpurent home">
          <span aria-hidden="true" className="brand-mark" />
          gpurent
        </Link>
        <nav className="mainnav" aria-label="Main">
          <ul>
            {items.map((item) => (
              <li key={item.to}>
                <Link to={item.to} aria-current={path === item.to ? "page" : undefined}>
                  {item.label}
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        <div className="topbar-right">
          <BalancePill />
          <span className="who" title={me.user.email}>
            {me.user.email}
          </span>
          <button type="button" className="btn btn-small btn-quiet" onClick={() => void signOut()} disabled={busy}>
            Sign out
          </button>
        </div>
      </div>
    </header>
  );
}

/** Every /app page: who is signed in (else /login and back), the top bar, the banner. */
export function Shell({ children }: { children: ReactNode }) {
  const [me, setMe] = useState<Me | null>(null);
  const [error, setError] = useState<string | null>(null);
  const { path } = useLocation();
  const mainRef = useRef<HTMLElement>(null);
  const first = useRef(true);

  useEffect(() => {
    let live = true;
    ok(api.GET("/v1/auth/me"))
      .then((m) => live && setMe(m))
      .catch((e) => live && setError(describe(e))); // a 401 already went to /login
    return () => {
      live = false;
    };
  }, []);

  // After a client-side navigation, move focus to the new page's heading.
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    const t = window.setTimeout(() => mainRef.current?.querySelector<HTMLElement>("h1")?.focus(), 50);
    return () => window.clearTimeout(t);
  }, [path]);

  if (!me) {
    return (
      <main className="page" id="main">
        {error ? (
          <div className="note note-error" role="alert">
            {error}
          </div>
        ) : (
          <Loading what="your account" />
        )}
      </main>
    );
  }
  return (
    <SessionContext.Provider value={me}>
      <BalanceProvider>
        <a className="skip" href="#main">
          Skip to content
        </a>
        <TopBar me={me} />
        <InvoiceBanner />
        <main className="page" id="main" ref={mainRef}>
          {children}
        </main>
        <LocalBar />
      </BalanceProvider>
    </SessionContext.Provider>
  );
}
