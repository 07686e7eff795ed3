"""The IAM check, on in every in-process test tier (integration, crash points, …): each AWS
call a function makes is authorized against that function's role in template.yaml, as SAM
expands it, before it reaches moto or DynamoDB Local.

Which function is running is `infra.local.functions.CURRENT_FUNCTION`, set while a
handler runs (`load_handler` wraps every handler: API routes, schedules, the timer queue,
the webhook; the local scheduler and the crash points invoke them through it). Calls made
outside any handler are the tests' own (setup, assertions) and are not checked.

A call the role does not allow is answered as AWS would answer it (`AccessDenied`,
through botocore's `before-call` event, so the code under test handles the refusal as it
would in production) and the test fails with the call, the function and the reason,
even when the code swallowed the error.

`GPURENT_IAM_USAGE=path.json` writes every (function, action, resource) the run saw;
`python -m tests.iam.usage path.json` lists the grants nothing used.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import botocore.handlers
import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

from infra.local.functions import CURRENT_FUNCTION
from tests.iam import calls
from tests.iam.policy import Request, Stack, deployed

_PARAMS = "gpurent_iam_params"
_QUERY_PROTOCOL_SERVICES = ("ses", "email", "sqs")


@dataclass(frozen=True)
class Violation:
    function: str
    operation: str
    request: Request | None
    reason: str

    def __str__(self) -> str:
        what = str(self.request) if self.request else self.operation
        return f"{self.function}: {self.operation}: {what} — {self.reason}"


@dataclass
class Checker:
    stack: Stack | None = None  # None: template.yaml as on disk
    violations: list[Violation] = field(default_factory=list)
    usage: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    checked: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # While `recording()`: every authorization, with the environment it was decided in.
    trace: list[tuple[str, Request, dict[str, str]]] | None = None

    def current_stack(self) -> Stack:
        return self.stack or deployed()

    def authorize(self, function: str, service: str, operation: str, params: dict[str, Any],
                  region: str) -> Violation | None:
        """None if the function's role allows every authorization of the call."""
        try:
            requests = calls.requests_of(service, operation, params, region)
        except calls.Unknown as exc:
            return Violation(function, operation, None,
                             f"a call the IAM tier does not know ({exc}): teach tests/iam/calls.py")
        stack = self.current_stack()
        if function not in stack.functions():
            return Violation(function, operation, None, "no such function in template.yaml")
        for request in requests:
            decision = stack.decide(function, request, os.environ)
            with self.lock:
                self.checked += 1
                self.usage[(function, request.action, request.resource)] += 1
                if self.trace is not None:
                    self.trace.append((function, request, dict(os.environ)))
            if not decision.allowed:
                return Violation(function, f"{service}:{operation}", request, decision.reason)
        return None

    @contextmanager
    def recording(self) -> Iterator[list[tuple[str, Request, dict[str, str]]]]:
        """Every authorization made inside the block: (function, request, its environment)."""
        self.trace = []
        try:
            yield self.trace
        finally:
            self.trace = None

    @contextmanager
    def using(self, stack: Stack) -> Iterator[list[Violation]]:
        """Check against `stack` (a modified copy of the template) inside the block; the
        violations it causes are collected into the yielded list instead of failing the test."""
        previous, self.stack = self.stack, stack
        start = len(self.violations)
        got: list[Violation] = []
        try:
            yield got
        finally:
            self.stack = previous
            with self.lock:
                got.extend(self.violations[start:])
                del self.violations[start:]


CHECKER = Checker()


# ---------------------------------------------------------------- botocore hooks

def _stash_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    if CURRENT_FUNCTION.get() is not None:
        context[_PARAMS] = params


def _check_call(model: Any, context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
    function = CURRENT_FUNCTION.get()
    if function is None or _PARAMS not in context:
        return None
    service = model.service_model.service_name
    region = str(context.get("client_region") or "us-east-1")
    violation = CHECKER.authorize(function, service, model.name, context[_PARAMS], region)
    if violation is None:
        return None
    with CHECKER.lock:
        CHECKER.violations.append(violation)
    code = "AccessDenied" if service in _QUERY_PROTOCOL_SERVICES else "AccessDeniedException"
    message = (f"User: arn:aws:sts::123456789012:assumed-role/{function}Role/{function} is not authorized to "
               f"perform: {violation.request or model.name} ({violation.reason})")
    http = AWSResponse("https://iam.invalid/", 400, HTTPHeaders(), None)
    parsed = {"Error": {"Code": code, "Message": message},
              "ResponseMetadata": {"HTTPStatusCode": 400, "RequestId": "iam-tier"}}
    return http, parsed


_HOOKS = (("before-parameter-build", _stash_params), ("before-call", _check_call))


def install() -> None:
    """Register the hooks for every botocore session created from now on (and boto3's default one)."""
    for hook in _HOOKS:
        if hook not in botocore.handlers.BUILTIN_HANDLERS:
            botocore.handlers.BUILTIN_HANDLERS.append(hook)
    import boto3

    if boto3.DEFAULT_SESSION is not None:
        events = boto3.DEFAULT_SESSION._session.get_component("event_emitter")
        for name, handler in _HOOKS:
            events.register(name, handler, unique_id=f"gpurent-iam-{name}")


install()


# ---------------------------------------------------------------- pytest

def _report(found: list[Violation]) -> str:
    lines = [f"IAM: {len(found)} AWS call(s) a function's role in template.yaml does not allow:"]
    lines += [f"  {v}" for v in found]
    return "\n".join(lines)


def _take(since: int) -> list[Violation]:
    with CHECKER.lock:
        found = CHECKER.violations[since:]
        del CHECKER.violations[since:]
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[_SINCE] = since = len(CHECKER.violations)
    try:
        return (yield)
    except BaseException as exc:
        found = _take(since)
        if found:
            raise pytest.fail.Exception(_report(found), pytrace=False) from exc
        raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    try:
        result = yield
    except BaseException as exc:
        found = _take(item.stash.get(_SINCE, 0))
        if found:
            raise pytest.fail.Exception(_report(found), pytrace=False) from exc
        raise
    found = _take(item.stash.get(_SINCE, 0))
    if found:
        pytest.fail(_report(found), pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    since = len(CHECKER.violations)
    result = yield
    found = _take(since)
    if found:
        pytest.fail(_report(found), pytrace=False)
    return result


_SINCE = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not CHECKER.checked:
        return
    functions = {f for f, _, _ in CHECKER.usage}
    terminalreporter.write_line(
        f"IAM: {CHECKER.checked} authorizations of AWS calls by {len(functions)} functions checked against "
        "template.yaml's roles")


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("GPURENT_IAM_USAGE")
    if path and CHECKER.usage:
        rows = [{"function": f, "action": a, "resource": r, "calls": n}
                for (f, a, r), n in sorted(CHECKER.usage.items())]
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)
