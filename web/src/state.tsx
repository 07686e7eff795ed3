// What every /app page shares: the signed-in user, the wallet balance (polled every
// 15 s while the tab is visible) and the toasts.
import { createContext, useCallback, useContext, useEffect, useRef, useState, type ReactNode } from "react";
import { api, ok, setRetryListener, type Schemas } from "./api/client";
import { useLoad } from "./lib/hooks";

export type Me = Schemas["MeAnswer"];
export type Balance = Schemas["Balance"];

export const BALANCE_EVERY_MS = 15_000;

export const SessionContext = createContext<Me | null>(null);

export function useMe(): Me {
  const me = useContext(SessionContext);
  if (!me) throw new Error("useMe outside the signed-in shell");
  return me;
}

interface BalanceState {
  balance: Balance | undefined;
  error: unknown;
  refresh: () => Promise<void>;
}

const BalanceContext = createContext<BalanceState>({ balance: undefined, error: null, refresh: async () => {} });

export function BalanceProvider({ children }: { children: ReactNode }) {
  const { data, error, reload } = useLoad(() => ok(api.GET("/v1/billing/balance")), [], BALANCE_EVERY_MS);
  // Back from another tab (Stripe's pay page, say): the balance may have moved.
  useEffect(() => {
    const onFocus = () => void reload();
    window.addEventListener("focus", onFocus);
    return () => window.removeEventListener("focus", onFocus);
  }, [reload]);
  return <BalanceContext.Provider value={{ balance: data, error, refresh: reload }}>{children}</BalanceContext.Provider>;
}

export function useBalance(): BalanceState {
  return useContext(BalanceContext);
}

// ------------------------------------------------------------------ toasts

type Tone = "info" | "success" | "error";
interface Toast {
  id: number;
  text: string;
  tone: Tone;
}

const ToastContext = createContext<(text: string, tone?: Tone) => void>(() => {});

export function useToast() {
  return useContext(ToastContext);
}

export function ToastProvider({ children }: { children: ReactNode }) {
  const [toasts, setToasts] = useState<Toast[]>([]);
  const seq = useRef(0);
  const push = useCallback((text: string, tone: Tone = "info") => {
    const id = ++seq.current;
    setToasts((t) => [...t.slice(-3), { id, text, tone }]);
    window.setTimeout(() => setToasts((t) => t.filter((x) => x.id !== id)), tone === "error" ? 8000 : 5000);
  }, []);
  useEffect(() => {
    setRetryListener((seconds) => {
      if (seconds > 0) push(`Too many requests: retrying in ${seconds} s.`, "info");
    });
  }, [push]);
  return (
    <ToastContext.Provider value={push}>
      {children}
      <div className="toasts" role="status" aria-live="polite">
        {toasts.map((t) => (
          <div key={t.id} className={`toast toast-${t.tone}`}>
            {t.text}
            <button
              type="button"
              className="toast-close"
              aria-label="Dismiss"
              onClick={() => setToasts((all) => all.filter((x) => x.id !== t.id))}
            >
              ×
            </button>
          </div>
        ))}
      </div>
    </ToastContext.Provider>
  );
}
