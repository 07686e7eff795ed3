// Prints what the dashboard costs to load: the initial JavaScript (the entry chunk and
// what it imports statically, i.e. what /login downloads) and every chunk, gzipped.
// Fails the build when the initial JavaScript exceeds the budget (150 KB gzipped).
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const BUDGET = 150 * 1024;
const dist = new URL("../dist/", import.meta.url).pathname;
const html = readFileSync(join(dist, "index.html"), "utf8");
const assets = join(dist, "assets");
const gz = (name) => gzipSync(readFileSync(join(assets, name)), { level: 9 }).length;
const kb = (n) => `${(n / 1024).toFixed(1)} KB`;

// The entry and its modulepreloads are what the first page needs.
const initial = [...html.matchAll(/(?:src|href)="\/assets\/([^"]+\.js)"/g)].map((m) => m[1]);
const css = [...html.matchAll(/href="\/assets\/([^"]+\.css)"/g)].map((m) => m[1]);
const all = readdirSync(assets).filter((f) => f.endsWith(".js"));

const rows = all
  .map((f) => ({ file: f, raw: readFileSync(join(assets, f)).length, gz: gz(f), initial: initial.includes(f) }))
  .sort((a, b) => Number(b.initial) - Number(a.initial) || b.gz - a.gz);
const initialGz = rows.filter((r) => r.initial).reduce((s, r) => s + r.gz, 0);
const totalGz = rows.reduce((s, r) => s + r.gz, 0);
const cssGz = css.reduce((s, f) => s + gz(f), 0);

console.log("\nDashboard bundle (gzip -9):");
for (const r of rows) console.log(`  ${r.initial ? "initial" : "lazy   "}  ${kb(r.gz).padStart(9)}  (${kb(r.raw)} raw)  ${r.file}`);
console.log(`  initial JavaScript: ${kb(initialGz)} of the ${kb(BUDGET)} budget; all JavaScript: ${kb(totalGz)}; CSS: ${kb(cssGz)}`);
writeFileSync(
  join(dist, "size.json"),
  JSON.stringify({ initialJsGzipBytes: initialGz, allJsGzipBytes: totalGz, cssGzipBytes: cssGz, budgetBytes: BUDGET }, null, 2),
);
if (initialGz > BUDGET) {
  console.error(`initial JavaScript ${kb(initialGz)} is over the ${kb(BUDGET)} budget`);
  process.exit(1);
}
