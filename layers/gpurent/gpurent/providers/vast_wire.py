"""vast.ai's wire form (provider-wire.md §1), read and written without I/O: a refusal's kind
(its `error` code, else its words), a search body (one price band of one GPU name), an offer
row, an instance row. `providers/vast.py` (the adapter) sends the requests."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

import httpx

from gpurent.families import interconnect_for
from gpurent.money import dollars_to_cents_up
from gpurent.providers.base import ErrorKind, Instance, InstanceStatus, Offer, ProviderError, reachable_status
from gpurent.providers.http import (
    Malformed,
    get_int,
    get_num,
    get_str,
    req_int,
    req_num,
    req_str,
    status_kind,
    unrecognised_refusal,
)
from gpurent.providers.vast_names import region_from_vast, vast_family

log = logging.getLogger("gpurent.providers")

CODE = "vast"
GPU_COUNTS = frozenset({1, 2, 4, 8})

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
MESSAGE_PATTERNS: tuple[tuple[re.Pattern[str], ErrorKind], ...] = (
    (re.compile(r"not available|no longer available|already rented|no such ask|is rented|out of stock", re.I),
     "capacity"),
    (re.compile(r"credit|balance|insufficient funds|payment|spend limit", re.I), "quota"),
    (re.compile(r"api key|unauthori[sz]ed|not authori[sz]ed|authenticat|forbidden|permission", re.I), "auth"),
    (re.compile(r"invalid|is required|must be|malformed", re.I), "invalid"),
    (re.compile(r"internal error|try again|timed? ?out|unavailable", re.I), "transient"),
)

# Without the no_such_instance code a 404 proves nothing about the instance.
UNPROVEN_404: dict[int, ErrorKind] = {404: "transient", 410: "transient"}

PROVISIONING = frozenset({"created", "loading", "rebooting", "scheduling"})
STUCK_STATES = frozenset({"created", "loading"})
# A start that failed for good while vast still says created/loading: dstack reads
# ": OCI runtime create failed:" in status_msg as failed; vast's own machine tester any
# "Error" in it.
START_FAILED = re.compile(r"OCI runtime create failed|Error")
STOPPED = frozenset({"stopped", "frozen"})
FAILED = frozenset({"exited", "offline", "unknown"})


def not_search_quota(response: httpx.Response) -> bool:
    """A refused search may be retried unless vast said its search quota is spent."""
    try:
        body = response.json()
    except ValueError:
        return True
    return not (isinstance(body, dict) and body.get("error") == "search_quota_exceeded")


def refusal(what: str, response: httpx.Response, body: Any = None,
            fallback: dict[int, ErrorKind] | None = None) -> ProviderError:
    """The ProviderError of a refusal: by vast's `error` code, else by its words (`msg`), else by
    `fallback` (a status whose meaning the call knows), else by the HTTP status."""
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
        kind = next((k for pattern, k in MESSAGE_PATTERNS if pattern.search(text)), None)
    status = response.status_code
    if kind is None and fallback and status in fallback:
        kind = fallback[status]
    if kind is None:
        if code or text:
            return unrecognised_refusal(CODE, what, detail)
        kind = "transient" if status < 300 else status_kind(status)
    return ProviderError(CODE, kind, f"{what} failed: {detail}")


# --- offers -----------------------------------------------------------------------------


def search_body(gpu_name: str, *, disk_gb: int, limit: int, above: float | None = None,
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
        "limit": limit,
        "allocated_storage": float(disk_gb),
    }
    if above is not None:
        body["dph_total"] = {"gte": above}
    if seen_at_edge:
        body["id"] = {"notin": list(seen_at_edge)}
    return body


def offer_from(raw: dict[str, Any], unknown: set[str]) -> Offer | None:
    """Our Offer of one search row; None for a row we do not list (rented, an odd GPU count,
    a GPU none of our families is, no usable location). An unknown GPU's name goes in `unknown`."""
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
        provider=CODE, offer_key=str(ask_id), gpu_name=gpu_name, family=fam.id, model=fam.model,
        vram_gb=fam.vram_gb, gpu_count=count, price_cents_per_hour=cents, region=region.label,
        region_code=region.code, interconnect=interconnect_for(fam, count),
    )


# --- instances --------------------------------------------------------------------------


def instance_from(row: dict[str, Any]) -> Instance:
    """Our Instance of one vast instance row (its `actual_status`, `status_msg`, SSH endpoint, price)."""
    iid = str(req_int(row, "id"))
    label = get_str(row, "label", optional=True) or None
    actual = row.get("actual_status")
    if actual is not None and not isinstance(actual, str):
        raise Malformed("'actual_status' is not a string")
    host, port = ssh_endpoint(row)
    status: InstanceStatus
    error: str | None = None
    msg = get_str(row, "status_msg", optional=True) or ""
    if (actual is None or actual in STUCK_STATES) and START_FAILED.search(msg):
        status = "failed"  # it will never start: vast leaves it in `created`/`loading` for ever
        error = msg.strip()[:300]
    elif actual is None or actual in PROVISIONING:
        status = "provisioning"
    elif actual == "running":
        status = reachable_status(True, host, port)
    elif actual in STOPPED:
        status = "stopped"
    elif actual in FAILED:
        status = "failed"
        error = f"vast reports the instance {actual}" + (f": {msg.strip()[:300]}" if msg.strip() else "")
    else:
        log.warning("vast: instance %s has an unknown actual_status %r", iid, actual)
        status = "provisioning"
    if status != "running":  # a host is given out only once it is reachable
        host, port = None, None
    return Instance(iid, label, status, host, port, error, billed_cents(row))


def billed_cents(row: dict[str, Any]) -> int | None:
    """The instance's ``dph_total`` (GPU + the storage of its disk) in cents, rounded up."""
    raw = row.get("dph_total")
    if raw is None or isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    try:
        return dollars_to_cents_up(raw)
    except ValueError:
        return None


def ssh_endpoint(row: dict[str, Any]) -> tuple[str | None, int | None]:
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


def id_ranges(expected: Iterable[str], per_range: int) -> list[tuple[int | None, int | None]]:
    """Ranges of instance ids [lo, hi) that cover every id (None: unbounded), cut so that each
    holds about `per_range` of the `expected` ids (ids that are not numbers are left out)."""
    ids = sorted({int(i) for i in expected if i.isascii() and i.isdigit()})
    cuts = [ids[k] for k in range(per_range, len(ids), per_range)]
    bounds: list[int | None] = [None, *cuts, None]
    return [(bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1)]


def id_filter(lo: int | None, hi: int | None) -> dict[str, Any]:
    """The list's ``select_filters`` for ids in [lo, hi) (``{}``: every instance)."""
    bound: dict[str, int] = {}
    if lo is not None:
        bound["gte"] = lo
    if hi is not None:
        bound["lt"] = hi
    return {"id": bound} if bound else {}


def label_filter(label: str) -> dict[str, Any]:
    """The list's ``select_filters`` for the instances under one label (a rental id), in the
    form vast.ai's own client sends for ``show instances-v1 --label``."""
    return {"label": {"in": [label]}}
