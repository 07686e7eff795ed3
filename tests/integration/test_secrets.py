"""Secrets are read at run time and cached for `SECRETS_MAX_AGE_SECONDS` (Powertools
Parameters): a value rotated in SSM or Secrets Manager is picked up once the cache entry is
that old, without a cold start; before then, no request is made for it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest

from gpurent import cursor
from gpurent.billing import gateway
from gpurent.errors import ApiError
from gpurent.providers import registry
from gpurent.store import secrets


class Later:
    """Powertools' cache reads the time from `datetime.now()`; this one runs `ahead` seconds late."""

    ahead = 0.0

    @classmethod
    def now(cls, tz: Any = None) -> datetime:
        return datetime.now(tz) + timedelta(seconds=cls.ahead)


@pytest.fixture
def later(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Later]]:
    import aws_lambda_powertools.utilities.parameters.base as base

    monkeypatch.setattr(base, "datetime", Later)
    Later.ahead = 0.0
    secrets.reset_client()
    yield Later
    secrets.reset_client()


def gets(counter: dict[str, int]) -> Any:
    def count(**kwargs: Any) -> None:
        counter["n"] = counter.get("n", 0) + 1
    return count


def test_a_rotated_parameter_is_read_again_once_its_cache_entry_is_old(later: type[Later]) -> None:
    ssm = boto3.client("ssm", region_name="us-east-1")
    ssm.put_parameter(Name="/gpurent/vast-api-key", Value="v1", Type="SecureString")
    assert secrets.get_secret("/gpurent/vast-api-key") == "v1"
    ssm.put_parameter(Name="/gpurent/vast-api-key", Value="v2", Type="SecureString", Overwrite=True)
    calls: dict[str, int] = {}
    secrets._provider("ssm").client.meta.events.register("before-call.ssm.GetParameter", gets(calls))
    later.ahead = secrets.max_age() - 5
    assert secrets.get_secret("/gpurent/vast-api-key") == "v1"  # still cached: no request
    assert calls == {}
    later.ahead = secrets.max_age() + 1
    assert secrets.get_secret("/gpurent/vast-api-key") == "v2"
    assert calls == {"n": 1}


def test_the_stripe_client_and_the_provider_adapters_follow_a_rotated_key(later: type[Later],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ssm = boto3.client("ssm", region_name="us-east-1")
    ssm.put_parameter(Name="/gpurent/stripe-secret-key", Value="sk_test_one", Type="SecureString")
    ssm.put_parameter(Name="/gpurent/lambda-api-key", Value="lam-one", Type="SecureString")
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    monkeypatch.setenv("STRIPE_SECRET_KEY_PARAM", "/gpurent/stripe-secret-key")
    monkeypatch.setenv("LAMBDA_API_KEY_PARAM", "/gpurent/lambda-api-key")
    monkeypatch.setenv("LAMBDA_SSH_KEY_NAME", "gpurent-platform")
    monkeypatch.setenv("PROVIDERS", "lambda")
    gateway.reset()
    registry.set_adapters(None)
    try:
        first = gateway.client.stripe_client()
        adapters = registry.adapters()
        assert gateway.client.stripe_client() is first and registry.adapters() is adapters  # cached while the keys are
        ssm.put_parameter(Name="/gpurent/stripe-secret-key", Value="sk_test_two", Type="SecureString", Overwrite=True)
        ssm.put_parameter(Name="/gpurent/lambda-api-key", Value="lam-two", Type="SecureString", Overwrite=True)
        later.ahead = secrets.max_age() + 1
        second = gateway.client.stripe_client()
        assert second is not first and gateway.client._client_key == "sk_test_two"
        assert registry.adapters() is not adapters
    finally:
        gateway.reset()
        registry.set_adapters(None)


def test_the_cursor_key_comes_from_secrets_manager_and_rotates(later: type[Later],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    sm = boto3.client("secretsmanager", region_name="us-east-1")
    arn = sm.create_secret(Name="CursorKeySecret", SecretString="a" * 48)["ARN"]
    monkeypatch.setenv("CURSOR_KEY_SECRET_ARN", arn)
    monkeypatch.delenv("CURSOR_KEY", raising=False)
    token = cursor.encode("ledger", "usr_1", {"after": "x"})
    assert cursor.decode("ledger", "usr_1", token) == {"after": "x"}
    sm.put_secret_value(SecretId=arn, SecretString="b" * 48)
    assert cursor.decode("ledger", "usr_1", token) == {"after": "x"}  # the old key, still cached
    later.ahead = secrets.max_age() + 1
    with pytest.raises(ApiError):
        cursor.decode("ledger", "usr_1", token)  # signed with the rotated-out key
    fresh = cursor.encode("ledger", "usr_1", {"after": "y"})
    assert cursor.decode("ledger", "usr_1", fresh) == {"after": "y"}
