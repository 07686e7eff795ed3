// Times arrive as ISO 8601 UTC; people read them in their own time zone.

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
});
const withZone = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" });

export function formatTime(iso: string | null | undefined): string {
  if (!iso) return "\u2014";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : dateTime.format(d);
}

/** The viewer's zone name, e.g. "CET" or "GMT+2", shown next to time columns. */
export function zoneName(): string {
  const part = withZone.formatToParts(new Date()).find((p) => p.type === "timeZoneName");
  return part?.value ?? Intl.DateTimeFormat().resolvedOptions().timeZone;
}

/** 3725 -> "1h 02m 05s" */
export function formatDuration(totalSeconds: number): string {
  const s = Math.max(0, Math.floor(totalSeconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const mm = String(m).padStart(2, "0");
  const ss = String(sec).padStart(2, "0");
  return h > 0 ? `${h}h ${mm}m ${ss}s` : `${m}m ${ss}s`;
}

/** A wait in seconds as a person says it: 45 -> "45 s", 600 -> "10 min", 18000 -> "5 h". */
export function formatWait(seconds: number): string {
  const s = Math.max(1, Math.ceil(seconds));
  if (s < 120) return `${s} s`;
  if (s < 2 * 3600) return `${Math.ceil(s / 60)} min`;
  return `${Math.ceil(s / 3600)} h`;
}

const clockTime = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayAndTime = new Intl.DateTimeFormat(undefined, { weekday: "short", hour: "2-digit", minute: "2-digit" });

/** When a wait of `seconds` from now ends, in the viewer's zone ("14:05", or "Tue 09:30" past today). */
export function formatWhen(seconds: number, now: Date = new Date()): string {
  const at = new Date(now.getTime() + seconds * 1000);
  return at.toDateString() === now.toDateString() ? clockTime.format(at) : dayAndTime.format(at);
}
