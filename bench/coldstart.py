"""Cold-start proxy: the import time of each function's handler module in a fresh
process (median of several), beside the floor of `import boto3` alone.
Prints milliseconds and the ratio to the floor; asserts nothing.

    .venv/bin/python bench/coldstart.py [runs]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from infra.local import template  # noqa: E402

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 7

PROBE = """
import sys, time, importlib.util
sys.path[:0] = [{layer!r}]
t = time.perf_counter()
{body}
print((time.perf_counter() - t) * 1000)
"""


def timed(body: str) -> float:
    code = PROBE.format(layer=str(ROOT / "layers" / "gpurent"), body=body)
    samples = []
    for _ in range(RUNS):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1"})
        samples.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(samples)


def main() -> None:
    floor = timed("import boto3")
    print(f"{'function':<26} {'import ms':>10} {'× boto3':>8}")
    print(f"{'(import boto3 alone)':<26} {floor:>10.1f} {1.0:>8.2f}")
    for logical_id, fn in sorted(template.functions().items()):
        path = ROOT / fn["Properties"]["CodeUri"] / "app.py"
        body = (f"spec = importlib.util.spec_from_file_location('app', {str(path)!r})\n"
                "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)")
        ms = timed(body)
        print(f"{logical_id:<26} {ms:>10.1f} {ms / floor:>8.2f}")
        if logical_id == "WebhookFunction":
            # The gateway imports stripe on first use: the first event pays for it too.
            ms = timed(body + "\nimport stripe")
            print(f"{'  + stripe (first event)':<26} {ms:>10.1f} {ms / floor:>8.2f}")


if __name__ == "__main__":
    main()
