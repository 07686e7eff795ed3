"""Settings, read once from the environment into a pydantic model.

Secrets are never in the environment in clear in a deployment: the template
passes the *names* of SSM SecureString parameters (`*_PARAM`), and
`gpurent.store.secrets` resolves them at first use. The local stack and tests
may give values directly (`STRIPE_SECRET_KEY`, …).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache

from pydantic import BaseModel, ConfigDict


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    stage: str = "prod"
    region: str = "us-east-1"
    identity_table: str = "gpurent-identity"
    money_table: str = "gpurent-money"
    ledger_table: str = "gpurent-ledger"
    catalog_table: str = "gpurent-catalog"
    dynamodb_endpoint: str | None = None
    ses_endpoint: str | None = None
    ssm_endpoint: str | None = None
    sqs_endpoint: str | None = None
    # The SQS queue that delivers timers (exhaustion and limit stops) to the timer
    # function; None outside AWS: timers are kept in process (`gpurent.timers`).
    timer_queue_url: str | None = None

    public_url: str = "http://127.0.0.1:3000"
    stripe_success_url: str | None = None
    stripe_cancel_url: str | None = None
    allowed_origins: tuple[str, ...] = ()
    admin_emails: tuple[str, ...] = ()
    cookie_secure: bool = True
    mail_from: str = "no-reply@gpurent.local"
    mail_mode: str = "ses"  # "ses" | "console"

    cursor_key: str | None = None
    catalog_margin_bps: int = 0

    rate_limit_per_minute: int = 100
    rate_limit_per_hour: int = 1000
    ip_rate_limit_per_minute: int = 30
    ip_rate_limit_per_hour: int = 300

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

    @property
    def is_local(self) -> bool:
        return self.stage == "local"


def load_settings(env: dict[str, str] | os._Environ[str] | None = None) -> Settings:
    e = os.environ if env is None else env
    stage = e.get("STAGE", "prod")
    admins = _list(e.get("ADMIN_EMAILS"))
    if not admins and stage == "local":
        admins = ["admin@localhost"]
    values: dict[str, object] = {
        "stage": stage,
        "region": e.get("AWS_REGION") or e.get("AWS_DEFAULT_REGION") or "us-east-1",
        "identity_table": e.get("IDENTITY_TABLE", "gpurent-identity"),
        "money_table": e.get("MONEY_TABLE", "gpurent-money"),
        "ledger_table": e.get("LEDGER_TABLE", "gpurent-ledger"),
        "catalog_table": e.get("CATALOG_TABLE", "gpurent-catalog"),
        "dynamodb_endpoint": e.get("DYNAMODB_ENDPOINT") or None,
        "ses_endpoint": e.get("SES_ENDPOINT") or None,
        "ssm_endpoint": e.get("SSM_ENDPOINT") or None,
        "sqs_endpoint": e.get("SQS_ENDPOINT") or None,
        "timer_queue_url": e.get("TIMER_QUEUE_URL") or None,
        "public_url": _public_url(e).rstrip("/"),
        "stripe_success_url": e.get("STRIPE_SUCCESS_URL") or None,
        "stripe_cancel_url": e.get("STRIPE_CANCEL_URL") or None,
        "allowed_origins": tuple(_list(e.get("ALLOWED_ORIGINS"))),
        "admin_emails": tuple(a.lower() for a in admins),
        "cookie_secure": e.get("COOKIE_SECURE", "1" if stage != "local" else "0") == "1",
        "mail_from": e.get("MAIL_FROM", "no-reply@gpurent.local"),
        "mail_mode": e.get("MAIL_MODE", "console" if stage == "local" else "ses"),
        "cursor_key": e.get("CURSOR_KEY") or None,
        "catalog_margin_bps": int(e.get("CATALOG_MARGIN_BPS", "0") or 0),
    }
    for key in (
        "google_client_id", "google_client_secret", "google_client_secret_param",
        "github_client_id", "github_client_secret", "github_client_secret_param",
        "google_auth_url", "google_token_url", "google_userinfo_url",
        "github_auth_url", "github_token_url", "github_api_url",
    ):
        if e.get(key.upper()):
            values[key] = e[key.upper()]
    for key in ("rate_limit_per_minute", "rate_limit_per_hour", "ip_rate_limit_per_minute", "ip_rate_limit_per_hour"):
        if e.get(key.upper()):
            values[key] = int(e[key.upper()])
    return Settings.model_validate(values)


def _public_url(e: Mapping[str, str]) -> str:
    """PUBLIC_URL; when a deployment has none, the distribution's URL kept in the SSM parameter named by
    PUBLIC_URL_PARAM (template.yaml: the functions cannot reference the distribution directly)."""
    url = e.get("PUBLIC_URL")
    if url:
        return url
    name = e.get("PUBLIC_URL_PARAM")
    if name:
        from gpurent.store.secrets import read_parameter

        region = e.get("AWS_REGION") or e.get("AWS_DEFAULT_REGION") or "us-east-1"
        return read_parameter(name, region, e.get("SSM_ENDPOINT") or None)
    return "" if "PUBLIC_URL" in e else "http://127.0.0.1:3000"


@lru_cache(maxsize=1)
def settings() -> Settings:
    return load_settings()


def reset() -> None:
    """Forget the cached settings (tests and the local stack change the environment)."""
    settings.cache_clear()
