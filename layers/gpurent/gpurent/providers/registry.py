"""Build the provider adapters from settings (a mapping of names to values).

Keys are matched case-insensitively, so both the environment (``VAST_API_KEY``) and a
settings model dumped to a dict (``vast_api_key``) work. A value may be a plain string or
anything with ``get_secret_value()`` (pydantic's ``SecretStr``).

==================================  ===================================================
key                                 meaning
==================================  ===================================================
VAST_API_KEY / VAST_BASE_URL        vast.ai (default base ``https://console.vast.ai``)
RUNPOD_API_KEY / RUNPOD_BASE_URL    RunPod (default base ``https://api.runpod.io``)
LAMBDA_API_KEY / LAMBDA_BASE_URL    Lambda Cloud (default ``https://cloud.lambda.ai/api/v1``)
LAMBDA_SSH_KEY_NAME                 the platform key registered at Lambda (required)
PROVIDERS                           optional comma list limiting which are built
PROVIDER_CONNECT_TIMEOUT_SECONDS    default 3
PROVIDER_READ_TIMEOUT_SECONDS       default 10
PROVIDER_MAX_ATTEMPTS               default 4
PROVIDER_DISK_GB                    disk the offer prices include, default 50
==================================  ===================================================

A provider without an API key is not built (and that is logged), so a stage can run with
any subset of providers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import httpx

from gpurent.providers import lambdacloud, runpod, vast
from gpurent.providers.base import ProviderAdapter
from gpurent.providers.http import HttpPolicy, Sleep

log = logging.getLogger("gpurent.providers")

PROVIDER_CODES = ("vast", "runpod", "lambda")


def _text(value: object) -> str | None:
    secret = getattr(value, "get_secret_value", None)
    if callable(secret):
        value = secret()
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _lookup(settings: Mapping[str, object]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in settings.items():
        text = _text(v)
        if text is not None:
            out[str(k).upper()] = text
    return out


def build_adapters(
    settings: Mapping[str, object],
    *,
    sleep: Sleep = asyncio.sleep,
    client: httpx.AsyncClient | None = None,
) -> dict[str, ProviderAdapter]:
    s = _lookup(settings)
    policy = HttpPolicy(
        connect_timeout=float(s.get("PROVIDER_CONNECT_TIMEOUT_SECONDS", 3.0)),
        read_timeout=float(s.get("PROVIDER_READ_TIMEOUT_SECONDS", 10.0)),
        max_attempts=int(s.get("PROVIDER_MAX_ATTEMPTS", 4)),
    )
    disk_gb = int(s.get("PROVIDER_DISK_GB", 50))
    wanted = {p.strip().lower() for p in s.get("PROVIDERS", ",".join(PROVIDER_CODES)).split(",") if p.strip()}
    unknown = wanted - set(PROVIDER_CODES)
    if unknown:
        raise ValueError(f"unknown providers in PROVIDERS: {sorted(unknown)}")

    adapters: dict[str, ProviderAdapter] = {}
    for code in PROVIDER_CODES:
        if code not in wanted:
            continue
        key = s.get(f"{code.upper()}_API_KEY")
        if key is None:
            log.info("provider %s has no API key configured; not built", code)
            continue
        base = s.get(f"{code.upper()}_BASE_URL")
        if code == "vast":
            adapters[code] = vast.VastAdapter(key, base or vast.DEFAULT_BASE_URL, disk_gb=disk_gb,
                                              policy=policy, sleep=sleep, client=client)
        elif code == "runpod":
            adapters[code] = runpod.RunPodAdapter(key, base or runpod.DEFAULT_BASE_URL, disk_gb=disk_gb,
                                                  policy=policy, sleep=sleep, client=client)
        else:
            ssh_key_name = s.get("LAMBDA_SSH_KEY_NAME")
            if ssh_key_name is None:
                raise ValueError("LAMBDA_API_KEY is set but LAMBDA_SSH_KEY_NAME is not")
            adapters[code] = lambdacloud.LambdaAdapter(key, ssh_key_name, base or lambdacloud.DEFAULT_BASE_URL,
                                                       policy=policy, sleep=sleep, client=client)
    return adapters
