"""RunPod adapter: GraphQL at ``{base}/graphql`` as the ``runpod`` SDK speaks it.

The body is ``{"query": ...}`` only, every argument an inline literal (strings escaped as
JSON strings, which GraphQL's string syntax accepts), enums bare (provider-wire.md §2).

Offers: the same GPU type can be in stock in one data centre and not in another, so the
catalog asks, per GPU count N in 1, 2, 4, 8, for each listed secure-cloud data centre's
``lowestPrice`` in one query (one aliased ``lowestPrice`` field per data centre: ``dc0``,
``dc1``, …); the four queries go out at once, after the one that lists the data centres.
A null ``stockStatus`` means none there. Community cloud is left out: its hosts are less
reliable and its price is not the one a secure deploy bills (dstack #1886).

Prices: every GPU-type price RunPod publishes is **per GPU per hour** (``securePrice``,
``communityPrice``, the spot prices, and ``lowestPrice``'s ``uninterruptablePrice`` and
``minimumBidPrice``); only a pod's ``costPerHr`` is for the whole pod. An N-GPU listing
is priced as RunPod bills the pod: ``uninterruptablePrice`` (that data centre's per-GPU
price for a machine with N free GPUs) × N, plus the container disk, which RunPod bills
with the pod (``storage_dollars_per_gb_month``, default $0.10/GB/month over 730 h).
An ``uninterruptablePrice`` that does not look per-GPU (under half, or at least twice, the
type's per-GPU list price ``securePrice``) leaves that listing out with a warning: we do
not quote a pod whose bill we cannot predict. docs/decisions.md has the sources.

The SSH keys go in ``env.PUBLIC_KEY`` (newline-separated), which RunPod's base images
append to ``authorized_keys``. A start command replaces the image's command
(``dockerArgs``), so then our own script installs the keys, starts sshd and stays up.

Errors: RunPod answers top-level ``errors`` with text only; ``extensions.code`` is used
when present, otherwise the text is matched against the patterns below (RunPod's real
wordings); words we do not know are ``transient`` and logged with the raw text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shlex
from decimal import Decimal
from typing import Any

import httpx

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
    is_ours,
    reachable_status,
)
from gpurent.providers.http import (
    HttpPolicy,
    JsonHttp,
    Malformed,
    Sleep,
    arr,
    get_int,
    get_num,
    get_str,
    obj,
    req_str,
    status_kind,
    unrecognised_refusal,
)
from gpurent.providers.runpod_names import region_from_runpod, runpod_family
from gpurent.providers.spec import BuildContext, ProviderConfig, ProviderSpec
from gpurent.regions import Region

log = logging.getLogger("gpurent.providers")

DEFAULT_BASE_URL = "https://api.runpod.io"
GPU_COUNTS = (1, 2, 4, 8)
HOURS_PER_MONTH = Decimal(730)

POD_FIELDS = (
    "id name desiredStatus lastStatusChange imageName costPerHr gpuCount machineId containerDiskInGb "
    "runtime { uptimeInSeconds ports { ip isIpPublic privatePort publicPort type } }"
)

_EXTENSION_CODES: dict[str, ErrorKind] = {
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
_MESSAGE_PATTERNS: tuple[tuple[re.Pattern[str], ErrorKind], ...] = (
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
    if code and code.upper() in _EXTENSION_CODES:
        return _EXTENSION_CODES[code.upper()]
    for pattern, kind in _MESSAGE_PATTERNS:
        if pattern.search(message):
            return kind
    return None


def offers_query(gpu_count: int, data_centers: list[str]) -> str:
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


class RunPodAdapter:
    code = "runpod"

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        disk_gb: int = 50,
        storage_dollars_per_gb_month: Decimal = Decimal("0.10"),
        policy: HttpPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.disk_gb = disk_gb
        self.storage_rate = storage_dollars_per_gb_month
        self.http = JsonHttp(
            self.code, base_url, {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            policy=policy, sleep=sleep, client=client,
        )

    async def _gql(self, what: str, query: str, *, idempotent: bool) -> dict[str, Any]:
        response = await self.http.send("POST", "/graphql", json={"query": query}, idempotent=idempotent)
        if response.status_code in (401, 403):
            raise ProviderError(self.code, "auth", f"{what}: HTTP {response.status_code}")
        body = self.http.decode(response)
        if not isinstance(body, dict):
            raise ProviderError(self.code, "transient", f"{what}: answer is not an object")
        errors = body.get("errors")
        if errors:
            first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
            message = str(first.get("message") or "unknown error")
            ext = first.get("extensions")
            code = ext.get("code") if isinstance(ext, dict) and isinstance(ext.get("code"), str) else None
            kind = classify_message(message, code)
            if kind is None:
                raise unrecognised_refusal(self.code, what, message)
            raise ProviderError(self.code, kind, f"{what} failed: {message}")
        if not response.is_success:
            kind = status_kind(response.status_code)
            raise ProviderError(self.code, "transient" if kind == "not_found" else kind,
                                f"{what}: HTTP {response.status_code}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise ProviderError(self.code, "transient", f"{what}: answer has no 'data'")
        return data

    # --- offers --------------------------------------------------------------------

    async def _data_centers(self) -> list[tuple[str, Region]]:
        data = await self._gql("data centres", "query DataCenters { dataCenters { id name listed } }",
                               idempotent=True)
        out: list[tuple[str, Region]] = []
        for raw in data.get("dataCenters") or []:
            if not isinstance(raw, dict) or raw.get("listed") is False or not isinstance(raw.get("id"), str):
                continue
            region = region_from_runpod(raw["id"])
            if region is None:
                log.info("runpod: data centre %r has no known location; left out", raw["id"])
                continue
            out.append((raw["id"], region))
        return out

    def _storage_dollars(self) -> Decimal:
        return Decimal(self.disk_gb) * self.storage_rate / HOURS_PER_MONTH

    async def list_offers(self) -> list[Offer]:
        dcs = await self._data_centers()
        if not dcs:
            return []
        offers: list[Offer] = []
        unknown: set[str] = set()
        names = [dc for dc, _ in dcs]
        try:
            async with asyncio.TaskGroup() as group:  # the four GPU counts at once; one failure cancels the rest
                tasks = [group.create_task(self._gql(f"gpu types x{n}", offers_query(n, names), idempotent=True))
                         for n in GPU_COUNTS]
        except BaseExceptionGroup as eg:
            raise eg.exceptions[0] from None
        for n, task in zip(GPU_COUNTS, tasks, strict=True):
            data = task.result()
            types = data.get("gpuTypes")
            if not isinstance(types, list):
                raise ProviderError(self.code, "transient", "gpu types: answer has no 'gpuTypes' list")
            for raw in types:
                try:
                    offers.extend(self._offers_of(obj(raw, "gpu type"), n, dcs, unknown))
                except Malformed as e:
                    log.warning("runpod: skipping a malformed gpu type: %s", e)
        for name in sorted(unknown):
            log.info("runpod: GPU %r is not one of our families; its offers are left out", name)
        return offers

    def _offers_of(self, raw: dict[str, Any], n: int, dcs: list[tuple[str, Region]],
                   unknown: set[str]) -> list[Offer]:
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
                cents = dollars_to_cents_up(pod + self._storage_dollars())
            except (Malformed, ValueError) as e:
                log.warning("runpod: skipping %s in %s: %s", type_id, dc, e)
                continue
            out.append(Offer(
                provider=self.code, offer_key=f"{type_id}|SECURE|{dc}|{n}", gpu_name=type_id, family=fam.id,
                model=fam.model, vram_gb=fam.vram_gb, gpu_count=n, price_cents_per_hour=cents,
                region=region.label, region_code=region.code, interconnect=interconnect_for(fam, n),
            ))
        return out

    # --- pods ----------------------------------------------------------------------

    def deploy_mutation(self, req: AllocateRequest) -> str:
        parts = req.offer.offer_key.split("|")
        if len(parts) != 4 or parts[1] not in ("SECURE", "COMMUNITY") or not parts[3].isdigit():
            raise ProviderError(self.code, "invalid", f"not a runpod offer key: {req.offer.offer_key!r}")
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

    async def allocate(self, req: AllocateRequest) -> str:
        data = await self._gql("deploy pod", self.deploy_mutation(req), idempotent=False)
        pod = data.get("podFindAndDeployOnDemand")
        if not isinstance(pod, dict) or not isinstance(pod.get("id"), str) or not pod["id"]:
            raise ProviderError(self.code, "transient", "deploy pod: answer has no pod id (reconcile by label)")
        return str(pod["id"])

    async def get_instance(self, instance_id: str) -> Instance | None:
        query = f"query pod {{ pod(input: {{podId: {gql_string(instance_id)}}}) {{ {POD_FIELDS} }} }}"
        try:
            data = await self._gql("get pod", query, idempotent=True)
        except ProviderError as e:
            if e.kind == "not_found":
                return None
            raise
        if "pod" not in data:
            raise ProviderError(self.code, "transient", "get pod: answer has no 'pod'")
        pod = data["pod"]
        if pod is None:  # RunPod's own "no such pod"
            return None
        try:
            return self._instance(obj(pod, "pod"))
        except Malformed as e:
            raise ProviderError(self.code, "transient", f"get pod: {e}") from e

    async def list_instances(self) -> list[Instance]:
        data = await self._gql("list pods", f"query myPods {{ myself {{ pods {{ {POD_FIELDS} }} }} }}",
                               idempotent=True)
        try:
            pods = arr(obj(data.get("myself"), "myself").get("pods"), "pods")
            instances = [self._instance(obj(p, "pod")) for p in pods]
        except Malformed as e:
            raise ProviderError(self.code, "transient", f"list pods: {e}") from e
        return [i for i in instances if is_ours(i.label)]

    async def terminate(self, instance_id: str) -> None:
        mutation = f"mutation {{ podTerminate(input: {{ podId: {gql_string(instance_id)} }}) }}"
        try:
            await self._gql("terminate pod", mutation, idempotent=True)
        except ProviderError as e:
            if e.kind != "not_found":
                raise

    def _instance(self, pod: dict[str, Any]) -> Instance:
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
            host, port = _public_ssh(pod.get("runtime"))
            status = reachable_status(desired == "RUNNING", host, port)
            if status != "running":
                host, port = None, None
        return Instance(iid, name, status, host, port, error, self._billed_cents(pod))

    def _billed_cents(self, pod: dict[str, Any]) -> int | None:
        """The pod's ``costPerHr`` (the whole pod, a number or a numeric string) plus the
        container disk, as its offer was priced; None when absent or unreadable."""
        raw = pod.get("costPerHr")
        if raw is None or isinstance(raw, bool):
            return None
        try:
            dollars = Decimal(str(raw))
            disk = pod.get("containerDiskInGb")
            gb = Decimal(int(disk)) if isinstance(disk, int) and not isinstance(disk, bool) else Decimal(self.disk_gb)
            return dollars_to_cents_up(dollars + gb * self.storage_rate / HOURS_PER_MONTH)
        except (ArithmeticError, ValueError):
            return None


def _public_ssh(runtime: Any) -> tuple[str | None, int | None]:
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


def _build(config: ProviderConfig, ctx: BuildContext) -> RunPodAdapter:
    return RunPodAdapter(config.api_key.get_secret_value(), config.base_url or DEFAULT_BASE_URL, disk_gb=ctx.disk_gb,
                         policy=ctx.policy, sleep=ctx.sleep, client=ctx.client)


SPEC = ProviderSpec("runpod", ProviderConfig, _build)
