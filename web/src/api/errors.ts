// Every documented error code (layers/gpurent/gpurent/errors.py STATUS) as a sentence a
// person can act on. tests/unit/test_web_errors.py keeps this table complete.
import { formatWait } from "../lib/time";
import { ApiFailure } from "./client";

export const MESSAGES: Record<string, string> = {
  invalid_email: "Enter an email address like you@example.com.",
  invalid_amount: "Amounts must be between $1 and $5,000.",
  weak_key: "Keys must be at least RSA 2048 or Ed25519.",
  duplicate_key: "This public key is already on your account.",
  invalid_count: "The GPU count must be 1, 2, 4 or 8.",
  model_unavailable:
    "No provider has this configuration right now. Wait 30 seconds, or pick another region or family.",
  billing_disabled: "Stripe is not configured on this deployment, so payments are off.",
  validation_failed: "Some fields are not valid.",
  invalid_signature: "The payment notification could not be verified.",
  card_declined: "Card declined. Try another card.",
  unauthorized: "Your session has ended. Sign in again.",
  code_invalid: "That code is incorrect or expired.",
  code_expired: "That code has expired. Request a new one.",
  oauth_state_mismatch: "Sign-in was cancelled or failed. Try again.",
  forbidden: "You are not allowed to do that.",
  insufficient_balance: "Your available balance is below the one-hour reserve this pod needs.",
  not_found: "Not found.",
  rental_not_found: "That pod does not exist (or is not yours).",
  key_not_found: "That SSH key is already gone.",
  token_not_found: "That token is already revoked.",
  session_not_found: "That session has already ended.",
  invoice_not_found: "No such invoice.",
  user_not_found: "No user with that email or id.",
  already_stopped: "This pod is already stopped.",
  card_already_on_file: "A card is already on file. Remove it first.",
  conflict: "That changed in the meantime. Reload and try again.",
  rate_limited: "Too many requests. Wait a moment and try again.",
  code_request_rate_limited: "A code was sent moments ago. You can ask for another shortly.",
  service_unavailable: "Busy right now; nothing was done. Retry in a moment.",
  internal_error: "Something went wrong on our side. Please retry.",
  network_error: "Network error. Check your connection and try again.",
};

// The server's own text is the better one for these: it names the field or the reason.
const SERVER_WORDED = new Set(["validation_failed", "card_declined", "code_invalid", "conflict", "service_unavailable"]);

export function describe(e: unknown): string {
  if (!(e instanceof ApiFailure)) return e instanceof Error ? e.message : String(e);
  if (e.code === "rate_limited" && e.retryAfter) return `Too many requests. Retry in ${formatWait(e.retryAfter)}.`;
  if (SERVER_WORDED.has(e.code) && e.message) return e.message.endsWith(".") ? e.message : `${e.message}.`;
  return MESSAGES[e.code] ?? (e.message || `Request failed (${e.status}).`);
}

/** Per-field messages of a validation_failed answer. */
export function fieldErrors(e: unknown): Record<string, string> {
  if (!(e instanceof ApiFailure) || !e.details) return {};
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(e.details)) if (typeof v === "string") out[k] = v;
  return out;
}
