import { useEffect, useRef, useState, type FormEvent } from "react";
import { api, ApiFailure, newKey, ok, type Schemas } from "../api/client";
import { describe, fieldErrors } from "../api/errors";
import { Empty, ErrorNote, Loading, Money } from "../components/ui";
import { useLoad, useTitle } from "../lib/hooks";
import { formatCents, formatRate, parseDollars } from "../lib/money";
import { Link, navigate } from "../lib/router";
import { useBalance, useToast } from "../state";

type Family = Schemas["Family"];
type Listing = Schemas["Listing"];
type FamilyId = Schemas["Launch"]["familyId"];
type TemplateId = NonNullable<Schemas["Launch"]["templateId"]>;
type GpuCount = Schemas["Launch"]["gpuCount"];

const COUNTS: GpuCount[] = [1, 2, 4, 8];
const BROAD_REGIONS = [
  { code: "us", label: "United States" },
  { code: "eu", label: "Europe" },
  { code: "apac", label: "Asia-Pacific" },
];
const PROVIDERS: Record<string, string> = { vast: "vast.ai", runpod: "RunPod", lambda: "Lambda Cloud" };
const LISTING_PAGES = 3; // cheapest first, 200 a page: enough to find every family's lowest price

interface Filters {
  model: string;
  minVram: string;
  region: string;
  maxPrice: string;
}
const NO_FILTERS: Filters = { model: "", minVram: "", region: "", maxPrice: "" };

/** Lowest matching price per family for the filters (null: no listing matches). */
async function lowestByFamily(f: Filters, gpuCount: GpuCount): Promise<Map<string, number>> {
  const maxCents = f.maxPrice ? parseDollars(f.maxPrice) : null;
  const query = {
    gpuCount,
    pageSize: 200,
    ...(f.model ? { model: f.model } : {}),
    ...(f.minVram ? { minVramGb: Number(f.minVram) } : {}),
    ...(f.region ? { region: f.region } : {}),
    ...(maxCents !== null ? { maxPricePerHourCents: maxCents } : {}),
  };
  const lowest = new Map<string, number>();
  let cursor: string | undefined;
  for (let i = 0; i < LISTING_PAGES; i++) {
    const page = await ok(api.GET("/v1/catalog/listings", { params: { query: { ...query, cursor } } }));
    page.listings.forEach((l: Listing) => {
      if (!lowest.has(l.family) || l.pricePerHourCents < lowest.get(l.family)!) lowest.set(l.family, l.pricePerHourCents);
    });
    if (!page.nextCursor) break;
    cursor = page.nextCursor;
  }
  return lowest;
}

/** The cheapest price of a `model_unavailable` answer to a launch or preview with a max price too low. */
function cheapestAbove(e: unknown): number | null {
  if (!(e instanceof ApiFailure) || e.code !== "model_unavailable" || !e.details) return null;
  const v = e.details.cheapestPricePerHourCents;
  return typeof v === "number" && Number.isSafeInteger(v) ? v : null;
}

function useDebounced<T>(value: T, ms: number): T {
  const [v, setV] = useState(value);
  useEffect(() => {
    const t = window.setTimeout(() => setV(value), ms);
    return () => window.clearTimeout(t);
  }, [value, ms]);
  return v;
}

export default function Create() {
  useTitle("Launch a GPU");
  const toast = useToast();
  const { balance, refresh: refreshBalance } = useBalance();
  const catalog = useLoad(
    () =>
      Promise.all([
        ok(api.GET("/v1/catalog/families")),
        ok(api.GET("/v1/templates")),
        ok(api.GET("/v1/catalog/facets")),
        ok(api.GET("/v1/ssh-keys")),
      ]),
    [],
  );
  const [families, templates, facets, keys] = catalog.data ?? [];

  const [filters, setFilters] = useState<Filters>(NO_FILTERS);
  const [gpuCount, setGpuCount] = useState<GpuCount>(1);
  const [familyId, setFamilyId] = useState<FamilyId | null>(null);
  const [templateId, setTemplateId] = useState<TemplateId>("ubuntu-24-04");
  const [name, setName] = useState("");
  const [autoStop, setAutoStop] = useState("");
  const [cap, setCap] = useState("");
  const [maxPrice, setMaxPrice] = useState(""); // the launch's price tolerance ($/h), not the listings filter
  const [launching, setLaunching] = useState(false);
  const [launchError, setLaunchError] = useState<unknown>(null);

  const debouncedFilters = useDebounced(filters, 250);
  const maxPriceBad = filters.maxPrice !== "" && parseDollars(filters.maxPrice) === null;
  // Unfiltered single GPUs: the families already carry their lowest price (no listings query).
  const unfiltered = gpuCount === 1 && JSON.stringify(debouncedFilters) === JSON.stringify(NO_FILTERS);
  const prices = useLoad(
    () =>
      maxPriceBad
        ? Promise.resolve(new Map<string, number>())
        : unfiltered && families
          ? Promise.resolve(
              new Map(
                families.families
                  .filter((f) => f.fromPricePerHourCents !== null)
                  .map((f) => [f.id, f.fromPricePerHourCents as number]),
              ),
            )
          : lowestByFamily(debouncedFilters, gpuCount),
    [debouncedFilters, gpuCount, maxPriceBad, unfiltered, families],
  );

  // The default template and the first affordable family once the catalog is in.
  useEffect(() => {
    const def = templates?.templates.find((t) => t.default);
    if (def) setTemplateId(def.id);
  }, [templates]);

  const selected: Family | undefined = families?.families.find((f) => f.id === familyId);
  const countOk = !selected || selected.gpuCounts.includes(gpuCount);
  const familyPrice = familyId ? prices.data?.get(familyId) : undefined;

  const toleranceCents = maxPrice.trim() === "" ? null : parseDollars(maxPrice);
  const toleranceBad = maxPrice.trim() !== "" && (toleranceCents === null || toleranceCents < 1);
  const previewArgs = useDebounced(
    familyId && countOk && !toleranceBad
      ? { familyId, gpuCount, templateId, region: filters.region || null, maxPricePerHourCents: toleranceCents }
      : null,
    200,
  );
  const preview = useLoad(
    () =>
      previewArgs
        ? ok(api.POST("/v1/rentals/preview", { body: previewArgs }))
        : Promise.resolve(undefined),
    [JSON.stringify(previewArgs)],
  );

  // One Idempotency-Key per intended launch: a double click, or a retry after a lost
  // answer, reuses it (one pod); changing anything in the form makes it a new launch.
  const intent = JSON.stringify([familyId, gpuCount, templateId, filters.region, name, autoStop, cap, maxPrice]);
  const key = useRef({ intent, key: newKey("launch") });
  if (key.current.intent !== intent) key.current = { intent, key: newKey("launch") };

  const autoStopHours = autoStop.trim() === "" ? null : Number(autoStop);
  const autoStopBad = autoStopHours !== null && !(autoStopHours > 0 && autoStopHours <= 720);
  const capCents = cap.trim() === "" ? null : parseDollars(cap);
  const capBad = cap.trim() !== "" && (capCents === null || capCents < 1);
  const nameBad = name.length > 64;

  const reserve = preview.data?.pricePerHourCents ?? null;
  // A tolerance below the cheapest offer: the preview (and a launch) answer model_unavailable with the cheapest price.
  const cheapest = cheapestAbove(preview.error);
  const toleranceLow = toleranceCents !== null && cheapest !== null;
  const short = reserve !== null && balance ? balance.availableCents < reserve : false;

  // A second click before React re-renders the disabled button must not send a second
  // request: a ref, not state, guards it (the key would make a retry safe, not a race).
  const inFlight = useRef(false);
  const launch = async (e: FormEvent) => {
    e.preventDefault();
    if (!familyId || inFlight.current || autoStopBad || capBad || nameBad || toleranceBad || !countOk) return;
    inFlight.current = true;
    setLaunching(true);
    setLaunchError(null);
    try {
      const out = await ok(
        api.POST("/v1/rentals", {
          params: { header: { "Idempotency-Key": key.current.key } },
          body: {
            familyId,
            gpuCount,
            templateId,
            region: filters.region || null,
            name: name.trim() || null,
            autoStopAfterHours: autoStopHours,
            maxTotalCents: capCents,
            maxPricePerHourCents: toleranceCents,
          },
        }),
      );
      key.current = { intent: "", key: newKey("launch") };
      const quoted = out.quotedPricePerHourCents ?? out.pricePerHourCents;
      const repriced = quoted !== out.pricePerHourCents;
      // The API words the re-pricing in cents for scripts; the Rentals page says it in dollars.
      out.warnings.filter((w) => !(repriced && /instead of the quoted/.test(w))).forEach((w) => toast(w, "info"));
      toast(`Launching ${name.trim() || familyId}: it is provisioning now.`, "success");
      void refreshBalance();
      navigate(`/app/rentals?launched=${encodeURIComponent(out.id)}${repriced ? `&quoted=${quoted}` : ""}`);
    } catch (err) {
      setLaunchError(err);
      if (err instanceof ApiFailure && err.code === "insufficient_balance") void refreshBalance();
    } finally {
      inFlight.current = false;
      setLaunching(false);
    }
  };

  if (catalog.loading && !catalog.data) return <Loading what="the catalog" />;
  if (catalog.error && !catalog.data) {
    return (
      <section>
        <h1 tabIndex={-1}>Launch a GPU</h1>
        <ErrorNote error={describe(catalog.error)}>
          {" "}
          <button type="button" className="btn btn-small" onClick={() => void catalog.reload()}>
            Retry
          </button>
        </ErrorNote>
      </section>
    );
  }

  const regionCodes = (facets?.regions ?? []).map((r) => r.code).sort();
  const vramOptions = [...new Set((families?.families ?? []).map((f) => f.vramGb))].sort((a, b) => a - b);
  const launchFailure = launchError ? describe(launchError) : null;
  const needTopUp = launchError instanceof ApiFailure && launchError.code === "insufficient_balance";
  const errs = fieldErrors(launchError);

  return (
    <section>
      <div className="page-head">
        <div>
          <h1 tabIndex={-1}>Launch a GPU</h1>
          <p className="muted">We place your pod on the cheapest matching offer across providers. Billed per second.</p>
        </div>
      </div>

      {keys && keys.keys.length === 0 ? (
        <div className="note note-warn">
          You have no SSH key on file, so you could not log in to the pod. <Link to="/app/settings">Add a key</Link>{" "}
          first.
        </div>
      ) : null}

      <form className="create" onSubmit={launch} noValidate>
        <div>
          <div className="card">
            <h2>Filters</h2>
            <div className="fields">
              <div>
                <label htmlFor="f-model">Model</label>
                <select
                  id="f-model"
                  value={filters.model}
                  onChange={(e) => setFilters({ ...filters, model: e.target.value })}
                >
                  <option value="">Any model</option>
                  {(facets?.models ?? []).map((m) => (
                    <option key={m.code} value={m.code}>
                      {m.code.replace(/_/g, " ")} ({m.count})
                    </option>
                  ))}
                </select>
              </div>
              <div>
                <label htmlFor="f-vram">Min VRAM</label>
                <select
                  id="f-vram"
                  value={filters.minVram}
                  onChange={(e) => setFilters({ ...filters, minVram: e.target.value })}
                >
                  <option value="">Any</option>
                  {vramOptions.map((v) => (
                    <option key={v} value={v}>
                      {v} GB+
                    </option>
                  ))}
                </select>
              </div>
              <div>
                <label htmlFor="f-region">Region</label>
                <select
                  id="f-region"
                  value={filters.region}
                  onChange={(e) => setFilters({ ...filters, region: e.target.value })}
                >
                  <option value="">Anywhere (cheapest)</option>
                  <optgroup label="Areas">
                    {BROAD_REGIONS.map((r) => (
                      <option key={r.code} value={r.code}>
                        {r.label}
                      </option>
                    ))}
                  </optgroup>
                  <optgroup label="Countries">
                    {regionCodes.map((c) => (
                      <option key={c} value={c}>
                        {c}
                      </option>
                    ))}
                  </optgroup>
                </select>
              </div>
              <div>
                <label htmlFor="f-max">Max price ($/h)</label>
                <input
                  id="f-max"
                  inputMode="decimal"
                  placeholder={facets?.priceRange.maxCents != null ? formatCents(facets.priceRange.maxCents).slice(1) : "any"}
                  value={filters.maxPrice}
                  onChange={(e) => setFilters({ ...filters, maxPrice: e.target.value })}
                  aria-invalid={maxPriceBad || undefined}
                  aria-describedby={maxPriceBad ? "f-max-err" : undefined}
                />
                {maxPriceBad ? (
                  <p className="field-error" id="f-max-err">
                    Enter dollars, like 2.50
                  </p>
                ) : null}
              </div>
            </div>
            <fieldset>
              <legend>GPUs per pod</legend>
              <div className="seg">
                {COUNTS.map((c) => (
                  <button
                    key={c}
                    type="button"
                    className="btn btn-small"
                    aria-pressed={gpuCount === c}
                    onClick={() => setGpuCount(c)}
                  >
                    {c} × GPU
                  </button>
                ))}
              </div>
            </fieldset>
            {filters !== NO_FILTERS ? (
              <button type="button" className="btn btn-link" onClick={() => setFilters(NO_FILTERS)}>
                Clear filters
              </button>
            ) : null}
          </div>

          <div className="card">
            <div className="card-head">
              <h2 id="families-title">GPU</h2>
              {prices.loading ? <span className="muted">Updating prices…</span> : null}
            </div>
            {families && families.families.length > 0 ? (
              <ul className="families" aria-labelledby="families-title">
                {families.families.map((f) => {
                  const price = prices.data?.get(f.id);
                  const offered = f.gpuCounts.includes(gpuCount);
                  const available = offered && price !== undefined;
                  return (
                    <li key={f.id}>
                      <button
                        type="button"
                        className="family"
                        aria-pressed={familyId === f.id}
                        disabled={!available && familyId !== f.id}
                        onClick={() => setFamilyId(f.id as FamilyId)}
                        data-family={f.id}
                      >
                        <span className="family-name">{f.displayName}</span>
                        <span className="family-meta">
                          {f.vramGb} GB VRAM · {f.listingCount} offers
                        </span>
                        <span className="family-price num">
                          {available ? (
                            <>from {formatRate(price)}</>
                          ) : prices.data ? (
                            <span className="muted">{offered ? "None match the filters" : `No ${gpuCount}× offers`}</span>
                          ) : (
                            "\u00a0"
                          )}
                        </span>
                      </button>
                    </li>
                  );
                })}
              </ul>
            ) : (
              <Empty title="No GPUs in the catalog right now">
                The catalog refreshes every minute. <button type="button" className="btn btn-link" onClick={() => void catalog.reload()}>Reload</button>
              </Empty>
            )}
          </div>

          <div className="card">
            <fieldset>
              <legend>
                <span className="h2-like">Template</span>
              </legend>
              <div className="templates">
                {(templates?.templates ?? []).map((t) => (
                  <label key={t.id} className="template">
                    <input
                      type="radio"
                      name="template"
                      value={t.id}
                      checked={templateId === t.id}
                      onChange={() => setTemplateId(t.id)}
                    />
                    <span>
                      <strong>{t.name}</strong>
                      <span>{t.description}</span>
                    </span>
                  </label>
                ))}
              </div>
            </fieldset>
          </div>

          <div className="card">
            <h2>Details</h2>
            <div className="fields">
              <div>
                <label htmlFor="name">Name (optional)</label>
                <input
                  id="name"
                  maxLength={80}
                  placeholder={familyId ? `${familyId}-x${gpuCount}` : "my-experiment"}
                  value={name}
                  onChange={(e) => setName(e.target.value)}
                  aria-invalid={nameBad || !!errs.name || undefined}
                  aria-describedby="name-hint"
                />
                <p className={nameBad ? "field-error" : "hint"} id="name-hint">
                  {nameBad ? "At most 64 characters" : "Up to 64 characters, e.g. alice/exp-42"}
                </p>
              </div>
              <div>
                <label htmlFor="autostop">Auto-stop after (hours)</label>
                <input
                  id="autostop"
                  inputMode="decimal"
                  placeholder="never"
                  value={autoStop}
                  onChange={(e) => setAutoStop(e.target.value)}
                  aria-invalid={autoStopBad || undefined}
                  aria-describedby="autostop-hint"
                />
                <p className={autoStopBad ? "field-error" : "hint"} id="autostop-hint">
                  {autoStopBad ? "A number of hours above 0, at most 720" : "Stops the pod however much money is left"}
                </p>
              </div>
              <div>
                <label htmlFor="cap">Spend cap ($)</label>
                <input
                  id="cap"
                  inputMode="decimal"
                  placeholder="none"
                  value={cap}
                  onChange={(e) => setCap(e.target.value)}
                  aria-invalid={capBad || undefined}
                  aria-describedby="cap-hint"
                />
                <p className={capBad ? "field-error" : "hint"} id="cap-hint">
                  {capBad ? "Enter dollars, like 20 or 12.50" : "Stops the pod once it has cost this much"}
                </p>
              </div>
              <div>
                <label htmlFor="max-price">Accept up to ($/h)</label>
                <input
                  id="max-price"
                  inputMode="decimal"
                  placeholder={reserve !== null ? formatCents(reserve).slice(1) : "the quote"}
                  value={maxPrice}
                  onChange={(e) => setMaxPrice(e.target.value)}
                  aria-invalid={toleranceBad || toleranceLow || undefined}
                  aria-describedby="max-price-hint"
                />
                <p className={toleranceBad || toleranceLow ? "field-error" : "hint"} id="max-price-hint">
                  {toleranceBad
                    ? "Enter dollars per hour, like 2.50"
                    : toleranceLow
                      ? `Below the cheapest offer (${formatRate(cheapest)}): raise it or leave it empty`
                      : "If the quoted offer is taken first, another one up to this price may be used. Empty: the quote"}
                </p>
              </div>
            </div>
          </div>
        </div>

        <aside className="card summary" aria-labelledby="summary-title">
          <h2 id="summary-title">Summary</h2>
          {!familyId ? (
            <p className="muted">Pick a GPU to see the price.</p>
          ) : !countOk ? (
            <p className="note note-warn">{selected?.displayName} is not offered with {gpuCount} GPUs.</p>
          ) : toleranceLow ? (
            <p className="note note-warn">
              No offer at or below your max price of {formatRate(toleranceCents)}: the cheapest is {formatRate(cheapest)}.
            </p>
          ) : preview.error ? (
            <ErrorNote error={describe(preview.error)} />
          ) : (
            <dl className="facts" aria-busy={preview.loading}>
              <dt>GPU</dt>
              <dd>
                {gpuCount} × {selected?.displayName}
              </dd>
              <dt>Price</dt>
              <dd className="num" data-testid="preview-price">
                {preview.data ? formatRate(preview.data.pricePerHourCents) : familyPrice ? `~${formatRate(familyPrice)}` : "…"}
              </dd>
              <dt>Provider</dt>
              <dd>{preview.data ? PROVIDERS[preview.data.matchedListing.providerCode] ?? preview.data.matchedListing.providerCode : "…"}</dd>
              <dt>Region</dt>
              <dd>{preview.data?.matchedListing.region ?? "…"}</dd>
              <dt>Ready in about</dt>
              <dd className="num">{preview.data ? `${preview.data.estimatedProvisionSeconds} s` : "…"}</dd>
              {toleranceCents !== null ? (
                <>
                  <dt>Max price</dt>
                  <dd className="num" data-testid="preview-max-price">
                    {formatRate(toleranceCents)}
                  </dd>
                </>
              ) : null}
              <dt>Held at launch</dt>
              <dd className="num" data-testid="preview-reserve">
                {reserve !== null ? formatCents(reserve) : "…"}
              </dd>
            </dl>
          )}
          {reserve !== null && balance ? (
            <p className={short ? "note note-warn" : "hint"}>
              {short ? (
                <>
                  Launching holds one hour ({formatCents(reserve)}) but you have{" "}
                  <Money cents={balance.availableCents} /> available.{" "}
                  <Link to={`/app/billing?topup=${reserve - balance.availableCents}`}>Top up</Link>
                </>
              ) : (
                <>
                  One hour ({formatCents(reserve)}) moves from available to reserved while it runs:{" "}
                  <Money cents={balance.availableCents - reserve} /> stays available. You pay per second; the rest comes
                  back when it stops.
                  {toleranceCents !== null && toleranceCents > reserve ? (
                    <>
                      {" "}
                      Placed on a dearer offer (up to {formatRate(toleranceCents)}), that rate is charged and one hour of
                      it is held instead.
                    </>
                  ) : null}
                </>
              )}
            </p>
          ) : null}
          {launchFailure ? (
            <ErrorNote error={launchFailure}>
              {needTopUp ? (
                <>
                  {" "}
                  <Link to={`/app/billing${reserve && balance ? `?topup=${Math.max(100, reserve - balance.availableCents)}` : ""}`}>
                    Top up your wallet
                  </Link>
                </>
              ) : null}
            </ErrorNote>
          ) : null}
          <button
            type="submit"
            className="btn btn-primary btn-block btn-large"
            disabled={!familyId || !countOk || launching || autoStopBad || capBad || nameBad || toleranceBad || toleranceLow}
          >
            {launching ? "Launching…" : "Launch"}
          </button>
        </aside>
      </form>
    </section>
  );
}
