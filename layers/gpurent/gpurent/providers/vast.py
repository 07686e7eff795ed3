"""vast.ai adapter: the wire form of the ``vastai`` 1.9 SDK (provider-wire.md §1); the rows and
refusals are read by `vast_wire`.

- search   ``POST /api/v0/bundles/`` (flat filters; ``allocated_storage`` = our disk, so
           ``dph_total`` already includes the storage we will be billed for), one query
           per GPU name, paged by price band (below)
- create   ``PUT /api/v0/asks/{ask id}/`` (label = our rental id)
- get      ``GET /api/v0/instances/{id}/?owner=me`` → ``{"instances": {...} | null}``
- list     ``GET /api/v1/instances/`` paged by ``next_token`` → ``after_token``, 25 a page,
           in id ranges listed concurrently (below); filtered on ``label`` to find one
           rental's instance
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

The list holds at most 25 instances a page (vast.ai's documented maximum) and pages by a
keyset token, so one token chain lists about 6,000 instances a minute however fast we are.
So a long list is cut into ranges of instance ids (``select_filters`` ``{"id": {"gte": a,
"lt": b}}``, operators vast.ai documents for this list), each range its own token chain, the
chains running concurrently (``list_concurrency`` requests in flight). The caller names the
instance ids it expects (the reconciler: its live rentals'), and the cuts are taken so that
each range holds ``LIST_RANGE`` of them; the first range has no lower bound and the last no
upper one, so every instance is listed whatever its id (an orphan's too). Each page asks
only for the columns we read (``select_cols``): 9 of a row's ~80.

"Gone" is believed only when vast says so: ``{"instances": null}``, or the error code
``no_such_instance``. A bare 404 (a wrong base URL, a proxy) is ``transient``: taking it
for "gone" would let a reconciler forget a machine that is still billing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
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
    labelled,
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
LIST_PAGE = 25  # instances a list page holds: vast.ai's documented maximum (and what its own client asks)
LIST_RANGE = 250  # expected instances per id range of a long list (10 pages, one after another)
LIST_CONCURRENCY = 32  # list requests in flight at once, at most (`VAST_LIST_CONCURRENCY`)
LIST_RATE_RETRIES = 8  # 429s one list page may meet before the list fails
# The columns `vast_wire.instance_from` reads: a page asks for these only.
LIST_COLUMNS = ("id", "label", "actual_status", "status_msg", "public_ipaddr", "ports", "ssh_host", "ssh_port",
                "dph_total")


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
        page_size: int = LIST_PAGE,
        list_concurrency: int = LIST_CONCURRENCY,
    ) -> None:
        self.disk_gb = disk_gb  # the storage the offer prices include (allocated_storage)
        self.search_page = search_page
        self.max_bands = max_bands
        self.page_size = page_size
        self.list_concurrency = list_concurrency
        self._sleep = sleep
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

    async def list_instances(self, expected: Sequence[str] = ()) -> list[Instance]:
        """Every instance of ours, in id ranges cut among the `expected` ids, listed concurrently
        (see the module doc)."""
        gate = Throttle(self.list_concurrency)
        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the other ranges
                tasks = [group.create_task(self._list_chain(wire.id_filter(lo, hi), gate))
                         for lo, hi in wire.id_ranges(expected, LIST_RANGE)]
        except BaseExceptionGroup as eg:
            raise eg.exceptions[0] from None
        found: dict[str, Instance] = {}
        for t in tasks:
            for inst in t.result():
                found[inst.instance_id] = inst
        return list(found.values())

    async def find_by_label(self, label: str) -> Instance | None:
        """The list filtered on the label (``{"label": {"in": [label]}}``, as vast.ai's own
        client filters it): one request whatever the size of the account, where looking
        through the whole list took a page per 25 instances."""
        return labelled(await self._list_chain(wire.label_filter(label), Throttle(1)), label)

    async def _list_chain(self, filters: dict[str, Any], gate: Throttle) -> list[Instance]:
        """The instances of ours that pass `filters` (``select_filters``), one page after another."""
        out: list[Instance] = []
        token: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            params = {
                "select_filters": json.dumps(filters, separators=(",", ":")),
                "order_by": json.dumps([{"col": "id", "dir": "asc"}], separators=(",", ":")),
                "select_cols": json.dumps(LIST_COLUMNS, separators=(",", ":")),
                "limit": str(self.page_size),
            }
            if token:
                params["after_token"] = token
            response = await self._list_page(params, gate)
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
        raise ProviderError(self.code, "transient", f"show instances: more than {MAX_PAGES} pages in one chain")

    async def _list_page(self, params: dict[str, str], gate: Throttle) -> httpx.Response:
        """One page of the list; a 429 (vast.ai's rate limit for the endpoint) narrows the gate
        and the page is asked again after a pause, up to `LIST_RATE_RETRIES` times."""
        for refusals in range(LIST_RATE_RETRIES + 1):
            async with gate:
                response = await self.http.send("GET", "/api/v1/instances/", params=params, idempotent=True,
                                                retryable=lambda r: r.status_code != 429)
            if response.status_code != 429:
                gate.served()
                return response
            gate.refused()
            if refusals < LIST_RATE_RETRIES:
                await self._sleep(min(8.0, 0.25 * 2 ** refusals))
        raise ProviderError(self.code, "transient",
                            f"show instances: still rate limited (HTTP 429) after {LIST_RATE_RETRIES} pauses")

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


class Throttle:
    """At most `limit` requests in flight: halved by each refusal (429), grown back by one for
    each `limit` answers, never above `most` (additive increase, multiplicative decrease), so
    the list settles at the rate vast.ai serves whatever that rate is."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.limit = float(most)
        self.in_flight = 0
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1

    async def __aexit__(self, *exc: object) -> None:
        async with self._changed:
            self.in_flight -= 1
            self._changed.notify_all()

    def served(self) -> None:
        self.limit = min(float(self.most), self.limit + 1 / self.limit)

    def refused(self) -> None:
        self.limit = max(1.0, self.limit / 2)


class VastConfig(ProviderConfig):
    """vast.ai's settings also say how many instances a page of its list asks for
    (``VAST_PAGE_SIZE``, at most 25: vast.ai's documented maximum) and how many list requests
    may be in flight at once (``VAST_LIST_CONCURRENCY``: vast.ai limits each endpoint's request
    rate per key, and answers 429 beyond it, which the requests' backoff absorbs)."""

    page_size: int = Field(default=LIST_PAGE, ge=1, le=LIST_PAGE)
    list_concurrency: int = Field(default=LIST_CONCURRENCY, ge=1, le=256)


def _build(config: VastConfig, ctx: BuildContext) -> VastAdapter:
    return VastAdapter(config.api_key.get_secret_value(), config.base_url or DEFAULT_BASE_URL, disk_gb=ctx.disk_gb,
                       policy=ctx.policy, sleep=ctx.sleep, client=ctx.client, page_size=config.page_size,
                       list_concurrency=config.list_concurrency)


SPEC = ProviderSpec("vast", VastConfig, _build)
