"""Settings, read once from the environment into validated frozen dataclasses: every
setting a deployment passes goes through here (`Settings`, `StripeSettings`,
`ProviderSettings`; each provider's own settings are its adapter's `ProviderConfig`).
Plain dataclasses, not pydantic models: every function imports this module, and pydantic's
model machinery is not worth a cold start for a few dozen strings (`docs/decisions.md`
"Cold starts: no pydantic at import"). Secrets are `SecretStr`, hidden in `repr`.

No silent defaults for what a deployment must set: a stage other than `local` and
`test` (`DEV_STAGES`; a missing `STAGE` is `prod`) must give the table names,
`PUBLIC_URL` (or `PUBLIC_URL_PARAM`, the SSM parameter holding the dashboard
distribution's URL), `MAIL_FROM`, `TIMER_QUEUE_URL` and a cursor key, and, when
Stripe is on, its webhook secret and publishable key too; `load_settings` raises
`MissingSettings` naming what is absent. The local stage and the tests fall back to
local defaults.

Secrets are never in the environment in clear in a deployment: the template
passes the *names* of SSM SecureString parameters (`*_PARAM`), and
`gpurent.store.secrets` resolves them at first use. The local stack and tests
may give values directly (`STRIPE_SECRET_KEY`, …).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


DEV_STAGES = ("local", "test")  # not deployments: what is not set falls back to `LOCAL_DEFAULTS`
LOCAL_DEFAULTS: dict[str, str] = {
    "IDENTITY_TABLE": "gpurent-identity",
    "MONEY_TABLE": "gpurent-money",
    "LEDGER_TABLE": "gpurent-ledger",
    "CATALOG_TABLE": "gpurent-catalog",
    "PUBLIC_URL": "http://127.0.0.1:3000",
    "MAIL_FROM": "no-reply@gpurent.local",
}
DEPLOYMENT_REQUIRED = (*LOCAL_DEFAULTS, "TIMER_QUEUE_URL")
DEV_SHARDS = 2  # `active_shards` and `outbox_shards` of the local and test stages


class MissingSettings(ValueError):
    """A deployment stage lacks settings it must set."""


class SecretStr:
    """A secret setting: `get_secret_value()` gives it; `repr` and `str` never do (as pydantic's
    `SecretStr`, which this replaces here)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"a secret must be a string, not {type(value).__name__}")
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretStr('**********')" if self._value else "SecretStr('')"

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __len__(self) -> int:
        return len(self._value)


def _invalid(model: str, name: str, message: str, value: object) -> ValueError:
    return ValueError(f"1 validation error for {model}\n{name}\n  {message} [input_value={value!r}]")


def _check_types(obj: object) -> None:
    """Each field of a settings dataclass holds what its annotation says (the loaders below
    convert the environment's strings; this guards a settings object built by hand)."""
    kinds = {"str": str, "int": int, "float": float, "bool": bool, "SecretStr": SecretStr, "tuple": tuple}
    for f in fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        annotation = str(f.type)
        if value is None and annotation.endswith("| None"):
            continue
        base = annotation.removesuffix(" | None").split("[")[0]
        want = kinds.get(base)
        if want is None:
            continue
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(obj, f.name, float(value))
            ok = True
        if not ok:
            raise _invalid(type(obj).__name__, f.name, f"Input should be a valid {base}", value)


def _range(model: str, name: str, value: float, *, gt: float | None = None, ge: float | None = None,
           le: float | None = None) -> None:
    if gt is not None and not value > gt:
        raise _invalid(model, name, f"Input should be greater than {gt}", value)
    if ge is not None and not value >= ge:
        raise _invalid(model, name, f"Input should be greater than or equal to {ge}", value)
    if le is not None and not value <= le:
        raise _invalid(model, name, f"Input should be less than or equal to {le}", value)


@dataclass(frozen=True, kw_only=True)
class StripeSettings:
    """Stripe: each secret is given as the name of an SSM parameter (`*_PARAM`,
    deployments) or as itself (the local stack, tests). No secret key: billing is off."""

    secret_key: SecretStr | None = None  # STRIPE_SECRET_KEY
    secret_key_param: str | None = None  # STRIPE_SECRET_KEY_PARAM
    webhook_secret: SecretStr | None = None  # STRIPE_WEBHOOK_SECRET
    webhook_secret_param: str | None = None  # STRIPE_WEBHOOK_SECRET_PARAM
    publishable_key: str = ""  # STRIPE_PUBLISHABLE_KEY
    api_base: str | None = None  # STRIPE_API_BASE (local stack and tests only; default Stripe's own)

    def __post_init__(self) -> None:
        _check_types(self)

    @property
    def enabled(self) -> bool:
        return bool(self.secret_key_param or self.secret_key)


@dataclass(frozen=True, kw_only=True)
class Settings:
    stage: str
    region: str = "us-east-1"
    identity_table: str
    money_table: str
    ledger_table: str
    catalog_table: str
    dynamodb_endpoint: str | None = None
    ses_endpoint: str | None = None
    ssm_endpoint: str | None = None
    sqs_endpoint: str | None = None
    # The SQS queue that delivers timers (exhaustion and limit stops) to the timer
    # function; None outside AWS: timers are kept in process (`gpurent.timers`).
    timer_queue_url: str | None = None
    # The SQS queue that hands the metering sweep's parts (one per ActiveIndex shard, and
    # hand-offs) to sweep workers; None: the sweep runs every part in this process.
    sweep_queue_url: str | None = None
    # Wallets a sweep worker charges at once (threads), 1 to 64; 1 charges them one after another.
    sweep_concurrency: int = 1
    # Partitions the live rentals (`ActiveIndex`) and the pending effects (outbox) are spread
    # over, 1 to 64: the sweep, the reconciler and the outbox's safety net query each one every
    # minute. Deployments keep 8 (100,000 running pods' writes); the local and test stages use 2
    # (a quarter of those queries). Fixed for the life of a stack's data: see docs/metering.md.
    active_shards: int = 8
    outbox_shards: int = 8
    # The SQS queue that hands each provider's reconcile pass (and chunks of its changed
    # rentals) to a worker; None outside AWS: hand-offs wait in process (`gpurent.reconciler`).
    reconcile_queue_url: str | None = None
    reconcile_concurrency: int = 8  # rentals a reconcile worker moves at once (1: one after another)

    public_url: str
    stripe: StripeSettings = StripeSettings()
    stripe_success_url: str | None = None
    stripe_cancel_url: str | None = None
    allowed_origins: tuple[str, ...] = ()
    admin_emails: tuple[str, ...] = ()
    cookie_secure: bool = True
    mail_from: str
    mail_mode: str = "ses"  # "ses" | "console"

    cursor_key: str | None = None  # none outside a deployment: a random key per process
    cursor_key_secret_arn: str | None = None  # a deployment may name a Secrets Manager secret instead
    catalog_margin_bps: int = 0
    # Running rentals' meters kept on their wallet's item (`gpurent.rentals.meters`); off, every
    # tick writes its rentals and moves any meter on a wallet back to its rental (docs/deploy.md).
    meters_on_wallet: bool = True

    rate_limit_per_minute: int = 100
    rate_limit_per_hour: int = 1000
    ip_rate_limit_per_minute: int = 30
    ip_rate_limit_per_hour: int = 300
    # Per user, across all of the user's sessions and tokens; None: twice the per-credential limits.
    user_rate_limit_per_minute: int | None = None
    user_rate_limit_per_hour: int | None = None

    google_client_id: str | None = None
    google_client_secret: str | None = None
    google_client_secret_param: str | None = None
    github_client_id: str | None = None
    github_client_secret: str | None = None
    github_client_secret_param: str | None = None
    google_auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_url: str = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
    google_userinfo_url: str = "https://openidconnect.googleapis.com/v1/userinfo"
    github_auth_url: str = "https://github.com/login/oauth/authorize"
    github_token_url: str = "https://github.com/login/oauth/access_token"  # noqa: S105 - a URL
    github_api_url: str = "https://api.github.com"

    def __post_init__(self) -> None:
        _check_types(self)
        if not isinstance(self.stripe, StripeSettings):
            raise _invalid("Settings", "stripe", "Input should be a valid StripeSettings", self.stripe)
        _range("Settings", "sweep_concurrency", self.sweep_concurrency, ge=1, le=64)
        _range("Settings", "active_shards", self.active_shards, ge=1, le=64)
        _range("Settings", "outbox_shards", self.outbox_shards, ge=1, le=64)

    @property
    def is_local(self) -> bool:
        return self.stage == "local"


def _missing(e: Mapping[str, str]) -> list[str]:
    """What a deployment stage must set and did not."""
    missing = [name for name in DEPLOYMENT_REQUIRED if not e.get(name) and not (name == "PUBLIC_URL"
                                                                                and e.get("PUBLIC_URL_PARAM"))]
    if not (e.get("CURSOR_KEY") or e.get("CURSOR_KEY_SECRET_ARN")):
        missing.append("CURSOR_KEY (or CURSOR_KEY_SECRET_ARN)")
    if e.get("STRIPE_SECRET_KEY") or e.get("STRIPE_SECRET_KEY_PARAM"):  # billing on: all of Stripe
        if not (e.get("STRIPE_WEBHOOK_SECRET") or e.get("STRIPE_WEBHOOK_SECRET_PARAM")):
            missing.append("STRIPE_WEBHOOK_SECRET_PARAM (or STRIPE_WEBHOOK_SECRET)")
        if not e.get("STRIPE_PUBLISHABLE_KEY"):
            missing.append("STRIPE_PUBLISHABLE_KEY")
    return missing


def load_stripe_settings(e: Mapping[str, str]) -> StripeSettings:
    def value(name: str) -> str | None:
        return e.get(f"STRIPE_{name.upper()}") or None

    secret_key, webhook_secret = value("secret_key"), value("webhook_secret")
    return StripeSettings(
        secret_key=SecretStr(secret_key) if secret_key is not None else None,
        secret_key_param=value("secret_key_param"),
        webhook_secret=SecretStr(webhook_secret) if webhook_secret is not None else None,
        webhook_secret_param=value("webhook_secret_param"),
        publishable_key=e.get("STRIPE_PUBLISHABLE_KEY", ""),
        api_base=value("api_base"),
    )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    e = os.environ if env is None else env
    stage = e.get("STAGE", "prod")
    if stage not in DEV_STAGES:
        missing = _missing(e)
        if missing:
            raise MissingSettings(f"stage {stage!r} must set {', '.join(missing)}")
    else:
        e = {**LOCAL_DEFAULTS, **{k: v for k, v in e.items() if v}}
    admins = _list(e.get("ADMIN_EMAILS"))
    if not admins and stage == "local":
        admins = ["admin@localhost"]
    values: dict[str, object] = {
        "stage": stage,
        "region": e.get("AWS_REGION") or e.get("AWS_DEFAULT_REGION") or "us-east-1",
        "identity_table": e["IDENTITY_TABLE"],
        "money_table": e["MONEY_TABLE"],
        "ledger_table": e["LEDGER_TABLE"],
        "catalog_table": e["CATALOG_TABLE"],
        "dynamodb_endpoint": e.get("DYNAMODB_ENDPOINT") or None,
        "ses_endpoint": e.get("SES_ENDPOINT") or None,
        "ssm_endpoint": e.get("SSM_ENDPOINT") or None,
        "sqs_endpoint": e.get("SQS_ENDPOINT") or None,
        "timer_queue_url": e.get("TIMER_QUEUE_URL") or None,
        "sweep_queue_url": e.get("SWEEP_QUEUE_URL") or None,
        "sweep_concurrency": int(e.get("SWEEP_CONCURRENCY") or 1),
        "active_shards": _shards(e, "ACTIVE_SHARDS", stage),
        "outbox_shards": _shards(e, "OUTBOX_SHARDS", stage),
        "reconcile_queue_url": e.get("RECONCILE_QUEUE_URL") or None,
        "public_url": _public_url(e).rstrip("/"),
        "stripe": load_stripe_settings(e),
        "stripe_success_url": e.get("STRIPE_SUCCESS_URL") or None,
        "stripe_cancel_url": e.get("STRIPE_CANCEL_URL") or None,
        "allowed_origins": tuple(_list(e.get("ALLOWED_ORIGINS"))),
        "admin_emails": tuple(a.lower() for a in admins),
        "cookie_secure": e.get("COOKIE_SECURE", "1" if stage != "local" else "0") == "1",
        "mail_from": e["MAIL_FROM"],
        "mail_mode": e.get("MAIL_MODE", "console" if stage == "local" else "ses"),
        "cursor_key": e.get("CURSOR_KEY") or None,
        "cursor_key_secret_arn": e.get("CURSOR_KEY_SECRET_ARN") or None,
        "catalog_margin_bps": int(e.get("CATALOG_MARGIN_BPS", "0") or 0),
        "meters_on_wallet": e.get("METERS_ON_WALLET", "1") == "1",
    }
    for key in (
        "google_client_id", "google_client_secret", "google_client_secret_param",
        "github_client_id", "github_client_secret", "github_client_secret_param",
        "google_auth_url", "google_token_url", "google_userinfo_url",
        "github_auth_url", "github_token_url", "github_api_url",
    ):
        if e.get(key.upper()):
            values[key] = e[key.upper()]
    for key in ("reconcile_concurrency", "rate_limit_per_minute", "rate_limit_per_hour", "ip_rate_limit_per_minute",
                "ip_rate_limit_per_hour", "user_rate_limit_per_minute", "user_rate_limit_per_hour"):
        if e.get(key.upper()):
            values[key] = int(e[key.upper()])
    return Settings(**values)  # type: ignore[arg-type]


def _shards(e: Mapping[str, str], name: str, stage: str) -> int:
    """A shard count: as set, else 8 deployed and `DEV_SHARDS` on the local and test stages."""
    raw = e.get(name)
    if not raw:
        return DEV_SHARDS if stage in DEV_STAGES else 8
    return _parse_int("Settings", name.lower(), raw)


def _public_url(e: Mapping[str, str]) -> str:
    """PUBLIC_URL; when a deployment has none, the distribution's URL kept in the SSM parameter named by
    PUBLIC_URL_PARAM (template.yaml: the functions cannot reference the distribution directly)."""
    url = e.get("PUBLIC_URL")
    if url:
        return url
    # Read with a client of its own: the settings (and so `secrets`' providers) are being built.
    name = e.get("PUBLIC_URL_PARAM")
    if name:
        from gpurent.store.secrets import read_parameter

        region = e.get("AWS_REGION") or e.get("AWS_DEFAULT_REGION") or "us-east-1"
        return read_parameter(name, region, e.get("SSM_ENDPOINT") or None)
    raise MissingSettings("PUBLIC_URL (or PUBLIC_URL_PARAM)")


@dataclass(frozen=True, kw_only=True)
class ProviderSettings:
    """What every provider adapter shares (each provider's own settings, its API key
    among them, are its adapter's `ProviderConfig`: `gpurent.providers.registry`)."""

    providers: tuple[str, ...] | None = None  # PROVIDERS: build only these (None: every one with a key)
    connect_timeout_seconds: float = 3.0  # PROVIDER_CONNECT_TIMEOUT_SECONDS, > 0
    read_timeout_seconds: float = 10.0  # PROVIDER_READ_TIMEOUT_SECONDS, > 0
    max_attempts: int = 4  # PROVIDER_MAX_ATTEMPTS, >= 1
    disk_gb: int = 50  # PROVIDER_DISK_GB: the disk the offer prices include, >= 1

    def __post_init__(self) -> None:
        _check_types(self)
        _range("ProviderSettings", "connect_timeout_seconds", self.connect_timeout_seconds, gt=0)
        _range("ProviderSettings", "read_timeout_seconds", self.read_timeout_seconds, gt=0)
        _range("ProviderSettings", "max_attempts", self.max_attempts, ge=1)
        _range("ProviderSettings", "disk_gb", self.disk_gb, ge=1)


def _parse_float(model: str, name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise _invalid(model, name, "Input should be a valid number, unable to parse string as a number",
                       raw) from None


def _parse_int(model: str, name: str, raw: str) -> int:
    """As pydantic reads an int from a string: surrounding blanks, `_` separators and a zero
    fraction (`80.0`) are accepted."""
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        number = float(raw)
    except ValueError:
        raise _invalid(model, name, "Input should be a valid integer, unable to parse string as an integer",
                       raw) from None
    if not math.isfinite(number) or not number.is_integer():
        raise _invalid(model, name, "Input should be a valid integer, got a number with a fractional part", raw)
    return int(number)


def load_provider_settings(values: Mapping[str, str]) -> ProviderSettings:
    """`ProviderSettings` from upper-case names (``PROVIDERS``, ``PROVIDER_*``); ValueError when invalid."""
    out: dict[str, object] = {}
    if "PROVIDERS" in values:
        out["providers"] = tuple(p.lower() for p in _list(values["PROVIDERS"]))
    for name in ("connect_timeout_seconds", "read_timeout_seconds"):
        if values.get(f"PROVIDER_{name.upper()}"):
            out[name] = _parse_float("ProviderSettings", name, values[f"PROVIDER_{name.upper()}"])
    for name in ("max_attempts", "disk_gb"):
        if values.get(f"PROVIDER_{name.upper()}"):
            out[name] = _parse_int("ProviderSettings", name, values[f"PROVIDER_{name.upper()}"])
    return ProviderSettings(**out)  # type: ignore[arg-type]


@lru_cache(maxsize=1)
def settings() -> Settings:
    return load_settings()


def reset() -> None:
    """Forget the cached settings (tests and the local stack change the environment)."""
    settings.cache_clear()
