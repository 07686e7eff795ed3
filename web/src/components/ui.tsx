import { useEffect, useId, useRef, useState, type ReactNode } from "react";
import { formatCents } from "../lib/money";

/** Money from integer cents, in tabular figures (no layout shift when it changes). */
export function Money({ cents, sign, className }: { cents: number; sign?: boolean; className?: string }) {
  return <span className={`num ${className ?? ""}`}>{formatCents(cents, { sign })}</span>;
}

export function Spinner({ label = "Loading" }: { label?: string }) {
  return (
    <span className="spinner" role="status">
      <span className="visually-hidden">{label}</span>
    </span>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <div className="loading" role="status" aria-live="polite">
      <span className="spinner" aria-hidden="true" /> Loading {what}…
    </div>
  );
}

export function Empty({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="empty">
      <p className="empty-title">{title}</p>
      {children}
    </div>
  );
}

export function ErrorNote({ error, children }: { error: string | null | undefined; children?: ReactNode }) {
  if (!error) return null;
  return (
    <div className="note note-error" role="alert">
      {error}
      {children}
    </div>
  );
}

type Tone = "green" | "yellow" | "red" | "grey" | "blue";

export function Chip({ tone, children }: { tone: Tone; children: ReactNode }) {
  return <span className={`chip chip-${tone}`}>{children}</span>;
}

export function Kpi({ label, children, hint }: { label: string; children: ReactNode; hint?: string }) {
  return (
    <div className="kpi">
      <div className="kpi-label">{label}</div>
      <div className="kpi-value num">{children}</div>
      {hint ? <div className="kpi-hint">{hint}</div> : null}
    </div>
  );
}

/** Copies `text`; says so for two seconds (and to screen readers). */
export function CopyButton({ text, label = "Copy", className }: { text: string; label?: string; className?: string }) {
  const [done, setDone] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      const area = document.createElement("textarea");
      area.value = text;
      document.body.appendChild(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    setDone(true);
    window.setTimeout(() => setDone(false), 2000);
  };
  return (
    <button type="button" className={`btn btn-small ${className ?? ""}`} onClick={() => void copy()}>
      <span aria-live="polite">{done ? "Copied" : label}</span>
    </button>
  );
}

/**
 * A modal confirmation on the native <dialog> (focus is trapped and restored by the
 * browser, Escape cancels).
 */
export function Confirm({
  open,
  title,
  children,
  confirmLabel,
  danger,
  busy,
  onConfirm,
  onCancel,
}: {
  open: boolean;
  title: string;
  children?: ReactNode;
  confirmLabel: string;
  danger?: boolean;
  busy?: boolean;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId(); // several dialogs may live on one page
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);
  return (
    <dialog
      ref={ref}
      className="dialog"
      aria-labelledby={titleId}
      onCancel={(e) => {
        e.preventDefault();
        onCancel();
      }}
    >
      <h2 id={titleId}>{title}</h2>
      <div className="dialog-body">{children}</div>
      <div className="dialog-actions">
        <button type="button" className="btn" onClick={onCancel} disabled={busy}>
          Cancel
        </button>
        <button
          type="button"
          className={`btn ${danger ? "btn-danger" : "btn-primary"}`}
          onClick={onConfirm}
          disabled={busy}
        >
          {busy ? "Working…" : confirmLabel}
        </button>
      </div>
    </dialog>
  );
}

/** Cursor paging: the cursors of the pages seen so far, so "Previous" works too. */
export function usePager() {
  const [stack, setStack] = useState<(string | null)[]>([null]);
  const cursor = stack[stack.length - 1] ?? null;
  return {
    cursor,
    page: stack.length,
    next: (c: string) => setStack((s) => [...s, c]),
    prev: () => setStack((s) => (s.length > 1 ? s.slice(0, -1) : s)),
    reset: () => setStack([null]),
  };
}

export function Pager({
  page,
  hasNext,
  onPrev,
  onNext,
  label,
}: {
  page: number;
  hasNext: boolean;
  onPrev: () => void;
  onNext: () => void;
  label: string;
}) {
  if (page === 1 && !hasNext) return null;
  return (
    <nav className="pager" aria-label={`${label} pages`}>
      <button type="button" className="btn btn-small" onClick={onPrev} disabled={page === 1}>
        ← Previous
      </button>
      <span className="num">Page {page}</span>
      <button type="button" className="btn btn-small" onClick={onNext} disabled={!hasNext}>
        Next →
      </button>
    </nav>
  );
}
