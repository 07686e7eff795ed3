"""The providers, and the process's adapters built from their settings.

A provider is one line of `PROVIDERS` naming its adapter module; that module has a
``SPEC`` (`base.ProviderSpec`: its code, its own settings model, how to build it) and,
beside it, its names for families and regions (``<module>_names.py``). Adapter modules
(and httpx) are imported only when an adapter is built, so a function that never
calls a provider does not pay for them at cold start.

Settings are a mapping of names to values, matched case-insensitively (the environment,
``VAST_API_KEY``, or a settings model dumped to a dict, ``vast_api_key``); a value may be
a plain string or anything with ``get_secret_value()`` (pydantic's ``SecretStr``):

==================================  ===================================================
key                                 meaning
==================================  ===================================================
<CODE>_API_KEY                      the provider's API key; without one it is not built
<CODE>_BASE_URL                     its API base (default: the provider's own)
<CODE>_<FIELD>                      a field of its own settings model, e.g.
                                    LAMBDA_SSH_KEY_NAME (required by Lambda)
PROVIDERS, PROVIDER_*               shared settings: `gpurent.config.ProviderSettings`
==================================  ===================================================

In a deployment the API keys are SSM SecureString parameters named by
``<CODE>_API_KEY_PARAM`` (`env_settings` reads them).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpurent.config import load_provider_settings
from gpurent.providers.base import ProviderAdapter, ProviderError

if TYPE_CHECKING:
    import httpx

    from gpurent.providers.http import Sleep
    from gpurent.providers.spec import ProviderSpec

log = logging.getLogger("gpurent.providers")


@dataclass(frozen=True)
class Provider:
    code: str  # listings' `provider`, and the prefix of its settings (`VAST_…`)
    module: str  # its adapter module (which has `SPEC`), imported only to build the adapter
    provision_seconds: int  # typical launch → running, quoted by the launch preview


# Adding a provider: its adapter module (+ its `_names` module), a simulator, and one line here.
PROVIDERS: tuple[Provider, ...] = (
    Provider("vast", "gpurent.providers.vast", provision_seconds=60),
    Provider("runpod", "gpurent.providers.runpod", provision_seconds=45),
    Provider("lambda", "gpurent.providers.lambdacloud", provision_seconds=60),
)


def codes() -> tuple[str, ...]:
    return tuple(p.code for p in PROVIDERS)


def provider(code: str) -> Provider | None:
    return next((p for p in PROVIDERS if p.code == code), None)


def provision_seconds(code: str) -> int:
    found = provider(code)
    return found.provision_seconds if found else 60


def spec(code: str) -> ProviderSpec[Any]:
    """The provider's `SPEC` (imports its adapter module)."""
    from gpurent.providers.spec import ProviderSpec

    found = provider(code)
    if found is None:
        raise KeyError(code)
    loaded = importlib.import_module(found.module).SPEC
    if not isinstance(loaded, ProviderSpec) or loaded.code != code:
        raise TypeError(f"{found.module}.SPEC is not the spec of provider {code}")
    return loaded


# ---------------------------------------------------------------- settings → adapters

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
    sleep: Sleep | None = None,
    client: httpx.AsyncClient | None = None,
) -> dict[str, ProviderAdapter]:
    """An adapter for every provider that has an API key (and is in `PROVIDERS` when given).

    Raises ValueError (a pydantic ValidationError among them) when a setting is wrong.
    """
    import asyncio  # here, not at import: the catalog function reads `provision_seconds` only

    from gpurent.providers.http import HttpPolicy
    from gpurent.providers.spec import BuildContext

    s = _lookup(settings)
    shared = load_provider_settings(s)
    known = codes()
    wanted = set(known) if shared.providers is None else set(shared.providers)
    unknown = wanted - set(known)
    if unknown:
        raise ValueError(f"unknown providers in PROVIDERS: {sorted(unknown)}")
    ctx = BuildContext(
        policy=HttpPolicy(connect_timeout=shared.connect_timeout_seconds, read_timeout=shared.read_timeout_seconds,
                          max_attempts=shared.max_attempts),
        disk_gb=shared.disk_gb, sleep=sleep or asyncio.sleep, client=client,
    )
    adapters: dict[str, ProviderAdapter] = {}
    for code in known:
        if code not in wanted:
            continue
        prefix = f"{code.upper()}_"
        if f"{prefix}API_KEY" not in s:
            log.info("provider %s has no API key configured; not built", code)
            continue
        found = spec(code)
        own = {k.removeprefix(prefix).lower(): v for k, v in s.items() if k.startswith(prefix)}
        adapters[code] = found.build(found.config.model_validate(own), ctx)
    return adapters


def env_settings(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The providers' settings from the environment: ``<CODE>_*`` for every provider,
    ``PROVIDERS`` and ``PROVIDER_*``; an API key given as ``<CODE>_API_KEY_PARAM`` is
    read from SSM."""
    e = os.environ if env is None else env
    prefixes = (*(f"{code.upper()}_" for code in codes()), "PROVIDER_")
    out = {k: v for k, v in e.items() if v and (k == "PROVIDERS" or k.startswith(prefixes))}
    for code in codes():
        name, param = f"{code.upper()}_API_KEY", out.pop(f"{code.upper()}_API_KEY_PARAM", None)
        if not out.get(name) and param:
            from gpurent.store import secrets

            out[name] = secrets.get_secret(param)
    return out


# ---------------------------------------------------------------- the process's adapters

_adapters: dict[str, ProviderAdapter] | None = None
_adapters_lock = threading.Lock()


def adapters() -> dict[str, ProviderAdapter]:
    """This process's adapters, built from the environment on first use."""
    global _adapters
    with _adapters_lock:
        if _adapters is None:
            _adapters = build_adapters(env_settings())
        return _adapters


def set_adapters(value: dict[str, ProviderAdapter] | None) -> None:
    """Tests and the local stack install adapters (None: build from settings again)."""
    global _adapters
    with _adapters_lock:
        _adapters = value


def adapter(code: str) -> ProviderAdapter:
    """The adapter of a provider, or ProviderError `auth` when this deployment has none."""
    found = adapters().get(code)
    if found is None:
        raise ProviderError(code, "auth", "provider is not configured on this deployment")
    return found
