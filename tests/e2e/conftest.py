"""The local stack (`make dev`) as a subprocess, started once per test session.

It is started exactly as `make dev` starts it (`infra.local.process`: `python -m
infra.local.dev` from the repository root, on a free loopback port given in
PORT, with no DYNAMODB_ENDPOINT, so it runs its own DynamoDB Local). Teardown
sends SIGTERM and requires a clean exit with DynamoDB Local's JVM gone. The
stack stops everything within STOP_SECONDS (4 s) by design and `bench/clock.py`
times it; here only a hang (15 s) fails, so a busy machine cannot fail the test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from infra.local import template
from infra.local.process import READY, LocalStackProcess, StackError
from tests.conftest import TEST_ENV

__all__ = ["READY", "stack", "stack_env"]

def stack_env() -> dict[str, str]:
    """This process's environment minus anything that would point the stack elsewhere."""
    env = dict(os.environ)
    for name in ("DYNAMODB_ENDPOINT", "PORT", *TEST_ENV, *template.TABLE_ENV.values()):
        env.pop(name, None)
    # The contract fuzz run sends ~1,000 requests a minute as one user (fresh tokens, each in its own
    # per-credential window); the per-user windows are tested in tests/integration/test_auth_accounts.py.
    env["USER_RATE_LIMIT_PER_MINUTE"] = env["USER_RATE_LIMIT_PER_HOUR"] = "100000000"
    # Every test here is a different person on the same address (127.0.0.1: the browser, the CLI,
    # the README's curl), so the per-IP window (30 a minute) is shared by the whole tier and a busy
    # minute refused an unrelated test's sign-in with a 429. The per-IP windows are tested in
    # tests/integration/test_auth.py and test_auth_matrix.py.
    env["IP_RATE_LIMIT_PER_MINUTE"] = env["IP_RATE_LIMIT_PER_HOUR"] = "100000000"
    if os.environ.get("E2E_DYNAMODB_ENDPOINT"):  # to try the tier against another store (e.g. moto)
        env["DYNAMODB_ENDPOINT"] = os.environ["E2E_DYNAMODB_ENDPOINT"]
    return env


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackProcess]:
    log = tmp_path_factory.mktemp("local-stack") / "stderr.log"
    try:
        proc = LocalStackProcess.start(stack_env(), stderr_path=log)
    except StackError as exc:
        pytest.fail(str(exc))
    yield proc
    try:
        code, _took, alive = proc.stop(timeout=15)
    except StackError as exc:
        pytest.fail(str(exc))
    assert code == 0, f"local stack exited with {code} on SIGTERM\n{proc.tail()}"
    assert not alive, f"children outlived the stack: {alive}"
    assert any("stopping" in line for line in proc.stdout), proc.stdout


@pytest.fixture(scope="session")
def stack(local_stack: LocalStackProcess) -> str:
    return local_stack.url
