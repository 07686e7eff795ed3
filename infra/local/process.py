"""The local stack as a child process, started exactly as `make dev` starts it
(`python -m infra.local.dev` from the repository root, PORT given): used by the
e2e tier, the README runner and the bench scripts.

`LocalStackProcess.start()` waits for the ready line and keeps draining the
child's stdout (a full pipe would block it); `stop()` sends SIGTERM and reports
how long the stack took to exit.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]
READY = "gpurent local stack listening on "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (Linux /proc; 0 where unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc; 0 where unknown)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(c) for t in Path(f"/proc/{p}/task").iterdir()
                    for c in (t / "children").read_text().split()]
        except OSError:
            kids = []
        out.extend(kids)
        todo.extend(kids)
    return out


class StackError(RuntimeError):
    pass


@dataclass
class LocalStackProcess:
    proc: subprocess.Popen[str]
    url: str
    stderr_path: Path
    stdout: list[str] = field(default_factory=list)
    ready_seconds: float = 0.0

    @classmethod
    def start(cls, env: dict[str, str] | None = None, *, port: int | None = None, timeout: float = 120.0,
              stderr_path: Path | None = None) -> LocalStackProcess:
        """Start the stack with this environment (default: ours, without DYNAMODB_ENDPOINT) on a
        free port, and wait for its ready line. A free port taken by someone else before the
        stack bound it (parallel test workers) is retried with another."""
        attempts = 1 if port else 3
        for attempt in range(attempts):
            try:
                return cls._start(env, port=port or free_port(), timeout=timeout, stderr_path=stderr_path)
            except StackError as exc:
                if attempt == attempts - 1 or "Address already in use" not in str(exc):
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _start(cls, env: dict[str, str] | None, *, port: int, timeout: float,
               stderr_path: Path | None) -> LocalStackProcess:
        child_env = dict(os.environ if env is None else env)
        if env is None:
            child_env.pop("DYNAMODB_ENDPOINT", None)
        child_env.update({"PORT": str(port), "PYTHONUNBUFFERED": "1"})
        if stderr_path is None:
            stderr_path = Path(tempfile.gettempdir()) / f"gpurent-stack-{port}.log"
        began = time.monotonic()
        with stderr_path.open("w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "infra.local.dev"], cwd=ROOT, env=child_env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        stack = cls(proc, "", stderr_path)
        threading.Thread(target=_pump, args=(proc.stdout, lines, stack.stdout), daemon=True).start()
        deadline = began + timeout
        while not stack.url:
            remaining = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(remaining, 0.01)) if remaining > 0 else None
            except queue.Empty:
                line = None
            if line is None:  # timed out, or the child closed stdout (it died)
                proc.kill()
                proc.wait(10)
                raise StackError(f"the local stack did not start within {timeout:.0f} s (exit code "
                                 f"{proc.returncode})\n{stack.tail()}")
            if READY in line:
                stack.url = line.split(READY, 1)[1].strip()
        stack.ready_seconds = time.monotonic() - began
        return stack

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> dict[str, int]:
        """Resident bytes of the stack process and of its children (DynamoDB Local's JVM)."""
        kids = descendants(self.pid)
        return {"stack": rss_bytes(self.pid), "children": sum(rss_bytes(k) for k in kids)}

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by the stack process and by its children."""
        return {"stack": cpu_seconds(self.pid), "children": sum(cpu_seconds(k) for k in descendants(self.pid))}

    def tail(self, n: int = 40) -> str:
        err = self.stderr_path.read_text(errors="replace").splitlines()[-n:] if self.stderr_path.exists() else []
        return "stdout:\n" + "".join(self.stdout[-n:]) + "\nstderr:\n" + "\n".join(err)

    def stop(self, timeout: float = 15.0) -> tuple[int, float, list[int]]:
        """SIGTERM; returns (exit code, seconds until the stack and its children were gone, child pids
        still alive 10 s after the stack exited)."""
        kids = descendants(self.pid)
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            for k in descendants(self.pid) or kids:
                try:
                    os.kill(k, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise StackError(f"the local stack did not stop within {timeout:.0f} s of SIGTERM\n{self.tail()}") \
                from None
        deadline = time.monotonic() + 10
        alive = [k for k in kids if _alive(k)]
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = [k for k in kids if _alive(k)]
        return code, time.monotonic() - began, alive


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _pump(stream: IO[str], lines: queue.Queue[str | None], log: list[str]) -> None:
    for line in stream:
        log.append(line)
        if len(log) > 2000:
            del log[:1000]
        lines.put(line)
    lines.put(None)
