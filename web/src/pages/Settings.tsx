import { useRef, useState, type FormEvent } from "react";
import { api, ok, type Schemas } from "../api/client";
import { describe } from "../api/errors";
import { Confirm, CopyButton, Empty, ErrorNote, Loading } from "../components/ui";
import { useLoad, useTitle } from "../lib/hooks";
import { formatTime, zoneName } from "../lib/time";
import { useToast } from "../state";

type Key = Schemas["SshKey"];
type Token = Schemas["Token"];
type NewToken = Schemas["NewTokenAnswer"];

const MAX_KEY_FILE_BYTES = 16 * 1024;

/** The comment of an OpenSSH public key line ("ssh-ed25519 AAAA… alice@laptop" -> "alice@laptop"). */
export function keyComment(line: string): string {
  const parts = line.trim().split(/\s+/);
  return parts.length >= 3 ? parts.slice(2).join(" ").slice(0, 64) : "";
}

export default function Settings() {
  useTitle("Settings");
  return (
    <section>
      <div className="page-head">
        <div>
          <h1 tabIndex={-1}>Settings</h1>
          <p className="muted">SSH keys for your pods and tokens for your scripts.</p>
        </div>
      </div>
      <SshKeys />
      <Tokens />
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
          <table>
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
                  <td>{k.name}</td>
                  <td className="mono">{k.fingerprint}</td>
                  <td>{k.algorithm}</td>
                  <td className="num">{formatTime(k.createdAt)}</td>
                  <td>
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

function Tokens() {
  const toast = useToast();
  const tokens = useLoad(() => ok(api.GET("/v1/auth/tokens")), []);
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
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Token</th>
                <th scope="col">Created ({zoneName()})</th>
                <th scope="col">Expires</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((t) => (
                <tr key={t.id} data-token={t.id}>
                  <td>{t.name}</td>
                  <td className="mono">{t.hint}</td>
                  <td className="num">{formatTime(t.createdAt)}</td>
                  <td className="num">{t.expiresAt ? formatTime(t.expiresAt) : "never"}</td>
                  <td>
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
