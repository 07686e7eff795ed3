"""Where the CLI keeps its credentials: one JSON file, mode 0600, in the user's
config directory (`$GPURENT_CONFIG_DIR`, else `$XDG_CONFIG_HOME/gpurent`, else
`~/.config/gpurent`).

Credentials are kept per API base URL, so signing in to a second deployment
does not sign you out of the first:

    {"defaultApi": "https://…",
     "credentials": {"http://127.0.0.1:3000": {"kind": "session", "sid": "…", "email": "…"}}}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_API = "http://127.0.0.1:3000"
FILE_NAME = "credentials.json"


@dataclass(frozen=True)
class Credential:
    kind: str  # "session" (a `sid` cookie) or "token" (a personal API token, sent as a Bearer token)
    secret: str
    email: str | None = None

    def headers(self) -> dict[str, str]:
        if self.kind == "token":
            return {"authorization": f"Bearer {self.secret}"}
        return {"cookie": f"sid={self.secret}"}

    def to_json(self) -> dict[str, Any]:
        key = "token" if self.kind == "token" else "sid"
        return {"kind": self.kind, key: self.secret, "email": self.email}

    @classmethod
    def from_json(cls, raw: object) -> Credential | None:
        if not isinstance(raw, dict):
            return None
        kind = raw.get("kind")
        secret = raw.get("token") if kind == "token" else raw.get("sid")
        email = raw.get("email")
        if kind not in ("session", "token") or not isinstance(secret, str) or not secret:
            return None
        return cls(str(kind), secret, email if isinstance(email, str) else None)


def config_dir() -> Path:
    override = os.environ.get("GPURENT_CONFIG_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "gpurent"


def normalise_api(url: str) -> str:
    return url.strip().rstrip("/")


class Store:
    """The credentials file. Every write replaces the whole file atomically, mode 0600."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or config_dir()
        self.path = self.directory / FILE_NAME

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=2, sort_keys=True)
                fh.write("\n")
            os.chmod(tmp, 0o600)  # the umask may have narrowed it; never widened
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def default_api(self) -> str | None:
        value = self._read().get("defaultApi")
        return value if isinstance(value, str) and value else None

    def get(self, api: str) -> Credential | None:
        creds = self._read().get("credentials")
        if not isinstance(creds, dict):
            return None
        return Credential.from_json(creds.get(normalise_api(api)))

    def put(self, api: str, credential: Credential, *, make_default: bool) -> None:
        data = self._read()
        creds = data.get("credentials")
        if not isinstance(creds, dict):
            creds = {}
        creds[normalise_api(api)] = credential.to_json()
        data["credentials"] = creds
        if make_default:
            data["defaultApi"] = normalise_api(api)
        self._write(data)

    def remove(self, api: str) -> bool:
        data = self._read()
        creds = data.get("credentials")
        if not isinstance(creds, dict) or normalise_api(api) not in creds:
            return False
        del creds[normalise_api(api)]
        if data.get("defaultApi") == normalise_api(api):
            data.pop("defaultApi")
        self._write(data)
        return True


def resolve_api(flag: str | None, store: Store) -> str:
    """`--api`, else `$GPURENT_API`, else the deployment last signed in to with `--api`, else the local stack."""
    for candidate in (flag, os.environ.get("GPURENT_API"), store.default_api()):
        if candidate:
            return normalise_api(candidate)
    return DEFAULT_API
