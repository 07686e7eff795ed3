"""Secrets read at run time: SSM SecureString parameters (Stripe keys, provider API keys,
OAuth client secrets) and Secrets Manager secrets (the cursor HMAC key).

A deployment passes only the parameter *names* (secret ARNs) in the environment (`config`
explains why); the values are fetched here through Powertools Parameters and cached for
`MAX_AGE` seconds (`SECRETS_MAX_AGE_SECONDS`, default 300), so a warm Lambda asks once per
five minutes and a rotated Stripe or provider key is picked up within that time, without a
cold start or a deploy. Values are never logged.

Powertools is imported on the first read, not at import: a function that never reads a
secret does not pay for it at cold start.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
from botocore.config import Config

from gpurent.config import settings

DEFAULT_MAX_AGE = 300

_lock = threading.Lock()
_providers: dict[str, Any] = {}
_plain: dict[str, str] = {}  # read_parameter's values


def max_age() -> int:
    return int(os.environ.get("SECRETS_MAX_AGE_SECONDS") or DEFAULT_MAX_AGE)


def _provider(kind: str) -> Any:
    """One Powertools provider per process and service, on our own client (endpoint, timeouts)."""
    found = _providers.get(kind)
    if found is not None:
        return found
    with _lock:
        if kind not in _providers:
            s = settings()
            config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=3, read_timeout=5)
            if kind == "ssm":
                from aws_lambda_powertools.utilities.parameters.ssm import SSMProvider

                client = boto3.client("ssm", region_name=s.region, endpoint_url=s.ssm_endpoint, config=config)
                _providers[kind] = SSMProvider(boto3_client=client)
            else:
                from aws_lambda_powertools.utilities.parameters.secrets import SecretsProvider

                client = boto3.client("secretsmanager", region_name=s.region,
                                      endpoint_url=os.environ.get("SECRETSMANAGER_ENDPOINT") or None, config=config)
                _providers[kind] = SecretsProvider(boto3_client=client)
        return _providers[kind]


def get_secret(param_name: str) -> str:
    """The decrypted value of the SSM SecureString `param_name` (cached for `max_age()` seconds).

    A failed read (missing parameter, access denied, throttling) raises; nothing is cached
    then, so the next call asks again.
    """
    return str(_provider("ssm").get(param_name, max_age=max_age(), decrypt=True))


def get_secret_value(secret_id: str) -> str:
    """The string value of the Secrets Manager secret `secret_id` (cached for `max_age()` seconds)."""
    return str(_provider("secretsmanager").get(secret_id, max_age=max_age()))


def get_secret_if_set(param_name: str) -> str | None:
    """Like `get_secret`, but a parameter that does not exist is None (a setting left
    unconfigured, e.g. a provider this deployment does not use), not an error. Other SSM
    errors (access denied, throttling) still propagate."""
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
    from botocore.exceptions import ClientError

    try:
        return get_secret(param_name)
    except GetParameterError as exc:
        # Powertools wraps the client's error; the original is the exception's context.
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return None
        raise


def reset_client() -> None:
    """Drop the providers and every cached value (tests switch mocks and endpoints)."""
    with _lock:
        _providers.clear()
        _plain.clear()


def read_parameter(name: str, region: str, endpoint: str | None) -> str:
    """A plain (String) parameter read while the settings are being built (`config`'s public URL
    fallback), so with its own client rather than the settings' provider; kept for the process
    (it names the deployment's own distribution, which does not change under a running function).
    A failed read raises and caches nothing."""
    cached = _plain.get(name)
    if cached is not None:
        return cached
    client = boto3.client("ssm", region_name=region, endpoint_url=endpoint,
                          config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=3,
                                        read_timeout=5))
    value = str(client.get_parameter(Name=name)["Parameter"].get("Value", ""))
    with _lock:
        _plain[name] = value
    return value
