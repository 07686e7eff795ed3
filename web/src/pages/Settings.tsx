import { useRef, useState, type FormEvent } from "react";
import { api, ok, type Schemas } from "../api/client";
import { describe } from "../api/errors";
import { Chip, Confirm, CopyButton, Empty, ErrorNote, Loading } from "../components/ui";
import { useLoad, useTitle, type Loaded } from "../lib/hooks";
import { navigate } from "../lib/router";
import { formatTime, zoneName } from "../lib/time";
import { useToast } from "../state";

type Key = Schemas["SshKey"];
type Token = Schemas["Token"];
type NewToken = Schemas["NewTokenAnswer"];
type Session = Schemas["Session"];
type TokenList = Schemas["TokenList"];

const MAX_KEY_FILE_BYTES = 16 * 1024;

/** The comment of an OpenSSH public key line ("ssh-ed25519 AAAA… alice@laptop" -> "alice@laptop"). */
export function keyComment(line: string): string {
  const parts = line.trim().split(/\s+/);
  return parts.length >= 3 ? parts.slice(2).join(" ").slice(0, 64) : "";
}

export default function Settings() {
  useTitle("Settings");
  // Shared with the sessions card: "sign out everywhere else" may revoke every token too.
  const tokens = useLoad(() => ok(api.GET("/v1/auth/tokens")), []);
  return (
    <section>
      <div className="page-head">
        <div>
          <h1 tabIndex={-1}>Settings</h1>
          <p className="muted">SSH keys for your pods, tokens for your scripts, and where you are signed in.</p>
        </div>
      </div>
      <SshKeys />
      <Tokens tokens={tokens} />
      <Sessions onTokensRevoked={() => void tokens.reload()} />
    </section>
  );
}

function SshKeys() {
  const toast = useToast();
  const keys = useLoad(() => ok(api.GET("/v1/ssh-keys")), []);
  const [name, setName] = useState("");
  const [publicKey, setPublicKey] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [deleting, setDeleting] = useState<Key | null>(null);
  const [deleteBusy, setDeleteBusy] = useState(false);
  const file = useRef<HTMLInputElement>(null);

  const fromFile = async (f: File | undefined) => {
    if (!f) return;
    if (f.size > MAX_KEY_FILE_BYTES) {
      setError("That file is too big to be a public key. Pick the .pub file.");
      return;
    }
    const text = (await f.text()).trim();
    if (/PRIVATE KEY/.test(text)) {
      setError("That is a private key. Never share it: pick the matching .pub file.");
      return;
    }
    setPublicKey(text);
    if (!name) setName(keyComment(text) || f.name.replace(/\.pub$/, ""));
    setError(null);
  };

  const add = async (e: FormEvent) => {
    e.preventDefault();
    const line = publicKey.trim();
    if (/PRIVATE KEY/.test(line)) {
      setError("That is a private key. Never share it: paste the public key (the .pub file).");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const added = await ok(
        api.POST("/v1/ssh-keys", { body: { name: name.trim() || keyComment(line) || "key", publicKey: line } }),
      );
      toast(`Key ${added.name} added (${added.fingerprint}).`, "success");
      setName("");
      setPublicKey("");
      if (file.current) file.current.value = "";
      await keys.reload();
    } catch (err) {
      setError(describe(err));
    } finally {
      setBusy(false);
    }
  };

  const remove = async (k: Key) => {
    setDeleteBusy(true);
    try {
      await ok(api.DELETE("/v1/ssh-keys/{id}", { params: { path: { id: k.id } } }));
      toast(`Key ${k.name} deleted. Running pods keep it; new pods will not get it.`, "success");
      await keys.reload();
    } catch (err) {
      toast(describe(err), "error");
    } finally {
      setDeleteBusy(false);
      setDeleting(null);
    }
  };

  const list = keys.data?.keys ?? [];
  return (
    <div className="card" aria-labelledby="keys-title">
      <h2 id="keys-title">SSH keys</h2>
      <p className="hint">Every key on file is installed in every pod you launch (as root). Changes apply to new pods.</p>
      {keys.error && !keys.data ? (
        <ErrorNote error={describe(keys.error)} />
      ) : !keys.data ? (
        <Loading what="your keys" />
      ) : list.length === 0 ? (
        <Empty title="No SSH keys yet">Add one below to log in to your pods.</Empty>
      ) : (
        <div className="table-wrap" tabIndex={0} role="region" aria-label="SSH keys table">
          <table className="stack-narrow">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Fingerprint</th>
                <th scope="col">Type</th>
                <th scope="col">Added ({zoneName()})</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((k) => (
                <tr key={k.id} data-key={k.id}>
                  <td className="cell-title">{k.name}</td>
                  <td className="mono" data-label="Fingerprint">
                    <span className="cell-value">{k.fingerprint}</span>
                  </td>
                  <td data-label="Type">{k.algorithm}</td>
                  <td className="num" data-label="Added">
                    {formatTime(k.createdAt)}
                  </td>
                  <td className="cell-aside">
                    <button type="button" className="btn btn-small" onClick={() => setDeleting(k)} aria-label={`Delete key ${k.name}`}>
                      Delete
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}

      <form onSubmit={add} noValidate className="stack" aria-labelledby="add-key-title">
        <h3 id="add-key-title">Add a key</h3>
        <div className="fields">
          <div>
            <label htmlFor="key-name">Key name</label>
            <input id="key-name" maxLength={64} placeholder="laptop" value={name} onChange={(e) => setName(e.target.value)} />
          </div>
          <div>
            <label htmlFor="key-file">Or pick the .pub file</label>
            <input
              ref={file}
              id="key-file"
              type="file"
              accept=".pub,text/plain"
              onChange={(e) => void fromFile(e.target.files?.[0])}
            />
          </div>
        </div>
        <label htmlFor="key-public">Public key</label>
        <textarea
          id="key-public"
          spellCheck={false}
          placeholder="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA… you@laptop"
          value={publicKey}
          onChange={(e) => setPublicKey(e.target.value)}
          aria-invalid={error ? true : undefined}
          aria-describedby={error ? "key-error" : "key-hint"}
        />
        <p className="hint" id="key-hint">
          Ed25519, ECDSA or RSA (2048 bits or more): the one line of <code>~/.ssh/id_ed25519.pub</code>.
        </p>
        {error ? (
          <p className="field-error" id="key-error" role="alert">
            {error}
          </p>
        ) : null}
        <button type="submit" className="btn btn-primary" disabled={busy || !publicKey.trim()}>
          {busy ? "Adding…" : "Add key"}
        </button>
      </form>

      <Confirm
        open={deleting !== null}
        title="Delete this key?"
        confirmLabel="Delete key"
        danger
        busy={deleteBusy}
        onCancel={() => setDeleting(null)}
        onConfirm={() => deleting && void remove(deleting)}
      >
        <p>
          <strong>{deleting?.name}</strong> <span className="mono">{deleting?.fingerprint}</span>
        </p>
        <p className="muted">Pods already running keep it; pods you launch from now on will not have it.</p>
      </Confirm>
    </div>
  );
}

function Tokens({ tokens }: { tokens: Loaded<TokenList> }) {
  const toast = useToast();
  const [name, setName] = useState("");
  const [days, setDays] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [created, setCreated] = useState<NewToken | null>(null);
  const [revoking, setRevoking] = useState<Token | null>(null);
  const [revokeBusy, setRevokeBusy] = useState(false);

  const daysNum = days.trim() === "" ? null : Number(days);
  const daysBad = daysNum !== null && !(Number.isInteger(daysNum) && daysNum >= 1 && daysNum <= 3650);

  const create = async (e: FormEvent) => {
    e.preventDefault();
    if (!name.trim() || daysBad) return;
    setBusy(true);
    setError(null);
    try {
      const out = await ok(api.POST("/v1/auth/tokens", { body: { name: name.trim(), expiresInDays: daysNum } }));
      setCreated(out);
      setName("");
      setDays("");
      await tokens.reload();
    } catch (err) {
      setError(describe(err));
    } finally {
      setBusy(false);
    }
  };

  const revoke = async (t: Token) => {
    setRevokeBusy(true);
    try {
      await ok(api.DELETE("/v1/auth/tokens/{id}", { params: { path: { id: t.id } } }));
      toast(`Token ${t.name} revoked.`, "success");
      if (created?.id === t.id) setCreated(null);
      await tokens.reload();
    } catch (err) {
      toast(describe(err), "error");
    } finally {
      setRevokeBusy(false);
      setRevoking(null);
    }
  };

  const list = tokens.data?.tokens ?? [];
  return (
    <div className="card" aria-labelledby="tokens-title">
      <h2 id="tokens-title">API tokens</h2>
      <p className="hint">
        For scripts and the <code>gpurent</code> command: send as <code>Authorization: Bearer …</code>. A token acts as
        you, so keep it secret.
      </p>
      {created ? (
        <div className="note note-ok" role="status" data-testid="new-token">
          <p>
            <strong>Token {created.name} created.</strong> Copy it now: it is shown only once.
          </p>
          <div className="secret">
            <code data-testid="token-value">{created.token}</code>
            <CopyButton text={created.token} label="Copy token" />
          </div>
          <button type="button" className="btn btn-link" onClick={() => setCreated(null)}>
            I have copied it
          </button>
        </div>
      ) : null}
      {tokens.error && !tokens.data ? (
        <ErrorNote error={describe(tokens.error)} />
      ) : !tokens.data ? (
        <Loading what="your tokens" />
      ) : list.length === 0 ? (
        <Empty title="No API tokens" />
      ) : (
        <div className="table-wrap" tabIndex={0} role="region" aria-label="API tokens table">
          <table className="stack-narrow">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Token</th>
                <th scope="col">Created ({zoneName()})</th>
                <th scope="col">Last used</th>
                <th scope="col">Expires</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((t) => (
                <tr key={t.id} data-token={t.id}>
                  <td className="cell-title">{t.name}</td>
                  <td className="mono" data-label="Token">
                    {t.hint}
                  </td>
                  <td className="num" data-label="Created">
                    {formatTime(t.createdAt)}
                  </td>
                  <td className="num" data-label="Last used">
                    {t.lastUsedAt ? formatTime(t.lastUsedAt) : "never"}
                  </td>
                  <td className="num" data-label="Expires">
                    {t.expiresAt ? formatTime(t.expiresAt) : "never"}
                  </td>
                  <td className="cell-aside">
                    <button type="button" className="btn btn-small" onClick={() => setRevoking(t)} aria-label={`Revoke token ${t.name}`}>
                      Revoke
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <form onSubmit={create} noValidate aria-labelledby="new-token-title">
        <h3 id="new-token-title">Create a token</h3>
        <div className="fields">
          <div>
            <label htmlFor="token-name">Token name</label>
            <input id="token-name" maxLength={64} placeholder="ci-scripts" value={name} onChange={(e) => setName(e.target.value)} />
          </div>
          <div>
            <label htmlFor="token-days">Expires after (days)</label>
            <input
              id="token-days"
              inputMode="numeric"
              placeholder="never"
              value={days}
              onChange={(e) => setDays(e.target.value)}
              aria-invalid={daysBad || undefined}
              aria-describedby="token-days-hint"
            />
            <p className={daysBad ? "field-error" : "hint"} id="token-days-hint">
              1 to 3650, or empty for never
            </p>
          </div>
        </div>
        <ErrorNote error={error} />
        <button type="submit" className="btn btn-primary" disabled={busy || !name.trim() || daysBad}>
          {busy ? "Creating…" : "Create token"}
        </button>
      </form>
      <Confirm
        open={revoking !== null}
        title="Revoke this token?"
        confirmLabel="Revoke token"
        danger
        busy={revokeBusy}
        onCancel={() => setRevoking(null)}
        onConfirm={() => revoking && void revoke(revoking)}
      >
        <p>
          Scripts using <strong>{revoking?.name}</strong> ({revoking?.hint}) stop working at once.
        </p>
      </Confirm>
    </div>
  );
}

/** Where this person is signed in: end one session, or every other one (and, if asked, every token). */
function Sessions({ onTokensRevoked }: { onTokensRevoked: () => void }) {
  const toast = useToast();
  const sessions = useLoad(() => ok(api.GET("/v1/auth/sessions")), []);
  const [ending, setEnding] = useState<Session | null>(null);
  const [endBusy, setEndBusy] = useState(false);
  const [othersOpen, setOthersOpen] = useState(false);
  const [alsoTokens, setAlsoTokens] = useState(false);
  const [othersBusy, setOthersBusy] = useState(false);

  const end = async (s: Session) => {
    setEndBusy(true);
    try {
      await ok(api.DELETE("/v1/auth/sessions/{id}", { params: { path: { id: s.id } } }));
      if (s.current) {
        navigate("/login", { replace: true }); // the API cleared this browser's cookie
        return;
      }
      toast(`Signed out ${s.client ?? "that session"}.`, "success");
      await sessions.reload();
    } catch (err) {
      toast(describe(err), "error");
      await sessions.reload();
    } finally {
      setEndBusy(false);
      setEnding(null);
    }
  };

  const endOthers = async () => {
    setOthersBusy(true);
    try {
      const out = await ok(api.POST("/v1/auth/sessions/revoke-others", { body: { tokens: alsoTokens } }));
      const what = [`${out.sessionsEnded} other session${out.sessionsEnded === 1 ? "" : "s"} signed out`];
      if (alsoTokens) what.push(`${out.tokensRevoked} API token${out.tokensRevoked === 1 ? "" : "s"} revoked`);
      toast(`${what.join(", ")}.`, "success");
      if (alsoTokens) onTokensRevoked();
      await sessions.reload();
    } catch (err) {
      toast(describe(err), "error");
    } finally {
      setOthersBusy(false);
      setOthersOpen(false);
      setAlsoTokens(false);
    }
  };

  const list = sessions.data?.sessions ?? [];
  const others = list.filter((s) => !s.current).length;
  return (
    <div className="card" aria-labelledby="sessions-title">
      <h2 id="sessions-title">Sign-in sessions</h2>
      <p className="hint">
        Browsers and devices signed in to your account. A session you do not recognise? Sign it out, or sign out
        everywhere else. API tokens are listed above and are not sessions.
      </p>
      {sessions.error && !sessions.data ? (
        <ErrorNote error={describe(sessions.error)} />
      ) : !sessions.data ? (
        <Loading what="your sessions" />
      ) : (
        <div className="table-wrap" tabIndex={0} role="region" aria-label="Sessions table">
          <table className="stack-narrow">
            <thead>
              <tr>
                <th scope="col">Device</th>
                <th scope="col">Network</th>
                <th scope="col">Signed in ({zoneName()})</th>
                <th scope="col">Last active</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((s) => (
                <tr key={s.id} data-session={s.id}>
                  <td className="cell-title">
                    {s.client ?? "Unknown device"} {s.current ? <Chip tone="blue">This browser</Chip> : null}
                  </td>
                  <td className="mono" data-label="Network">
                    {s.ipPrefix ?? "\u2014"}
                  </td>
                  <td className="num" data-label="Signed in">
                    {formatTime(s.createdAt)}
                  </td>
                  <td className="num" data-label="Last active">
                    {formatTime(s.lastUsedAt)}
                  </td>
                  <td className="cell-aside">
                    <button
                      type="button"
                      className="btn btn-small"
                      onClick={() => setEnding(s)}
                      aria-label={s.current ? "Sign out this browser" : `Sign out ${s.client ?? "session"} signed in ${formatTime(s.createdAt)}`}
                    >
                      Sign out
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <div className="card-actions">
        <button
          type="button"
          className="btn"
          onClick={() => setOthersOpen(true)}
          disabled={!sessions.data}
        >
          Sign out all other sessions
        </button>
      </div>

      <Confirm
        open={ending !== null}
        title={ending?.current ? "Sign out this browser?" : "Sign out this session?"}
        confirmLabel="Sign out"
        danger
        busy={endBusy}
        onCancel={() => setEnding(null)}
        onConfirm={() => ending && void end(ending)}
      >
        {ending?.current ? (
          <p>You will be back on the sign-in page.</p>
        ) : (
          <p>
            <strong>{ending?.client ?? "Unknown device"}</strong>
            {ending?.ipPrefix ? <> from {ending.ipPrefix}</> : null}, signed in {formatTime(ending?.createdAt)}, is
            signed out at once.
          </p>
        )}
      </Confirm>
      <Confirm
        open={othersOpen}
        title="Sign out everywhere else?"
        confirmLabel="Sign out others"
        danger
        busy={othersBusy}
        onCancel={() => {
          setOthersOpen(false);
          setAlsoTokens(false);
        }}
        onConfirm={() => void endOthers()}
      >
        <p>
          {others === 0
            ? "No other session is listed; sessions from before this list existed end too."
            : `${others} other session${others === 1 ? "" : "s"} will be signed out. This browser stays signed in.`}
        </p>
        <label className="check">
          <input type="checkbox" checked={alsoTokens} onChange={(e) => setAlsoTokens(e.target.checked)} />
          Also revoke every API token (scripts using them stop working)
        </label>
      </Confirm>
    </div>
  );
}
