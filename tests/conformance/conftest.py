"""The store's tests run against moto and against DynamoDB Local (`backend`;
the `dynamodb_local` fixture lives in tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local import template
from tests import moto_fast
from tests.conftest import TEST_ENV, reset_clients, table_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["moto", "dynamodb-local"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, clock: object) -> Iterator[str]:
    """The store against moto, then against DynamoDB Local (fresh tables per test)."""
    names = template.default_table_names(f"t{uuid.uuid4().hex[:8]}")
    for k, v in {**TEST_ENV, **table_env(names)}.items():
        monkeypatch.setenv(k, v)
    if request.param == "moto":
        from moto import mock_aws

        monkeypatch.delenv("DYNAMODB_ENDPOINT", raising=False)
        moto_fast.install()
        with mock_aws():
            reset_clients()
            from gpurent.store import dynamo

            template.create_tables(dynamo.client(), names)
            yield "moto"
            reset_clients()
    else:
        endpoint = request.getfixturevalue("dynamodb_local")
        monkeypatch.setenv("DYNAMODB_ENDPOINT", endpoint)
        reset_clients()
        from gpurent.store import dynamo

        template.create_tables(dynamo.client(), names)
        yield "dynamodb-local"
        reset_clients()
