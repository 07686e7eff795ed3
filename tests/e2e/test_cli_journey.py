"""The `gpurent` command, run as a real subprocess (the installed console script)
against the local stack of `make dev`: the README journey from sign-in to the
ledger CSV, plus the exit codes and verbatim messages of API errors.

Funding goes through the API directly, as the README does: the local admin
(admin@localhost) signs in with a mailed code and posts an adjustment."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

SCRIPT = Path(sys.executable).with_name("gpurent")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "gpurent_cli"]
# A valid Ed25519 public key, used when ssh-keygen is not installed.
FALLBACK_PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG9KjmvqRw9b0BQe0rkHcC3cqGNPGRs0nHM0Q3W6VNqd cli-e2e"


def new_email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


@pytest.fixture
def http(stack: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack, timeout=30) as client:
        yield client


class Gpurent:
    """Runs `gpurent` with its own config directory against the stack."""

    def __init__(self, stack: str, config: Path, extra_env: dict[str, str] | None = None) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GPURENT_")}
        self.env.update({"GPURENT_API": stack, "GPURENT_CONFIG_DIR": str(config), "PYTHONUNBUFFERED": "1"})
        self.env.update(extra_env or {})
        self.config = config

    def __call__(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*COMMAND, *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                              env={**self.env, **(env or {})}, check=False)

    def popen(self, *args: str, stdin: int = subprocess.PIPE) -> subprocess.Popen[str]:
        return subprocess.Popen([*COMMAND, *args], stdin=stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env)

    def json(self, *args: str) -> Any:
        r = self("--json", *args)
        assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
        return json.loads(r.stdout)

    def sid(self) -> str:
        data = json.loads((self.config / "credentials.json").read_text())
        return str(next(iter(data["credentials"].values()))["sid"])


def mailed_code(http: httpx.Client, email: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in http.get("/dev/mailbox").json():  # newest first
            if item["to"] == email and (m := re.search(r"\b(\d{6})\b", item["body"])):
                return m.group(1)
        time.sleep(0.2)
    raise AssertionError(f"no code mailed to {email}")


def post_retrying(http: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    """An unauthenticated POST that waits out 429s (other tests share admin@localhost's one code per 30 s)."""
    for _ in range(4):
        r = http.post(path, json=body)
        if r.status_code != 429:
            return r
        time.sleep(min(float(r.headers.get("retry-after", "5")), 61))
    return r


def admin_session(http: httpx.Client) -> dict[str, str]:
    r = post_retrying(http, "/v1/auth/request-code", {"email": "admin@localhost"})
    assert r.status_code == 200, r.text
    r = post_retrying(http, "/v1/auth/verify-code", {"email": "admin@localhost",
                                                     "code": mailed_code(http, "admin@localhost")})
    assert r.status_code == 200, r.text
    return {"cookie": f"sid={r.cookies['sid']}"}


def fund(http: httpx.Client, email: str, cents: int) -> None:
    r = http.post("/v1/admin/adjustments", headers={**admin_session(http), "idempotency-key": f"cli-e2e-{email}"},
                  json={"email": email, "amountCents": cents, "reason": "cli e2e credit"})
    assert r.status_code == 200, r.text


def advance(http: httpx.Client, seconds: float) -> None:
    r = http.post("/dev/clock/advance", json={"seconds": seconds})
    assert r.status_code == 200, r.text


def public_key(tmp_path: Path) -> Path:
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        pub = tmp_path / "cli_key.pub"
        pub.write_text(FALLBACK_PUB + "\n")
        return pub
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "cli-e2e", "-f", str(tmp_path / "cli_key")],
                   check=True, capture_output=True)
    return tmp_path / "cli_key.pub"


def login(g: Gpurent, http: httpx.Client, email: str) -> subprocess.CompletedProcess[str]:
    """`gpurent login EMAIL`, typing the mailed code at its prompt."""
    proc = g.popen("login", email)
    try:
        code = mailed_code(http, email)
        out, err = proc.communicate(code + "\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def until(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_cli_journey(stack: str, http: httpx.Client, tmp_path: Path) -> None:
    g = Gpurent(stack, tmp_path / "cfg")
    email = new_email("cli")

    # Sign in: the code is typed at the prompt (stdin); the session lands in a 0600 file.
    r = login(g, http, email)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "Code:" in r.stderr and f"Signed in to {stack} as {email}" in r.stderr
    creds = tmp_path / "cfg" / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    me = g.json("whoami")
    assert me["user"]["email"] == email
    assert email in g("whoami").stdout

    # Nothing yet; then the local admin credits $50.
    assert g("balance").stdout.splitlines()[0].split() == ["Available", "$0.00"]
    fund(http, email, 5000)
    assert g("balance").stdout.splitlines()[:3] == ["Available  $50.00", "Reserved   $0.00", "Total      $50.00"]
    assert g.json("balance")["availableCents"] == 5000

    # SSH keys.
    pub = public_key(tmp_path)
    r = g("ssh-keys", "add", str(pub))
    assert r.returncode == 0, r.stderr
    keys = g.json("ssh-keys", "ls")["keys"]
    assert len(keys) == 1 and keys[0]["name"] == "cli-e2e"
    assert keys[0]["fingerprint"] in g("ssh-keys", "ls").stdout
    r = g("ssh-keys", "add", str(pub))  # the same key again: the API's refusal, verbatim
    assert r.returncode == 1 and "duplicate_key" in r.stderr

    # A bad request: the API's message verbatim, exit 1; an unknown rental: exit 4.
    sid = {"cookie": f"sid={g.sid()}"}
    expected = http.post("/v1/rentals/preview", headers=sid, json={"familyId": "rtx-4090", "gpuCount": 3}).json()
    r = g("launch", "rtx-4090", "-n", "3")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"error: {expected['message']} [{expected['error']}]" in r.stderr
    assert r.stdout == ""
    r = g("--json", "launch", "rtx-4090", "-n", "3")
    assert r.returncode == 1 and json.loads(r.stderr) == expected
    r = g("show", "rent_00000000000000000000000000")
    assert r.returncode == 4 and "No rental with that id" in r.stderr

    # Catalog and preview.
    listings = g.json("catalog", "--model", "RTX_4090", "-n", "1")["listings"]
    prices = [x["pricePerHourCents"] for x in listings]
    assert listings and prices == sorted(prices)
    table = g("catalog", "--model", "RTX_4090", "-n", "1", "--limit", "3").stdout.splitlines()
    assert table[0].split()[:5] == ["MODEL", "FAMILY", "GPUS", "VRAM", "PRICE"] and len(table) == 4
    preview = g.json("preview", "rtx-4090")
    assert preview["pricePerHourCents"] == prices[0]

    # Launch and wait: the simulator boots in SIM_BOOT_SECONDS of test-clock time, so move the clock
    # once the rental exists (the CLI keeps polling every 2 s either way).
    proc = g.popen("launch", "rtx-4090", "--name", "cli-e2e", "--auto-stop", "2", "--wait", "--timeout", "90",
                   stdin=subprocess.DEVNULL)
    rentals: list[dict[str, Any]] = []

    def listed() -> bool:
        rentals[:] = http.get("/v1/rentals", headers=sid).json()["rentals"]
        return bool(rentals)

    until(listed)
    rid = rentals[0]["id"]
    advance(http, 30)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (out, err)
    got = http.get(f"/v1/rentals/{rid}", headers=sid).json()
    assert got["status"] == "running"
    assert out.strip() == f"ssh -p {got['port']} root@{got['host']}"
    assert rid in err and "running" in err

    # `gpurent ssh` execs ssh with the pod's address (a stand-in ssh on PATH prints its arguments).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ssh"
    fake.write_text("#!/bin/sh\necho \"ssh $*\"\n")
    fake.chmod(0o755)
    r = g("ssh", rid, "--", "-o", "BatchMode=yes", env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"ssh -p {got['port']} root@{got['host']} -o BatchMode=yes"

    assert rid in [x["id"] for x in g.json("ls", "--status", "running")["rentals"]]
    assert rid in g("ls").stdout

    # Ten minutes of test clock, then the meter.
    advance(http, 600)
    shown = g.json("show", rid, "--metered")
    assert shown["rental"]["id"] == rid and shown["meter"]["secondsBilled"] >= 600
    text = g("show", rid, "--metered").stdout
    assert re.search(r"^Seconds billed\s+\d{3,}$", text, re.M), text
    assert re.search(r"^Current charge\s+\$\d+\.\d\d$", text, re.M), text

    # Stop; stopping twice is the API's 409, verbatim, exit 1.
    r = g("stop", rid)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{rid} stopping: charged $")
    again = http.post(f"/v1/rentals/{rid}/stop", headers=sid).json()
    r = g("stop", rid)
    assert r.returncode == 1 and again["message"] in r.stderr
    advance(http, 5)  # the reconciler confirms the termination (it runs at least every minute)
    if g.json("show", rid)["status"] == "stopping":
        advance(http, 60)
    assert g.json("show", rid)["status"] == "stopped"

    # The ledger as CSV: the credit and the rental's charges, chaining to the balance.
    r = g("ledger", "--csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert rows[-1]["type"] == "adjustment" and rows[-1]["amount"] == "50.00"
    charges = [row for row in rows if row["type"] == "rental_charge"]
    assert charges and all(row["rentalId"] == rid for row in charges)
    for newer, older in itertools.pairwise(rows):
        assert int(newer["balanceAfterCents"]) == int(newer["amountCents"]) + int(older["balanceAfterCents"])
    balance = g.json("balance")
    assert int(rows[0]["balanceAfterCents"]) == balance["totalCents"]
    assert g.json("ledger", "--type", "adjustment")["entries"][0]["amountCents"] == 5000

    # Remove the key.
    assert g("ssh-keys", "rm", keys[0]["id"]).returncode == 0
    assert g.json("ssh-keys", "ls")["keys"] == []
    assert g("ssh-keys", "rm", keys[0]["id"]).returncode == 4

    # A personal API token works from another config directory; a bad one is the API's 401 (exit 3).
    token = http.post("/v1/auth/tokens", headers=sid, json={"name": "cli-e2e"}).json()["token"]
    g2 = Gpurent(stack, tmp_path / "cfg2")
    r = g2("login", "--token", "-", stdin=token + "\n")
    assert r.returncode == 0, r.stderr
    assert g2.json("whoami")["user"]["email"] == email
    r = g2("whoami", env={"GPURENT_TOKEN": "gpr_not_a_real_token"})
    assert r.returncode == 3 and "Not signed in" in r.stderr

    # Sessions: the CLI's own is listed as current; a token may not look (the API's 403, exit 1);
    # signing out everywhere else with --tokens ends the other session and the token, not this one.
    assert post_retrying(http, "/v1/auth/request-code", {"email": email}).status_code == 200
    signed_in = post_retrying(http, "/v1/auth/verify-code", {"email": email, "code": mailed_code(http, email)})
    assert signed_in.status_code == 200, signed_in.text  # a second session, from a script
    sessions = g.json("sessions")["sessions"]
    assert len(sessions) == 2 and [s["client"] for s in sessions if s["current"]] == ["gpurent-cli"]
    r = g2("sessions")
    assert r.returncode == 1 and "[forbidden]" in r.stderr
    r = g("sessions", "revoke-others", "--tokens")
    assert r.returncode == 0 and "Signed out 1 other session(s) and revoked 1 API token(s)" in r.stdout, r.stderr
    assert g2("whoami").returncode == 3
    assert [s["current"] for s in g.json("sessions")["sessions"]] == [True]

    # Sign out: the session is gone on the server too.
    assert g("logout").returncode == 0
    assert http.get("/v1/auth/me", headers=sid).status_code == 401
    r = g("balance")
    assert r.returncode == 3 and "gpurent login" in r.stderr


def test_cli_launch_wait_reports_a_failed_launch(stack: str, http: httpx.Client, tmp_path: Path) -> None:
    """An unfunded account: the launch is refused by the API (403), exit 1, its message verbatim."""
    g = Gpurent(stack, tmp_path / "cfg")
    email = new_email("cli-poor")
    assert login(g, http, email).returncode == 0
    r = g("launch", "rtx-4090", "--wait")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Available balance is below the 1-hour reserve [insufficient_balance]" in r.stderr
