// The local stack (`make dev`) only: its test clock and mailbox are dev routes (`/dev/…`) that no
// deployment has. They are looked for only when the page comes from a loopback address, so a
// deployed dashboard never asks.
import { useEffect, useState } from "react";

const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]"]);

export interface LocalClock {
  now: string; // ISO 8601, the stack's test clock
  offsetSeconds: number; // how far it has been moved ahead of real time
}

async function readClock(res: Response): Promise<LocalClock> {
  if (!res.ok) throw new Error(`the local clock answered ${res.status}`);
  const body = (await res.json()) as Partial<LocalClock>;
  if (typeof body.now !== "string" || typeof body.offsetSeconds !== "number") throw new Error("not the local clock");
  return { now: body.now, offsetSeconds: body.offsetSeconds };
}

let probe: Promise<LocalClock | null> | null = null;

/** The local stack's clock, or null on a deployment (asked once per page load). */
export function localClock(): Promise<LocalClock | null> {
  if (!LOOPBACK.has(window.location.hostname)) return Promise.resolve(null);
  probe ??= fetch("/dev/clock", { credentials: "same-origin" })
    .then(readClock)
    .catch(() => null);
  return probe;
}

/** Moves the local test clock; every sweep, timer and reconcile on the way runs first. */
export async function advanceClock(seconds: number): Promise<LocalClock> {
  const res = await fetch("/dev/clock/advance", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ seconds }),
  });
  const clock = await readClock(res);
  probe = Promise.resolve(clock);
  return clock;
}

/** The local clock while on the local stack (null elsewhere, and until known). */
export function useLocalClock(): [LocalClock | null, (c: LocalClock) => void] {
  const [clock, setClock] = useState<LocalClock | null>(null);
  useEffect(() => {
    let live = true;
    void localClock().then((c) => live && setClock(c));
    return () => {
      live = false;
    };
  }, []);
  return [clock, setClock];
}
