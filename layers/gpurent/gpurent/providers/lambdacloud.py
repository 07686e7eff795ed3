"""Lambda Cloud adapter: REST under ``/api/v1`` (provider-wire.md §3, providers.md).

- offers     ``GET /instance-types``: one Offer per (type × region with capacity); the
             price is already integer cents for the whole instance (local disk included)
- launch     ``POST /instance-operations/launch`` (name = our rental id; the platform's
             one registered SSH key name, plus a ``user_data`` script that installs every
             user key for root and ubuntu)
- get/list   ``GET /instances/{id}``, ``GET /instances``
- terminate  ``POST /instance-operations/terminate``

Errors are ``{"error": {"code", "message", "suggestion"}}``: classified by ``code``, never
by the text; a code we do not know is ``transient``, logged with the raw text; an answer
without a code falls back to the HTTP status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import Field

from gpurent.families import interconnect_for
from gpurent.providers.base import (
    AllocateRequest,
    ErrorKind,
    Instance,
    InstanceStatus,
    Offer,
    ProviderError,
    bootstrap_script,
    is_ours,
    labelled,
    reachable_status,
)
from gpurent.providers.http import (
    HttpPolicy,
    JsonHttp,
    Malformed,
    Sleep,
    arr,
    get_str,
    obj,
    req_str,
    status_kind,
    unrecognised_refusal,
)
from gpurent.providers.lambdacloud_names import lambda_family, parse_lambda_description, region_from_lambda
from gpurent.providers.spec import BuildContext, ProviderConfig, ProviderSpec

log = logging.getLogger("gpurent.providers")

DEFAULT_BASE_URL = "https://cloud.lambda.ai/api/v1"
GPU_COUNTS = frozenset({1, 2, 4, 8})

ERROR_CODES: dict[str, ErrorKind] = {
    "instance-operations/launch/insufficient-capacity": "capacity",
    "global/quota-exceeded": "quota",
    "global/invalid-api-key": "auth",
    "global/account-inactive": "auth",
    "global/invalid-parameters": "invalid",
    "global/object-does-not-exist": "not_found",
    "instance-operations/launch/file-system-in-wrong-region": "invalid",
    "instance-operations/launch/file-systems-not-supported": "invalid",
    "global/unknown": "transient",
}

_STATES: dict[str, InstanceStatus] = {
    "booting": "provisioning",
    "unhealthy": "failed",  # may recover (SkyPilot keeps it as INIT): callers give grace
    "preempted": "terminated",  # Lambda took it back; billing stopped
    "terminating": "stopped",  # going away; billing until terminated
    "terminated": "terminated",
}
_ENDING = frozenset({"preempted", "terminating"})


class LambdaAdapter:
    code = "lambda"

    def __init__(
        self,
        api_key: str,
        ssh_key_name: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        policy: HttpPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not ssh_key_name:
            raise ValueError("Lambda needs the name of the platform's registered SSH key")
        self.ssh_key_name = ssh_key_name
        self.http = JsonHttp(
            self.code, base_url, {"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            policy=policy, sleep=sleep, client=client,
        )

    def _error(self, what: str, response: httpx.Response) -> ProviderError:
        try:
            body = response.json()
        except ValueError:
            body = None
        err = body.get("error") if isinstance(body, dict) else None
        code = err.get("code") if isinstance(err, dict) else None
        message = err.get("message") if isinstance(err, dict) else None
        kind = ERROR_CODES.get(code) if isinstance(code, str) else None
        detail = f"{code}: {message}" if code else f"HTTP {response.status_code}"
        if kind is None and isinstance(code, str) and code:
            # A code we do not know (Lambda adds them): never guessed from its text.
            return unrecognised_refusal(self.code, what, detail)
        if kind is None:
            # Only object-does-not-exist proves an object gone; a bare 404 (wrong base URL,
            # a proxy) must not make a billing instance look terminated.
            status = response.status_code
            kind = "transient" if status == 404 else status_kind(status)
        return ProviderError(self.code, kind, f"{what} failed: {detail}")

    async def _call(self, what: str, method: str, path: str, *, json: Any = None, idempotent: bool) -> Any:
        response = await self.http.send(method, path, json=json, idempotent=idempotent)
        if not response.is_success:
            raise self._error(what, response)
        body = self.http.decode(response)
        if not isinstance(body, dict) or "data" not in body:
            raise ProviderError(self.code, "transient", f"{what}: answer has no 'data'")
        return body["data"]

    # --- offers --------------------------------------------------------------------

    async def list_offers(self) -> list[Offer]:
        data = await self._call("instance types", "GET", "/instance-types", idempotent=True)
        if not isinstance(data, dict):
            raise ProviderError(self.code, "transient", "instance types: 'data' is not an object")
        offers: list[Offer] = []
        for key, entry in data.items():
            try:
                offers.extend(self._offers_of(obj(entry, f"instance type {key}")))
            except Malformed as e:
                log.warning("lambda: skipping malformed instance type %r: %s", key, e)
        return offers

    def _offers_of(self, entry: dict[str, Any]) -> list[Offer]:
        it = obj(entry.get("instance_type"), "instance_type")
        name = req_str(it, "name")
        description = req_str(it, "description")
        price = it.get("price_cents_per_hour")
        if isinstance(price, bool) or not isinstance(price, int) or price <= 0:
            raise Malformed("'price_cents_per_hour' is not a positive integer")
        regions = arr(entry.get("regions_with_capacity_available"), "regions_with_capacity_available")
        gpu = parse_lambda_description(description)
        fam = lambda_family(gpu) if gpu is not None else None
        if gpu is None or fam is None:
            log.info("lambda: %s (%r) is not one of our families; left out", name, description)
            return []
        if gpu.count not in GPU_COUNTS:
            return []
        out: list[Offer] = []
        for raw_region in regions:
            region_name = req_str(obj(raw_region, "region"), "name")
            region = region_from_lambda(region_name)
            if region is None:
                log.info("lambda: region %r is not known; %s there is left out", region_name, name)
                continue
            out.append(Offer(
                provider=self.code, offer_key=f"{name}|{region_name}", gpu_name=description, family=fam.id,
                model=fam.model, vram_gb=fam.vram_gb, gpu_count=gpu.count, price_cents_per_hour=price,
                region=region.label, region_code=region.code, interconnect=interconnect_for(fam, gpu.count),
            ))
        return out

    # --- instances -----------------------------------------------------------------

    def launch_body(self, req: AllocateRequest) -> dict[str, Any]:
        type_name, sep, region_name = req.offer.offer_key.rpartition("|")
        if not sep or not type_name or not region_name:
            raise ProviderError(self.code, "invalid", f"not a lambda offer key: {req.offer.offer_key!r}")
        return {
            "region_name": region_name,
            "instance_type_name": type_name,
            "ssh_key_names": [self.ssh_key_name],
            "name": req.rental_id,
            "user_data": bootstrap_script(self.code, req.ssh_public_keys, req.start_command,
                                          user_dirs=("/root", "/home/ubuntu")),
        }

    async def allocate(self, req: AllocateRequest) -> str:
        data = await self._call("launch", "POST", "/instance-operations/launch", json=self.launch_body(req),
                                idempotent=False)
        ids = data.get("instance_ids") if isinstance(data, dict) else None
        if not isinstance(ids, list) or not ids or not isinstance(ids[0], str) or not ids[0]:
            raise ProviderError(self.code, "transient", "launch: answer has no instance id (reconcile by label)")
        return ids[0]

    async def get_instance(self, instance_id: str) -> Instance | None:
        try:
            data = await self._call("get instance", "GET", f"/instances/{instance_id}", idempotent=True)
        except ProviderError as e:
            if e.kind == "not_found":
                return None
            raise
        try:
            return self._instance(obj(data, "instance"))
        except Malformed as e:
            raise ProviderError(self.code, "transient", f"get instance: {e}") from e

    async def list_instances(self, expected: Sequence[str] = ()) -> list[Instance]:
        data = await self._call("list instances", "GET", "/instances", idempotent=True)
        try:
            instances = [self._instance(obj(row, "instance")) for row in arr(data, "data")]
        except Malformed as e:
            raise ProviderError(self.code, "transient", f"list instances: {e}") from e
        return [i for i in instances if is_ours(i.label)]

    async def find_by_label(self, label: str) -> Instance | None:
        """Its list is one call: looked through for the label."""
        return labelled(await self.list_instances(), label)

    async def terminate(self, instance_id: str) -> None:
        try:
            await self._call("terminate", "POST", "/instance-operations/terminate",
                             json={"instance_ids": [instance_id]}, idempotent=True)
        except ProviderError as e:
            if e.kind != "not_found":
                raise

    def _instance(self, row: dict[str, Any]) -> Instance:
        iid = req_str(row, "id")
        state = req_str(row, "status")
        name = get_str(row, "name", optional=True) or None
        ip = get_str(row, "ip", optional=True) or None
        status: InstanceStatus
        error: str | None = None
        if state == "active":
            status = reachable_status(True, ip, 22)
        elif state in _STATES:
            status = _STATES[state]
            if status == "failed" or state in _ENDING:
                error = f"lambda reports the instance {state}"
        else:
            log.warning("lambda: instance %s has an unknown status %r", iid, state)
            status = "provisioning"
        running = status == "running"
        it = row.get("instance_type")
        price = it.get("price_cents_per_hour") if isinstance(it, dict) else None
        cost = price if isinstance(price, int) and not isinstance(price, bool) and price > 0 else None
        return Instance(iid, name, status, ip if running else None, 22 if running else None, error, cost,
                        ending=state in _ENDING)


class LambdaConfig(ProviderConfig):
    """Lambda's settings also name the platform's SSH key registered there (``LAMBDA_SSH_KEY_NAME``)."""

    ssh_key_name: str = Field(min_length=1)


def _build(config: LambdaConfig, ctx: BuildContext) -> LambdaAdapter:
    return LambdaAdapter(config.api_key.get_secret_value(), config.ssh_key_name,
                         config.base_url or DEFAULT_BASE_URL, policy=ctx.policy, sleep=ctx.sleep, client=ctx.client)


SPEC = ProviderSpec("lambda", LambdaConfig, _build)
