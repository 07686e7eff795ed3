"""template.yaml as IAM sees it once deployed: each function's execution role with the
statements SAM expands its `Policies` to (policy templates, managed policies, the
policies SAM adds for event sources and destinations), the tables' resource policies,
and an evaluator that decides one request the way IAM does for a same-account principal
(an explicit Deny anywhere wins; else an Allow in the role or in the resource's policy).

Intrinsic functions are resolved against a *deployment*: physical names and parameter
values read from the environment the function runs with (`IDENTITY_TABLE` is what
`!Ref IdentityTable` became, `VAST_API_KEY_PARAM` what `!Ref VastApiKeyParam` was), so
the tests' own table names, queue URLs and parameter names stand in for the real ones.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
ACCOUNT = "123456789012"  # moto's account: the ARNs of the tests' resources carry it
PARTITION = "aws"
STACK = "gpurent-test"

# Managed policies SAM attaches, as AWS publishes them (only what they grant matters here).
MANAGED_POLICIES: dict[str, list[dict[str, Any]]] = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole": [
        {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": "*"}],
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess": [
        {"Effect": "Allow", "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules",
                                       "xray:GetSamplingTargets", "xray:GetSamplingStatisticSummaries"],
         "Resource": "*"}],
    "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole": [
        {"Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                                       "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": "*"}],
}


# ---------------------------------------------------------------- SAM's transform

def _sam_python() -> str:
    sam = os.environ.get("SAM_CLI")
    candidates = [Path(sam).parent / "python"] if sam else []
    candidates.append(ROOT / ".sam-venv" / "bin" / "python")
    for c in candidates:
        if c.exists():
            return str(c)
    raise RuntimeError("aws-sam-cli's venv (.sam-venv) not found: run `make deps`")


def expand(template_text: str) -> dict[str, Any]:
    """The CloudFormation template SAM expands `template_text` to (cached on disk by content).

    Every pytest worker of `make test` (both Pythons) asks for it at once on a fresh clone: one
    of them runs the transform while the others wait on a lock, then all read the cache. Each
    run reads its own copy of the template: with one shared copy, a run's clean-up deleted it
    before another run's transform had read it (a CI failure), and a rewrite under a running
    transform could expand a truncated template."""
    digest = hashlib.sha256(template_text.encode() + Path(__file__).read_bytes()).hexdigest()[:20]
    cache = ROOT / ".pytest_cache" / "iam" / f"{digest}.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if cache.exists():
            data: dict[str, Any] = json.loads(cache.read_text())
            return data
        src = cache.with_suffix(f".{os.getpid()}.yaml")
        src.write_text(template_text)
        try:
            r = subprocess.run([_sam_python(), str(Path(__file__).with_name("sam_transform.py")), str(src)],
                               capture_output=True, text=True,
                               env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}, check=False)
        finally:
            src.unlink(missing_ok=True)
        if r.returncode != 0:
            raise RuntimeError(f"SAM transform failed:\n{r.stderr[-3000:]}")
        data = json.loads(r.stdout)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(r.stdout)
        tmp.replace(cache)
        return data


@lru_cache(maxsize=1)
def deployed() -> Stack:
    """The stack of template.yaml as it is on disk."""
    return Stack(expand(TEMPLATE.read_text()))


# ---------------------------------------------------------------- requests and decisions

@dataclass(frozen=True)
class Request:
    """One authorization AWS makes for an API call: an action on a resource."""

    action: str  # service:Action
    resource: str  # an ARN (or "*")
    context: tuple[tuple[str, str], ...] = ()  # condition keys the request carries

    def key(self, name: str) -> str | None:
        return dict(self.context).get(name)

    def __str__(self) -> str:
        extra = "".join(f" [{k}={v}]" for k, v in self.context)
        return f"{self.action} on {self.resource}{extra}"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


# ---------------------------------------------------------------- the stack

def _listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@dataclass
class Stack:
    """An expanded (plain CloudFormation) template."""

    template: dict[str, Any]
    overrides: dict[str, str] = field(default_factory=dict)  # parameter values (a deployment's)
    stack_name: str = STACK
    _decisions: dict[Any, Decision] = field(default_factory=dict, repr=False)

    @property
    def resources(self) -> dict[str, Any]:
        res: dict[str, Any] = self.template["Resources"]
        return res

    def functions(self) -> list[str]:
        return sorted(k for k, v in self.resources.items() if v["Type"] == "AWS::Lambda::Function")

    def role_of(self, function: str) -> str:
        role = self.resources[function]["Properties"]["Role"]
        att = role.get("Fn::GetAtt") if isinstance(role, dict) else None
        if not att:
            raise ValueError(f"{function}: role {role!r} is not a role of this stack")
        return str(att[0] if isinstance(att, list) else str(att).split(".")[0])

    def environment(self, function: str) -> dict[str, Any]:
        env = self.resources[function]["Properties"].get("Environment", {}).get("Variables", {})
        return dict(env)

    def role_statements(self, function: str) -> list[tuple[str, dict[str, Any]]]:
        """(where, statement) of every statement of the function's role, unresolved."""
        role_id = self.role_of(function)
        props = self.resources[role_id]["Properties"]
        out: list[tuple[str, dict[str, Any]]] = []
        for policy in props.get("Policies") or []:
            for i, s in enumerate(_listify(policy["PolicyDocument"]["Statement"])):
                out.append((f"{role_id}/{policy['PolicyName']}#{i}", s))
        for arn in props.get("ManagedPolicyArns") or []:
            if not isinstance(arn, str) or arn not in MANAGED_POLICIES:
                raise ValueError(f"{role_id}: managed policy {arn!r} unknown to the IAM tier (add its statements)")
            for i, s in enumerate(MANAGED_POLICIES[arn]):
                out.append((f"{role_id}/{arn.rsplit('/', 1)[1]}#{i}", s))
        return out

    def resource_policies(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(where, resource logical id, statement) of the resource-based policies (tables)."""
        out: list[tuple[str, str, dict[str, Any]]] = []
        for logical_id, res in self.resources.items():
            if res["Type"] != "AWS::DynamoDB::Table":
                continue
            policy = (res["Properties"].get("ResourcePolicy") or {}).get("PolicyDocument")
            if policy:
                for i, s in enumerate(_listify(policy["Statement"])):
                    out.append((f"{logical_id}/ResourcePolicy#{i}", logical_id, s))
        return out

    def without(self, function: str, where: str, action: str, resource: Any) -> Stack:
        """A copy of this stack whose `function` role lacks one grant: `action` on `resource`
        in the statement `where` (as `role_statements` names it)."""
        clone = Stack(copy.deepcopy(self.template), dict(self.overrides), self.stack_name)
        role_id = clone.role_of(function)
        props = clone.resources[role_id]["Properties"]
        for policy in props.get("Policies") or []:
            statements = _listify(policy["PolicyDocument"]["Statement"])
            for i, s in enumerate(statements):
                if f"{role_id}/{policy['PolicyName']}#{i}" != where:
                    continue
                actions = [a for a in _listify(s["Action"]) if a != action]
                resources = _listify(s["Resource"])
                rest = [r for r in resources if r != resource]
                if len(rest) == len(resources):
                    raise ValueError(f"{resource!r} not in {where}")
                if len(actions) == len(_listify(s["Action"])):
                    raise ValueError(f"{action} not in {where}")
                # The statement keeps its other actions on every resource, and this action on the others.
                s["Action"] = actions
                policy["PolicyDocument"]["Statement"] = [*statements[:i], s, *statements[i + 1:]]
                if rest:
                    policy["PolicyDocument"]["Statement"].append(
                        {**{k: v for k, v in s.items() if k not in ("Action", "Resource")},
                         "Action": [action], "Resource": rest})
                if not actions:
                    policy["PolicyDocument"]["Statement"].remove(s)
                return clone
        raise ValueError(f"no statement {where}")

    # ------------------------------------------------------------ deciding

    def decide(self, function: str, request: Request, env: Mapping[str, str]) -> Decision:
        """IAM's answer to `request` by `function`'s role (cached per deployment: what the
        function's environment names)."""
        names = ("AWS_REGION", "AWS_DEFAULT_REGION", *self.environment(function))
        key = (function, request, tuple(env.get(n) for n in names))
        cached = self._decisions.get(key)
        if cached is None:
            cached = self._decisions[key] = self._decide(function, request, env)
        return cached

    def _decide(self, function: str, request: Request, env: Mapping[str, str]) -> Decision:
        r = Resolver(self, function, env)
        allow: str | None = None
        for where, s in self.role_statements(function):
            if statement_matches(r.resolve(s), request):
                if s["Effect"] == "Deny":
                    return Decision(False, f"explicit Deny in {where}")
                allow = allow or where
        for where, table, s in self.resource_policies():
            # A resource policy governs its own resource only (its "*" is that table and its indexes).
            arn = r.get_att(table, "Arn")
            if request.resource != arn and not request.resource.startswith(arn + "/"):
                continue
            resolved = r.resolve(s)
            if principal_matches(resolved.get("Principal"), r.role_arn()) and statement_matches(resolved, request):
                if s["Effect"] == "Deny":
                    return Decision(False, f"explicit Deny in {where}")
                allow = allow or where
        if allow:
            return Decision(True, f"allowed by {allow}")
        return Decision(False, f"no statement of {self.role_of(function)} allows it")

    def grants(self, function: str, env: Mapping[str, str]) -> list[tuple[str, str, Any, str]]:
        """Every (where, action, unresolved resource, resolved resource) an Allow statement of the
        function's own policies grants (not the managed policies)."""
        r = Resolver(self, function, env)
        out = []
        for where, s in self.role_statements(function):
            if s["Effect"] != "Allow" or "Action" not in s or "Resource" not in s:
                continue
            if any(where.endswith(f"/{arn.rsplit('/', 1)[1]}#{i}")
                   for arn in MANAGED_POLICIES for i in range(len(MANAGED_POLICIES[arn]))):
                continue
            for action in _listify(s["Action"]):
                for resource in _listify(s["Resource"]):
                    resolved = r.resolve(resource)
                    out.append((where, str(action), resource, str(resolved)))
        return out


# ---------------------------------------------------------------- resolving intrinsics

class Resolver:
    """Resolves CloudFormation intrinsics for one function in a deployment described by `env`."""

    def __init__(self, stack: Stack, function: str | None, env: Mapping[str, str]) -> None:
        self.stack = stack
        self.function = function
        self.name = stack.stack_name
        self.region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        template = stack.template
        self.parameters: dict[str, str] = {
            k: str(v.get("Default", "")) for k, v in (template.get("Parameters") or {}).items()}
        self.physical: dict[str, str] = {}
        # What each `!Ref` of the function's environment became is in the environment itself.
        for var, value in (stack.environment(function) if function else {}).items():
            if isinstance(value, dict) and "Ref" in value and var in env:
                name = value["Ref"]
                if name in self.parameters:
                    self.parameters[name] = env[var]
                elif name in stack.resources:
                    self.physical[name] = env[var]
        # The tests' deployment sends from the domain of its MAIL_FROM (a deployment verifies that domain in SES).
        if "MailIdentity" in self.parameters and "@" in env.get("MAIL_FROM", ""):
            self.parameters["MailIdentity"] = env["MAIL_FROM"].rsplit("@", 1)[1]
        self.parameters.update(stack.overrides)
        self.conditions: dict[str, bool] = {}
        for name in template.get("Conditions") or {}:
            self.conditions[name] = self._condition(name)

    def role_arn(self) -> str:
        assert self.function is not None
        return f"arn:{PARTITION}:iam::{ACCOUNT}:role/{self.name}-{self.stack.role_of(self.function)}"

    # ------------------------------------------------------------ refs and attributes

    def ref(self, name: str) -> Any:
        pseudo = {"AWS::Partition": PARTITION, "AWS::Region": self.region, "AWS::AccountId": ACCOUNT,
                  "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": self.name,
                  "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{ACCOUNT}:stack/{self.name}/0",
                  "AWS::NoValue": _NO_VALUE}
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            ptype = str((self.stack.template.get("Parameters") or {}).get(name, {}).get("Type", "String"))
            value = self.parameters[name]
            return [v for v in value.split(",")] if ptype.startswith("CommaDelimitedList") else value
        if name not in self.stack.resources:
            raise KeyError(f"Ref {name}: no such parameter or resource")
        rtype = self.stack.resources[name]["Type"]
        if name in self.physical:
            return self.physical[name]
        if rtype == "AWS::SQS::Queue":
            return f"https://sqs.{self.region}.amazonaws.com/{ACCOUNT}/{self.name}-{name}"
        if rtype in ("AWS::SecretsManager::Secret", "AWS::SNS::Topic"):
            return self.get_att(name, "Arn")
        return f"{self.name}-{name}"

    def get_att(self, name: str, attribute: str) -> str:
        if name not in self.stack.resources:
            raise KeyError(f"GetAtt {name}.{attribute}: no such resource")
        rtype = self.stack.resources[name]["Type"]
        p, r, a = PARTITION, self.region, ACCOUNT
        if rtype == "AWS::DynamoDB::Table" and attribute == "Arn":
            return f"arn:{p}:dynamodb:{r}:{a}:table/{self.ref(name)}"
        if rtype == "AWS::SQS::Queue":
            queue = str(self.ref(name)).rstrip("/").rsplit("/", 1)[1]
            return {"Arn": f"arn:{p}:sqs:{r}:{a}:{queue}", "QueueName": queue,
                    "QueueUrl": str(self.ref(name))}[attribute]
        if rtype == "AWS::SecretsManager::Secret" and attribute in ("Arn", "Id"):
            return self.physical.get(name) or f"arn:{p}:secretsmanager:{r}:{a}:secret:{name}-AbCdEf"
        if rtype == "AWS::SNS::Topic" and attribute in ("TopicArn", "Arn"):
            return self.physical.get(name) or f"arn:{p}:sns:{r}:{a}:{self.name}-{name}"
        if rtype == "AWS::Lambda::Function" and attribute == "Arn":
            return f"arn:{p}:lambda:{r}:{a}:function:{self.ref(name)}"
        if rtype == "AWS::IAM::Role" and attribute == "Arn":
            return f"arn:{p}:iam::{a}:role/{self.name}-{name}"
        return f"{name}.{attribute}"  # an attribute no statement of ours compares against

    # ------------------------------------------------------------ intrinsics

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [i for i in items if i is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (k, v), = value.items()
            handler = _INTRINSICS.get(k)
            if handler is not None:
                return handler(self, v)
        out = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _NO_VALUE}

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        local = {k: self.resolve(v) for k, v in variables.items()}

        def one(m: re.Match[str]) -> str:
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in local:
                return str(local[name])
            if "." in name and not name.startswith("AWS::"):
                res, att = name.split(".", 1)
                return self.get_att(res, att)
            value = self.ref(name)
            return ",".join(value) if isinstance(value, list) else str(value)

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def _get_att(self, arg: Any) -> str:
        name, att = (arg[0], arg[1]) if isinstance(arg, list) else str(arg).split(".", 1)
        return self.get_att(str(name), str(self.resolve(att)))

    def _if(self, arg: list[Any]) -> Any:
        name, yes, no = arg
        return self.resolve(yes if self.conditions[name] else no)

    def _condition(self, name: str) -> bool:
        return self.conditions[name] if name in self.conditions else bool(
            self.resolve(self.stack.template["Conditions"][name]))


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


_NO_VALUE = _NoValue()

_INTRINSICS: dict[str, Callable[[Resolver, Any], Any]] = {
    "Ref": lambda r, v: r.ref(str(v)),
    "Fn::GetAtt": lambda r, v: r._get_att(v),
    "Fn::Sub": lambda r, v: r._sub(v),
    "Fn::Join": lambda r, v: str(r.resolve(v[0])).join(str(x) for x in r.resolve(v[1])),
    "Fn::Select": lambda r, v: r.resolve(v[1])[int(r.resolve(v[0]))],
    "Fn::Split": lambda r, v: str(r.resolve(v[1])).split(str(r.resolve(v[0]))),
    "Fn::If": lambda r, v: r._if(v),
    "Fn::Equals": lambda r, v: r.resolve(v[0]) == r.resolve(v[1]),
    "Fn::Not": lambda r, v: not r.resolve(v[0]),
    "Fn::And": lambda r, v: all(r.resolve(x) for x in v),
    "Fn::Or": lambda r, v: any(r.resolve(x) for x in v),
    "Condition": lambda r, v: r._condition(str(v)),
}


# ---------------------------------------------------------------- matching

@lru_cache(maxsize=4096)
def _pattern(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.IGNORECASE if ignore_case else 0)


def wildcard(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM's `*` (any run of characters, `/` and `:` included) and `?` (one character)."""
    return _pattern(pattern, ignore_case).fullmatch(value) is not None


def _any(patterns: Iterable[Any], value: str, ignore_case: bool) -> bool:
    return any(wildcard(str(p), value, ignore_case) for p in patterns)


def statement_matches(s: Mapping[str, Any], request: Request) -> bool:
    if "Action" in s and not _any(_listify(s["Action"]), request.action, True):
        return False
    if "NotAction" in s and _any(_listify(s["NotAction"]), request.action, True):
        return False
    if "Resource" in s and not _any(_listify(s["Resource"]), request.resource, False):
        return False
    if "NotResource" in s and _any(_listify(s["NotResource"]), request.resource, False):
        return False
    return conditions_hold(s.get("Condition") or {}, request)


def principal_matches(principal: Any, role_arn: str) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict):
        for key, values in principal.items():
            if key != "AWS":
                continue
            for v in _listify(values):
                if v in ("*", role_arn, ACCOUNT, f"arn:{PARTITION}:iam::{ACCOUNT}:root"):
                    return True
    return False


_STRING_OPS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda want, got: want == got,
    "StringNotEquals": lambda want, got: want != got,
    "StringEqualsIgnoreCase": lambda want, got: want.lower() == got.lower(),
    "StringLike": lambda want, got: wildcard(want, got),
    "StringNotLike": lambda want, got: not wildcard(want, got),
    "ArnEquals": lambda want, got: want == got,
    "ArnLike": lambda want, got: wildcard(want, got),
    "Bool": lambda want, got: want.lower() == got.lower(),
}
_NEGATED = ("StringNotEquals", "StringNotLike")


def conditions_hold(conditions: Mapping[str, Mapping[str, Any]], request: Request) -> bool:
    """Every condition block holds (the operators this stack's policies use; an unknown one fails loudly)."""
    for operator, block in conditions.items():
        op = operator.split(":", 1)[-1]
        if_exists = op.endswith("IfExists")
        op = op.removesuffix("IfExists")
        if op not in _STRING_OPS:
            raise ValueError(f"condition operator {operator} unknown to the IAM tier")
        for key, wanted in block.items():
            got = request.key(key)
            if got is None:
                if not (if_exists or op in _NEGATED):
                    return False
                continue
            values = [str(w) for w in _listify(wanted)]
            negated = op in _NEGATED
            test = _STRING_OPS[op]
            ok = all(test(w, got) for w in values) if negated else any(test(w, got) for w in values)
            if not ok:
                return False
    return True


def _main() -> None:  # pragma: no cover - a developer's look at the expansion
    stack = deployed()
    fn = sys.argv[1] if len(sys.argv) > 1 else None
    for f in stack.functions():
        if fn and f != fn:
            continue
        print(f)
        for where, action, _, resolved in stack.grants(f, os.environ):
            print(f"  {action:<32} {resolved}   ({where})")


if __name__ == "__main__":
    _main()
