import { useEffect, useRef, useState, type FormEvent } from "react";
import { api, ApiFailure, ok } from "../api/client";
import { describe } from "../api/errors";
import { useCountdown, useTitle } from "../lib/hooks";
import { navigate, safeNext, useLocation } from "../lib/router";
import { useLocalClock } from "../lib/local";
import { formatWait, formatWhen } from "../lib/time";

// `/login?error=…` after a Google/GitHub sign-in that did not work out.
const OAUTH_ERRORS: Record<string, string> = {
  oauth_unavailable: "That sign-in provider is not set up on this deployment. Use your email instead.",
  oauth_no_email: "We couldn't read a verified email from that account. Verify it there, or use your email here.",
  oauth_failed: "Sign-in was cancelled or failed. Try again, or use your email.",
};
const PROVIDER_NAMES: Record<string, string> = { google: "Google", github: "GitHub" };
const RESEND_SECONDS = 30; // one code per 30 s per email (the API's limit)

/**
 * A 429 `rate_limited` of the sign-in routes: too many wrong codes for the address or from the
 * network in a rolling day (Retry-After: hours), or guesses racing (Retry-After: 1 s, retried by
 * the client). What to say, and until when (ms epoch) the address is blocked here.
 */
export function signInBlock(e: ApiFailure, now = Date.now()): { text: string; until: number; network: boolean } {
  const wait = e.retryAfter ?? 60;
  const network = /network/i.test(e.message);
  const who = network ? "from your network" : "for this address";
  const text =
    wait < 120
      ? `Too many sign-in attempts. Try again in ${formatWait(wait)}.`
      : `Too many wrong codes ${who}. Code sign-in is paused until ${formatWhen(wait)} (in about ` +
        `${formatWait(wait)}). Browsers already signed in stay signed in` +
        (network ? "; another network is not affected." : "; Google or GitHub sign-in still works if you use it.");
  return { text, until: now + wait * 1000, network };
}

/** "123 456", "Your code is 123456." -> "123456" */
export function digitsOf(text: string): string {
  return text.replace(/\D/g, "").slice(0, 6);
}

export function Login() {
  useTitle("Sign in");
  const { query } = useLocation();
  const next = safeNext(query.get("next"));
  const oauthError = query.get("error");
  const [providers, setProviders] = useState<string[]>([]);
  const [step, setStep] = useState<"email" | "code">("email");
  const [email, setEmail] = useState("");
  const [code, setCode] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [locked, setLocked] = useState(false);
  const [info, setInfo] = useState<string | null>(null);
  const [resendAt, setResendAt] = useState<number | null>(null);
  const resendIn = useCountdown(resendAt);
  // Sign-in by code paused (429 rate_limited) for this address, or for every address of this network.
  const [block, setBlock] = useState<{ email: string; until: number; network: boolean } | null>(null);
  const blockedIn = useCountdown(block?.until ?? null);
  const blocked = blockedIn > 0 && block !== null && (block.network || block.email === email.trim().toLowerCase());
  const codeRef = useRef<HTMLInputElement>(null);
  const [localStack] = useLocalClock();
  const emailRef = useRef<HTMLInputElement>(null);

  useEffect(() => {
    let live = true;
    ok(api.GET("/v1/auth/providers"))
      .then((p) => live && setProviders(p.oauth))
      .catch(() => live && setProviders([]));
    // Already signed in? Straight on.
    ok(api.GET("/v1/auth/me"))
      .then(() => live && navigate(next, { replace: true }))
      .catch(() => {});
    return () => {
      live = false;
    };
  }, [next]);

  useEffect(() => {
    (step === "code" ? codeRef : emailRef).current?.focus();
  }, [step]);

  const requestCode = async (again: boolean) => {
    setBusy(true);
    setError(null);
    setLocked(false);
    try {
      await ok(api.POST("/v1/auth/request-code", { body: { email: email.trim() } }));
      setInfo(`We sent a 6-digit code to ${email.trim()}. It is valid for 10 minutes.`);
      setResendAt(Date.now() + RESEND_SECONDS * 1000);
      setCode("");
      setStep("code");
    } catch (e) {
      if (e instanceof ApiFailure && e.code === "rate_limited") {
        const b = signInBlock(e);
        setBlock({ email: email.trim().toLowerCase(), until: b.until, network: b.network });
        setError(b.text);
      } else if (e instanceof ApiFailure && e.code === "code_request_rate_limited") {
        // A code is already on its way: go on to the code, and say when another can be sent.
        setResendAt(Date.now() + (e.retryAfter ?? RESEND_SECONDS) * 1000);
        setInfo(`A code was sent to ${email.trim()} moments ago. Check your inbox.`);
        if (again) setError(describe(e));
        setStep("code");
      } else {
        setError(describe(e));
      }
    } finally {
      setBusy(false);
    }
  };

  const verify = async (value: string) => {
    if (value.length !== 6 || busy || blocked) return;
    setBusy(true);
    setError(null);
    try {
      await ok(api.POST("/v1/auth/verify-code", { body: { email: email.trim(), code: value } }));
      navigate(next, { replace: true });
    } catch (e) {
      if (e instanceof ApiFailure && e.code === "rate_limited") {
        const b = signInBlock(e);
        setBlock({ email: email.trim().toLowerCase(), until: b.until, network: b.network });
        setError(b.text);
        setCode("");
        setBusy(false);
        return;
      }
      const tooMany = e instanceof ApiFailure && e.code === "code_invalid" && /attempt/i.test(e.message);
      const expired = e instanceof ApiFailure && e.code === "code_expired";
      setLocked(tooMany || expired);
      setError(
        tooMany
          ? "Too many wrong attempts: this code no longer works. Request a new code."
          : expired
            ? "This code has expired (codes last 10 minutes). Request a new code."
            : describe(e),
      );
      setCode("");
      setBusy(false);
      codeRef.current?.focus();
    }
  };

  const onEmail = (e: FormEvent) => {
    e.preventDefault();
    void requestCode(false);
  };
  const onCode = (e: FormEvent) => {
    e.preventDefault();
    void verify(code);
  };

  return (
    <div className="login-wrap">
      <main className="login-card" id="main">
        <div className="brand brand-large">
          <span aria-hidden="true" className="brand-mark" />
          gpurent
        </div>
        <h1>Sign in</h1>
        {oauthError ? (
          <div className="note note-error" role="alert">
            {OAUTH_ERRORS[oauthError] ?? "Sign-in did not complete. Try again."}
          </div>
        ) : null}

        {step === "email" ? (
          <form onSubmit={onEmail} noValidate>
            <p className="muted">We email you a 6-digit code. No password. New here? The same form creates your account.</p>
            <label htmlFor="email">Email</label>
            <input
              ref={emailRef}
              id="email"
              name="email"
              type="email"
              autoComplete="email"
              inputMode="email"
              required
              value={email}
              onChange={(e) => setEmail(e.target.value)}
              aria-invalid={error ? true : undefined}
              aria-describedby={error ? "login-error" : undefined}
            />
            {error ? (
              <p className="field-error" id="login-error" role="alert">
                {error}
              </p>
            ) : null}
            <button type="submit" className="btn btn-primary btn-block" disabled={busy || !email.trim() || blocked}>
              {busy ? "Sending…" : blocked ? `Paused for ${formatWait(blockedIn)}` : "Email me a code"}
            </button>
          </form>
        ) : (
          <form onSubmit={onCode} noValidate>
            {info ? <p className="muted" role="status">{info}</p> : null}
            {localStack ? (
              <p className="note" data-testid="local-mailbox">
                <span className="local-badge">Local stack</span> No email leaves this machine: the code is printed by{" "}
                <code>make dev</code> and listed in the{" "}
                <a href="/dev/mailbox" target="_blank" rel="noreferrer">
                  local mailbox
                </a>
                .
              </p>
            ) : null}
            <label htmlFor="code">6-digit code</label>
            <input
              ref={codeRef}
              id="code"
              name="code"
              className="code-input num"
              inputMode="numeric"
              autoComplete="one-time-code"
              pattern="[0-9]*"
              maxLength={12}
              value={code}
              disabled={busy || blocked}
              onChange={(e) => {
                const digits = digitsOf(e.target.value);
                setCode(digits);
                if (digits.length === 6 && !locked && !blocked) void verify(digits);
              }}
              onPaste={(e) => {
                const digits = digitsOf(e.clipboardData.getData("text"));
                if (digits.length === 6 && !blocked) {
                  e.preventDefault();
                  setCode(digits);
                  void verify(digits);
                }
              }}
              aria-invalid={error ? true : undefined}
              aria-describedby={error ? "login-error" : "code-hint"}
            />
            <p className="hint" id="code-hint">
              Paste it or type it: we sign you in as soon as the 6 digits are there.
            </p>
            {error ? (
              <p className="field-error" id="login-error" role="alert">
                {error}
              </p>
            ) : null}
            <button type="submit" className="btn btn-primary btn-block" disabled={busy || code.length !== 6 || blocked}>
              {busy ? "Checking…" : "Sign in"}
            </button>
            <div className="login-links">
              <button
                type="button"
                className={`btn btn-link${locked ? " btn-emph" : ""}`}
                disabled={busy || resendIn > 0 || blocked}
                onClick={() => void requestCode(true)}
              >
                {blocked ? (
                  `Paused for ${formatWait(blockedIn)}`
                ) : resendIn > 0 ? (
                  <>
                    Resend code in <span className="num countdown">{resendIn}</span> s
                  </>
                ) : (
                  "Request a new code"
                )}
              </button>
              <button
                type="button"
                className="btn btn-link"
                onClick={() => {
                  setStep("email");
                  setError(null);
                  setLocked(false);
                }}
              >
                Use another email
              </button>
            </div>
          </form>
        )}

        {providers.length > 0 ? (
          <div className="oauth">
            <p className="divider">
              <span>or</span>
            </p>
            {providers.map((p) => (
              <a key={p} className="btn btn-block" href={`/v1/auth/oauth/${p}`}>
                Continue with {PROVIDER_NAMES[p] ?? p}
              </a>
            ))}
          </div>
        ) : null}
      </main>
    </div>
  );
}
