"""What the provider adapters are built from: base URLs and limits from the
environment, API keys from the environment (local stack, tests) or from SSM
SecureString parameters named by `<PROVIDER>_API_KEY_PARAM` (deployments)."""

from __future__ import annotations

import os
from collections.abc import Mapping

PREFIXES = ("VAST", "RUNPOD", "LAMBDA")
PLAIN = (
    "VAST_BASE_URL", "RUNPOD_BASE_URL", "LAMBDA_BASE_URL", "LAMBDA_SSH_KEY_NAME", "PROVIDERS",
    "PROVIDER_CONNECT_TIMEOUT_SECONDS", "PROVIDER_READ_TIMEOUT_SECONDS", "PROVIDER_MAX_ATTEMPTS",
    "PROVIDER_DISK_GB",
)


def adapter_settings(env: Mapping[str, str] | None = None) -> dict[str, str]:
    e = os.environ if env is None else env
    out = {k: e[k] for k in PLAIN if e.get(k)}
    for prefix in PREFIXES:
        if e.get(f"{prefix}_API_KEY"):
            out[f"{prefix}_API_KEY"] = e[f"{prefix}_API_KEY"]
        elif e.get(f"{prefix}_API_KEY_PARAM"):
            from gpurent.store import secrets

            out[f"{prefix}_API_KEY"] = secrets.get_secret(e[f"{prefix}_API_KEY_PARAM"])
    return out
