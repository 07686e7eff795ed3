"""template.yaml: linted by cfn-lint and `sam validate --lint`, built by `sam build`
(no Docker), and consistent with the code and the design's rules."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.local import template
from infra.local.functions import load_handler

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.template

SAM_ENV = {
    **os.environ,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "SAM_CLI_TELEMETRY": "0",
}


def sam() -> str:
    path = os.environ.get("SAM_CLI") or shutil.which("sam")
    if not path or not Path(path).exists():
        pytest.fail("aws-sam-cli not found: run through `make test` (it installs .sam-venv)")
    return path


def test_cfn_lint_passes() -> None:
    cfn_lint = str(Path(sys.executable).parent / "cfn-lint")
    r = subprocess.run([cfn_lint, "template.yaml"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_sam_validate_lint_passes() -> None:
    r = subprocess.run([sam(), "validate", "--lint", "--template-file", "template.yaml"], cwd=ROOT,
                       capture_output=True, text=True, env=SAM_ENV)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.timeout(1200)  # two builds of the layer (sam build, then its Makefile alone), pip downloads
def test_sam_build_without_docker(tmp_path: Path) -> None:
    py313 = os.environ.get("SAM_PYTHON_BIN") or ""
    if not py313:
        pytest.fail("no Python 3.13 found for sam build (pyenv versions 3.13.*)")
    env = {**SAM_ENV, "PATH": f"{py313}:{SAM_ENV['PATH']}"}
    build = tmp_path / "build"
    r = subprocess.run([sam(), "build", "--template-file", "template.yaml", "--build-dir", str(build)],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    layer = build / "DomainLayer" / "python"
    assert (layer / "gpurent" / "api.py").exists()
    cores = list(layer.glob("pydantic_core/_pydantic_core*.so"))
    assert cores and all("aarch64" in c.name for c in cores), cores
    for logical_id in template.functions():
        assert (build / logical_id / "app.py").exists(), logical_id
        # Functions hold only their handler: the domain comes from the layer.
        assert not (build / logical_id / "gpurent").exists()
    # Every module ships its bytecode for CPython 3.13, hash-based and never re-validated
    # (/opt is read-only: without it every cold start compiles), with /opt/python as its path.
    sources = sorted(layer.rglob("*.py"))
    assert len(sources) > 1000
    for src in sources:
        pyc = src.parent / "__pycache__" / f"{src.stem}.cpython-313.pyc"
        assert pyc.exists(), src
    header = (layer / "gpurent" / "__pycache__" / "api.cpython-313.pyc").read_bytes()
    assert int.from_bytes(header[4:8], "little") == 0b01  # hash-based, unchecked
    assert b"/opt/python/gpurent/api.py" in header
    # python-ulid is no longer shipped (the product mints its own ULIDs).
    assert not list(layer.glob("ulid*")) and not list(layer.glob("python_ulid*"))
    # A second build, by the layer's Makefile alone, is byte for byte the same.
    again = tmp_path / "again"
    r = subprocess.run(["make", "-s", "-C", "layers/gpurent", "build-DomainLayer", f"ARTIFACTS_DIR={again}"],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _tree(again / "python") == _tree(layer)


def _tree(root: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_layer_lock_pins_every_dependency_with_hashes_in_step_with_pyproject() -> None:
    import re
    import tomllib

    text = (ROOT / "layers" / "gpurent" / "requirements.txt").read_text()
    entries = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", text, re.M)
    pins = {name.lower().replace("_", "-"): version for name, version, _ in entries}
    assert len(entries) == text.count("=="), "every pinned line carries its hashes"
    assert {"botocore", "pydantic-core", "urllib3", "typing-extensions"} <= set(pins)  # transitive ones too
    direct = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in direct:
        name, version = dep.split("==")
        assert pins.get(name.lower()) == version, (dep, pins.get(name.lower()))
    wanted = [line for line in (ROOT / "layers" / "gpurent" / "requirements.in").read_text().splitlines()
              if line and not line.startswith("#")]
    assert sorted(wanted) == sorted(direct), "requirements.in is pyproject's runtime dependencies"


def test_runtime_and_architecture() -> None:
    g = template.load()["Globals"]["Function"]
    assert g["Runtime"] == "python3.13"
    assert g["Architectures"] == ["arm64"]
    layer = template.load()["Resources"]["DomainLayer"]
    assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": "arm64"}


def _statements(fn: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for policy in fn["Properties"].get("Policies", []):
        if isinstance(policy, dict) and "Statement" in policy:
            out.extend(policy["Statement"])
    return out


def test_no_function_has_wildcard_dynamodb_access() -> None:
    for logical_id, fn in template.functions().items():
        for s in _statements(fn):
            if s["Effect"] != "Allow":
                continue
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            assert not any(a in ("dynamodb:*", "*") for a in actions), logical_id
            if any(a.startswith("dynamodb:") for a in actions):
                assert s["Resource"] != "*", logical_id


def test_money_tables_have_point_in_time_recovery() -> None:
    resources = template.load()["Resources"]
    for name in ("MoneyTable", "LedgerTable", "IdentityTable"):
        props = resources[name]["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert resources[name]["DeletionPolicy"] == "Retain"


def test_no_secret_values_in_template() -> None:
    text = (ROOT / "template.yaml").read_text()
    for marker in ("sk_live_", "sk_test_", "whsec_", "rk_live_"):
        assert marker not in text


def test_every_template_route_is_served_by_its_function_and_vice_versa() -> None:
    by_function: dict[str, set[str]] = {}
    for route in template.routes():
        by_function.setdefault(route.code_uri, set()).add(route.route_key)
    assert by_function
    for code_uri, keys in by_function.items():
        handler = load_handler(code_uri)
        router = inspect.unwrap(handler).__self__
        assert set(router.routes) == keys, code_uri


# ---------------------------------------------------------------- as SAM deploys it (issue 18)

LEDGER_WRITES = {"dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:PartiQLUpdate",
                 "dynamodb:PartiQLDelete"}
API_FUNCTIONS = {"AuthFunction", "SshKeysFunction", "BillingFunction", "WebhookFunction", "AdminFunction",
                 "CatalogFunction", "RentalsFunction"}

# Names that must be unique in an account and region (or globally): (resource type, property path).
UNIQUE_NAMES = [
    ("AWS::Lambda::Function", "FunctionName"), ("AWS::Lambda::LayerVersion", "LayerName"),
    ("AWS::DynamoDB::Table", "TableName"), ("AWS::SQS::Queue", "QueueName"), ("AWS::SNS::Topic", "TopicName"),
    ("AWS::Scheduler::Schedule", "Name"), ("AWS::Scheduler::ScheduleGroup", "Name"),
    ("AWS::SecretsManager::Secret", "Name"), ("AWS::Logs::LogGroup", "LogGroupName"),
    ("AWS::CloudWatch::Alarm", "AlarmName"), ("AWS::IAM::Role", "RoleName"),
    ("AWS::IAM::ManagedPolicy", "ManagedPolicyName"), ("AWS::CodeDeploy::Application", "ApplicationName"),
    ("AWS::ApiGatewayV2::DomainName", "DomainName"), ("AWS::S3::Bucket", "BucketName"),
    ("AWS::CloudFront::OriginAccessControl", "OriginAccessControlConfig.Name"),
    ("AWS::CloudFront::CachePolicy", "CachePolicyConfig.Name"),
    ("AWS::CloudFront::OriginRequestPolicy", "OriginRequestPolicyConfig.Name"),
    ("AWS::CloudFront::ResponseHeadersPolicy", "ResponseHeadersPolicyConfig.Name"),
    ("AWS::CloudFront::Function", "Name"), ("AWS::Events::Rule", "Name"), ("AWS::KMS::Alias", "AliasName"),
]


def _expanded() -> dict[str, Any]:
    from tests.iam.policy import deployed

    return deployed().template


def _stages() -> list[tuple[str, str]]:
    """(stack name, Stage) of every deployment samconfig.toml describes."""
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    out = []
    for env in config.values():
        if not isinstance(env, dict) or "deploy" not in env:
            continue
        deploy = env["deploy"]["parameters"]
        stack = deploy.get("stack_name") or config["default"]["global"]["parameters"]["stack_name"]
        stage = deploy["parameter_overrides"].split("Stage=", 1)[1].strip('"').split('"')[0]
        out.append((stack, stage))
    return out


def _get(props: dict[str, Any], path: str) -> object:
    for part in path.split("."):
        if not isinstance(props, dict) or part not in props:
            return None
        props = props[part]
    return props


def test_two_stages_in_one_account_collide_on_no_named_resource() -> None:
    from tests.iam.policy import Resolver, Stack

    stages = _stages()
    assert len(stages) >= 2 and len({s for _, s in stages}) == len(stages), stages
    template = _expanded()
    named: dict[tuple[str, str], list[str]] = {}
    for stack_name, stage in stages:
        r = Resolver(Stack(template, {"Stage": stage}, stack_name), None, {"AWS_REGION": "us-east-1"})
        for logical_id, res in template["Resources"].items():
            for rtype, path in UNIQUE_NAMES:
                value = _get(res.get("Properties") or {}, path) if res["Type"] == rtype else None
                if value is not None:
                    named.setdefault((logical_id, path), []).append(str(r.resolve(value)))
    assert named, "no named resource at all?"
    for (logical_id, path), values in named.items():
        assert len(set(values)) == len(values), f"{logical_id}.{path} is {values[0]!r} in more than one stage"
    # The schedules SAM generates would be named after their logical ids: OmitName lets CloudFormation name them.
    schedules = [r for r in template["Resources"].values() if r["Type"] == "AWS::Scheduler::Schedule"]
    assert schedules and all("Name" not in r["Properties"] for r in schedules)


def test_the_ledger_is_append_only_for_every_principal() -> None:
    from tests.iam.policy import Request, deployed

    ledger = template.load()["Resources"]["LedgerTable"]["Properties"]
    denies = [s for s in ledger["ResourcePolicy"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert any(s["Principal"] == "*" and LEDGER_WRITES <= set(s["Action"]) for s in denies), denies
    stack = deployed()
    env = {"LEDGER_TABLE": "t-ledger", "AWS_REGION": "us-east-1"}
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/t-ledger"
    for fn in stack.functions():
        for action in LEDGER_WRITES:
            decision = stack.decide(fn, Request(action, arn), env)
            assert not decision.allowed and "explicit Deny" in decision.reason, (fn, action, decision)


def test_money_tables_cannot_be_deleted() -> None:
    resources = template.load()["Resources"]
    for name in ("MoneyTable", "LedgerTable", "IdentityTable"):
        assert resources[name]["Properties"]["DeletionProtectionEnabled"] is True, name


def test_api_functions_deploy_by_canary_through_an_alias_rolled_back_on_alarms() -> None:
    t = _expanded()
    resources = t["Resources"]
    aliases = {k: v for k, v in resources.items() if v["Type"] == "AWS::Lambda::Alias"}
    for fn in API_FUNCTIONS:
        alias = aliases.get(f"{fn}Aliaslive")
        assert alias is not None, fn
        group_ref = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]["DeploymentGroupName"]["Ref"]
        group = resources[group_ref]["Properties"]
        assert group["AutoRollbackConfiguration"]["Enabled"] is True
        alarms = {a["Name"]["Ref"] for a in group["AlarmConfiguration"]["Alarms"]}
        assert {f"{fn.removesuffix('Function')}ErrorsAlarm", "ServerErrorsAlarm", "ApiServerErrorsAlarm"} <= alarms
    # Every HTTP API route invokes the alias, so a canary shifts real traffic.
    api = next(v for v in resources.values() if v["Type"] == "AWS::ApiGatewayV2::Api")
    uris = [op["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
            for path in api["Properties"]["Body"]["paths"].values() for op in path.values()]
    assert uris and all("Aliaslive}" in u for u in uris), [u for u in uris if "Aliaslive}" not in u]
    webhook = resources["WebhookFunction"]["Properties"]
    assert webhook["ReservedConcurrentExecutions"] == {"Ref": "WebhookConcurrency"}


def test_scheduled_runs_are_not_retried_and_failures_are_kept() -> None:
    resources = _expanded()["Resources"]
    configs = {v["Properties"]["FunctionName"]["Ref"]: v["Properties"] for v in resources.values()
               if v["Type"] == "AWS::Lambda::EventInvokeConfig"}
    for name, _code_uri, _rate in template.schedules():
        cfg = configs.get(name)
        assert cfg is not None, name
        assert cfg["MaximumRetryAttempts"] == 0
        assert cfg["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["FailedRunQueue", "Arn"]}


def test_every_function_logs_to_its_own_group_with_retention_and_the_api_logs_access() -> None:
    resources = template.load()["Resources"]
    groups = set()
    for logical_id, fn in template.functions().items():
        group = fn["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert resources[group]["Type"] == "AWS::Logs::LogGroup", logical_id
        assert resources[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        groups.add(group)
    assert len(groups) == len(template.functions())
    access = resources["HttpApi"]["Properties"]["AccessLogSettings"]
    assert access["DestinationArn"] == {"GetAtt": "ApiAccessLogGroup.Arn"}
    assert "$context.requestId" in access["Format"] and "$context.status" in access["Format"]


def _alarm_metrics(alarm: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    p = alarm["Properties"]
    if "MetricName" in p:
        return [(p["Namespace"], p["MetricName"], {d["Name"]: d["Value"] for d in p["Dimensions"]})]
    return [(m["MetricStat"]["Metric"]["Namespace"], m["MetricStat"]["Metric"]["MetricName"],
             {d["Name"]: d["Value"] for d in m["MetricStat"]["Metric"]["Dimensions"]})
            for m in p["Metrics"] if "MetricStat" in m]


def test_alarms_watch_every_function_and_the_metrics_the_code_emits() -> None:
    import re

    resources = template.load()["Resources"]
    alarms = {k: v for k, v in resources.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    watched = [m for a in alarms.values() for m in _alarm_metrics(a)]
    for logical_id in template.functions():
        for metric in ("Errors", "Throttles"):
            assert ("AWS/Lambda", metric, {"FunctionName": {"Ref": logical_id}}) in watched, (logical_id, metric)
    # Every product metric an alarm watches is counted somewhere in the code, by a function the alarm names.
    code = "\n".join(p.read_text() for p in (ROOT / "layers" / "gpurent" / "gpurent").rglob("*.py"))
    code += "\n".join(p.read_text() for p in (ROOT / "functions").rglob("*.py"))
    emitted = set(re.findall(r'count\("(\w+)"', code))
    product = {name for ns, name, _ in watched if ns == "gpurent"}
    assert {"ServerErrors", "AutoTopupsFailed", "OrphansTerminated", "WebhookInvalidSignature"} <= product
    assert product <= emitted, product - emitted
    for ns, _name, dims in watched:
        if ns == "gpurent":
            assert dims["service"] == "gpurent" and dims["function_name"]["Ref"] in template.functions()
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == {"If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}],
                                                                  {"Ref": "AWS::NoValue"}]}


def test_every_table_and_every_index_is_watched_for_throttles_within_the_metric_limit() -> None:
    """A throttled index write holds back its table's writes (money's included): each table and
    each global secondary index has its read and write throttle events in an alarm, and no
    metric-math alarm names more than CloudWatch's 10 metrics (a hard limit)."""
    resources = template.load()["Resources"]
    alarms = [v for v in resources.values() if v["Type"] == "AWS::CloudWatch::Alarm"]
    watched = [m for a in alarms for m in _alarm_metrics(a)]
    for logical_id, table in resources.items():
        if table["Type"] != "AWS::DynamoDB::Table":
            continue
        indexes = [i["IndexName"] for i in table["Properties"].get("GlobalSecondaryIndexes", [])]
        for metric in ("ReadThrottleEvents", "WriteThrottleEvents"):
            assert ("AWS/DynamoDB", metric, {"TableName": {"Ref": logical_id}}) in watched, (logical_id, metric)
            for index in indexes:
                dims = {"TableName": {"Ref": logical_id}, "GlobalSecondaryIndexName": index}
                assert ("AWS/DynamoDB", metric, dims) in watched, (logical_id, index, metric)
    assert "ProviderIndex" in str(resources)  # the loop above saw the indexes
    for alarm in alarms:
        assert len(_alarm_metrics(alarm)) <= 10, alarm["Properties"]["AlarmDescription"]


def test_every_handler_is_a_powertools_entry_point() -> None:
    for logical_id, fn in template.functions().items():
        handler = load_handler(str(fn["Properties"]["CodeUri"]))
        assert getattr(inspect.unwrap(handler, stop=lambda f: hasattr(f, "instrumented")), "instrumented", False), (
            logical_id)
