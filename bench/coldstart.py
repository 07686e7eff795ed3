"""Cold-start proxy, in the built layout: the import time of each function's handler module
in a fresh CPython 3.13 process whose path is what Lambda gives it (the layer as
`layers/gpurent/Makefile` builds it; the function's own folder), beside the floor of
`import boto3` from that same layer. Each function's runs alternate with runs of the floor, and
its ratio is the median of the per-pair ratios, so a machine whose load drifts during the run
moves both sides of each pair alike; prints the median milliseconds and that ratio; asserts
nothing.

    .venv/bin/python bench/coldstart.py [runs]

The layer is built for this machine's platform (x86_64 wheels of the same locked pins, the
same compiled bytecode) into .aws-sam/layer-bench: Lambda's arm64 wheels of pydantic-core
cannot load here.

No function imports pydantic at cold start: a request body's model (`gpurent.bodies`, and
pydantic with it) is imported at the first body the function validates. That cost moved to the
first request with a body, not away: the rows "+ first body" time the import plus the
validation of one valid body (the function's first `Body`), pydantic's import and that model's
build included.

A second set of rows imports the same layer with no usable bytecode (an empty
`sys.pycache_prefix`, nothing written): what every cold start paid when the layer shipped
only sources.
"""

from __future__ import annotations

import glob
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from infra.local import template  # noqa: E402

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 9
LAYER = Path(os.environ.get("LAYER_DIR") or ROOT / ".aws-sam" / "layer-bench" / "python")

PROBE = """
import sys, time, importlib.util
sys.path[:0] = [{layer!r}, {task!r}]
t = time.perf_counter()
{body}
print((time.perf_counter() - t) * 1000)
"""

ENV = {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
       "POWERTOOLS_SERVICE_NAME": "gpurent", "POWERTOOLS_METRICS_NAMESPACE": "gpurent", "STAGE": "prod",
       "PYTHONDONTWRITEBYTECODE": "1"}


def python313() -> str:
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.13*/bin/python3.13")))
    pyenv = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False).stdout.strip()
    found += sorted(glob.glob(f"{pyenv}/versions/3.13*/bin/python3.13")) if pyenv else []
    if not found:
        sys.exit("no CPython 3.13 (pyenv versions 3.13.*)")
    return found[-1]


def _once(code: str, env: dict[str, str]) -> float:
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def timed(body: str, task: Path, no_bytecode: bool = False) -> tuple[float, float]:
    """(median ms, median of the per-pair ratios to `import boto3`): each run is paired with a
    run of the floor right before it, in the same layout."""
    code = PROBE.format(layer=str(LAYER), task=str(task), body=body)
    floor_code = PROBE.format(layer=str(LAYER), task=str(ROOT), body="import boto3")
    samples, ratios = [], []
    with tempfile.TemporaryDirectory() as empty:
        env = {**ENV, **({"PYTHONPYCACHEPREFIX": empty} if no_bytecode else {})}
        for _ in range(RUNS):
            floor = _once(floor_code, ENV)
            ms = _once(code, env)
            samples.append(ms)
            ratios.append(ms / floor)
    return statistics.median(samples), statistics.median(ratios)


# One valid body per model, for the "+ first body" rows.
FIRST_BODIES: dict[str, dict[str, object]] = {
    "AdminFunction": {"userId": "usr_1", "amountCents": 100, "reason": "bench"},  # Adjustment
    "AuthFunction": {"email": "someone@example.com"},  # RequestCode
    "BillingFunction": {"amountCents": 1000},  # Checkout
    "CatalogFunction": {"familyId": "h100", "gpuCount": 1},  # Preview
    "RentalsFunction": {"familyId": "h100", "gpuCount": 1},  # Launch
    "SshKeysFunction": {"name": "laptop", "publicKey": "ssh-ed25519 AAAA"},  # NewKey
}


def first_body(logical_id: str) -> str:
    """After the handler's import: validate one body with the first `Body` its module declares,
    as `Request.parse` does."""
    return ("\nfrom gpurent.api import Body\n"
            "body = next(v for v in vars(m).values() if isinstance(v, Body))\n"
            "model = body.model()\nfrom pydantic import ValidationError\n"
            f"model.model_validate({FIRST_BODIES[logical_id]!r})")


def handler_body(path: Path) -> str:
    return (f"spec = importlib.util.spec_from_file_location('app', {str(path)!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)")


def sources_digest() -> str:
    """What the layer is built from: its Makefile, the locked requirements and the package."""
    import hashlib

    h = hashlib.sha256()
    src = ROOT / "layers" / "gpurent"
    for f in sorted([src / "Makefile", src / "requirements.txt", *(src / "gpurent").rglob("*.py")]):
        h.update(str(f.relative_to(src)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def main() -> None:
    # Built again whenever its sources changed: a stale layer times old code (or fails to import).
    stamp, digest = LAYER.parent / ".sources", sources_digest()
    if "LAYER_DIR" not in os.environ and (not stamp.exists() or stamp.read_text() != digest):
        import platform

        env = {**os.environ, "PATH": f"{Path(PY).parent}:{os.environ['PATH']}"}
        subprocess.run(["make", "-s", "-C", "layers/gpurent", "build-DomainLayer", f"ARTIFACTS_DIR={LAYER.parent}",
                        f"PLATFORM=manylinux2014_{platform.machine()}"], cwd=ROOT, check=True, env=env)
        stamp.write_text(digest)
    print(f"CPython {subprocess.run([PY, '-V'], capture_output=True, text=True).stdout.split()[1]}, "
          f"layer {LAYER.relative_to(ROOT) if LAYER.is_relative_to(ROOT) else LAYER}, median of {RUNS}")
    floor, _ = timed("import boto3", ROOT)
    print(f"{'function':<30} {'import ms':>10} {'× boto3':>8}")
    print(f"{'(import boto3 alone)':<30} {floor:>10.1f} {1.0:>8.2f}")
    rows = []
    for logical_id, fn in sorted(template.functions().items()):
        task = ROOT / fn["Properties"]["CodeUri"]
        body = handler_body(task / "app.py")
        rows.append((logical_id, body, task))
        ms, ratio = timed(body, task)
        print(f"{logical_id:<30} {ms:>10.1f} {ratio:>8.2f}")
        if logical_id in FIRST_BODIES:
            ms, ratio = timed(body + first_body(logical_id), task)
            print(f"{'  + first body':<30} {ms:>10.1f} {ratio:>8.2f}")
        if logical_id == "WebhookFunction":
            # The gateway imports stripe on first use: the first event pays for it too.
            ms, ratio = timed(body + "\nimport stripe", task)
            print(f"{'  + stripe (first event)':<30} {ms:>10.1f} {ratio:>8.2f}")
    print("\nwithout bytecode (every module compiled at import, as from a layer of sources only):")
    bare, ratio = timed("import boto3", ROOT, no_bytecode=True)
    print(f"{'(import boto3 alone)':<30} {bare:>10.1f} {ratio:>8.2f}")
    for logical_id, body, task in rows:
        if logical_id in ("RentalsFunction", "BillingFunction", "CatalogRefreshFunction"):
            ms, ratio = timed(body, task, no_bytecode=True)
            print(f"{logical_id:<30} {ms:>10.1f} {ratio:>8.2f}")

PY = python313()

if __name__ == "__main__":
    main()
