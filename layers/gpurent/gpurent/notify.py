"""Email to users. SES in a deployment; in the local stage, printed to the
console and kept in a mailbox that `GET /dev/mailbox` lists."""

from __future__ import annotations

import sys
import threading
from collections import deque
from typing import Any

from gpurent import clock
from gpurent.config import settings

MAILBOX_SIZE = 1000  # the newest; a local stack left running for days must not grow
_mailbox: deque[dict[str, Any]] = deque(maxlen=MAILBOX_SIZE)
_lock = threading.Lock()


def send(to: str, subject: str, body: str) -> None:
    s = settings()
    if s.mail_mode == "console":
        message = {"to": to, "subject": subject, "body": body, "sentAt": clock.now_iso()}
        with _lock:
            _mailbox.append(message)
        print(f"[mail] to={to} subject={subject!r}\n{body}\n", file=sys.stderr, flush=True)
        return
    from gpurent.store import ses

    ses.send_email(s.mail_from, to, subject, body)


def mailbox() -> list[dict[str, Any]]:
    """Newest first (local stage only)."""
    with _lock:
        return list(reversed(_mailbox))


def clear_mailbox() -> None:
    with _lock:
        _mailbox.clear()
