"""RunPod's wire form (provider-wire.md §2), written and read without I/O: the GraphQL text
(offers query, deploy mutation, pod fields), a refusal's kind, a GPU type's offers and a pod's
state and price. `providers/runpod.py` (the adapter) sends the queries; its module doc says
how offers are priced and launched."""

from __future__ import annotations

import json
import logging
import re
import shlex
from decimal import Decimal
from typing import Any

from gpurent.families import interconnect_for
from gpurent.money import dollars_to_cents_up
from gpurent.providers.base import (
    AllocateRequest,
    ErrorKind,
    Instance,
    InstanceStatus,
    Offer,
    ProviderError,
    bootstrap_script,
    reachable_status,
)
from gpurent.providers.http import Malformed, get_int, get_num, get_str, obj, req_str
from gpurent.providers.runpod_names import runpod_family
from gpurent.regions import Region

log = logging.getLogger("gpurent.providers")

CODE = "runpod"
HOURS_PER_MONTH = Decimal(730)

POD_FIELDS = (
    "id name desiredStatus lastStatusChange imageName costPerHr gpuCount machineId containerDiskInGb "
    "runtime { uptimeInSeconds ports { ip isIpPublic privatePort publicPort type } }"
)

EXTENSION_CODES: dict[str, ErrorKind] = {
    "UNAUTHENTICATED": "auth",
    "FORBIDDEN": "auth",
    "BAD_USER_INPUT": "invalid",
    "GRAPHQL_VALIDATION_FAILED": "invalid",
    "GRAPHQL_PARSE_FAILED": "invalid",
    "NOT_FOUND": "not_found",
}
# RunPod's refusals as its API words them (GraphQL answers carry text only). Seen in the
# wild: "There are no longer any instances available with the requested specifications.
# Please refresh and try again." (runpod-python, runpodctl #189), "... with the request
# specifications. Please try again later." (dstack #1740), "There are no instances
# currently available", "There are not enough free GPUs on the host machine to start this
# pod." (runpod-python #168), "this machine does not have the resources to deploy this pod",
# "pod not found to terminate" (dstack's RunPod backend), "Something went wrong. Please try
# again later or contact support." (pulumi-runpod-native #18), "Insufficient balance" (the
# v2 API's 402). Balance and spend-limit refusals are `quota` (the next listing may be at
# another provider).
MESSAGE_PATTERNS: tuple[tuple[re.Pattern[str], ErrorKind], ...] = (
    (re.compile(r"no (longer )?(any )?(gpus?|instances?|machines?|pods?) (currently )?available|"
                r"not enough (free )?gpus|does not have the resources|out of stock|no capacity|"
                r"insufficient capacity", re.I), "capacity"),
    (re.compile(r"insufficient (funds|balance|credit)|balance (is )?too low|not enough (funds|balance|credit)|"
                r"low balance|add (more )?funds|spend(ing)? limit|quota", re.I), "quota"),
    (re.compile(r"unauthori[sz]ed|api key|authenticat|forbidden|permission denied", re.I), "auth"),
    (re.compile(r"not found|does not exist", re.I), "not_found"),
    (re.compile(r"invalid|must be|cannot be|is required|cannot query field|syntax error|"
                r"unknown argument|expected type", re.I), "invalid"),
    (re.compile(r"something went wrong|try again later|internal server error|timed? ?out", re.I), "transient"),
)


def gql_string(value: str) -> str:
    """A GraphQL string literal: JSON's string syntax is a subset GraphQL accepts."""
    return json.dumps(value)


def classify_message(message: str, code: str | None = None) -> ErrorKind | None:
    """The kind a RunPod error says, or None when neither its code nor its words are known."""
    if code and code.upper() in EXTENSION_CODES:
        return EXTENSION_CODES[code.upper()]
    for pattern, kind in MESSAGE_PATTERNS:
        if pattern.search(message):
            return kind
    return None


def offers_query(gpu_count: int, data_centers: list[str]) -> str:
    """The GPU types with, per data centre, the lowest price of a secure pod of `gpu_count` GPUs."""
    prices = " ".join(
        f"dc{i}: lowestPrice(input: {{gpuCount: {gpu_count}, secureCloud: true, dataCenterId: {gql_string(dc)}}})"
        " { uninterruptablePrice stockStatus }"
        for i, dc in enumerate(data_centers)
    )
    return f"query GpuTypes {{ gpuTypes {{ id displayName memoryInGb securePrice communityPrice {prices} }} }}"


def pod_price_dollars(per_gpu: Decimal, list_per_gpu: Decimal | None, gpu_count: int) -> Decimal | None:
    """What an N-GPU secure pod costs per hour (GPU part), from a data centre's per-GPU price;
    None when that price does not look like a per-GPU price (see the module doc)."""
    if per_gpu <= 0:
        return None
    if list_per_gpu is not None and list_per_gpu > 0 and not (list_per_gpu / 2 <= per_gpu < list_per_gpu * 2):
        return None
    return per_gpu * gpu_count


def docker_args(keys: tuple[str, ...], start_command: str) -> str:
    """Replace the image command: keys, sshd, the start command, then stay up."""
    script = bootstrap_script("runpod", keys, start_command) + (
        "(service ssh start || /usr/sbin/sshd) >/dev/null 2>&1\nsleep infinity\n"
    )
    return "bash -c " + shlex.quote(script)


# --- offers -----------------------------------------------------------------------------


def offers_of(raw: dict[str, Any], n: int, dcs: list[tuple[str, Region]], unknown: set[str],
              storage_dollars: Decimal) -> list[Offer]:
    """The offers of one GPU type for `n` GPUs, one per data centre in stock (`dc<i>` is the
    `lowestPrice` of `dcs[i]`), each priced with the container disk's `storage_dollars` an hour.
    A GPU type none of our families is goes in `unknown`."""
    type_id = req_str(raw, "id")
    display = get_str(raw, "displayName", optional=True)
    memory = get_num(raw, "memoryInGb", optional=True)
    fam = runpod_family(type_id, display, memory)
    if fam is None:
        unknown.add(type_id)
        return []
    list_price = get_num(raw, "securePrice", optional=True)
    list_per_gpu = Decimal(str(list_price)) if list_price is not None else None
    out: list[Offer] = []
    for i, (dc, region) in enumerate(dcs):
        lp = raw.get(f"dc{i}")
        if lp is None:
            continue
        try:
            lp = obj(lp, "lowestPrice")
            if lp.get("stockStatus") is None:
                continue
            per_gpu = get_num(lp, "uninterruptablePrice", optional=True)
            if per_gpu is None or per_gpu <= 0:
                continue
            pod = pod_price_dollars(Decimal(str(per_gpu)), list_per_gpu, n)
            if pod is None:
                log.warning("runpod: %s x%d in %s: uninterruptablePrice %s is not a per-GPU price next to "
                            "securePrice %s; left out", type_id, n, dc, per_gpu, list_price)
                continue
            cents = dollars_to_cents_up(pod + storage_dollars)
        except (Malformed, ValueError) as e:
            log.warning("runpod: skipping %s in %s: %s", type_id, dc, e)
            continue
        out.append(Offer(
            provider=CODE, offer_key=f"{type_id}|SECURE|{dc}|{n}", gpu_name=type_id, family=fam.id,
            model=fam.model, vram_gb=fam.vram_gb, gpu_count=n, price_cents_per_hour=cents,
            region=region.label, region_code=region.code, interconnect=interconnect_for(fam, n),
        ))
    return out


# --- pods -------------------------------------------------------------------------------


def deploy_mutation(req: AllocateRequest) -> str:
    """The `podFindAndDeployOnDemand` mutation of a launch (the offer key names type, cloud,
    data centre and GPU count)."""
    parts = req.offer.offer_key.split("|")
    if len(parts) != 4 or parts[1] not in ("SECURE", "COMMUNITY") or not parts[3].isdigit():
        raise ProviderError(CODE, "invalid", f"not a runpod offer key: {req.offer.offer_key!r}")
    type_id, cloud, location, count = parts
    keys = [k.strip() for k in req.ssh_public_keys if k.strip()]
    env = [("PUBLIC_KEY", "\n".join(keys)), ("GPURENT_RENTAL_ID", req.rental_id)]
    env_literal = ", ".join(f"{{ key: {gql_string(k)}, value: {gql_string(v)} }}" for k, v in env)
    where = f"dataCenterId: {gql_string(location)}" if cloud == "SECURE" else f"countryCode: {gql_string(location)}"
    args = docker_args(req.ssh_public_keys, req.start_command) if req.start_command else ""
    fields = ", ".join([
        f"name: {gql_string(req.rental_id)}",
        f"imageName: {gql_string(req.image)}",
        f"cloudType: {cloud}",
        f"gpuTypeId: {gql_string(type_id)}",
        f"gpuCount: {int(count)}",
        where,
        f"containerDiskInGb: {int(req.disk_gb)}",
        "volumeInGb: 0",
        "minVcpuCount: 1",
        "minMemoryInGb: 1",
        "startSsh: true",
        "supportPublicIp: true",
        'ports: "22/tcp"',
        f"dockerArgs: {gql_string(args)}",
        f"env: [{env_literal}]",
    ])
    return f"mutation {{ podFindAndDeployOnDemand(input: {{ {fields} }}) {{ id imageName machineId }} }}"


def instance_from(pod: dict[str, Any], disk_gb: int, storage_rate: Decimal) -> Instance:
    """Our Instance of one pod (`POD_FIELDS`); the price adds the container disk as its offer did."""
    iid = req_str(pod, "id")
    name = get_str(pod, "name", optional=True) or None
    desired = get_str(pod, "desiredStatus", optional=True)
    status: InstanceStatus
    host: str | None = None
    port: int | None = None
    error: str | None = None
    if desired == "TERMINATED":
        status = "terminated"
    elif desired == "EXITED":
        status = "failed"
        error = get_str(pod, "lastStatusChange", optional=True) or "pod exited"
    else:  # RUNNING, or a state RunPod has not documented: not reachable until proven
        if desired != "RUNNING":
            log.warning("runpod: pod %s has an unknown desiredStatus %r (%r); taken as not running", iid,
                        desired, get_str(pod, "lastStatusChange", optional=True))
        host, port = public_ssh(pod.get("runtime"))
        status = reachable_status(desired == "RUNNING", host, port)
        if status != "running":
            host, port = None, None
    return Instance(iid, name, status, host, port, error, billed_cents(pod, disk_gb, storage_rate))


def billed_cents(pod: dict[str, Any], disk_gb: int, storage_rate: Decimal) -> int | None:
    """The pod's ``costPerHr`` (the whole pod, a number or a numeric string) plus the
    container disk, as its offer was priced; None when absent or unreadable."""
    raw = pod.get("costPerHr")
    if raw is None or isinstance(raw, bool):
        return None
    try:
        dollars = Decimal(str(raw))
        disk = pod.get("containerDiskInGb")
        gb = Decimal(int(disk)) if isinstance(disk, int) and not isinstance(disk, bool) else Decimal(disk_gb)
        return dollars_to_cents_up(dollars + gb * storage_rate / HOURS_PER_MONTH)
    except (ArithmeticError, ValueError):
        return None


def public_ssh(runtime: Any) -> tuple[str | None, int | None]:
    """The public IP and port that reach the pod's port 22, if RunPod maps one."""
    if not isinstance(runtime, dict) or not isinstance(runtime.get("ports"), list):
        return None, None
    for p in runtime["ports"]:
        if not isinstance(p, dict):
            continue
        try:
            private = get_int(p, "privatePort", optional=True)
            public = get_int(p, "publicPort", optional=True)
        except Malformed:
            continue
        if private == 22 and p.get("type") == "tcp" and p.get("isIpPublic") is True and public:
            ip = p.get("ip")
            if isinstance(ip, str) and ip:
                return ip, public
    return None, None
