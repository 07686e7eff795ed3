"""template.yaml: linted by cfn-lint and `sam validate --lint`, built by `sam build`
(no Docker), and consistent with the code and the design's rules."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.local import template
from infra.local.functions import load_handler

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.template

SAM_ENV = {
    **os.environ,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "SAM_CLI_TELEMETRY": "0",
}


def sam() -> str:
    path = os.environ.get("SAM_CLI") or shutil.which("sam")
    if not path or not Path(path).exists():
        pytest.fail("aws-sam-cli not found: run through `make test` (it installs .sam-venv)")
    return path


def test_cfn_lint_passes() -> None:
    cfn_lint = str(Path(sys.executable).parent / "cfn-lint")
    r = subprocess.run([cfn_lint, "template.yaml"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_sam_validate_lint_passes() -> None:
    r = subprocess.run([sam(), "validate", "--lint", "--template-file", "template.yaml"], cwd=ROOT,
                       capture_output=True, text=True, env=SAM_ENV)
    assert r.returncode == 0, r.stdout + r.stderr


def test_sam_build_without_docker(tmp_path: Path) -> None:
    py313 = os.environ.get("SAM_PYTHON_BIN") or ""
    if not py313:
        pytest.fail("no Python 3.13 found for sam build (pyenv versions 3.13.*)")
    env = {**SAM_ENV, "PATH": f"{py313}:{SAM_ENV['PATH']}"}
    build = tmp_path / "build"
    r = subprocess.run([sam(), "build", "--template-file", "template.yaml", "--build-dir", str(build)],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    layer = build / "DomainLayer" / "python"
    assert (layer / "gpurent" / "api.py").exists()
    cores = list(layer.glob("pydantic_core/_pydantic_core*.so"))
    assert cores and all("aarch64" in c.name for c in cores), cores
    for logical_id in template.functions():
        assert (build / logical_id / "app.py").exists(), logical_id
        # Functions hold only their handler: the domain comes from the layer.
        assert not (build / logical_id / "gpurent").exists()


def test_runtime_and_architecture() -> None:
    g = template.load()["Globals"]["Function"]
    assert g["Runtime"] == "python3.13"
    assert g["Architectures"] == ["arm64"]
    layer = template.load()["Resources"]["DomainLayer"]
    assert layer["Metadata"] == {"BuildMethod": "python3.13", "BuildArchitecture": "arm64"}


def _statements(fn: dict) -> list[dict]:
    out: list[dict] = []
    for policy in fn["Properties"].get("Policies", []):
        if isinstance(policy, dict) and "Statement" in policy:
            out.extend(policy["Statement"])
    return out


def test_every_function_is_denied_ledger_updates_and_deletes() -> None:
    for logical_id, fn in template.functions().items():
        ledger = {"GetAtt": "LedgerTable.Arn"}
        denies = [s for s in _statements(fn) if s["Effect"] == "Deny" and s["Resource"] == ledger]
        assert denies, f"{logical_id} has no Deny on the ledger"
        actions = set(denies[0]["Action"])
        assert {"dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"} <= actions, logical_id


def test_no_function_has_wildcard_dynamodb_access() -> None:
    for logical_id, fn in template.functions().items():
        for s in _statements(fn):
            if s["Effect"] != "Allow":
                continue
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            assert not any(a in ("dynamodb:*", "*") for a in actions), logical_id
            if any(a.startswith("dynamodb:") for a in actions):
                assert s["Resource"] != "*", logical_id


def test_money_tables_have_point_in_time_recovery() -> None:
    resources = template.load()["Resources"]
    for name in ("MoneyTable", "LedgerTable", "IdentityTable"):
        props = resources[name]["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert resources[name]["DeletionPolicy"] == "Retain"


def test_no_secret_values_in_template() -> None:
    text = (ROOT / "template.yaml").read_text()
    for marker in ("sk_live_", "sk_test_", "whsec_", "rk_live_"):
        assert marker not in text


def test_every_template_route_is_served_by_its_function_and_vice_versa() -> None:
    by_function: dict[str, set[str]] = {}
    for route in template.routes():
        by_function.setdefault(route.code_uri, set()).add(route.route_key)
    assert by_function
    for code_uri, keys in by_function.items():
        handler = load_handler(code_uri)
        router = inspect.unwrap(handler).__self__  # type: ignore[attr-defined]
        assert set(router.routes) == keys, code_uri
