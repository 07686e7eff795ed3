// Money is integer US cents from the API to the screen: never a float in between.

const GROUP = /\B(?=(\d{3})+(?!\d))/g;

/** 12345 -> "$123.45"; -5 -> "−$0.05"; with `sign`, +12345 -> "+$123.45". */
export function formatCents(cents: number, opts: { sign?: boolean } = {}): string {
  if (!Number.isSafeInteger(cents)) throw new Error(`not an integer amount of cents: ${cents}`);
  const negative = cents < 0;
  const abs = negative ? -cents : cents;
  const dollars = (abs - (abs % 100)) / 100;
  const rest = abs % 100;
  const prefix = negative ? "\u2212" : opts.sign && cents > 0 ? "+" : "";
  return `${prefix}$${String(dollars).replace(GROUP, ",")}.${String(rest).padStart(2, "0")}`;
}

/** 207 -> "$2.07/h" */
export function formatRate(centsPerHour: number): string {
  return `${formatCents(centsPerHour)}/h`;
}

/** Plain dollars for a CSV ("-12.34"), from cents, without floats. */
export function plainDollars(cents: number): string {
  const negative = cents < 0;
  const abs = negative ? -cents : cents;
  return `${negative ? "-" : ""}${(abs - (abs % 100)) / 100}.${String(abs % 100).padStart(2, "0")}`;
}

/**
 * What a person types ("25", "25.5", "$1,000.00") -> cents, or null when it is not an
 * amount. Parsed as text (whole dollars and at most two decimals), never through a float.
 */
export function parseDollars(input: string): number | null {
  const text = input.trim().replace(/^\$/, "").replace(/,/g, "");
  const m = /^(\d{1,7})(?:\.(\d{0,2}))?$/.exec(text);
  if (!m) return null;
  const whole = Number(m[1]);
  const frac = Number((m[2] ?? "").padEnd(2, "0"));
  return whole * 100 + frac;
}
