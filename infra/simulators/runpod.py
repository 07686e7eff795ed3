"""RunPod simulator: GraphQL at ``/graphql`` as the ``runpod`` SDK, dstack and gpuhunt send it.

A small, tolerant GraphQL reader: operations (``query``/``mutation``, named or not),
variable definitions with ``variables`` (gpuhunt) or inline literals (the SDK), aliases,
arguments of every literal kind, and selection sets. Fragments are not supported (no
client we follow sends them). The answer holds exactly the selected fields; an unknown
field is an error, as on the real API. Errors are ``{"errors": [{"message", "path"}]}``.

Auth: ``Authorization: Bearer <key>`` or ``?api_key=<key>``; the catalog queries
(``gpuTypes``, ``dataCenters``, ``countryCodes``) also answer without auth, as gpuhunt
needs.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infra.simulators.common import Clock, Reply, Request, SimInstance, SimulatorBase

# --- a small GraphQL reader --------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<skip>[\s,\ufeff]+|\#[^\n]*)
   |(?P<spread>\.\.\.)
   |(?P<punct>[!$&()\[\]{}:=@|])
   |(?P<block>\"\"\"(?:\\\"\"\"|[^\"]|\"(?!\"\"))*\"\"\")
   |(?P<string>"(?:\\.|[^"\\\n])*")
   |(?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
   |(?P<name>[_A-Za-z][_0-9A-Za-z]*)
    """,
    re.VERBOSE,
)


class GraphQLError(Exception):
    def __init__(self, message: str, path: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


@dataclass
class Field:
    alias: str
    name: str
    args: dict[str, Any]
    selections: list[Field] | None


class Enum(str):
    """A bare enum literal (``SECURE``), kept apart from a quoted string."""


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise GraphQLError(f"Syntax Error: Unexpected character {text[pos]!r} at {pos}.")
        kind = m.lastgroup or ""
        if kind != "skip":
            tokens.append((kind, m.group()))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str, variables: dict[str, Any]) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.variables = dict(variables)

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        tok = self.peek()
        if tok is None:
            raise GraphQLError("Syntax Error: Unexpected <EOF>.")
        if (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            raise GraphQLError(f"Syntax Error: Expected {value or kind}, found {tok[1]!r}.")
        self.i += 1
        return tok[1]

    def at(self, value: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[1] == value and tok[0] in ("punct", "spread", "name")

    def operations(self) -> list[tuple[str, str | None, list[Field]]]:
        ops: list[tuple[str, str | None, list[Field]]] = []
        while self.peek() is not None:
            if self.at("{"):
                ops.append(("query", None, self.selection_set()))
                continue
            op = self.take(kind="name")
            if op not in ("query", "mutation"):
                raise GraphQLError(f"Syntax Error: Unexpected {op!r} (only queries and mutations).")
            tok = self.peek()
            name = self.take(kind="name") if tok is not None and tok[0] == "name" else None
            if self.at("("):
                self.variable_definitions()
            ops.append((op, name, self.selection_set()))
        if not ops:
            raise GraphQLError("Syntax Error: Unexpected <EOF>.")
        return ops

    def variable_definitions(self) -> None:
        self.take("(")
        while not self.at(")"):
            self.take("$")
            name = self.take(kind="name")
            self.take(":")
            self.type_ref()
            if self.at("="):
                self.take("=")
                default = self.value()
                self.variables.setdefault(name, default)
        self.take(")")

    def type_ref(self) -> None:
        if self.at("["):
            self.take("[")
            self.type_ref()
            self.take("]")
        else:
            self.take(kind="name")
        if self.at("!"):
            self.take("!")

    def selection_set(self) -> list[Field]:
        self.take("{")
        fields: list[Field] = []
        while not self.at("}"):
            if self.at("..."):
                raise GraphQLError("Fragments are not supported by this simulator.")
            fields.append(self.field())
        self.take("}")
        return fields

    def field(self) -> Field:
        name = self.take(kind="name")
        alias = name
        if self.at(":"):
            self.take(":")
            name = self.take(kind="name")
        args: dict[str, Any] = {}
        if self.at("("):
            self.take("(")
            while not self.at(")"):
                arg = self.take(kind="name")
                self.take(":")
                args[arg] = self.value()
            self.take(")")
        while self.at("@"):  # directives: read and ignored
            self.take("@")
            self.take(kind="name")
            if self.at("("):
                depth = 0
                while True:
                    tok = self.take()
                    depth += tok == "("
                    depth -= tok == ")"
                    if depth == 0:
                        break
        selections = self.selection_set() if self.at("{") else None
        return Field(alias, name, args, selections)

    def value(self) -> Any:
        tok = self.peek()
        if tok is None:
            raise GraphQLError("Syntax Error: Unexpected <EOF>.")
        kind, text = tok
        if text == "$":
            self.take("$")
            return self.variables.get(self.take(kind="name"))
        if text == "[":
            self.take("[")
            items = []
            while not self.at("]"):
                items.append(self.value())
            self.take("]")
            return items
        if text == "{":
            self.take("{")
            out: dict[str, Any] = {}
            while not self.at("}"):
                key = self.take(kind="name")
                self.take(":")
                out[key] = self.value()
            self.take("}")
            return out
        self.i += 1
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "string":
            return json.loads(text)
        if kind == "block":
            return text[3:-3].strip()
        if kind == "name":
            return {"true": True, "false": False, "null": None}.get(text, Enum(text))
        raise GraphQLError(f"Syntax Error: Unexpected {text!r}.")


def parse(text: str, variables: dict[str, Any] | None = None,
          operation_name: str | None = None) -> tuple[str, list[Field]]:
    ops = _Parser(text, variables or {}).operations()
    if operation_name:
        for op, name, fields in ops:
            if name == operation_name:
                return op, fields
        raise GraphQLError(f'Unknown operation named "{operation_name}".')
    if len(ops) > 1:
        raise GraphQLError("Must provide operation name if query contains multiple operations.")
    return ops[0][0], ops[0][2]


Resolver = Callable[[dict[str, Any]], Any]


def project(value: Any, selections: list[Field] | None, type_name: str, path: list[str]) -> Any:
    """Keep exactly the selected fields; call computed fields with their arguments."""
    if value is None:
        return None
    if isinstance(value, list):
        return [project(v, selections, type_name, path) for v in value]
    if selections is None:
        if isinstance(value, dict):
            raise GraphQLError(f'Field "{path[-1]}" of type "{type_name}" must have a selection of subfields.',
                               path)
        return value
    if not isinstance(value, dict):
        raise GraphQLError(f'Field "{path[-1]}" must not have a selection since it has no subfields.', path)
    out: dict[str, Any] = {}
    own_type = str(value.get("__typename", type_name))
    for f in selections:
        if f.name == "__typename":
            out[f.alias] = own_type
            continue
        if f.name not in value:
            raise GraphQLError(f'Cannot query field "{f.name}" on type "{own_type}".', [*path, f.alias])
        v = value[f.name]
        if callable(v):
            v = v(f.args)
        out[f.alias] = project(v, f.selections, f.name, [*path, f.alias])
    return out


def validate(fields: list[Field], type_name: str, schema: dict[str, dict[str, str | None]],
             path: list[str] | None = None) -> None:
    """Check a selection against the schema before running it, as a GraphQL server does:
    an unknown field is an error even when the answer would be null or an empty list."""
    path = path or []
    known = schema[type_name]
    for f in fields:
        if f.name == "__typename":
            continue
        if f.name not in known:
            raise GraphQLError(f'Cannot query field "{f.name}" on type "{type_name}".', [*path, f.alias])
        child = known[f.name]
        if child is None and f.selections is not None:
            raise GraphQLError(f'Field "{f.name}" must not have a selection since type "{type_name}" has no '
                               "subfields.", [*path, f.alias])
        if child is not None and f.selections is None:
            raise GraphQLError(f'Field "{f.name}" of type "{child}" must have a selection of subfields.',
                               [*path, f.alias])
        if child is not None and f.selections is not None:
            validate(f.selections, child, schema, [*path, f.alias])


def _scalars(names: str) -> dict[str, str | None]:
    return dict.fromkeys(names.split())


# The part of RunPod's schema the simulator serves: type → field → object type (None: scalar).
SCHEMA: dict[str, dict[str, str | None]] = {
    "Query": {"gpuTypes": "GpuType", "dataCenters": "DataCenter", "countryCodes": None, "pod": "Pod",
              "myself": "User"},
    "Mutation": {"podFindAndDeployOnDemand": "Pod", "podTerminate": None, "podStop": "Pod", "podResume": "Pod"},
    "GpuType": {
        **_scalars("id displayName manufacturer memoryInGb cudaCores secureCloud communityCloud securePrice "
                   "communityPrice secureSpotPrice communitySpotPrice oneWeekPrice oneMonthPrice threeMonthPrice "
                   "sixMonthPrice clusterPrice maxGpuCount maxGpuCountSecureCloud maxGpuCountCommunityCloud "
                   "minPodGpuCount"),
        "nodeGroupDatacenters": "DataCenter", "lowestPrice": "LowestPrice",
    },
    "LowestPrice": _scalars("minimumBidPrice uninterruptablePrice stockStatus minVcpu minMemory countryCode "
                            "compliance maxUnreservedGpuCount rentedCount totalCount"),
    "DataCenter": _scalars("id name listed location"),
    "User": {**_scalars("id pubKey"), "networkVolumes": "NetworkVolume", "pods": "Pod"},
    "NetworkVolume": _scalars("id name size dataCenterId"),
    "Pod": {
        **_scalars("id name desiredStatus lastStatusChange imageName env machineId costPerHr adjustedCostPerHr "
                   "gpuCount containerDiskInGb volumeInGb volumeMountPath memoryInGb vcpuCount dockerArgs dockerId "
                   "podType port ports uptimeSeconds"),
        "runtime": "PodRuntime", "machine": "Machine",
    },
    "PodRuntime": {"uptimeInSeconds": None, "ports": "PodRuntimePorts", "gpus": "PodRuntimeGpus",
                   "container": "PodRuntimeContainer"},
    "PodRuntimeGpus": _scalars("id gpuUtilPercent memoryUtilPercent"),
    "PodRuntimeContainer": _scalars("cpuPercent memoryPercent"),
    "PodRuntimePorts": _scalars("ip isIpPublic privatePort publicPort type"),
    "Machine": _scalars("podHostId gpuDisplayName dataCenterId"),
}


# --- the RunPod world --------------------------------------------------------------------

# (id, displayName, memoryInGb, securePrice, communityPrice or None)
GPU_TYPES: tuple[tuple[str, str, int, float, float | None], ...] = (
    ("NVIDIA GeForce RTX 4090", "RTX 4090", 24, 0.69, 0.34),
    ("NVIDIA GeForce RTX 5090", "RTX 5090", 32, 0.94, 0.69),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM", 80, 1.49, 1.39),
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 80, 2.69, 2.39),
    ("NVIDIA B200", "B200", 180, 5.99, None),
    ("NVIDIA B300 SXM6 AC", "B300", 288, 6.49, None),
    # Not ours: the adapter leaves these out.
    ("NVIDIA RTX A6000", "RTX A6000", 48, 0.49, 0.33),
    ("NVIDIA H100 PCIe", "H100 PCIe", 80, 2.39, 1.99),
    ("NVIDIA H100 NVL", "H100 NVL", 94, 2.79, 2.59),
    ("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, 1.64, 1.19),
)
# (id, name, listed, country)
DATA_CENTERS: tuple[tuple[str, str, bool, str], ...] = (
    ("US-OR-1", "Oregon", True, "US"),
    ("US-TX-3", "Texas", True, "US"),
    ("US-GA-1", "Georgia", True, "US"),
    ("US-KS-2", "Kansas", True, "US"),
    ("CA-MTL-1", "Montreal", True, "CA"),
    ("EU-RO-1", "Romania", True, "RO"),
    ("EU-NL-1", "Netherlands", True, "NL"),
    ("EU-SE-1", "Sweden", True, "SE"),
    ("EU-CZ-1", "Czech Republic", True, "CZ"),
    ("AP-JP-1", "Japan", True, "JP"),
    ("US-DE-1", "Delaware", False, "US"),
)
# Secure-cloud data centres do not all charge the list price: a GPU type costs this much
# more (per GPU) in these. A pod is billed its data centre's per-GPU price × its GPU count.
DC_PRICE_FACTOR: dict[str, float] = {"AP-JP-1": 1.1, "EU-SE-1": 1.05}
# RunPod's capacity refusals, in its own words: a deploy where nothing fits, and the
# capacity knob (both are `capacity`, so failover tries the next listing).
NO_CAPACITY = ("There are no longer any instances available with the requested specifications. "
               "Please refresh and try again.")
NONE_AVAILABLE = "There are no instances currently available"
QUOTA = "Insufficient balance: your account balance is too low to deploy this pod. Please add funds."
SOMETHING_WENT_WRONG = "Something went wrong. Please try again later or contact support."


def per_gpu_price(list_price: float, data_center: str) -> float:
    """What one GPU of a type costs per hour in a secure data centre (RunPod prices per GPU)."""
    return round(list_price * DC_PRICE_FACTOR.get(data_center, 1.0), 2)


def _stock_status(available: int, wanted: int) -> str | None:
    if available < wanted:
        return None
    return "High" if available >= 8 else "Medium" if available >= 4 else "Low"


class RunPodSimulator(SimulatorBase):
    code = "runpod"
    path_prefix = ""

    def __init__(self, *, now: Clock, boot_seconds: float = 20.0, api_key: str, seed: int = 7) -> None:
        self.stock: dict[tuple[str, str], int] = {}  # (gpu type id, data centre) → free GPUs
        self._rng = random.Random(0)
        super().__init__(now=now, boot_seconds=boot_seconds, api_key=api_key, seed=seed)

    def seed(self) -> None:
        rng = random.Random(f"runpod-{self.seed_value}")
        self._rng = random.Random(f"runpod-ids-{self.seed_value}")
        self.stock = {}
        for type_id, *_ in GPU_TYPES:
            for dc, _name, _listed, _cc in DATA_CENTERS:
                self.stock[(type_id, dc)] = rng.choice((0, 0, 1, 2, 4, 8, 8, 16))
            # Every type is in stock for 8 GPUs somewhere, and for 1 somewhere else.
            chosen = rng.sample([d[0] for d in DATA_CENTERS if d[2]], 2)
            self.stock[(type_id, chosen[0])] = 16
            self.stock[(type_id, chosen[1])] = max(self.stock[(type_id, chosen[1])], 1)

    # --- HTTP ----------------------------------------------------------------------

    def route(self, req: Request) -> Reply:
        if req.path.rstrip("/") != "/graphql" or req.method != "POST":
            return Reply(404, {"errors": [{"message": f"Cannot {req.method} {req.path}"}]})
        authed = self.bearer_ok(req)
        try:
            body = req.json()
            if not isinstance(body, dict) or not isinstance(body.get("query"), str):
                raise GraphQLError("Must provide query string.")
            variables = body.get("variables") if isinstance(body.get("variables"), dict) else {}
            op, fields = parse(body["query"], variables, body.get("operationName"))
            validate(fields, "Mutation" if op == "mutation" else "Query", SCHEMA)
        except (GraphQLError, json.JSONDecodeError) as e:
            return Reply(400, {"errors": [{"message": getattr(e, "message", str(e)),
                                           "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}}]})
        catalog_only = op == "query" and all(f.name in ("gpuTypes", "dataCenters", "countryCodes", "__typename")
                                             for f in fields)
        if not authed and not catalog_only:
            return Reply(401, {"errors": [{"message": "Unauthorized"}]})
        with self.lock:
            knobs = (self.knobs.list_offers, self.knobs.allocate, self.knobs.terminate)
        names = {f.name for f in fields}
        if catalog_only and knobs[0] == "error":
            return Reply(500, {"errors": [{"message": SOMETHING_WENT_WRONG, "path": [fields[0].alias]}],
                               "data": None})
        if catalog_only and knobs[0] == "timeout":
            self.hang()
        if "podTerminate" in names and knobs[2] == "error":
            return Reply(500, {"errors": [{"message": SOMETHING_WENT_WRONG, "path": ["podTerminate"]}],
                               "data": None})
        if "podFindAndDeployOnDemand" in names and knobs[1] is not None:
            early = self._allocate_fault(knobs[1])
            if early is not None:
                return early
        roots = self._mutations() if op == "mutation" else self._queries()
        try:
            data = project(roots, fields, "Mutation" if op == "mutation" else "Query", [])
        except GraphQLError as e:
            return Reply(200, {"errors": [{"message": e.message, "path": e.path or []}], "data": None})
        if "podFindAndDeployOnDemand" in names and knobs[1] == "timeout":
            self.hang()  # the pod exists; the answer is late
        return Reply(200, {"data": data})

    def _allocate_fault(self, mode: str) -> Reply | None:
        path = ["podFindAndDeployOnDemand"]
        if mode == "capacity":
            return Reply(200, {"errors": [{"message": NONE_AVAILABLE, "path": path}], "data": None})
        if mode == "quota":
            return Reply(200, {"errors": [{"message": QUOTA, "path": path}], "data": None})
        if mode == "auth":
            return Reply(401, {"errors": [{"message": "Unauthorized"}]})
        if mode == "error":
            return Reply(500, {"errors": [{"message": SOMETHING_WENT_WRONG, "path": path}], "data": None})
        if mode == "refuse":  # RunPod's GraphQL refusals are text only, answered with 200
            with self.lock:
                text = self.knobs.refusal_text
            return Reply(200, {"errors": [{"message": text, "path": path}], "data": None})
        return None

    # --- the graph -----------------------------------------------------------------

    def _queries(self) -> dict[str, Any]:
        return {
            "__typename": "Query",
            "gpuTypes": self._gpu_types,
            "dataCenters": [
                {"__typename": "DataCenter", "id": dc, "name": name, "listed": listed, "location": cc}
                for dc, name, listed, cc in DATA_CENTERS
            ],
            "countryCodes": sorted({cc for *_, cc in DATA_CENTERS}),
            "pod": self._pod_query,
            "myself": {
                "__typename": "User", "id": "user_sim", "pubKey": "", "networkVolumes": [],
                "pods": lambda _args: self._pods(),
            },
        }

    def _mutations(self) -> dict[str, Any]:
        return {
            "__typename": "Mutation",
            "podFindAndDeployOnDemand": self._deploy,
            "podTerminate": self._terminate,
            "podStop": self._stop,
            "podResume": self._resume,
        }

    def _gpu_types(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        flt = args.get("input") or {}
        if flt.get("cluster") is True:
            return []  # RunPod's instant clusters are not simulated: no cluster-capable type
        out = []
        for type_id, display, memory, secure, community in GPU_TYPES:
            if flt.get("id") and flt["id"] != type_id:
                continue
            dcs = [dc for dc, *_ in DATA_CENTERS if self.stock.get((type_id, dc), 0) > 0]
            out.append({
                "__typename": "GpuType", "id": type_id, "displayName": display, "manufacturer": "Nvidia",
                "memoryInGb": memory, "cudaCores": 0, "secureCloud": True, "communityCloud": community is not None,
                "securePrice": secure, "communityPrice": community, "secureSpotPrice": round(secure * 0.6, 2),
                "communitySpotPrice": round(community * 0.6, 2) if community else None,
                "oneWeekPrice": None, "oneMonthPrice": None, "threeMonthPrice": None, "sixMonthPrice": None,
                "clusterPrice": None, "maxGpuCount": 8, "maxGpuCountSecureCloud": 8,
                "maxGpuCountCommunityCloud": 8 if community else 0, "minPodGpuCount": 1,
                "nodeGroupDatacenters": [{"__typename": "DataCenter", "id": dc} for dc in dcs],
                "lowestPrice": lambda a, t=type_id, s=secure, c=community: self._lowest_price(t, s, c, a),
            })
        return out

    def _lowest_price(self, type_id: str, secure: float, community: float | None,
                      args: dict[str, Any]) -> dict[str, Any]:
        inp = args.get("input") or {}
        count = int(inp.get("gpuCount") or 1)
        dc_filter = inp.get("dataCenterId")
        cc_filter = inp.get("countryCode")
        want_secure = inp.get("secureCloud")
        best: tuple[float, str, int] | None = None
        with self.lock:
            for dc, _name, listed, cc in DATA_CENTERS:
                if (dc_filter and dc != dc_filter) or (cc_filter and cc != cc_filter) or not listed:
                    continue
                free = self.stock.get((type_id, dc), 0)
                if free < count:
                    continue
                price = per_gpu_price(secure, dc) if want_secure is not False or community is None else community
                if want_secure is False and community is None:
                    continue
                if best is None or price < best[0]:
                    best = (price, cc, free)
        if best is None:
            return {"__typename": "LowestPrice", "minimumBidPrice": None, "uninterruptablePrice": None,
                    "stockStatus": None, "minVcpu": None, "minMemory": None, "countryCode": None,
                    "compliance": None, "maxUnreservedGpuCount": 0, "rentedCount": 0, "totalCount": 0}
        price, cc, free = best
        # Every price here is per GPU (the pod's costPerHr is the one for the whole pod).
        return {"__typename": "LowestPrice", "minimumBidPrice": round(price * 0.6, 3), "uninterruptablePrice": price,
                "stockStatus": _stock_status(free, count), "minVcpu": 8 * count, "minMemory": 62 * count,
                "countryCode": cc, "compliance": [], "maxUnreservedGpuCount": free, "rentedCount": 0,
                "totalCount": free}

    def _deploy(self, args: dict[str, Any]) -> dict[str, Any]:
        inp = args.get("input")
        if not isinstance(inp, dict):
            raise GraphQLError("input is required", ["podFindAndDeployOnDemand"])
        type_id, image = inp.get("gpuTypeId"), inp.get("imageName")
        count = inp.get("gpuCount", 1)
        known = {t[0]: t for t in GPU_TYPES}
        if type_id not in known or not isinstance(image, str) or not image or not isinstance(count, int) or count < 1:
            raise GraphQLError("Invalid input: gpuTypeId, imageName and gpuCount must be valid.",
                               ["podFindAndDeployOnDemand"])
        dc = inp.get("dataCenterId")
        cc = inp.get("countryCode")
        with self.lock:
            candidates = [d for d, _n, listed, c in DATA_CENTERS
                          if listed and (not dc or d == dc) and (not cc or c == cc)
                          and self.stock.get((type_id, d), 0) >= count]
            if not candidates:
                raise GraphQLError(NO_CAPACITY, ["podFindAndDeployOnDemand"])
            where = candidates[0]
            self.stock[(type_id, where)] -= count
            pod_id = "".join(self._rng.choice(string.ascii_lowercase + string.digits) for _ in range(14))
            env = [f"{e.get('key')}={e.get('value')}" for e in inp.get("env") or [] if isinstance(e, dict)]
            secure_price = per_gpu_price(known[type_id][3], where)
            price = secure_price if inp.get("cloudType") != "COMMUNITY" else (known[type_id][4] or 0.0)
            inst = self.new_instance(pod_id, inp.get("name") if isinstance(inp.get("name"), str) else None, {
                "gpuTypeId": type_id, "dataCenterId": where, "gpuCount": count, "imageName": image, "env": env,
                "containerDiskInGb": inp.get("containerDiskInGb", 10), "volumeInGb": inp.get("volumeInGb", 0),
                "dockerArgs": inp.get("dockerArgs") or "", "ports": inp.get("ports") or "",
                "costPerHr": round(price * count, 4), "machineId": f"m{pod_id[:8]}",
                "displayName": known[type_id][1],
            })
            return self._pod(inst)

    def _terminate(self, args: dict[str, Any]) -> None:
        pod_id = (args.get("input") or {}).get("podId")
        with self.lock:
            inst = self.instances.get(str(pod_id))
            if inst is None:
                raise GraphQLError("pod not found", ["podTerminate"])
            self.terminate_instance(inst, forget=False)

    def _stop(self, args: dict[str, Any]) -> dict[str, Any]:
        inst = self._find((args.get("input") or {}).get("podId"), "podStop")
        inst.stopped = True
        return self._pod(inst)

    def _resume(self, args: dict[str, Any]) -> dict[str, Any]:
        inst = self._find((args.get("input") or {}).get("podId"), "podResume")
        inst.stopped = False
        return self._pod(inst)

    def _find(self, pod_id: Any, op: str) -> SimInstance:
        with self.lock:
            inst = self.instances.get(str(pod_id))
        if inst is None or inst.terminated_at is not None:
            raise GraphQLError("pod not found", [op])
        return inst

    def on_removed(self, inst: SimInstance) -> None:
        key = (inst.details["gpuTypeId"], inst.details["dataCenterId"])
        self.stock[key] = self.stock.get(key, 0) + int(inst.details["gpuCount"])

    def _pod_query(self, args: dict[str, Any]) -> dict[str, Any] | None:
        pod_id = (args.get("input") or {}).get("podId")
        with self.lock:
            inst = self.instances.get(str(pod_id))
            return self._pod(inst) if inst is not None else None

    def _pods(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self._pod(i) for i in self.instances.values() if i.terminated_at is None]

    def _pod(self, inst: SimInstance) -> dict[str, Any]:
        now = self.now()
        phase = inst.phase(now)
        d = inst.details
        desired = {"terminated": "TERMINATED", "crashed": "EXITED", "stopped": "EXITED"}.get(phase, "RUNNING")
        change = {
            "provisioning": "Rented by User", "running": "Rented by User",
            "crashed": "Exited by Runpod: container exited with code 137",
            "stopped": "Exited by User", "terminated": "Terminated by User",
        }[phase]
        if inst.forced_status is not None:  # an undocumented state, a pod without its port, …
            desired, change = inst.forced_status, inst.forced_message or change
            phase = "provisioning"  # no runtime: no port known
        runtime = None
        if phase == "running":
            uptime = int(now - inst.created_at - inst.boot_seconds)
            runtime = {
                "__typename": "PodRuntime", "uptimeInSeconds": uptime, "gpus": [], "container": None,
                "ports": [
                    {"__typename": "PodRuntimePorts", "ip": inst.host, "isIpPublic": True, "privatePort": 22,
                     "publicPort": inst.ssh_port, "type": "tcp"},
                    {"__typename": "PodRuntimePorts", "ip": "10.0.0.2", "isIpPublic": False, "privatePort": 22,
                     "publicPort": 22, "type": "tcp"},
                ],
            }
        return {
            "__typename": "Pod", "id": inst.id, "name": inst.label, "desiredStatus": desired,
            "lastStatusChange": change, "imageName": d["imageName"], "env": d["env"],
            "machineId": d["machineId"], "costPerHr": d["costPerHr"], "adjustedCostPerHr": d["costPerHr"],
            "gpuCount": d["gpuCount"],
            "containerDiskInGb": d["containerDiskInGb"], "volumeInGb": d["volumeInGb"],
            "volumeMountPath": "/workspace", "memoryInGb": 62 * d["gpuCount"], "vcpuCount": 8 * d["gpuCount"],
            "dockerArgs": d["dockerArgs"], "dockerId": None, "podType": "RESERVED", "port": None,
            "ports": d["ports"], "uptimeSeconds": runtime["uptimeInSeconds"] if runtime else 0,
            "runtime": runtime,
            "machine": {"__typename": "Machine", "podHostId": f"{inst.id}-64410c1e",
                        "gpuDisplayName": d["displayName"], "dataCenterId": d["dataCenterId"]},
        }
