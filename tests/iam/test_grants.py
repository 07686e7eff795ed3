"""Every grant of template.yaml is needed, and the IAM tier notices when one goes.

One journey runs every function through its handler the way a deployment runs it: secrets
from SSM and Secrets Manager (the Stripe keys, the provider keys, the OAuth client secrets,
the cursor key), timers through an SQS queue, mail through SES, a Stripe webhook signed with
the secret read from SSM. Each authorization is recorded. Then, for each grant of each
function's own policies: some recorded call used it, and a copy of the template without
that grant denies that call. A grant no call of the journey uses is either one the crash
points and the integration tier exercise (their path named below) or it fails the test.

A second test removes a grant from a loaded copy of the template itself (SAM expands it
again) and runs a sign-in: the tier reports the email the auth function may no longer send.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from gpurent import catalog, notify
from gpurent.billing import gateway
from gpurent.providers import registry
from infra.local.client import invoke
from infra.local.events import schedule_event, sqs_event
from infra.local.functions import load_handler
from infra.local.stripe_local import SECRET_KEY, LocalStripe
from infra.simulators import Simulators
from tests.conftest import Api, sent_mail
from tests.iam.plugin import CHECKER
from tests.iam.policy import TEMPLATE, Request, Stack, deployed, expand, wildcard
from tests.integration.conftest import simulator_servers  # noqa: F401 - a fixture
from tests.stripe_fixtures import WEBHOOK_SECRET

ADMIN = "admin@gpurent.test"
BOOT = 20.0

# Grants the journey does not reach, and what needs them: the AWS service itself (not the code),
# or a path the crash points or the integration tier run (with this same check on): a crash,
# an empty wallet, a provider failing.
SERVICE = "the AWS service uses it with the function's role, not the code"
ARMED = ("timers.arm in process in the crash points and the integration tier; deployed, an SQS SendMessage: "
         "{}")
COVERED_ELSEWHERE = {
    ("AuthFunction", "dynamodb:ConditionCheckItem", "table/"): "tests/integration/test_auth_accounts.py: a session "
                                                               "from before the session index is adopted, unless "
                                                               "its user signed out everywhere since",
    ("TimerFunction", "sqs:ReceiveMessage", "TimerQueue"): f"{SERVICE} (the event source mapping polls)",
    ("MeteringSweepFunction", "sqs:ReceiveMessage", "SweepQueue"): f"{SERVICE} (the event source mapping polls)",
    ("MeteringSweepFunction", "sqs:DeleteMessage*", "SweepQueue"): f"{SERVICE} (the event source mapping deletes)",
    ("MeteringSweepFunction", "sqs:ChangeMessageVisibility*", "SweepQueue"): f"{SERVICE} (the event source mapping)",
    ("MeteringSweepFunction", "sqs:GetQueueAttributes", "SweepQueue"): f"{SERVICE} (the event source mapping)",
    ("TimerFunction", "sqs:DeleteMessage*", "TimerQueue"): f"{SERVICE} (the event source mapping deletes)",
    ("TimerFunction", "sqs:ChangeMessageVisibility*", "TimerQueue"): f"{SERVICE} (the event source mapping)",
    ("TimerFunction", "sqs:GetQueueAttributes", "TimerQueue"): f"{SERVICE} (the event source mapping)",
    ("*", "sqs:SendMessage", "FailedRunQueue"): f"{SERVICE} (Lambda's on-failure destination)",
    ("ReconcileWorkerFunction", "sqs:SendMessage*", "TimerQueue"): ARMED.format(
        "a rental turning running, a stop's follow-up, from the reconciler"),
    ("ReconcileWorkerFunction", "sqs:SendMessage*", "ReconcileQueue"): "tests/integration/test_reconcile_scale.py: "
                                                                        "a worker hands chunks of its changed rentals "
                                                                        "on (more than LOCAL_WORK of them)",
    ("ReconcileWorkerFunction", "sqs:ReceiveMessage", "ReconcileQueue"): f"{SERVICE} (its event source mapping)",
    ("ReconcileWorkerFunction", "sqs:DeleteMessage*", "ReconcileQueue"): f"{SERVICE} (its event source mapping)",
    ("ReconcileWorkerFunction", "sqs:ChangeMessageVisibility*", "ReconcileQueue"): f"{SERVICE} (its event source "
                                                                                    "mapping)",
    ("ReconcileWorkerFunction", "sqs:GetQueueAttributes", "ReconcileQueue"): f"{SERVICE} (its event source mapping)",
    ("ReconcileWorkerFunction", "dynamodb:*", "table/"): "tests/crashpoints 'reconcile pass', 'launch (failover)': "
                                                  "settling a crashed rental, resuming a launch (its SSH keys, "
                                                  "the catalog's next listing)",
    ("MeteringSweepFunction", "dynamodb:PutItem", "-money"): "tests/crashpoints 'stop (empty wallet, sweep)': an "
                                                              "empty wallet's stops (the courtesy email's outbox "
                                                              "item, each settlement's marker); a metering tick "
                                                              "itself puts nothing in the money table",
    ("MeteringSweepFunction", "dynamodb:GetItem", "-money"): "tests/crashpoints 'stop (empty wallet, sweep)', "
                                                              "'metering sweep (3 wallets)': an empty wallet's "
                                                              "stops and auto-topup claim, a rental that moved on "
                                                              "read again, a charge re-planned; a tick itself reads "
                                                              "its wallets and rentals 100 a BatchGetItem",
    ("*", "ssm:GetParameter", "-api-key"): "tests/crashpoints 'stop (empty wallet, sweep)', 'stop "
                                           "(autoStopAfterHours timer)': terminating pods (adapters installed "
                                           "directly there)",
}


@pytest.fixture
def deployment(aws: None, clock: Any, simulator_servers: Simulators,  # noqa: F811
               local_stripe: LocalStripe, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The tests' stack configured as a deployment is: every secret by name, timers on SQS."""
    simulator_servers.reset()
    ssm = boto3.client("ssm", region_name="us-east-1")
    sm = boto3.client("secretsmanager", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    params = {
        "STRIPE_SECRET_KEY": ("/gpurent/stripe-secret-key", SECRET_KEY),
        "STRIPE_WEBHOOK_SECRET": ("/gpurent/stripe-webhook-secret", WEBHOOK_SECRET),
        "GOOGLE_CLIENT_SECRET": ("/gpurent/google-client-secret", "google-secret"),
        "GITHUB_CLIENT_SECRET": ("/gpurent/github-client-secret", "github-secret"),
    }
    for prefix in ("VAST", "RUNPOD", "LAMBDA"):
        params[f"{prefix}_API_KEY"] = (f"/gpurent/{prefix.lower()}-api-key",
                                       simulator_servers.settings()[f"{prefix}_API_KEY"])
    for var, (name, value) in params.items():
        ssm.put_parameter(Name=name, Value=value, Type="SecureString")
        monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv(f"{var}_PARAM", name)
    cursor = sm.create_secret(Name="CursorKeySecret", SecretString="k" * 48)["ARN"]
    queue = sqs.create_queue(QueueName="gpurent-test-TimerQueue")["QueueUrl"]
    sweep_queue = sqs.create_queue(QueueName="gpurent-test-SweepQueue")["QueueUrl"]
    handoffs = sqs.create_queue(QueueName="gpurent-test-ReconcileQueue")["QueueUrl"]
    settings = {k: v for k, v in simulator_servers.settings().items() if not k.endswith("_API_KEY")}
    env = {**settings, "CURSOR_KEY_SECRET_ARN": cursor, "TIMER_QUEUE_URL": queue, "SWEEP_QUEUE_URL": sweep_queue,
           "RECONCILE_QUEUE_URL": handoffs,
           "GOOGLE_CLIENT_ID": "google-id",
           "GITHUB_CLIENT_ID": "github-id", "PROVIDER_READ_TIMEOUT_SECONDS": "0.5"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("CURSOR_KEY", raising=False)
    from infra.local import client as local_client
    from tests.conftest import reset_clients

    monkeypatch.setattr(local_client, "load_handler", isolated)
    _last[0] = ""

    reset_clients()
    gateway.reset()
    registry.set_adapters(None)  # built from the settings above, keys from SSM
    catalog.invalidate()
    notify.clear_mailbox()
    yield {**env, "queue": queue, "sweep_queue": sweep_queue, "handoffs": handoffs}
    registry.set_adapters(None)
    catalog.invalidate()
    simulator_servers.reset()


_last: list[str] = [""]


def _cold_start() -> None:
    """What a new Lambda process would not have: every per-process cache a function fills
    (secrets, the Stripe client, the provider adapters, the catalog). In process, one function
    warming a cache would hide another's missing grant."""
    from gpurent.store import secrets

    secrets.reset_client()
    gateway.reset()
    registry.set_adapters(None)
    catalog.invalidate()


def isolated(code_uri: str, handler: str = "app.handler") -> Any:
    """`load_handler`, each function in a process of its own: switching functions is a cold start."""
    fn = load_handler(code_uri, handler)

    def run(event: dict[str, Any], context: Any = None) -> Any:
        if _last[0] != code_uri:
            _cold_start()
            _last[0] = code_uri
        return fn(event, context)

    return run


def _scheduled(name: str) -> Any:
    code_uri = {n: c for n, c, _ in __import__("infra.local.template", fromlist=["x"]).schedules()}[name]
    return isolated(code_uri)(schedule_event(f"arn:aws:events:us-east-1:123456789012:rule/{name}"), None)


def _sweep(queue: str) -> None:
    """The minute's coordinator, then each part it queued delivered to a worker (batch size 1),
    as the sweep queue's event source mapping does."""
    import json

    _scheduled("MeteringSweepFunction")
    sqs = boto3.client("sqs", region_name="us-east-1")
    handler = isolated("functions/sweep/")
    while got := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1).get("Messages", []):
        assert handler(sqs_event([json.loads(got[0]["Body"])]), None) == {"batchItemFailures": []}
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=got[0]["ReceiptHandle"])


def _timers(queue: str) -> Any:
    """Deliver the timer queue's messages to the timer function, as its event source mapping does."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    import json

    handler = isolated("functions/timers/")
    return handler(sqs_event([json.loads(m["Body"]) for m in got]), None) if got else None


def _reconcile(env: dict[str, str]) -> None:
    """The reconciler as deployed: the coordinator's schedule, then its hand-offs delivered to
    the worker function by the reconcile queue's mapping (one message at a time)."""
    import json

    _scheduled("ReconcileFunction")
    sqs = boto3.client("sqs", region_name="us-east-1")
    handler = isolated("functions/reconcile_worker/")
    while got := sqs.receive_message(QueueUrl=env["handoffs"], MaxNumberOfMessages=10).get("Messages", []):
        for m in got:
            handler(sqs_event([json.loads(m["Body"])]), None)
            sqs.delete_message(QueueUrl=env["handoffs"], ReceiptHandle=m["ReceiptHandle"])


def journey(env: dict[str, str], clock: Any, ls: LocalStripe) -> None:
    """Every function, through its handler, on the paths that need its grants."""
    api, admin = Api(), Api(source_ip="198.51.100.99")
    user = api.sign_in("alice@example.com")
    admin.sign_in(ADMIN)
    clock.advance(31)
    assert api.get("/v1/auth/me").status == 200
    token = api.post("/v1/auth/tokens", {"name": "scripts"}).json()
    assert api.get("/v1/auth/tokens").status == 200
    assert api.delete(f"/v1/auth/tokens/{token['id']}").status == 200
    # Sign-in sessions: a second device, one session ended by id, then every other one.
    laptop, phone = Api(source_ip="198.51.100.21"), Api(source_ip="198.51.100.22")
    laptop.sign_in("alice@example.com")
    clock.advance(31)
    phone.sign_in("alice@example.com")
    clock.advance(31)
    sessions = api.get("/v1/auth/sessions").json()["sessions"]
    other = next(s for s in sessions if not s.get("current"))
    assert api.delete(f"/v1/auth/sessions/{other['id']}").status == 200
    api.post("/v1/auth/tokens", {"name": "ci"})
    r = api.post("/v1/auth/sessions/revoke-others", {"tokens": True})  # with the API tokens
    assert r.status == 200 and r.json()["sessionsEnded"] == 1, r.body
    for provider in ("google", "github"):
        r = api.get(f"/v1/auth/oauth/{provider}")
        assert r.status == 302 and "client_id=" in r.headers.get("location", ""), (r.status, r.headers)
    blob = b"".join(struct.pack(">I", len(x)) + x for x in (b"ssh-ed25519", bytes(range(1, 33))))
    key = api.post("/v1/ssh-keys", {"name": "laptop", "publicKey": "ssh-ed25519 " + base64.b64encode(blob).decode()})
    assert key.status == 200, key.body
    assert api.get("/v1/ssh-keys").status == 200
    assert api.delete(f"/v1/ssh-keys/{key.json()['id']}").status == 200
    # The catalog, refreshed by its schedule (provider keys from SSM), then read.
    report = _scheduled("CatalogRefreshFunction")
    assert len(report["providers"]) == 3 and all(o["ok"] for o in report["providers"]), report
    clock.advance(60)
    assert all(o["ok"] for o in _scheduled("CatalogRefreshFunction")["providers"])  # from each provider's digest
    assert api.get("/v1/catalog/listings?pageSize=2").json()["nextCursor"]
    assert api.post("/v1/rentals/preview", {"familyId": "rtx-4090", "gpuCount": 1}).status == 200
    # Money in: an admin adjustment, then a manual invoice (Stripe) voided.
    r = admin.post("/v1/admin/adjustments", {"userId": user["id"], "amountCents": 50_000, "reason": "funding"},
                   headers={"Idempotency-Key": "fund-1"})
    assert r.status == 200, r.body
    inv = admin.post("/v1/admin/invoices", {"userId": user["id"], "amountCents": 500, "description": "support"})
    assert inv.status == 200, inv.body
    assert admin.post(f"/v1/admin/invoices/{inv.json()['id']}/void").status == 200
    audit = admin.get("/v1/admin/audit?pageSize=2")  # the dashboard's audit list
    assert audit.status == 200 and len(audit.json()["entries"]) == 2, audit.body
    # Billing: a card saved through a SetupIntent (its webhook signed with the secret from SSM), a top-up.
    si = api.post("/v1/billing/setup-intent")
    assert si.status == 200, si.body
    si_id = si.json()["clientSecret"].split("_secret_")[0]
    ls.confirm_setup_intent(si_id, "4242424242424242")
    delivery = ls.wait_for("setup_intent.succeeded", lambda o: o["id"] == si_id)
    assert invoke("POST", "/v1/webhooks/stripe", raw=delivery.body,
                  headers={"stripe-signature": delivery.signature}).status == 200
    r = api.post("/v1/billing/checkout", {"amountCents": 2000}, headers={"Idempotency-Key": "topup-1"})
    assert r.status == 200, r.body
    for d in ls.deliveries():
        invoke("POST", "/v1/webhooks/stripe", raw=d.body, headers={"stripe-signature": d.signature})
    # Auto-topup above the balance: due after every debit (launch, sweep, timer), charged by the timer function.
    assert api.put("/v1/billing/auto-topup", {"enabled": True, "thresholdCents": 90_000,
                                               "topupAmountCents": 2000}).status == 200
    r = admin.post("/v1/admin/adjustments", {"userId": user["id"], "amountCents": -1000, "reason": "correction"},
                   headers={"Idempotency-Key": "fund-2"})
    assert r.status == 200, r.body
    for path in ("/v1/billing/balance", "/v1/billing/ledger?pageSize=1", "/v1/billing/ledger?type=adjustment",
                 "/v1/billing/invoices", "/v1/billing/card"):
        assert api.get(path).status == 200, path
    # A Checkout top-up: credited by the webhook (checkout.session.completed).
    r = api.post("/v1/billing/checkout", {"amountCents": 2500, "useCheckout": True})
    assert r.status == 200, r.body
    ls.complete_checkout(r.json()["sessionId"], "4242424242424242")
    done = ls.wait_for("checkout.session.completed", lambda o: o["id"] == r.json()["sessionId"])
    assert invoke("POST", "/v1/webhooks/stripe", raw=done.body, headers={"stripe-signature": done.signature}
                  ).status == 200
    # Rentals: launch (timers on SQS), boot, list, meter, the schedules and a timer, stop.
    r = api.post("/v1/rentals", {"familyId": "rtx-4090", "gpuCount": 1, "autoStopAfterHours": 1},
                 headers={"Idempotency-Key": "launch-1"})
    assert r.status == 200, r.body
    rid = r.json()["id"]
    clock.advance(BOOT + 1)
    assert api.get(f"/v1/rentals/{rid}").json()["status"] == "running"
    assert api.get("/v1/rentals?pageSize=1").status == 200
    assert api.get("/v1/rentals?cursor=forged.cursor").status == 400  # checked with the key from Secrets Manager
    assert api.get(f"/v1/rentals/{rid}/meter").status == 200
    for _ in range(3):
        clock.advance(310)  # past the auto-topup cooldown
        _sweep(env["sweep_queue"])
        _reconcile(env)
        _timers(env["queue"])
    clock.advance(310)  # a minute of use to settle, past the cooldown: the stop's debit fires an auto-topup
    assert api.post(f"/v1/rentals/{rid}/stop").status == 200
    clock.advance(5)
    _timers(env["queue"])
    _reconcile(env)
    assert sent_mail()


def _covered(fn: str, action: str, resource: str) -> str | None:
    for (f, a, where), why in COVERED_ELSEWHERE.items():
        if wildcard(f, fn) and (wildcard(a, action, True) or wildcard(action, a, True)) and (
                where == "*" or where in resource):
            return why
    return None


def test_every_grant_is_used_and_its_removal_is_reported(deployment: dict[str, str], clock: Any,
                                                         local_stripe: LocalStripe) -> None:
    with CHECKER.recording() as trace:
        journey(deployment, clock, local_stripe)
    stack = deployed()
    functions = {fn for fn, _, _ in trace}
    assert functions == set(stack.functions()), set(stack.functions()) - functions
    problems: list[str] = []
    excused: dict[str, list[str]] = {}
    for fn in stack.functions():
        mine = [(r, e) for f, r, e in trace if f == fn]
        env = mine[0][1]
        for where, action, resource, resolved in stack.grants(fn, env):
            users = [(r, e) for r, e in mine if wildcard(action, r.action, True) and wildcard(resolved, r.resource)]
            if not users:
                why = _covered(fn, action, resolved)
                if why is None:
                    problems.append(f"{fn}: {action} on {resolved} ({where}) is used by no call")
                else:
                    excused.setdefault(why, []).append(f"{fn}: {action} on {resolved}")
                continue
            cut = stack.without(fn, where, action, resource)
            if all(cut.decide(fn, r, e).allowed for r, e in users):
                problems.append(f"{fn}: without {action} on {resolved}, every call still passes")
    print("\n".join(f"{why}:\n  " + "\n  ".join(grants) for why, grants in excused.items()))
    stale = set(COVERED_ELSEWHERE.values()) - set(excused)
    assert not stale, f"entries of COVERED_ELSEWHERE no grant needs any more: {stale}"
    assert not problems, "\n".join(problems)


def test_a_grant_removed_from_the_template_is_reported(aws: None, clock: Any) -> None:
    text = TEMPLATE.read_text()
    auth = text.index("\n  AuthFunction:\n")
    grant = "              Action: [ses:SendEmail]\n"
    ses = text.index(grant, auth)
    cut = text[:ses] + grant.replace("SendEmail", "SendRawEmail") + text[ses + len(grant):]
    stack = Stack(expand(cut))
    with CHECKER.using(stack) as denied:
        r = Api().post("/v1/auth/request-code", {"email": "bob@example.com"})
    assert r.status == 500  # the mail could not be sent: the sign-in fails as it would on AWS
    assert [(v.function, v.request.action if v.request else None) for v in denied] == [
        ("AuthFunction", "ses:SendEmail")], denied
    assert "no statement of AuthFunctionRole allows it" in denied[0].reason
    # The template as it is allows it.
    env = {"MAIL_FROM": "no-reply@gpurent.test"}
    assert deployed().decide("AuthFunction", denied[0].request or Request("", ""), env).allowed
