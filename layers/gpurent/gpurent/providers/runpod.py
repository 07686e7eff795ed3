"""RunPod adapter: GraphQL at ``{base}/graphql`` as the ``runpod`` SDK speaks it; the GraphQL
text and the answers are written and read by `runpod_wire`.

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
when present, otherwise the text is matched against the patterns in `runpod_wire` (RunPod's real
wordings); words we do not know are ``transient`` and logged with the raw text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import httpx

from gpurent.providers import runpod_wire as wire
from gpurent.providers.base import (
    AllocateRequest,
    Instance,
    Offer,
    ProviderError,
    is_ours,
    labelled,
)
from gpurent.providers.http import (
    HttpPolicy,
    JsonHttp,
    Malformed,
    Sleep,
    arr,
    obj,
    status_kind,
    unrecognised_refusal,
)
from gpurent.providers.runpod_names import region_from_runpod
from gpurent.providers.spec import BuildContext, ProviderConfig, ProviderSpec
from gpurent.regions import Region

log = logging.getLogger("gpurent.providers")

DEFAULT_BASE_URL = "https://api.runpod.io"
GPU_COUNTS = (1, 2, 4, 8)


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
            kind = wire.classify_message(message, code)
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
        return Decimal(self.disk_gb) * self.storage_rate / wire.HOURS_PER_MONTH

    async def list_offers(self) -> list[Offer]:
        dcs = await self._data_centers()
        if not dcs:
            return []
        offers: list[Offer] = []
        unknown: set[str] = set()
        names = [dc for dc, _ in dcs]
        try:
            async with asyncio.TaskGroup() as group:  # the four GPU counts at once; one failure cancels the rest
                tasks = [group.create_task(self._gql(f"gpu types x{n}", wire.offers_query(n, names), idempotent=True))
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
                    offers.extend(wire.offers_of(obj(raw, "gpu type"), n, dcs, unknown, self._storage_dollars()))
                except Malformed as e:
                    log.warning("runpod: skipping a malformed gpu type: %s", e)
        for name in sorted(unknown):
            log.info("runpod: GPU %r is not one of our families; its offers are left out", name)
        return offers

    # --- pods ----------------------------------------------------------------------

    async def allocate(self, req: AllocateRequest) -> str:
        data = await self._gql("deploy pod", wire.deploy_mutation(req), idempotent=False)
        pod = data.get("podFindAndDeployOnDemand")
        if not isinstance(pod, dict) or not isinstance(pod.get("id"), str) or not pod["id"]:
            raise ProviderError(self.code, "transient", "deploy pod: answer has no pod id (reconcile by label)")
        return str(pod["id"])

    async def get_instance(self, instance_id: str) -> Instance | None:
        query = f"query pod {{ pod(input: {{podId: {wire.gql_string(instance_id)}}}) {{ {wire.POD_FIELDS} }} }}"
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
            return wire.instance_from(obj(pod, "pod"), self.disk_gb, self.storage_rate)
        except Malformed as e:
            raise ProviderError(self.code, "transient", f"get pod: {e}") from e

    async def list_instances(self, expected: Sequence[str] = ()) -> list[Instance]:
        data = await self._gql("list pods", f"query myPods {{ myself {{ pods {{ {wire.POD_FIELDS} }} }} }}",
                               idempotent=True)
        try:
            pods = arr(obj(data.get("myself"), "myself").get("pods"), "pods")
            instances = [wire.instance_from(obj(p, "pod"), self.disk_gb, self.storage_rate) for p in pods]
        except Malformed as e:
            raise ProviderError(self.code, "transient", f"list pods: {e}") from e
        return [i for i in instances if is_ours(i.label)]

    async def find_by_label(self, label: str) -> Instance | None:
        """Its list is one call: looked through for the label."""
        return labelled(await self.list_instances(), label)

    async def terminate(self, instance_id: str) -> None:
        mutation = f"mutation {{ podTerminate(input: {{ podId: {wire.gql_string(instance_id)} }}) }}"
        try:
            await self._gql("terminate pod", mutation, idempotent=True)
        except ProviderError as e:
            if e.kind != "not_found":
                raise


def _build(config: ProviderConfig, ctx: BuildContext) -> RunPodAdapter:
    return RunPodAdapter(config.api_key.get_secret_value(), config.base_url or DEFAULT_BASE_URL, disk_gb=ctx.disk_gb,
                         policy=ctx.policy, sleep=ctx.sleep, client=ctx.client)


SPEC = ProviderSpec("runpod", ProviderConfig, _build)
