"""The README runs itself: every fenced `sh` block of README.md, in order, in one
bash session (they share variables, as they do for a reader), against a fresh
`make dev` stack of its own, in an empty directory. Each block must succeed and
print what its section promises; no block but the sign-out may answer an error.

A new section's blocks are run too (only the generic checks apply until
`EXPECTED` names its heading)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local.process import LocalStackProcess, StackError
from tests.e2e.conftest import stack_env

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARK = "@@readme-block "

# Section heading → what its output must contain (JSON compared without whitespace).
EXPECTED: dict[str, list[str]] = {
    "1. Sign in": ['"ok":true,"created":true', '"email":"you@example.com"'],
    "2. An SSH key and an API token": ['"algorithm":"ssh-ed25519"', '"name":"laptop"'],
    "3. Fund the wallet": ['"totalCents":5000', '"type":"adjustment","amountCents":5000'],
    "4. The catalog": ['"listings":[{', '"matchedListing":{'],
    "5. Launch a pod": ['"status":"provisioning"', '"status":"running"'],
    "6. The test clock: an hour of metering in seconds": ['"secondsBilled":', '"type":"rental_charge"'],
    "7. Stripe, locally": ['"last4":"4242"', '"status":"succeeded"', '"enabled":true', '"type":"stripe_topup"'],
    "8. Stop the pod": ['"status":"stopping"', '"status":"stopped"', '"reservedCents":0'],
    "9. The `gpurent` command": ["cli-demo", "rtx-4090"],
    "10. Sign out": ['{"ok":true}', '"error":"unauthorized"'],
}
MAY_ANSWER_ERRORS = {"10. Sign out"}
ENVELOPE = re.compile(r'\{"error":"[a-z_]+","message"')  # an error answer (a rental's "error": null is not)


def blocks(text: str) -> list[tuple[str, str]]:
    """(the heading above it, the code) of every ```sh block, in order."""
    out: list[tuple[str, str]] = []
    heading = ""
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.strip() == "```sh":
            body = []
            for inner in lines:
                if inner.strip() == "```":
                    break
                body.append(inner)
            out.append((heading, "\n".join(body)))
    return out


@pytest.mark.parametrize("doc", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_the_docs_name_no_file_outside_the_repository(doc: Path) -> None:
    text = doc.read_text()
    assert "../shared" not in text and "](../" not in text
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        if not link.startswith("http"):
            assert (doc.parent / link).exists(), link


@pytest.fixture(scope="module")
def fresh_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A stack of its own: the README signs in as you@example.com and expects an empty world."""
    log = tmp_path_factory.mktemp("readme-stack") / "stderr.log"
    try:
        proc = LocalStackProcess.start(stack_env(), stderr_path=log)
    except StackError as exc:
        pytest.fail(str(exc))
    yield proc.url
    code, _, alive = proc.stop()
    assert code == 0 and not alive, proc.tail()


def test_every_shell_block_of_the_readme_runs(fresh_stack: str, tmp_path: Path) -> None:
    found = blocks(README.read_text())
    assert [h for h, _ in found if h in EXPECTED] == list(EXPECTED), "a walkthrough section lost its block"
    script = ["set -eo pipefail"]
    for n, (_, code) in enumerate(found):
        script += [f"echo '{MARK}{n}'", code, "echo"]
    (tmp_path / "readme.sh").write_text("\n".join(script) + "\n")
    env = {**os.environ, "API": fresh_stack, "HOME": str(tmp_path), "GPURENT_CONFIG_DIR": str(tmp_path / "cfg"),
           "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}"}
    env.pop("GPURENT_API", None)
    env.pop("GPURENT_TOKEN", None)
    work = tmp_path / "work"
    work.mkdir()
    run = subprocess.run(["bash", str(tmp_path / "readme.sh")], cwd=work, env=env, capture_output=True,
                         text=True, timeout=600, stdin=subprocess.DEVNULL)
    outputs = run.stdout.split(MARK)[1:]
    last = len(outputs) - 1
    assert run.returncode == 0, (f"block {last} ({found[last][0]!r}) failed with {run.returncode}:\n"
                                 f"{found[last][1]}\n--- stdout\n{outputs[-1] if outputs else ''}\n"
                                 f"--- stderr\n{run.stderr[-3000:]}")
    assert len(outputs) == len(found)
    for (heading, _), output in zip(found, outputs, strict=True):
        compact = re.sub(r"\s+", "", output)
        for expected in EXPECTED.get(heading, []):
            assert expected.replace(" ", "") in compact, (heading, expected, output[-3000:])
        if heading not in MAY_ANSWER_ERRORS:
            assert not ENVELOPE.search(compact), (heading, output[-3000:])
    assert (work / "ledger.csv").read_text().count("\n") >= 3  # the CLI's accounting export
