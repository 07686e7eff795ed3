// The typed API client: types generated from docs/openapi.json (`npm run gen:api`),
// calls with the `sid` cookie on the same origin (never a token in localStorage).
import createClient from "openapi-fetch";
import { loginUrl, navigate } from "../lib/router";
import type { components, paths } from "./schema.gen";

export type Schemas = components["schemas"];

/** An API answer that is not a success, or the network failing. */
export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfter: number | null = null,
    readonly details: Record<string, unknown> | null = null,
  ) {
    super(message);
  }
}

const MAX_RETRIES = 2; // after a 429 rate_limited, honouring Retry-After
const MAX_WAIT_SECONDS = 30;

type RetryListener = (seconds: number) => void;
let onRetry: RetryListener = () => {};
/** The shell shows "Too many requests, retrying in N s" while a call waits. */
export function setRetryListener(l: RetryListener) {
  onRetry = l;
}

export function retryAfterSeconds(res: Response): number | null {
  const raw = res.headers.get("retry-after");
  if (!raw) return null;
  const n = Number(raw);
  if (Number.isFinite(n)) return Math.max(1, Math.ceil(n));
  const at = Date.parse(raw);
  return Number.isNaN(at) ? null : Math.max(1, Math.ceil((at - Date.now()) / 1000));
}

async function errorCode(res: Response): Promise<string | null> {
  try {
    const body = (await res.clone().json()) as { error?: unknown };
    return typeof body.error === "string" ? body.error : null;
  } catch {
    return null;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A rejected request is not acted on, so it is safe to send again (same Idempotency-Key). */
async function fetchWithPolicy(request: Request): Promise<Response> {
  let res: Response | null = null;
  for (let attempt = 0; ; attempt++) {
    const copy = request.clone();
    res = await fetch(copy);
    if (res.status !== 429 || attempt >= MAX_RETRIES) break;
    if ((await errorCode(res)) !== "rate_limited") break;
    const wait = retryAfterSeconds(res) ?? 30;
    if (wait > MAX_WAIT_SECONDS) break;
    onRetry(wait);
    await sleep(wait * 1000);
    onRetry(0);
  }
  if (res.status === 401 && (await errorCode(res)) === "unauthorized" && window.location.pathname.startsWith("/app")) {
    // The session expired (or was signed out elsewhere): sign in, then come back here.
    navigate(loginUrl(), { replace: true });
  }
  return res;
}

export const api = createClient<paths>({
  baseUrl: window.location.origin,
  credentials: "same-origin",
  fetch: fetchWithPolicy,
});

interface Outcome<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/** The answer's body, or an ApiFailure carrying the documented error code. */
export async function ok<T>(call: Promise<Outcome<T>>): Promise<T> {
  let out: Outcome<T>;
  try {
    out = await call;
  } catch (e) {
    if (e instanceof ApiFailure) throw e;
    throw new ApiFailure(0, "network_error", "Network error, try again");
  }
  if (out.response.ok && out.data !== undefined) return out.data;
  const body = (out.error ?? {}) as { error?: string; message?: string; details?: Record<string, unknown> | null };
  throw new ApiFailure(
    out.response.status,
    body.error ?? `http_${out.response.status}`,
    body.message ?? out.response.statusText,
    retryAfterSeconds(out.response),
    body.details ?? null,
  );
}

/** A fresh Idempotency-Key (one per intended action, reused by its retries). */
export function newKey(prefix: string): string {
  const id = typeof crypto.randomUUID === "function" ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
  return `${prefix}-${id}`;
}
