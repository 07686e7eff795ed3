"""Reads template.yaml: the routes of the HTTP API and the DynamoDB tables, so
the local stack and the tests run exactly what the template declares."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

# Logical id of each table → the setting / environment variable naming it.
TABLE_ENV = {
    "IdentityTable": "IDENTITY_TABLE",
    "MoneyTable": "MONEY_TABLE",
    "LedgerTable": "LEDGER_TABLE",
    "CatalogTable": "CATALOG_TABLE",
}


# libyaml's loader when PyYAML has it (its wheels do): the template parses in ~40 ms instead of
# ~300 ms, and every local stack and test worker parses it once.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _CfnLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """A YAML loader that keeps CloudFormation's short tags (!Ref, !Sub, …) as dicts."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {suffix: value}


_CfnLoader.add_multi_constructor("!", _tag)


@lru_cache(maxsize=1)
def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    return data


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    function: str  # logical id
    code_uri: str
    handler: str
    pattern: re.Pattern[str]

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        m = self.pattern.fullmatch(path)
        return None if m is None else m.groupdict()


def _pattern(path: str) -> re.Pattern[str]:
    out = ""
    for part in re.split(r"(\{[^}]+\})", path):
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1].rstrip("+")
            out += f"(?P<{name}>[^/]+)" if not part.endswith("+}") else f"(?P<{name}>.+)"
        else:
            out += re.escape(part)
    return re.compile(out)


def functions() -> dict[str, dict[str, Any]]:
    resources = load()["Resources"]
    return {k: v for k, v in resources.items() if v.get("Type") == "AWS::Serverless::Function"}


def routes() -> list[Route]:
    default_handler = load().get("Globals", {}).get("Function", {}).get("Handler", "app.handler")
    out: list[Route] = []
    for logical_id, fn in functions().items():
        props = fn.get("Properties", {})
        for event in (props.get("Events") or {}).values():
            if event.get("Type") != "HttpApi":
                continue
            p = event["Properties"]
            out.append(
                Route(
                    method=str(p["Method"]).upper(),
                    path=str(p["Path"]),
                    function=logical_id,
                    code_uri=str(props["CodeUri"]),
                    handler=str(props.get("Handler", default_handler)),
                    pattern=_pattern(str(p["Path"])),
                )
            )
    # Literal segments win over parameters, as in API Gateway.
    out.sort(key=lambda r: (r.path.count("{"), -len(r.path)))
    return out


def schedules() -> list[tuple[str, str, str]]:
    """(function logical id, code uri, schedule expression) of scheduled functions."""
    out = []
    for logical_id, fn in functions().items():
        props = fn.get("Properties", {})
        for event in (props.get("Events") or {}).values():
            if event.get("Type") in ("Schedule", "ScheduleV2"):
                out.append((logical_id, str(props["CodeUri"]), str(event["Properties"]["ScheduleExpression"])))
    return out


def table_definitions() -> dict[str, dict[str, Any]]:
    """CreateTable arguments (without TableName) per table logical id."""
    out: dict[str, dict[str, Any]] = {}
    for logical_id, res in load()["Resources"].items():
        if res.get("Type") != "AWS::DynamoDB::Table":
            continue
        p = res["Properties"]
        spec: dict[str, Any] = {
            "AttributeDefinitions": p["AttributeDefinitions"],
            "KeySchema": p["KeySchema"],
            "BillingMode": p.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if p.get("GlobalSecondaryIndexes"):
            spec["GlobalSecondaryIndexes"] = [
                {"IndexName": g["IndexName"], "KeySchema": g["KeySchema"], "Projection": g["Projection"]}
                for g in p["GlobalSecondaryIndexes"]
            ]
        ttl = p.get("TimeToLiveSpecification")
        out[logical_id] = {"create": spec, "ttl": ttl["AttributeName"] if ttl and ttl.get("Enabled") else None}
    return out


def create_tables(client: Any, names: dict[str, str]) -> None:
    """Create every table of the template (names by logical id) if missing."""
    existing = set(client.list_tables().get("TableNames", []))
    for logical_id, spec in table_definitions().items():
        name = names[logical_id]
        if name in existing:
            continue
        created = client.create_table(TableName=name, **spec["create"])
        if created["TableDescription"]["TableStatus"] != "ACTIVE":  # moto and DynamoDB Local: at once
            client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
        if spec["ttl"]:
            client.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"AttributeName": spec["ttl"], "Enabled": True}
            )


def default_table_names(prefix: str = "gpurent") -> dict[str, str]:
    return {logical_id: f"{prefix}-{logical_id.removesuffix('Table').lower()}" for logical_id in TABLE_ENV}


def _logical(ref: Any) -> str:
    """The logical id a `!GetAtt X.Arn` / `!Ref X` names."""
    if isinstance(ref, dict):
        ref = ref.get("GetAtt") or ref.get("Fn::GetAtt") or ref.get("Ref") or ""
    return str(ref[0] if isinstance(ref, list) else str(ref).split(".")[0])


def queue_consumers() -> dict[str, str]:
    """Queue logical id → code uri of the function its SQS event source mapping invokes
    (an SQS event of the function, or an `AWS::Lambda::EventSourceMapping` resource)."""
    out: dict[str, str] = {}
    fns = functions()
    for fn in fns.values():
        props = fn.get("Properties", {})
        for event in (props.get("Events") or {}).values():
            if event.get("Type") == "SQS":
                out[_logical(event["Properties"]["Queue"])] = str(props["CodeUri"])
    for res in load()["Resources"].values():
        if res.get("Type") == "AWS::Lambda::EventSourceMapping":
            p = res["Properties"]
            target = fns.get(_logical(p["FunctionName"]))
            if target is not None:
                out[_logical(p["EventSourceArn"])] = str(target["Properties"]["CodeUri"])
    return out
