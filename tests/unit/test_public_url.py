"""PUBLIC_URL when a deployment has none (template.yaml `DerivedPublicUrl`): the functions read the
dashboard distribution's URL from the SSM parameter named by PUBLIC_URL_PARAM, once per process."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from gpurent.config import MissingSettings, load_settings
from gpurent.store import secrets

# A deployment's settings (stage prod) but the public URL.
DEPLOYED = {
    "STAGE": "prod", "AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t",
    "IDENTITY_TABLE": "i", "MONEY_TABLE": "m", "LEDGER_TABLE": "l", "CATALOG_TABLE": "c",
    "MAIL_FROM": "no-reply@gpurent.example", "TIMER_QUEUE_URL": "https://sqs.example/q", "CURSOR_KEY": "k" * 32,
}


@pytest.fixture
def ssm(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    for name in ("SSM_ENDPOINT", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    secrets.reset_client()
    with mock_aws():
        client = boto3.client("ssm", region_name="eu-west-1")
        client.put_parameter(Name="/gpurent/stack/public-url", Type="String", Value="https://d111.cloudfront.net/")
        yield client
    secrets.reset_client()


def test_a_given_public_url_wins_and_ssm_is_not_asked(ssm) -> None:
    env = {**DEPLOYED, "PUBLIC_URL": "https://gpurent.example.com", "PUBLIC_URL_PARAM": "/gpurent/missing"}
    assert load_settings(env).public_url == "https://gpurent.example.com"


def test_without_one_the_distribution_url_comes_from_the_parameter_once(ssm) -> None:
    env = {**DEPLOYED, "PUBLIC_URL": "", "PUBLIC_URL_PARAM": "/gpurent/stack/public-url"}
    assert load_settings(env).public_url == "https://d111.cloudfront.net"
    ssm.delete_parameter(Name="/gpurent/stack/public-url")
    assert load_settings(env).public_url == "https://d111.cloudfront.net"  # cached for the process


def test_a_missing_parameter_fails_loudly_and_is_not_cached(ssm) -> None:
    env = {**DEPLOYED, "PUBLIC_URL": "", "PUBLIC_URL_PARAM": "/gpurent/other/public-url"}
    with pytest.raises(Exception, match="ParameterNotFound"):
        load_settings(env)
    ssm.put_parameter(Name="/gpurent/other/public-url", Type="String", Value="https://d222.cloudfront.net")
    assert load_settings(env).public_url == "https://d222.cloudfront.net"


def test_a_deployment_with_neither_is_refused() -> None:
    with pytest.raises(MissingSettings, match="PUBLIC_URL"):
        load_settings({**DEPLOYED, "PUBLIC_URL": ""})


def test_local_defaults_are_unchanged() -> None:
    assert load_settings({"STAGE": "local"}).public_url == "http://127.0.0.1:3000"
    assert load_settings({"STAGE": "test", "PUBLIC_URL": ""}).public_url == "http://127.0.0.1:3000"
