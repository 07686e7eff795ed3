"""Crash-point enumeration (issue #10): every money path killed at every I/O call, before
and after it, then recovered the way production recovers; see `harness.py` and
`test_crash_points.py`. `RESULTS` collects, per path, what the run found; `table()`
renders it (the conftest prints it at the end of the run)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PathResult:
    path: str
    calls: list[str] = field(default_factory=list)  # the uncrashed run's calls, in order
    enumerated: int = 0
    recovered: int = 0
    same_world: int = 0  # of those recovered: the act left a world already recovered and checked
    known_bugs: list[str] = field(default_factory=list)  # crash points that fail on a known product bug
    failed: list[str] = field(default_factory=list)  # crash points that fail, not known
    seconds: float = 0.0

    def ports(self) -> str:
        counts: dict[str, int] = {}
        for c in self.calls:
            port = c.split(":", 1)[0]
            port = port if port in ("dynamo", "stripe", "mail", "timer", "reconcile") else "provider"
            counts[port] = counts.get(port, 0) + 1
        return " ".join(f"{k} {v}" for k, v in sorted(counts.items()))


RESULTS: dict[str, PathResult] = {}


def table() -> str:
    rows = [("path", "I/O calls", "crash points", "recovered", "same world", "known bug", "failed", "seconds",
             "calls by port")]
    for r in RESULTS.values():
        rows.append((r.path, str(len(r.calls)), str(r.enumerated), str(r.recovered), str(r.same_world),
                     str(len(r.known_bugs)), str(len(r.failed)), f"{r.seconds:.1f}", r.ports()))
    total = (sum(len(r.calls) for r in RESULTS.values()), sum(r.enumerated for r in RESULTS.values()),
             sum(r.recovered for r in RESULTS.values()), sum(r.same_world for r in RESULTS.values()),
             sum(len(r.known_bugs) for r in RESULTS.values()), sum(len(r.failed) for r in RESULTS.values()),
             sum(r.seconds for r in RESULTS.values()))
    rows.append(("total", str(total[0]), str(total[1]), str(total[2]), str(total[3]), str(total[4]),
                 str(total[5]), f"{total[6]:.1f}", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in RESULTS.values():
        for f in r.known_bugs + r.failed:
            out.append(f"  {r.path}: {f}")
    return "\n".join(out)
