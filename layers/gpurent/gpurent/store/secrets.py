"""Secrets kept as SSM SecureString parameters (OAuth client secrets, …).

A deployment passes only the parameter *names* in the environment
(`config` explains why); the values are fetched here on first use, decrypted,
and kept for the life of the process, so a warm Lambda asks SSM once. Values
are never logged.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from gpurent.config import settings

if TYPE_CHECKING:
    from mypy_boto3_ssm.client import SSMClient
else:
    SSMClient = Any

_lock = threading.Lock()
_client: SSMClient | None = None
_cache: dict[str, str] = {}


def _ssm() -> SSMClient:
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                s = settings()
                _client = boto3.client(
                    "ssm",
                    region_name=s.region,
                    endpoint_url=s.ssm_endpoint,
                    config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=3,
                                  read_timeout=5),
                )
    return _client


def get_secret(param_name: str) -> str:
    """The decrypted value of the SecureString `param_name`, cached per process.

    SSM's errors (`ParameterNotFound`, access denied, throttling) propagate
    as `botocore` exceptions; nothing is cached then, so the next call retries.
    """
    cached = _cache.get(param_name)
    if cached is not None:
        return cached
    r = _ssm().get_parameter(Name=param_name, WithDecryption=True)
    value = str(r["Parameter"].get("Value", ""))
    with _lock:
        _cache[param_name] = value
    return value


def reset_client() -> None:
    """Drop the cached client and every cached value (tests switch mocks and endpoints)."""
    global _client
    with _lock:
        _client = None
        _cache.clear()


def read_parameter(name: str, region: str, endpoint: str | None) -> str:
    """A plain (String) parameter read while the settings are being built (`config`'s public URL
    fallback), so with its own client rather than the settings'; cached per process like secrets."""
    cached = _cache.get(name)
    if cached is not None:
        return cached
    client = boto3.client("ssm", region_name=region, endpoint_url=endpoint,
                          config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=3,
                                        read_timeout=5))
    value = str(client.get_parameter(Name=name)["Parameter"].get("Value", ""))
    with _lock:
        _cache[name] = value
    return value
