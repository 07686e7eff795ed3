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

A provider without an API key is **off**, not an error: no key in the settings, an empty
``<CODE>_API_KEY_PARAM``, or a parameter that does not exist in SSM. Off providers are left
out of `adapters()`, so the catalog refresh and the reconciler skip them; each is logged
once per process, and a missing parameter is looked up again only every
`OFF_RECHECK_SECONDS` (a provider configured later turns on without a redeploy).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
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
    # A rental not running this long after its launch fails (reserve back, machine
    # terminated): dstack's per-backend provisioning timeouts (image pull included).
    provision_deadline_seconds: int = 600


# Adding a provider: its adapter module (+ its `_names` module), a simulator, and one line here.
PROVIDERS: tuple[Provider, ...] = (
    Provider("vast", "gpurent.providers.vast", provision_seconds=60, provision_deadline_seconds=600),
    Provider("runpod", "gpurent.providers.runpod", provision_seconds=45, provision_deadline_seconds=1200),
    Provider("lambda", "gpurent.providers.lambdacloud", provision_seconds=60, provision_deadline_seconds=1800),
)


def codes() -> tuple[str, ...]:
    return tuple(p.code for p in PROVIDERS)


def provider(code: str) -> Provider | None:
    return next((p for p in PROVIDERS if p.code == code), None)


def wanted_codes(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The providers this deployment may use (``PROVIDERS``, else every one), read without
    building an adapter or reading a key: whether each is on is its adapter's business."""
    e = os.environ if env is None else env
    shared = load_provider_settings({"PROVIDERS": e["PROVIDERS"]} if e.get("PROVIDERS") else {})
    return tuple(c for c in codes() if shared.providers is None or c in shared.providers)


def provision_seconds(code: str) -> int:
    found = provider(code)
    return found.provision_seconds if found else 60


def provision_deadline(code: str) -> int:
    found = provider(code)
    return found.provision_deadline_seconds if found else 600


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
            _report_off(code, "no API key is configured")
            continue
        found = spec(code)
        own = {k.removeprefix(prefix).lower(): v for k, v in s.items() if k.startswith(prefix)}
        adapters[code] = found.build(found.config.model_validate(own), ctx)
    return adapters


OFF_RECHECK_SECONDS = 600.0

_off_reported: set[str] = set()
_missing_params: dict[str, float] = {}  # SSM parameter name → when it was found missing
_off_lock = threading.Lock()


def _report_off(code: str, why: str) -> None:
    """Log that a provider is off, once per process."""
    with _off_lock:
        if code in _off_reported:
            return
        _off_reported.add(code)
    log.info("provider %s is off on this deployment: %s", code, why)


def _param_value(code: str, param: str) -> str | None:
    """The API key in SSM parameter `param`, or None when the parameter does not exist
    (remembered for `OFF_RECHECK_SECONDS`, so an off provider costs no SSM call a minute)."""
    with _off_lock:
        missing_since = _missing_params.get(param)
    if missing_since is not None and time.monotonic() - missing_since < OFF_RECHECK_SECONDS:
        return None
    from gpurent.store import secrets

    value = secrets.get_secret_if_set(param)
    with _off_lock:
        if value is None:
            _missing_params[param] = time.monotonic()
        else:
            _missing_params.pop(param, None)
    if value is None:
        _report_off(code, f"its API key parameter {param} does not exist")
    return value


def env_settings(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The providers' settings from the environment: ``<CODE>_*`` for every provider,
    ``PROVIDERS`` and ``PROVIDER_*``; an API key given as ``<CODE>_API_KEY_PARAM`` is
    read from SSM (a parameter that does not exist leaves that provider off)."""
    e = os.environ if env is None else env
    prefixes = (*(f"{code.upper()}_" for code in codes()), "PROVIDER_")
    out = {k: v for k, v in e.items() if v and (k == "PROVIDERS" or k.startswith(prefixes))}
    for code in codes():
        name, param = f"{code.upper()}_API_KEY", out.pop(f"{code.upper()}_API_KEY_PARAM", None)
        if not out.get(name) and param:
            value = _param_value(code, param)
            if value:
                out[name] = value
    return out


def reset_off() -> None:
    """Forget which providers were found off (tests)."""
    with _off_lock:
        _off_reported.clear()
        _missing_params.clear()


# ---------------------------------------------------------------- the process's adapters

_adapters: dict[str, ProviderAdapter] | None = None
_adapters_from: dict[str, str] | None = None  # the settings they were built from; None: installed
_adapters_lock = threading.Lock()


def adapters() -> dict[str, ProviderAdapter]:
    """This process's adapters, built from the environment, and built again when those
    settings changed (a provider key rotated in SSM is picked up within the secrets' cache age)."""
    global _adapters, _adapters_from
    with _adapters_lock:
        if _adapters is None or _adapters_from is not None:
            current = env_settings()
            if _adapters is None or current != _adapters_from:
                _adapters, _adapters_from = build_adapters(current), current
        return _adapters


def set_adapters(value: dict[str, ProviderAdapter] | None) -> None:
    """Tests and the local stack install adapters (None: build from settings again)."""
    global _adapters, _adapters_from
    with _adapters_lock:
        _adapters, _adapters_from = value, None


def adapter(code: str) -> ProviderAdapter:
    """The adapter of a provider, or ProviderError `auth` when this deployment has none."""
    found = adapters().get(code)
    if found is None:
        raise ProviderError(code, "auth", "provider is not configured on this deployment")
    return found
