"""The local stack (`make dev`) as a subprocess, started once per test session.

It is started exactly as `make dev` starts it: `python -m infra.local.dev` from
the repository root, on a free loopback port given in PORT, with no
DYNAMODB_ENDPOINT so it embeds moto. Teardown sends SIGTERM and requires a
clean exit within 15 s.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from infra.local import template
from tests.conftest import TEST_ENV

ROOT = Path(__file__).resolve().parents[2]
READY = "gpurent local stack listening on "
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack_env(port: int) -> dict[str, str]:
    """This process's environment minus anything that would point the stack elsewhere."""
    env = dict(os.environ)
    for name in ("DYNAMODB_ENDPOINT", *TEST_ENV, *template.TABLE_ENV.values()):
        env.pop(name, None)
    env["PORT"] = str(port)
    env["PYTHONUNBUFFERED"] = "1"
    # The contract fuzz run sends ~1,000 requests a minute as one user (fresh tokens, each in its own
    # per-credential window); the per-user windows are tested in tests/integration/test_auth_accounts.py.
    env["USER_RATE_LIMIT_PER_MINUTE"] = env["USER_RATE_LIMIT_PER_HOUR"] = "100000000"
    return env


def _pump(stream: IO[str], lines: queue.Queue[str | None], log: list[str]) -> None:
    """Drain the child's stdout for its whole life (a full pipe would block it)."""
    for line in stream:
        log.append(line)
        lines.put(line)
    lines.put(None)


def _tail(path: Path, stdout: list[str], n: int = 40) -> str:
    err = path.read_text(errors="replace").splitlines()[-n:] if path.exists() else []
    return "stdout:\n" + "".join(stdout[-n:]) + "\nstderr:\n" + "\n".join(err)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    stderr_path = tmp_path_factory.mktemp("local-stack") / "stderr.log"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infra.local.dev"],
            cwd=ROOT,
            env=stack_env(port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    stdout_log: list[str] = []
    threading.Thread(target=_pump, args=(proc.stdout, lines, stdout_log), daemon=True).start()

    url = None
    deadline = time.monotonic() + START_TIMEOUT
    while url is None:
        remaining = deadline - time.monotonic()
        try:
            line = lines.get(timeout=max(remaining, 0.01)) if remaining > 0 else None
        except queue.Empty:
            line = None
        if line is None:  # timed out, or the child closed stdout (it died)
            proc.kill()
            proc.wait(10)
            pytest.fail(f"local stack did not start within {START_TIMEOUT:.0f} s "
                        f"(exit code {proc.returncode})\n{_tail(stderr_path, stdout_log)}")
        if READY in line:
            url = line.split(READY, 1)[1].strip()
    assert url == f"http://127.0.0.1:{port}", url

    yield url

    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        pytest.fail(f"local stack did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM\n"
                    f"{_tail(stderr_path, stdout_log)}")
    assert code == 0, f"local stack exited with {code} on SIGTERM\n{_tail(stderr_path, stdout_log)}"
    assert any("stopping" in line for line in stdout_log), stdout_log
