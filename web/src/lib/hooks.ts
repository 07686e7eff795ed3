import { useCallback, useEffect, useRef, useState, useSyncExternalStore } from "react";

function subscribeVisibility(l: () => void) {
  document.addEventListener("visibilitychange", l);
  return () => document.removeEventListener("visibilitychange", l);
}

/** True while the tab is visible (polling pauses when it is not). */
export function useVisible(): boolean {
  return useSyncExternalStore(subscribeVisibility, () => document.visibilityState === "visible");
}

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => Promise<void>;
}

/**
 * Load with `fn` when `deps` change; with `everyMs`, again at that interval while the
 * tab is visible (and at once when it becomes visible again). Old answers never
 * overwrite newer ones.
 */
export function useLoad<T>(fn: () => Promise<T>, deps: unknown[], everyMs?: number | null): Loaded<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const seq = useRef(0);
  const fnRef = useRef(fn);
  fnRef.current = fn;
  const visible = useVisible();

  const reload = useCallback(async () => {
    const mine = ++seq.current;
    try {
      const out = await fnRef.current();
      if (mine === seq.current) {
        setData(out);
        setError(null);
      }
    } catch (e) {
      if (mine === seq.current) setError(e);
    } finally {
      if (mine === seq.current) setLoading(false);
    }
  }, []);

  useEffect(() => {
    setLoading(true); // the previous answer stays on screen until the new one lands
    void reload();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);

  useEffect(() => {
    if (!everyMs || !visible) return;
    const id = window.setInterval(() => void reload(), everyMs);
    return () => window.clearInterval(id);
  }, [everyMs, visible, reload]);

  const wasVisible = useRef(visible);
  useEffect(() => {
    if (visible && !wasVisible.current && everyMs) void reload();
    wasVisible.current = visible;
  }, [visible, everyMs, reload]);

  return { data, error, loading, reload };
}

/** Seconds left until `until` (ms epoch), ticking once a second; 0 when passed. */
export function useCountdown(until: number | null): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!until) return;
    setNow(Date.now());
    const id = window.setInterval(() => setNow(Date.now()), 250);
    return () => window.clearInterval(id);
  }, [until]);
  return until ? Math.max(0, Math.ceil((until - now) / 1000)) : 0;
}

/** Sets document.title for a page. */
export function useTitle(title: string) {
  useEffect(() => {
    document.title = `${title} \u00b7 gpurent`;
  }, [title]);
}
