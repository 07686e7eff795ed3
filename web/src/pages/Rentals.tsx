import { useEffect, useMemo, useRef, useState } from "react";
import { api, ok, type Schemas } from "../api/client";
import { describe } from "../api/errors";
import { Chip, Confirm, CopyButton, Empty, ErrorNote, Kpi, Loading, Money, Pager, usePager } from "../components/ui";
import { useLoad, useTitle, useVisible } from "../lib/hooks";
import { formatCents, formatRate } from "../lib/money";
import { Link, navigate, useLocation } from "../lib/router";
import { formatTime, zoneName } from "../lib/time";
import { useBalance, useToast } from "../state";

type Rental = Schemas["RentalSummary"];
type Status = Rental["status"];
type Filter = "all" | "running" | "progress" | "stopped" | "failed";

const FILTERS: { id: Filter; label: string }[] = [
  { id: "all", label: "All" },
  { id: "running", label: "Running" },
  { id: "progress", label: "In progress" },
  { id: "stopped", label: "Stopped" },
  { id: "failed", label: "Failed" },
];
const ACTIVE: Status[] = ["provisioning", "running", "stopping"];
const STOPPABLE: Status[] = ["provisioning", "running"];
const PAGE_SIZE = 25;
const LIVE_EVERY_MS = 5_000; // the table and KPIs while something is active
const IDLE_EVERY_MS = 30_000;
const PROVISION_EVERY_MS = 2_000; // the API's advice for a provisioning pod

const STATUS_TONE: Record<Status, "green" | "yellow" | "red" | "grey" | "blue"> = {
  provisioning: "blue",
  running: "green",
  stopping: "yellow",
  stopped: "grey",
  failed: "red",
};
const STOP_REASONS: Record<string, string> = {
  user: "Stopped by you",
  insufficient_balance: "Stopped: the wallet ran out",
  auto_stop: "Stopped by its auto-stop time",
  max_total: "Stopped at its spend cap",
  provider_failure: "The provider reported a failure",
};

export function sshCommand(r: Pick<Rental, "host" | "port">): string | null {
  return r.host ? `ssh root@${r.host} -p ${r.port ?? 22}` : null;
}

async function listRentals(filter: Filter, cursor: string | null) {
  if (filter === "progress") {
    // Two statuses: both lists in full (pods are in transit for seconds, so they are few).
    const [a, b] = await Promise.all(
      (["provisioning", "stopping"] as const).map((status) =>
        ok(api.GET("/v1/rentals", { params: { query: { status, pageSize: 200 } } })),
      ),
    );
    const rentals = [...a!.rentals, ...b!.rentals].sort((x, y) => y.startedAt.localeCompare(x.startedAt));
    return { rentals, nextCursor: null };
  }
  const status = filter === "all" ? undefined : filter;
  return ok(
    api.GET("/v1/rentals", { params: { query: { pageSize: PAGE_SIZE, ...(status ? { status } : {}), ...(cursor ? { cursor } : {}) } } }),
  );
}

export default function Rentals() {
  useTitle("Rentals");
  const toast = useToast();
  const { refresh: refreshBalance } = useBalance();
  const { query } = useLocation();
  const launched = query.get("launched");
  // Set by Create when failover placed the pod above the quote (within the person's max price).
  const quotedRaw = Number(query.get("quoted"));
  const quoted = Number.isSafeInteger(quotedRaw) && quotedRaw > 0 ? quotedRaw : null;
  const [filter, setFilter] = useState<Filter>("all");
  const pager = usePager();
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [confirm, setConfirm] = useState<Rental[] | null>(null);
  const [stopping, setStopping] = useState(false);
  const visible = useVisible();

  // Everything running, for the KPIs (however the table is filtered or paged).
  const running = useLoad(
    () => ok(api.GET("/v1/rentals", { params: { query: { status: "running", pageSize: 200 } } })),
    [],
    LIVE_EVERY_MS,
  );
  const active = (running.data?.rentals.length ?? 0) > 0;
  const page = useLoad(() => listRentals(filter, pager.cursor), [filter, pager.cursor]);
  const anyActive = active || (page.data?.rentals ?? []).some((r) => ACTIVE.includes(r.status));
  useEffect(() => {
    if (!visible) return;
    const id = window.setInterval(() => void page.reload(), anyActive ? LIVE_EVERY_MS : IDLE_EVERY_MS);
    return () => window.clearInterval(id);
  }, [visible, anyActive, page.reload]);

  // A provisioning pod is checked with its provider on GET /v1/rentals/{id}: every 2 s.
  const provisioning = (page.data?.rentals ?? []).filter((r) => r.status === "provisioning").map((r) => r.id);
  const provisioningKey = provisioning.join(",");
  useEffect(() => {
    if (!visible || provisioning.length === 0) return;
    const id = window.setInterval(async () => {
      const answers = await Promise.allSettled(
        provisioning.slice(0, 5).map((rid) => ok(api.GET("/v1/rentals/{id}", { params: { path: { id: rid } } }))),
      );
      if (answers.some((a) => a.status === "fulfilled" && a.value.status !== "provisioning")) {
        void page.reload();
        void running.reload();
      }
    }, PROVISION_EVERY_MS);
    return () => window.clearInterval(id);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [visible, provisioningKey]);

  // Failed pods: the provider's error (GET by id) and the refund line (ledger).
  const failedIds = (page.data?.rentals ?? []).filter((r) => r.status === "failed").map((r) => r.id);
  const failures = useLoad(async () => {
    if (failedIds.length === 0) return { errors: new Map<string, string | null>(), refunds: new Map<string, number>() };
    const [details, refunds] = await Promise.all([
      Promise.all(failedIds.map((id) => ok(api.GET("/v1/rentals/{id}", { params: { path: { id } } })))),
      ok(api.GET("/v1/billing/ledger", { params: { query: { type: "refund", pageSize: 200 } } })),
    ]);
    const byRental = new Map<string, number>();
    refunds.entries.forEach((e) => {
      if (e.rentalId) byRental.set(e.rentalId, (byRental.get(e.rentalId) ?? 0) + e.amountCents);
    });
    return { errors: new Map(details.map((d) => [d.id, d.error])), refunds: byRental };
  }, [failedIds.join(",")]);

  const kpis = useMemo(() => {
    const rs = running.data?.rentals ?? [];
    return {
      count: rs.length,
      burn: rs.reduce((s, r) => s + r.pricePerHourCents, 0),
      spend: rs.reduce((s, r) => s + r.totalChargedCents, 0),
    };
  }, [running.data]);

  // The pill moves with the meter: a change in what running pods cost refreshes the balance.
  const lastSpend = useRef<number | null>(null);
  useEffect(() => {
    if (!running.data) return;
    if (lastSpend.current !== null && lastSpend.current !== kpis.spend) void refreshBalance();
    lastSpend.current = kpis.spend;
  }, [running.data, kpis.spend, refreshBalance]);

  const rows = page.data?.rentals ?? [];
  const launchedRow = launched ? rows.find((r) => r.id === launched) : undefined;
  const stoppableSelected = rows.filter((r) => selected.has(r.id) && STOPPABLE.includes(r.status));

  const changeFilter = (f: Filter) => {
    setFilter(f);
    pager.reset();
    setSelected(new Set());
  };

  const toggle = (id: string) =>
    setSelected((s) => {
      const n = new Set(s);
      if (n.has(id)) n.delete(id);
      else n.add(id);
      return n;
    });

  const doStop = async (targets: Rental[]) => {
    setStopping(true);
    let charged = 0;
    let refunded = 0;
    const failed: string[] = [];
    for (const r of targets) {
      try {
        const out = await ok(api.POST("/v1/rentals/{id}/stop", { params: { path: { id: r.id } } }));
        charged += out.finalChargedCents;
        refunded += out.refundedCents;
      } catch (e) {
        failed.push(`${r.name ?? r.id}: ${describe(e)}`);
      }
    }
    setStopping(false);
    setConfirm(null);
    setSelected(new Set());
    const done = targets.length - failed.length;
    if (done > 0) {
      toast(
        `Stopped ${done === 1 ? "1 pod" : `${done} pods`}: charged ${formatCents(charged)}` +
          (refunded > 0 ? `, refunded ${formatCents(refunded)}` : "") +
          ".",
        "success",
      );
    }
    failed.forEach((f) => toast(f, "error"));
    void page.reload();
    void running.reload();
    void refreshBalance();
  };

  return (
    <section>
      <div className="page-head">
        <div>
          <h1 tabIndex={-1}>Rentals</h1>
          <p className="muted">Your pods, newest first. Charges update live while a pod runs.</p>
        </div>
        <Link to="/app" className="btn btn-primary">
          Launch a GPU
        </Link>
      </div>

      <div className="kpis" aria-label="Summary">
        <Kpi label="Active pods">{running.data ? kpis.count : "\u2014"}</Kpi>
        <Kpi label="Hourly burn">{running.data ? formatRate(kpis.burn) : "\u2014"}</Kpi>
        <Kpi label="Spend of running pods" hint="since each started">
          {running.data ? formatCents(kpis.spend) : "\u2014"}
        </Kpi>
        <Kpi label="Showing">{page.data ? rows.length : "\u2014"}</Kpi>
      </div>

      {launchedRow ? (
        <div className={`note ${launchedRow.status === "running" ? "note-ok" : launchedRow.status === "failed" ? "note-error" : ""}`} role="status" data-testid="launch-status">
          {launchedRow.status === "provisioning" ? (
            <>
              <strong>{launchedRow.name ?? launchedRow.id}</strong> is provisioning: we check with the provider every 2
              seconds.
            </>
          ) : launchedRow.status === "running" ? (
            <>
              <strong>{launchedRow.name ?? launchedRow.id}</strong> is running.{" "}
              {sshCommand(launchedRow) ? <code>{sshCommand(launchedRow)}</code> : null}
            </>
          ) : launchedRow.status === "failed" ? (
            <>
              <strong>{launchedRow.name ?? launchedRow.id}</strong> failed to start; nothing was charged.
            </>
          ) : (
            <>
              <strong>{launchedRow.name ?? launchedRow.id}</strong> is {launchedRow.status}.
            </>
          )}{" "}
          {quoted !== null && quoted !== launchedRow.pricePerHourCents && launchedRow.status !== "failed" ? (
            <span data-testid="repriced">
              The quoted offer ({formatRate(quoted)}) was taken first, so it was placed on the next one within your max
              price: <strong className="num">{formatRate(launchedRow.pricePerHourCents)}</strong> is the rate charged
              and reserved.{" "}
            </span>
          ) : null}
          <button type="button" className="btn btn-link" onClick={() => navigate("/app/rentals", { replace: true })}>
            Dismiss
          </button>
        </div>
      ) : null}

      <div className="row toolbar">
        <div className="chips" role="group" aria-label="Filter by status">
          {FILTERS.map((f) => (
            <button
              key={f.id}
              type="button"
              className="btn btn-small"
              aria-pressed={filter === f.id}
              onClick={() => changeFilter(f.id)}
            >
              {f.label}
            </button>
          ))}
        </div>
        <span className="spacer" />
        <button
          type="button"
          className="btn btn-small btn-danger"
          disabled={stoppableSelected.length === 0}
          onClick={() => setConfirm(stoppableSelected)}
        >
          Stop selected ({stoppableSelected.length})
        </button>
      </div>

      {page.error && !page.data ? (
        <ErrorNote error={describe(page.error)} />
      ) : !page.data ? (
        <Loading what="your rentals" />
      ) : rows.length === 0 ? (
        <div className="card">
          <Empty title={filter === "all" ? "No pods yet" : "Nothing here"}>
            {filter === "all" ? (
              <p>
                <Link to="/app">Launch your first GPU</Link>: it takes about a minute.
              </p>
            ) : (
              <p>No pods with this status.</p>
            )}
          </Empty>
        </div>
      ) : (
        <div className="table-wrap" tabIndex={0} role="region" aria-label="Rentals table">
          <table className="stack-narrow">
            <thead>
              <tr>
                <th scope="col">
                  <span className="visually-hidden">Select</span>
                </th>
                <th scope="col">Pod</th>
                <th scope="col">Status</th>
                <th scope="col">Where</th>
                <th scope="col" className="right">
                  Rate
                </th>
                <th scope="col" className="right">
                  Charged
                </th>
                <th scope="col">Started ({zoneName()})</th>
                <th scope="col">SSH</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => (
                <RentalRow
                  key={r.id}
                  r={r}
                  highlight={r.id === launched}
                  checked={selected.has(r.id)}
                  onToggle={() => toggle(r.id)}
                  onStop={() => setConfirm([r])}
                  failure={
                    r.status === "failed"
                      ? { error: failures.data?.errors.get(r.id) ?? null, refund: failures.data?.refunds.get(r.id) ?? 0, loaded: !!failures.data }
                      : null
                  }
                />
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Pager
        label="Rentals"
        page={pager.page}
        hasNext={!!page.data?.nextCursor}
        onPrev={pager.prev}
        onNext={() => page.data?.nextCursor && pager.next(page.data.nextCursor)}
      />

      <Confirm
        open={confirm !== null}
        title={confirm && confirm.length > 1 ? `Stop ${confirm.length} pods?` : "Stop this pod?"}
        confirmLabel={confirm && confirm.length > 1 ? `Stop ${confirm.length} pods` : "Stop pod"}
        danger
        busy={stopping}
        onCancel={() => setConfirm(null)}
        onConfirm={() => confirm && void doStop(confirm)}
      >
        <p>
          {confirm && confirm.length === 1 ? <strong>{confirm[0]!.name ?? confirm[0]!.id}</strong> : "These pods"} will
          be terminated and {confirm && confirm.length > 1 ? "their disks" : "its disk"} wiped. There is no pause or
          restart.
        </p>
        <p className="muted">You pay for the exact seconds it ran; the rest of the hour held at launch comes back.</p>
      </Confirm>
    </section>
  );
}

function RentalRow({
  r,
  highlight,
  checked,
  onToggle,
  onStop,
  failure,
}: {
  r: Rental;
  highlight: boolean;
  checked: boolean;
  onToggle: () => void;
  onStop: () => void;
  failure: { error: string | null; refund: number; loaded: boolean } | null;
}) {
  const ssh = sshCommand(r);
  const label = r.name ?? r.id;
  const stoppable = STOPPABLE.includes(r.status);
  return (
    <>
      <tr className={highlight ? "row-new" : undefined} data-rental={r.id} data-status={r.status}>
        <td className="cell-select">
          {stoppable ? (
            <input type="checkbox" checked={checked} onChange={onToggle} aria-label={`Select ${label}`} />
          ) : null}
        </td>
        <td className="cell-title">
          <div>{label}</div>
          <div className="row-sub">
            {r.gpuCount} × {r.familyId} · {r.templateId}
          </div>
        </td>
        <td data-label="Status">
          <span className="cell-value">
            <Chip tone={STATUS_TONE[r.status]}>{r.status}</Chip>
            {r.status === "stopped" && r.stopReason ? (
              <span className="row-sub block">{STOP_REASONS[r.stopReason] ?? r.stopReason}</span>
            ) : null}
          </span>
        </td>
        <td data-label="Where">{r.region}</td>
        <td data-label="Rate" className="right num">{formatRate(r.pricePerHourCents)}</td>
        <td data-label="Charged" className="right">
          <span className="meter num" data-testid="meter">
            {r.status === "running" ? <span className="live-dot" aria-hidden="true" /> : null}
            <Money cents={r.totalChargedCents} />
          </span>
          {r.maxTotalCents ? <div className="row-sub num">cap {formatCents(r.maxTotalCents)}</div> : null}
        </td>
        <td data-label="Started" className="num">{formatTime(r.startedAt)}</td>
        <td data-label="SSH" className="cell-wide">
          {ssh && r.status === "running" ? (
            <div className="ssh">
              <code>{ssh}</code>
              <CopyButton text={ssh} label="Copy" />
            </div>
          ) : (
            <span className="muted">{r.status === "provisioning" ? "starting…" : "\u2014"}</span>
          )}
        </td>
        <td className="cell-actions">
          {stoppable ? (
            <button type="button" className="btn btn-small" onClick={onStop} aria-label={`Stop ${label}`}>
              Stop
            </button>
          ) : null}
        </td>
      </tr>
      {failure ? (
        <tr className="row-failure">
          <td className="cell-select" />
          <td colSpan={8} className="cell-wide">
            <div className="note note-error">
              <strong>Provision failed:</strong>{" "}
              {failure.loaded
                ? (failure.error ?? "the provider gave no reason").replace(/^Provision failed:\s*/i, "")
                : "loading…"}
              <br />
              {failure.refund > 0 ? (
                <>
                  Refunded <Money cents={failure.refund} /> to your wallet.
                </>
              ) : (
                <>Nothing was charged: the hour held at launch went back to your wallet.</>
              )}
            </div>
          </td>
        </tr>
      ) : null}
    </>
  );
}
