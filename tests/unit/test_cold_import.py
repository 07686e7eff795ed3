"""No function imports pydantic at cold start (docs/decisions.md "Cold starts: no pydantic at
import"): a request body's model, and pydantic with it, is imported at the first body."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from infra.local.template import ROOT, functions

PROBE = """
import importlib.util, json, sys
sys.path[:0] = [{layer!r}]
found = {{}}
for logical_id, folder in {folders!r}.items():
    spec = importlib.util.spec_from_file_location("app_" + logical_id, folder + "/app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found[logical_id] = sorted(m for m in {watched!r} if m in sys.modules)
print(json.dumps(found))
"""


def imported(folders: dict[str, str], watched: tuple[str, ...]) -> dict[str, list[str]]:
    """Which of `watched` are in `sys.modules` after each function's handler is imported, the
    functions one after the other in one fresh process."""
    env = {**os.environ, "STAGE": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    code = PROBE.format(layer=str(ROOT / "layers" / "gpurent"), folders=folders, watched=watched)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, timeout=120)
    found: dict[str, list[str]] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


def folder(logical_id: str) -> str:
    return str(ROOT / functions()[logical_id]["Properties"]["CodeUri"])


def test_no_function_imports_pydantic_or_the_bodies_at_import() -> None:
    """Every function's handler, imported one after the other in one fresh process: a module
    that imports pydantic shows from the first function that imports it on."""
    folders = {logical_id: folder(logical_id) for logical_id in functions()}
    found = imported(folders, ("pydantic", "gpurent.bodies"))
    assert found == {logical_id: [] for logical_id in folders}, found


def test_only_the_ssh_keys_function_imports_the_key_parser() -> None:
    """The rentals function reads the keys on file at every launch but never parses one: the
    parser (its regular expressions and classes) is imported by the key upload alone."""
    found = imported({"RentalsFunction": folder("RentalsFunction")}, ("gpurent.ssh_key_parser",))
    assert found == {"RentalsFunction": []}, found
