"""The dashboard maps every documented error code to a sentence (web/src/api/errors.ts)."""

from __future__ import annotations

import re
from pathlib import Path

from gpurent.errors import STATUS

ERRORS_TS = Path(__file__).resolve().parents[2] / "web" / "src" / "api" / "errors.ts"


def test_every_documented_error_code_has_a_dashboard_message() -> None:
    text = ERRORS_TS.read_text()
    table = text.split("export const MESSAGES", 1)[1].split("};", 1)[0]
    mapped = set(re.findall(r"^\s+([a-z_]+):", table, re.M))
    missing = set(STATUS) - mapped
    assert not missing, f"web/src/api/errors.ts has no message for {sorted(missing)}"
