"""vast.ai adapter: the wire form of the ``vastai`` 1.9 SDK (provider-wire.md §1).

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
import re
from typing import Any

import httpx
from pydantic import Field

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
    req_int,
    req_num,
    req_str,
    status_kind,
    unrecognised_refusal,
)
from gpurent.providers.spec import BuildContext, ProviderConfig, ProviderSpec
from gpurent.providers.vast_names import VAST_NAMES, region_from_vast, vast_family

log = logging.getLogger("gpurent.providers")

DEFAULT_BASE_URL = "https://console.vast.ai"
GPU_COUNTS = frozenset({1, 2, 4, 8})
MAX_PAGES = 200
SEARCH_PAGE = 64  # offers asked for per search: the cap vast was seen to apply
MAX_BANDS = 12  # price bands per GPU name before the answer is reported truncated
SEARCH_CONCURRENCY = 3  # searches in flight at once (vast rate-limits searches)

ERROR_CODES: dict[str, ErrorKind] = {
    "no_such_ask": "capacity",  # the ask was rented by someone else or withdrawn
    "insufficient_credit": "quota",
    "search_quota_exceeded": "quota",
    "invalid_args": "invalid",
    "no_such_instance": "not_found",
    "auth_error": "auth",
    "server_error": "transient",
}
# A refusal whose code we do not know is read by its words (vast's `msg`); words we do not
# know either are `transient`, logged with the raw text.
_MESSAGE_PATTERNS: tuple[tuple[re.Pattern[str], ErrorKind], ...] = (
    (re.compile(r"not available|no longer available|already rented|no such ask|is rented|out of stock", re.I),
     "capacity"),
    (re.compile(r"credit|balance|insufficient funds|payment|spend limit", re.I), "quota"),
    (re.compile(r"api key|unauthori[sz]ed|not authori[sz]ed|authenticat|forbidden|permission", re.I), "auth"),
    (re.compile(r"invalid|is required|must be|malformed", re.I), "invalid"),
    (re.compile(r"internal error|try again|timed? ?out|unavailable", re.I), "transient"),
)

# Without the no_such_instance code a 404 proves nothing about the instance.
_UNPROVEN_404: dict[int, ErrorKind] = {404: "transient", 410: "transient"}

_PROVISIONING = frozenset({"created", "loading", "rebooting", "scheduling"})
_STUCK_STATES = frozenset({"created", "loading"})
# A start that failed for good while vast still says created/loading: dstack reads
# ": OCI runtime create failed:" in status_msg as failed; vast's own machine tester any
# "Error" in it.
_START_FAILED = re.compile(r"OCI runtime create failed|Error")
_STOPPED = frozenset({"stopped", "frozen"})
_FAILED = frozenset({"exited", "offline", "unknown"})


def _not_search_quota(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return True
    return not (isinstance(body, dict) and body.get("error") == "search_quota_exceeded")


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

    # --- errors --------------------------------------------------------------------

    def _error(self, what: str, response: httpx.Response, body: Any = None,
               fallback: dict[int, ErrorKind] | None = None) -> ProviderError:
        if body is None:
            try:
                body = response.json()
            except ValueError:
                body = None
        code = body.get("error") if isinstance(body, dict) else None
        text = (body.get("msg") or body.get("message")) if isinstance(body, dict) else None
        code = code if isinstance(code, str) and code else None
        text = text if isinstance(text, str) and text else None
        detail = f"{code}: {text}" if code and text else str(text or code or f"HTTP {response.status_code}")
        kind: ErrorKind | None = ERROR_CODES.get(code) if code else None
        if kind is None and text:
            kind = next((k for pattern, k in _MESSAGE_PATTERNS if pattern.search(text)), None)
        status = response.status_code
        if kind is None and fallback and status in fallback:
            kind = fallback[status]
        if kind is None:
            if code or text:
                return unrecognised_refusal(self.code, what, detail)
            kind = "transient" if status < 300 else status_kind(status)
        return ProviderError(self.code, kind, f"{what} failed: {detail}")

    # --- offers --------------------------------------------------------------------

    def search_body(self, gpu_name: str, above: float | None = None,
                    seen_at_edge: tuple[int, ...] = ()) -> dict[str, Any]:
        """One price band of one GPU name: offers from `above` $/h up (cheapest first),
        except those already seen at exactly that price."""
        body: dict[str, Any] = {
            "verified": {"eq": True},
            "external": {"eq": False},
            "rentable": {"eq": True},
            "rented": {"eq": False},
            "gpu_name": {"eq": gpu_name},
            "num_gpus": {"in": sorted(GPU_COUNTS)},
            "order": [["dph_total", "asc"]],
            "type": "on-demand",
            "limit": self.search_page,
            "allocated_storage": float(self.disk_gb),
        }
        if above is not None:
            body["dph_total"] = {"gte": above}
        if seen_at_edge:
            body["id"] = {"notin": list(seen_at_edge)}
        return body

    async def _search(self, body: dict[str, Any]) -> list[Any]:
        response = await self.http.send(
            "POST", "/api/v0/bundles/", json=body, idempotent=True, retryable=_not_search_quota
        )
        if not response.is_success:
            raise self._error("search offers", response)
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
                rows = await self._search(self.search_body(gpu_name, above, edge))
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
                    offer = self._offer(obj(raw, "offer"), unknown)
                except Malformed as e:
                    log.warning("vast: skipping a malformed offer: %s", e)
                    continue
                if offer is not None:
                    offers[offer.offer_key] = offer
        for name in sorted(unknown):
            log.info("vast: GPU %r is not one of our families; its offers are left out", name)
        return list(offers.values())

    def _offer(self, raw: dict[str, Any], unknown: set[str]) -> Offer | None:
        ask_id = req_int(raw, "id")
        gpu_name = req_str(raw, "gpu_name")
        count = req_int(raw, "num_gpus")
        price = req_num(raw, "dph_total")
        gpu_ram = get_num(raw, "gpu_ram", optional=True)
        if raw.get("rented") is True or raw.get("rentable") is False:
            return None
        if count not in GPU_COUNTS:
            return None
        fam = vast_family(gpu_name, gpu_ram)
        if fam is None:
            unknown.add(f"{gpu_name} ({gpu_ram} MB)" if gpu_ram is not None else gpu_name)
            return None
        geo = get_str(raw, "geolocation", optional=True)
        region = region_from_vast(geo)
        if region is None:
            log.info("vast: offer %s has no usable location (%r); left out", ask_id, geo)
            return None
        try:
            cents = dollars_to_cents_up(price)
        except ValueError as e:
            raise Malformed(str(e)) from e
        return Offer(
            provider=self.code, offer_key=str(ask_id), gpu_name=gpu_name, family=fam.id, model=fam.model,
            vram_gb=fam.vram_gb, gpu_count=count, price_cents_per_hour=cents, region=region.label,
            region_code=region.code, interconnect=interconnect_for(fam, count),
        )

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
            raise self._error("create instance", response, fallback={404: "capacity", 410: "capacity"})
        data = self.http.decode(response)
        if not isinstance(data, dict):
            raise ProviderError(self.code, "transient", "create instance: answer is not an object")
        if data.get("success") is not True:
            await self._destroy_refused(data.get("new_contract"))
            raise self._error("create instance", response, data)
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
            err = self._error("show instance", response, fallback=_UNPROVEN_404)
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
            return self._instance(obj(row, "instance"))
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
                raise self._error("show instances", response)
            body = self.http.decode(response)
            try:
                rows = arr(obj(body, "answer").get("instances"), "instances")
                for row in rows:
                    inst = self._instance(obj(row, "instance"))
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
            err = self._error("destroy instance", response, fallback=_UNPROVEN_404)
            if err.kind == "not_found":
                return
            raise err
        body = self.http.decode(response)
        if isinstance(body, dict) and body.get("success") is False:
            err = self._error("destroy instance", response, body)
            if err.kind != "not_found":
                raise err

    def _instance(self, row: dict[str, Any]) -> Instance:
        iid = str(req_int(row, "id"))
        label = get_str(row, "label", optional=True) or None
        actual = row.get("actual_status")
        if actual is not None and not isinstance(actual, str):
            raise Malformed("'actual_status' is not a string")
        host, port = _ssh_endpoint(row)
        status: InstanceStatus
        error: str | None = None
        msg = get_str(row, "status_msg", optional=True) or ""
        if (actual is None or actual in _STUCK_STATES) and _START_FAILED.search(msg):
            status = "failed"  # it will never start: vast leaves it in `created`/`loading` for ever
            error = msg.strip()[:300]
        elif actual is None or actual in _PROVISIONING:
            status = "provisioning"
        elif actual == "running":
            status = reachable_status(True, host, port)
        elif actual in _STOPPED:
            status = "stopped"
        elif actual in _FAILED:
            status = "failed"
            error = f"vast reports the instance {actual}" + (f": {msg.strip()[:300]}" if msg.strip() else "")
        else:
            log.warning("vast: instance %s has an unknown actual_status %r", iid, actual)
            status = "provisioning"
        if status != "running":  # a host is given out only once it is reachable
            host, port = None, None
        return Instance(iid, label, status, host, port, error, _billed_cents(row))


def _billed_cents(row: dict[str, Any]) -> int | None:
    """The instance's ``dph_total`` (GPU + the storage of its disk) in cents, rounded up."""
    raw = row.get("dph_total")
    if raw is None or isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    try:
        return dollars_to_cents_up(raw)
    except ValueError:
        return None


def _ssh_endpoint(row: dict[str, Any]) -> tuple[str | None, int | None]:
    """The direct SSH endpoint when the machine maps one (ssh_direc), else the proxy."""
    ports = row.get("ports")
    ip = row.get("public_ipaddr")
    if isinstance(ports, dict) and isinstance(ip, str) and ip.strip():
        mapped = ports.get("22/tcp")
        if isinstance(mapped, list) and mapped and isinstance(mapped[0], dict):
            try:
                hp = get_int(mapped[0], "HostPort", optional=True)
            except Malformed:
                hp = None
            if hp:
                return ip.strip(), hp
    host = row.get("ssh_host")
    try:
        port = get_int(row, "ssh_port", optional=True)
    except Malformed:
        port = None
    if isinstance(host, str) and host and port:
        return host, port
    return None, None


class VastConfig(ProviderConfig):
    """vast.ai's settings also say how many instances a page of its list asks for
    (``VAST_PAGE_SIZE``): 25 is what vast.ai's own client asks; its list is paged by token, one
    page after another, so the pages of a large account are what a reconcile pass waits on."""

    page_size: int = Field(default=25, ge=1, le=1000)


def _build(config: VastConfig, ctx: BuildContext) -> VastAdapter:
    return VastAdapter(config.api_key.get_secret_value(), config.base_url or DEFAULT_BASE_URL, disk_gb=ctx.disk_gb,
                       policy=ctx.policy, sleep=ctx.sleep, client=ctx.client, page_size=config.page_size)


SPEC = ProviderSpec("vast", VastConfig, _build)
