"""Which grants of template.yaml did a test run use? Reads the files `GPURENT_IAM_USAGE`
wrote (one per run: the integration tier, the crash points, …) and prints, per function,
every grant (action on resource) no recorded call needed.

    GPURENT_IAM_USAGE=/tmp/int.json .venv/bin/python -m pytest tests/integration
    .venv/bin/python -m tests.iam.usage /tmp/int.json [/tmp/crash.json …]

Table names, queue URLs and secret ARNs differ from test to test, so a recorded resource
is matched by its shape (`table/<anything>-money`), not its exact name.
"""

from __future__ import annotations

import json
import re
import sys

from tests.iam.policy import deployed, wildcard

# The tests name tables `<prefix>-identity`, `<prefix>-money`, …: a grant on the money table
# is matched by `…-money` whatever the prefix.
_TABLE = re.compile(r"(table/)[^/]*?-(identity|money|ledger|catalog)\b")


def _shape(arn: str) -> str:
    return _TABLE.sub(r"\1*-\2", arn)


def main(paths: list[str]) -> None:
    used: dict[str, set[tuple[str, str]]] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for row in json.load(f):
                used.setdefault(row["function"], set()).add((row["action"], _shape(row["resource"])))
    stack = deployed()
    env = {"IDENTITY_TABLE": "x-identity", "MONEY_TABLE": "x-money", "LEDGER_TABLE": "x-ledger",
           "CATALOG_TABLE": "x-catalog", "MAIL_FROM": "no-reply@gpurent.test"}
    for fn in stack.functions():
        unused = []
        for where, action, _, resource in stack.grants(fn, env):
            shaped = _shape(resource)
            if not any(wildcard(action, a, True) and (wildcard(shaped, r) or wildcard(r, shaped))
                       for a, r in used.get(fn, set())):
                unused.append(f"{action} on {resource} ({where})")
        print(f"{fn}: {len(used.get(fn, set()))} distinct requests seen; {len(unused)} grants unused")
        for u in unused:
            print(f"  {u}")


if __name__ == "__main__":
    main(sys.argv[1:])
