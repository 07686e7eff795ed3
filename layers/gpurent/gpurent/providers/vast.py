"""vast.ai adapter: the wire form of the ``vastai`` 1.9 SDK (provider-wire.md §1); the rows and
refusals are read by `vast_wire`.

- search   ``POST /api/v0/bundles/`` (flat filters; ``allocated_storage`` = our disk, so
           ``dph_total`` already includes the storage we will be billed for), one query
           per GPU name, paged by price band (below)
- create   ``PUT /api/v0/asks/{ask id}/`` (label = our rental id)
- get      ``GET /api/v0/instances/{id}/?owner=me`` → ``{"instances": {...} | null}``
- list     ``GET /api/v1/instances/`` paged by ``next_token`` → ``after_token``
- destroy  ``DELETE /api/v0/instances/{id}/``

A logical failure is ``{"success": false, "error": <code>, "msg": <text>}`` (with a 2xx
or a 4xx status); the ``error`` code decides the kind.

Search answers are capped: a public integration saw 64 offers whatever ``limit`` asked,
and one search over the whole market returns only its cheapest part (SkyPilot #4904: its
vast catalog missed cheaper live offers). So the market is fetched per GPU name (our six,
``num_gpus`` in 1, 2, 4, 8), cheapest first, in price bands: after each answer the next
band is asked for (``dph_total >= `` the dearest price seen, the offers already seen at
exactly that price excluded by id) until a band brings no new offer. This holds whatever
the cap is, even one below the ``search_page`` we ask for (a cap we cannot see): a
complete name costs two searches. An answer a later band proved cut off is logged (info,
with the size it was cut at); a name still bringing new offers after ``max_bands`` bands
is logged as truncated (warning: its dearest offers are missing).

"Gone" is believed only when vast says so: ``{"instances": null}``, or the error code
``no_such_instance``. A bare 404 (a wrong base URL, a proxy) is ``transient``: taking it
for "gone" would let a reconciler forget a machine that is still billing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
from pydantic import Field

from gpurent.providers import vast_wire as wire
from gpurent.providers.base import (
    AllocateRequest,
    Instance,
    Offer,
    ProviderError,
    bootstrap_script,
    is_ours,
)
from gpurent.providers.http import (
    HttpPolicy,
    JsonHttp,
    Malformed,
    Sleep,
    arr,
    obj,
)
from gpurent.providers.spec import BuildContext, ProviderConfig, ProviderSpec
from gpurent.providers.vast_names import VAST_NAMES

log = logging.getLogger("gpurent.providers")

DEFAULT_BASE_URL = "https://console.vast.ai"
MAX_PAGES = 200
SEARCH_PAGE = 64  # offers asked for per search: the cap vast was seen to apply
MAX_BANDS = 12  # price bands per GPU name before the answer is reported truncated
SEARCH_CONCURRENCY = 3  # searches in flight at once (vast rate-limits searches)


class VastAdapter:
    code = "vast"

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        disk_gb: int = 50,
        policy: HttpPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        client: httpx.AsyncClient | None = None,
        search_page: int = SEARCH_PAGE,
        max_bands: int = MAX_BANDS,
        page_size: int = 25,
    ) -> None:
        self.disk_gb = disk_gb  # the storage the offer prices include (allocated_storage)
        self.search_page = search_page
        self.max_bands = max_bands
        self.page_size = page_size
        self.http = JsonHttp(
            self.code, base_url, {"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            policy=policy, sleep=sleep, client=client,
        )

    # --- offers --------------------------------------------------------------------

    async def _search(self, body: dict[str, Any]) -> list[Any]:
        response = await self.http.send(
            "POST", "/api/v0/bundles/", json=body, idempotent=True, retryable=wire.not_search_quota
        )
        if not response.is_success:
            raise wire.refusal("search offers", response)
        answer = self.http.decode(response)
        raw_offers = answer.get("offers") if isinstance(answer, dict) else None
        if not isinstance(raw_offers, list):
            raise ProviderError(self.code, "transient", "search offers: answer has no 'offers' list")
        return raw_offers

    async def _search_name(self, gpu_name: str, gate: asyncio.Semaphore) -> list[Any]:
        """Every offer of one GPU name, band by band (see the module doc)."""
        found: dict[Any, Any] = {}
        above: float | None = None
        edge: tuple[int, ...] = ()
        cut_at: int | None = None
        for _ in range(self.max_bands):
            async with gate:
                body = wire.search_body(gpu_name, disk_gb=self.disk_gb, limit=self.search_page, above=above,
                                        seen_at_edge=edge)
                rows = await self._search(body)
            new = [r for r in rows if not (isinstance(r, dict) and r.get("id") in found)]
            if not new:
                if cut_at is not None:
                    log.info("vast: the search for %r was cut at %d offers; %d found in price bands", gpu_name,
                             cut_at, len(found))
                return list(found.values())
            if found and cut_at is None:
                cut_at = len(found)
            for r in new:
                found[r.get("id") if isinstance(r, dict) else id(r)] = r
            prices = [p for r in rows if isinstance(r, dict)
                      and isinstance(p := r.get("dph_total"), int | float) and not isinstance(p, bool)]
            if not prices:
                return list(found.values())
            top = max(prices)
            edge = tuple(sorted(int(r["id"]) for r in found.values() if isinstance(r, dict)
                                and r.get("dph_total") == top and isinstance(r.get("id"), int)))
            above = top
        log.warning("vast: the search for %r still brought new offers after %d price bands; the answers look "
                    "truncated and its dearest offers are missing", gpu_name, self.max_bands)
        return list(found.values())

    async def list_offers(self) -> list[Offer]:
        gate = asyncio.Semaphore(SEARCH_CONCURRENCY)
        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the other searches
                tasks = [group.create_task(self._search_name(name, gate)) for name in sorted(VAST_NAMES)]
        except BaseExceptionGroup as eg:
            raise eg.exceptions[0] from None
        answers = [t.result() for t in tasks]
        offers: dict[str, Offer] = {}
        unknown: set[str] = set()
        for raw_offers in answers:
            for raw in raw_offers:
                try:
                    offer = wire.offer_from(obj(raw, "offer"), unknown)
                except Malformed as e:
                    log.warning("vast: skipping a malformed offer: %s", e)
                    continue
                if offer is not None:
                    offers[offer.offer_key] = offer
        for name in sorted(unknown):
            log.info("vast: GPU %r is not one of our families; its offers are left out", name)
        return list(offers.values())

    # --- instances -----------------------------------------------------------------

    async def allocate(self, req: AllocateRequest) -> str:
        ask_id = req.offer.offer_key
        if not ask_id.isdigit():
            raise ProviderError(self.code, "invalid", f"not a vast ask id: {ask_id!r}")
        body = {
            "client_id": "me",
            "image": req.image,
            "env": {},
            "disk": req.disk_gb,
            "label": req.rental_id,
            "onstart": bootstrap_script(self.code, req.ssh_public_keys, req.start_command),
            "runtype": "ssh_direc ssh_proxy",
        }
        response = await self.http.send("PUT", f"/api/v0/asks/{ask_id}/", json=body, idempotent=False)
        if not response.is_success:
            try:
                refused = response.json()
            except ValueError:
                refused = None
            if isinstance(refused, dict):
                await self._destroy_refused(refused.get("new_contract"))
            raise wire.refusal("create instance", response, fallback={404: "capacity", 410: "capacity"})
        data = self.http.decode(response)
        if not isinstance(data, dict):
            raise ProviderError(self.code, "transient", "create instance: answer is not an object")
        if data.get("success") is not True:
            await self._destroy_refused(data.get("new_contract"))
            raise wire.refusal("create instance", response, data)
        contract = data.get("new_contract")
        if isinstance(contract, bool) or not isinstance(contract, int | str) or not str(contract).isdigit():
            raise ProviderError(
                self.code, "transient", "create instance: success without a new_contract (reconcile by label)"
            )
        return str(contract)

    async def _destroy_refused(self, contract: Any) -> None:
        """vast can create an instance and still answer a refusal (dstack's vast backend saw
        it with bids): one named in the refusal is destroyed at once, or left to the
        reconciler (it carries our label) when that fails."""
        if isinstance(contract, bool) or not isinstance(contract, int | str) or not str(contract).isdigit():
            return
        try:
            await self.terminate(str(contract))
        except ProviderError as e:
            log.warning("vast: could not destroy instance %s created by a refused create: %s", contract, e)

    async def get_instance(self, instance_id: str) -> Instance | None:
        response = await self.http.send(
            "GET", f"/api/v0/instances/{instance_id}/", params={"owner": "me"}, idempotent=True
        )
        if not response.is_success:
            err = wire.refusal("show instance", response, fallback=wire.UNPROVEN_404)
            if err.kind == "not_found":
                return None
            raise err
        body = self.http.decode(response)
        if not isinstance(body, dict) or "instances" not in body:
            raise ProviderError(self.code, "transient", "show instance: answer has no 'instances'")
        row = body["instances"]
        if row is None:
            return None
        try:
            return wire.instance_from(obj(row, "instance"))
        except Malformed as e:
            raise ProviderError(self.code, "transient", f"show instance: {e}") from e

    async def list_instances(self) -> list[Instance]:
        out: list[Instance] = []
        token: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            params = {
                "select_filters": "{}",
                "order_by": json.dumps([{"col": "id", "dir": "asc"}], separators=(",", ":")),
                "limit": str(self.page_size),
            }
            if token:
                params["after_token"] = token
            response = await self.http.send("GET", "/api/v1/instances/", params=params, idempotent=True)
            if not response.is_success:
                raise wire.refusal("show instances", response)
            body = self.http.decode(response)
            try:
                rows = arr(obj(body, "answer").get("instances"), "instances")
                for row in rows:
                    inst = wire.instance_from(obj(row, "instance"))
                    if is_ours(inst.label):
                        out.append(inst)
            except Malformed as e:
                raise ProviderError(self.code, "transient", f"show instances: {e}") from e
            nxt = body.get("next_token")
            if not nxt:
                return out
            token = str(nxt)
            if token in seen:
                raise ProviderError(self.code, "transient", "show instances: paging repeats a token")
            seen.add(token)
        raise ProviderError(self.code, "transient", f"show instances: more than {MAX_PAGES} pages")

    async def terminate(self, instance_id: str) -> None:
        response = await self.http.send("DELETE", f"/api/v0/instances/{instance_id}/", json={}, idempotent=True)
        if not response.is_success:
            err = wire.refusal("destroy instance", response, fallback=wire.UNPROVEN_404)
            if err.kind == "not_found":
                return
            raise err
        body = self.http.decode(response)
        if isinstance(body, dict) and body.get("success") is False:
            err = wire.refusal("destroy instance", response, body)
            if err.kind != "not_found":
                raise err


class VastConfig(ProviderConfig):
    """vast.ai's settings also say how many instances a page of its list asks for
    (``VAST_PAGE_SIZE``): 25 is what vast.ai's own client asks; its list is paged by token, one
    page after another, so the pages of a large account are what a reconcile pass waits on."""

    page_size: int = Field(default=25, ge=1, le=1000)


def _build(config: VastConfig, ctx: BuildContext) -> VastAdapter:
    return VastAdapter(config.api_key.get_secret_value(), config.base_url or DEFAULT_BASE_URL, disk_gb=ctx.disk_gb,
                       policy=ctx.policy, sleep=ctx.sleep, client=ctx.client, page_size=config.page_size)


SPEC = ProviderSpec("vast", VastConfig, _build)
