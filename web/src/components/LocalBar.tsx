import { useState } from "react";
import { advanceClock, useLocalClock } from "../lib/local";
import { formatTime } from "../lib/time";
import { useBalance, useToast } from "../state";

const STEPS = [
  { seconds: 60, label: "+1 min" },
  { seconds: 600, label: "+10 min" },
  { seconds: 3600, label: "+1 h" },
];

/**
 * `make dev` only: the test clock, moved from the page (what `POST /dev/clock/advance` does in
 * the README), so metering, auto-stop and exhaustion can be watched without a terminal.
 */
export function LocalBar() {
  const [clock, setClock] = useLocalClock();
  const { refresh } = useBalance();
  const toast = useToast();
  const [busy, setBusy] = useState<number | null>(null);
  if (!clock) return null;
  const move = async (seconds: number, label: string) => {
    setBusy(seconds);
    try {
      setClock(await advanceClock(seconds));
      toast(`Test clock moved ${label.slice(1)}: every sweep and timer on the way ran.`, "info");
      await refresh();
    } catch (e) {
      toast(`The test clock did not move: ${e instanceof Error ? e.message : String(e)}`, "error");
    } finally {
      setBusy(null);
    }
  };
  return (
    <footer className="localbar" aria-label="Local stack">
      <span className="local-badge">Local stack</span>
      <span>
        Test clock <span className="num" data-testid="local-clock">{formatTime(clock.now)}</span>
      </span>
      <span className="localbar-actions" role="group" aria-label="Move the test clock">
        {STEPS.map((s) => (
          <button
            key={s.seconds}
            type="button"
            className="btn btn-small"
            disabled={busy !== null}
            onClick={() => void move(s.seconds, s.label)}
            aria-label={`Move the test clock ${s.label.slice(1)} ahead`}
          >
            {busy === s.seconds ? "Moving…" : s.label}
          </button>
        ))}
      </span>
      <a href="/dev/mailbox" target="_blank" rel="noreferrer">
        Mailbox
      </a>
    </footer>
  );
}
