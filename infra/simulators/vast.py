"""vast.ai simulator: the routes the ``vastai`` SDK/CLI and gpuhunt call (provider-wire.md §1).

Fidelity points kept (§5): ``Content-Type`` exactly ``application/json``; filter values
accepted as strings or numbers; ``instances`` is one object on the single GET; every
instance row has ``start_date`` and ``extra_env`` (pairs); errors carry ``error`` and
``msg``; ``gpu_names/unique`` is served without auth; offers carry ``dph_base`` and
``dph_total`` (computed for the ``allocated_storage`` asked for) and ``storage_cost``.

An ask is one machine: once rented it leaves the search and renting it again answers
410 ``no_such_ask``; destroying the instance puts it back.

A search answers at most ``search_cap`` offers (knob, default 64: what a public
integration observed whatever ``limit`` asked), after its filters and order; the seeded
market has more RTX 4090 offers than that, as the real one does.
"""

from __future__ import annotations

import base64
import json
import random
import re
from typing import Any

from infra.simulators.common import Clock, Reply, Request, SimInstance, SimulatorBase

# (vast gpu_name, gpu_ram MiB, per-GPU $/h range, GPU counts offered)
GPUS: tuple[tuple[str, int, tuple[float, float], tuple[int, ...]], ...] = (
    ("RTX 4090", 24564, (0.28, 0.45), (1, 2, 4, 8)),
    ("RTX 5090", 32607, (0.42, 0.70), (1, 2, 4, 8)),
    ("A100 SXM4", 81920, (0.80, 1.25), (1, 2, 4, 8)),
    ("H100 SXM", 81559, (1.85, 2.60), (1, 2, 4, 8)),
    ("B200", 183359, (3.90, 5.20), (1, 2, 8)),
    ("B300", 275040, (5.10, 6.40), (1, 8)),
    # Not ours: left out by the adapter (unknown name, 40 GB A100, PCIe/NVL H100).
    ("RTX 3090", 24576, (0.13, 0.22), (1, 2)),
    ("A100 SXM4", 40960, (0.55, 0.80), (1, 8)),
    ("H100 PCIE", 81559, (1.60, 2.10), (1, 2)),
    ("H100 NVL", 95830, (2.00, 2.60), (1,)),
)
GEOLOCATIONS = (
    "Oregon, US", "Texas, US", "Virginia, US", "California, US", "Quebec, CA", "Germany, DE",
    "Netherlands, NL", "Romania, RO", "Sweden, SE", "Japan, JP", "Singapore, SG",
)
MANY_RTX_4090 = 90
GPU_NAMES_UNIQUE = sorted({g[0] for g in GPUS} | {"RTX A6000", "Tesla V100", "L40S", "RTX 3060"})

_ASK = re.compile(r"^/api/v0/asks/(\d+)/?$")
_INSTANCE = re.compile(r"^/api/v0/instances/(\d+)/?$")


LIST_PAGE = 25  # the v1 list's largest page (vast.ai's API reference: "Default 25, max 25")
# Columns of the contract record the v1 list filters on; computed ones (dph_total, num_gpus...) are 400.
FILTERABLE = {"id", "label", "actual_status", "intended_status", "cur_state", "next_state", "gpu_name",
              "verification", "machine_id", "host_id", "image_uuid", "start_date"}
_OPERATORS: dict[str, Any] = {
    "eq": lambda v, x: v == x, "neq": lambda v, x: v != x,
    "gt": lambda v, x: v is not None and v > x, "gte": lambda v, x: v is not None and v >= x,
    "lt": lambda v, x: v is not None and v < x, "lte": lambda v, x: v is not None and v <= x,
    "in": lambda v, x: v in x, "notin": lambda v, x: v not in x,
}


def _matches(row: dict[str, Any], filters: dict[str, Any]) -> bool:
    """Whether a list row passes ``select_filters`` (ValueError: a filter vast.ai refuses)."""
    for col, ops in filters.items():
        if col not in FILTERABLE:
            raise ValueError(f"column {col!r} is not filterable")
        if not isinstance(ops, dict):
            raise ValueError(f"filter on {col!r} is not an object of operators")
        for op, value in ops.items():
            if op not in _OPERATORS:
                raise ValueError(f"unknown operator {op!r}")
            if op in ("in", "notin") and not isinstance(value, list):
                raise ValueError(f"{op} takes a list")
            if not _OPERATORS[op](row.get(col), value):
                return False
    return True


def _fail(status: int, error: str, msg: str) -> Reply:
    return Reply(status, {"success": False, "error": error, "msg": msg})


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _same(actual: Any, wanted: Any) -> bool:
    if isinstance(actual, bool) or isinstance(wanted, bool):
        w = wanted if isinstance(wanted, bool) else str(wanted).lower() == "true"
        return bool(actual) == w
    an, wn = _number(actual), _number(wanted)
    if an is not None and wn is not None:
        return an == wn
    if isinstance(actual, str) and isinstance(wanted, str):
        return actual == wanted.replace("_", " ") or actual == wanted
    return bool(actual == wanted)


def _passes(actual: Any, op: str, wanted: Any) -> bool:
    if op == "eq":
        return _same(actual, wanted)
    if op == "neq":
        return not _same(actual, wanted)
    if op in ("in", "notin"):
        inside = isinstance(wanted, list) and any(_same(actual, w) for w in wanted)
        return inside if op == "in" else not inside
    a, w = _number(actual), _number(wanted)
    if a is None or w is None:
        return False
    return {"gt": a > w, "gte": a >= w, "lt": a < w, "lte": a <= w}.get(op, True)


class VastSimulator(SimulatorBase):
    code = "vast"
    path_prefix = ""

    def __init__(self, *, now: Clock, boot_seconds: float = 20.0, api_key: str, seed: int = 7) -> None:
        self.offers: dict[int, dict[str, Any]] = {}
        super().__init__(now=now, boot_seconds=boot_seconds, api_key=api_key, seed=seed)

    # --- seeding -------------------------------------------------------------------

    def seed(self) -> None:
        rng = random.Random(f"vast-{self.seed_value}")
        self.offers = {}
        ask = 21_000_000
        for gpu_name, gpu_ram, (lo, hi), counts in GPUS:
            for count in counts:
                for geo in rng.sample(GEOLOCATIONS, 3):
                    ask += rng.randint(1, 900)
                    per_gpu = round(rng.uniform(lo, hi), 4)
                    self.offers[ask] = self._offer(rng, ask, gpu_name, gpu_ram, count, per_gpu, geo)
        # Noise the adapter must leave out: a 3-GPU machine and one without a location.
        ask += 1
        self.offers[ask] = self._offer(rng, ask, "RTX 4090", 24564, 3, 0.33, "Texas, US")
        ask += 1
        self.offers[ask] = self._offer(rng, ask, "RTX 4090", 24564, 1, 0.29, None)
        # A deep market: more single RTX 4090s than one capped answer holds, some at one price.
        for i in range(MANY_RTX_4090):
            ask += rng.randint(1, 900)
            per_gpu = 0.40 if i % 10 == 0 else round(rng.uniform(0.33, 0.60), 4)
            self.offers[ask] = self._offer(rng, ask, "RTX 4090", 24564, 1, per_gpu, rng.choice(GEOLOCATIONS))

    @staticmethod
    def _offer(rng: random.Random, ask: int, gpu_name: str, gpu_ram: int, count: int, per_gpu: float,
               geo: str | None) -> dict[str, Any]:
        machine = rng.randint(10_000, 60_000)
        cores = 16 * count
        return {
            "id": ask, "ask_contract_id": ask, "bundle_id": ask + 7, "machine_id": machine,
            "host_id": rng.randint(1_000, 300_000), "num_gpus": count, "gpu_name": gpu_name,
            "gpu_ram": gpu_ram, "gpu_total_ram": gpu_ram * count, "gpu_arch": "nvidia",
            "dph_base": round(per_gpu * count, 4), "storage_cost": rng.choice((0.10, 0.15, 0.20)),
            "inet_up_cost": 0.003, "inet_down_cost": 0.003, "min_bid": round(per_gpu * count * 0.6, 4),
            "cpu_cores": cores * 2, "cpu_cores_effective": float(cores), "cpu_ram": 64_000 * count,
            "cpu_name": "AMD EPYC 7B13", "cpu_ghz": 3.5, "disk_space": float(rng.choice((500, 1000, 2000))),
            "disk_bw": 2500.0, "inet_up": round(rng.uniform(500, 5000), 1),
            "inet_down": round(rng.uniform(500, 5000), 1), "reliability": 0.995, "reliability2": 0.995,
            "cuda_max_good": 12.8, "driver_version": "570.124.06", "compute_cap": 890 if "RTX" in gpu_name else 900,
            "pcie_bw": 25.1, "dlperf": round(30.0 * count, 2), "score": round(100.0 / per_gpu, 2),
            "geolocation": geo, "hosting_type": 1 if count >= 8 else 0, "verification": "verified",
            "verified": True, "rentable": True, "rented": False, "external": False,
            "direct_port_count": 64, "duration": 2_592_000.0, "end_date": None,
        }

    # --- routes --------------------------------------------------------------------

    def route(self, req: Request) -> Reply:
        if req.path == "/api/v0/gpu_names/unique/" and req.method == "GET":
            return Reply(200, {"gpu_names": GPU_NAMES_UNIQUE})
        if req.path == "/api/v0/bundles/" and req.method == "POST" and not req.headers.get("authorization"):
            # The market is public: gpuhunt searches it without a key.
            try:
                return self._search(req.json() or {})
            except (ValueError, json.JSONDecodeError) as e:
                return _fail(400, "invalid_args", str(e))
        if not self.bearer_ok(req):
            return _fail(401, "auth_error", "Invalid user key")
        try:
            return self._route(req)
        except (ValueError, json.JSONDecodeError) as e:
            return _fail(400, "invalid_args", str(e))

    def _route(self, req: Request) -> Reply:
        m, p = req.method, req.path
        if p == "/api/v0/users/current" and m == "GET":
            return Reply(200, {"id": 1, "username": "sim", "email": "sim@example.test", "credit": 100.0,
                               "balance": 0.0, "host_agreement_accepted": False})
        if p == "/api/v0/bundles/" and m == "POST":
            return self._search(req.json() or {})
        if p == "/api/v0/search/asks/" and m == "PUT":
            body = req.json() or {}
            return self._search(body.get("q") or {})
        if (a := _ASK.match(p)) and m == "PUT":
            return self._create(int(a.group(1)), req.json() or {})
        if p == "/api/v1/instances/" and m == "GET":
            return self._list_v1(req)
        if p == "/api/v0/instances/" and m == "GET":
            with self.lock:
                rows = [self._row(i) for i in self.instances.values()]
            return Reply(200, {"instances": rows})
        if p == "/api/v0/instances/filters/" and m == "GET":
            return Reply(200, {"filters": []})
        if i := _INSTANCE.match(p):
            iid = i.group(1)
            if m == "GET":
                with self.lock:
                    inst = self.instances.get(iid)
                    return Reply(200, {"instances": self._row(inst) if inst else None})
            if m == "PUT":
                return self._update(iid, req.json() or {})
            if m == "DELETE":
                return self._destroy(iid)
        return _fail(404, "not_found", f"no route {m} {p}")

    def _search(self, q: dict[str, Any]) -> Reply:
        with self.lock:
            mode = self.knobs.list_offers
        if mode == "timeout":
            self.hang()
        elif mode == "error":
            return _fail(500, "server_error", "search backend unavailable")
        storage = _number(q.get("allocated_storage", 5.0)) or 0.0
        special = {"order", "type", "limit", "allocated_storage", "disable_bundling", "extra_ids"}
        with self.lock:
            rows = [o for o in self.offers.values() if not o["rented"]]
        out = []
        for offer in rows:
            row = dict(offer)
            row["dph_total"] = row["dph_base"] + row["storage_cost"] * storage / 720
            row["datacenter"] = row["hosting_type"] == 1
            if all(_passes(row.get(f), op, w) for f, cond in q.items() if f not in special and f in row
                   and isinstance(cond, dict) for op, w in cond.items()):
                out.append(row)
        for field_name, direction in reversed(q.get("order") or []):
            out.sort(key=lambda r: _number(r.get(field_name)) or 0.0, reverse=direction == "desc")
        limit = _number(q.get("limit"))
        if limit is not None:
            out = out[: int(limit)]
        with self.lock:
            cap = self.knobs.search_cap
        if cap is not None:
            out = out[:cap]
        return Reply(200, {"offers": out})

    def _create(self, ask: int, body: dict[str, Any]) -> Reply:
        with self.lock:
            mode = self.knobs.allocate
        if mode == "capacity":
            return _fail(410, "no_such_ask", f"Instance type by id {ask} is not available.")
        if mode == "quota":
            return _fail(402, "insufficient_credit", "Your account lacks credit; see the billing page.")
        if mode == "auth":
            return _fail(403, "auth_error", "This account may not rent instances.")
        if mode == "error":
            return _fail(500, "server_error", "Internal error, please retry.")
        if mode == "refuse":
            with self.lock:
                code, text = self.knobs.refusal_code, self.knobs.refusal_text
            return Reply(400, {"success": False, "msg": text, **({"error": code} if code else {})})
        image = body.get("image")
        if not isinstance(image, str) or not image:
            return _fail(400, "invalid_args", "image is required")
        disk = _number(body.get("disk", 10.0)) or 10.0
        label = body.get("label")
        with self.lock:
            offer = self.offers.get(ask)
            if offer is None or offer["rented"]:
                return _fail(410, "no_such_ask", f"Instance type by id {ask} is not available.")
            offer["rented"] = True
            contract = 7_835_600 + self.next_number()
            env = body.get("env") if isinstance(body.get("env"), dict) else {}
            self.new_instance(str(contract), label if isinstance(label, str) else None, {
                "ask": ask, "image": image, "disk": disk, "onstart": body.get("onstart"),
                "runtype": body.get("runtype"), "env": env,
                "dph_total": offer["dph_base"] + offer["storage_cost"] * disk / 720,
            })
        if mode == "timeout":  # the dangerous real case: created, but the answer never comes
            self.hang()
        return Reply(200, {"success": True, "new_contract": contract})

    def _list_v1(self, req: Request) -> Reply:
        """The v1 list as vast.ai documents it: at most 25 a page (a limit <= 0 means 5), a keyset
        token (base64 JSON of the last row's sort values; a token that is not one is 400),
        ``select_filters`` with the operators eq, neq, gt, gte, lt, lte, in, notin on stored
        columns (a computed one is 400), ``select_cols`` (unknown columns null), ordered by id."""
        try:
            filters = json.loads(req.arg("select_filters") or "{}")
            cols = json.loads(req.arg("select_cols") or '["*"]')
            raw_limit = int(req.arg("limit") or LIST_PAGE)
        except ValueError:
            return _fail(400, "invalid_args", "select_filters, select_cols and limit must be JSON / a number")
        if not isinstance(filters, dict) or not isinstance(cols, list):
            return _fail(400, "invalid_args", "select_filters is an object, select_cols an array")
        limit = 5 if raw_limit <= 0 else min(raw_limit, LIST_PAGE)
        after: int | None = None
        if req.arg("after_token"):
            try:
                after = int(json.loads(base64.b64decode(str(req.arg("after_token")), validate=True))["values"]["id"])
            except (ValueError, KeyError, TypeError):
                return _fail(400, "invalid_args", "invalid after_token")
        by_id = {k: v for k, v in filters.items() if k == "id"}  # decided from the id alone: no row built
        others = {k: v for k, v in filters.items() if k != "id"}
        try:
            with self.lock:
                rows: list[dict[str, Any]] = [
                    self._row(i) if others else {"id": int(i.id), "label": i.label, "instance": i}
                    for i in sorted(self.instances.values(), key=lambda i: int(i.id))
                    if _matches({"id": int(i.id)}, by_id)]
            matching = [r for r in rows if _matches(r, others)]
        except (ValueError, TypeError) as e:  # TypeError: a bound of another type than the column
            return _fail(400, "invalid_args", str(e))
        rest = [r for r in matching if after is None or r["id"] > after]
        with self.lock:
            page = [self._row(r["instance"]) if "instance" in r else r for r in rest[:limit]]
        labels: dict[str, int] = {}
        for r in matching:
            labels[r["label"] or ""] = labels.get(r["label"] or "", 0) + 1
        token = None
        if len(rest) > limit and page:
            token = base64.b64encode(json.dumps({"values": {"id": page[-1]["id"]}, "os_page": 0}).encode()).decode()
        if cols != ["*"]:
            page = [{str(c): r.get(str(c)) for c in cols} for r in page]
        return Reply(200, {"success": True, "instances_found": len(page), "instances": page, "next_token": token,
                           "total_instances": len(matching), "label_counts": labels})

    def _update(self, iid: str, body: dict[str, Any]) -> Reply:
        with self.lock:
            inst = self.instances.get(iid)
            if inst is None:
                return _fail(404, "no_such_instance", f"Instance {iid} not found.")
            if isinstance(body.get("label"), str):
                inst.label = body["label"]
            if body.get("state") == "stopped":
                inst.stopped = True
            elif body.get("state") == "running":
                inst.stopped = False
        return Reply(200, {"success": True})

    def _destroy(self, iid: str) -> Reply:
        with self.lock:
            if self.knobs.terminate == "error":
                return _fail(500, "server_error", "Internal error, please retry.")
            inst = self.instances.get(iid)
            if inst is None:
                return _fail(404, "no_such_instance", f"Instance {iid} not found.")
            self.terminate_instance(inst, forget=True)  # destroyed instances are gone from vast
        return Reply(200, {"success": True})

    def on_removed(self, inst: SimInstance) -> None:
        offer = self.offers.get(inst.details.get("ask", -1))
        if offer is not None:
            offer["rented"] = False

    # --- rows ----------------------------------------------------------------------

    def _row(self, inst: SimInstance) -> dict[str, Any]:
        now = self.now()
        phase = inst.phase(now)
        d = inst.details
        offer = self.offers.get(d["ask"], {})
        actual: str | None
        msg = ""
        if phase == "provisioning":
            actual = None if inst.booted_fraction(now) < 0.3 else "loading"
            msg = "Pulling image" if actual is None else "Starting container"
        elif phase == "running":
            actual = "running"
        elif phase == "crashed":
            actual, msg = "exited", "Error: container exited unexpectedly (code 137)"
        else:
            actual = "stopped"
        if inst.forced_status is not None:  # stuck, rebooting, unknown, … as a test asks
            actual, msg = inst.forced_status, inst.forced_message or ""
            phase = "running" if actual == "running" else "provisioning"
        up = phase == "running"
        env = d.get("env") or {}
        return {
            "id": int(inst.id), "actual_status": actual, "intended_status": "stopped" if inst.stopped else "running",
            "cur_state": "running" if actual == "running" else "stopped", "next_state": "running",
            "label": inst.label, "num_gpus": offer.get("num_gpus"), "gpu_name": offer.get("gpu_name"),
            "gpu_ram": offer.get("gpu_ram"), "gpu_util": 0.0 if up else None, "geolocation": offer.get("geolocation"),
            "machine_id": offer.get("machine_id"), "host_id": offer.get("host_id"),
            "dph_base": offer.get("dph_base"), "dph_total": d.get("dph_total"),
            "storage_cost": offer.get("storage_cost"), "disk_space": d.get("disk"), "image_uuid": d.get("image"),
            "onstart": d.get("onstart"), "start_date": inst.created_at,
            "extra_env": [[str(k), str(v)] for k, v in env.items()], "status_msg": msg,
            "ssh_host": f"ssh{int(inst.id) % 9 + 1}.vast.ai" if up else None,
            "ssh_port": inst.ssh_port + 10_000 if up else None, "ssh_idx": str(int(inst.id) % 9 + 1),
            "public_ipaddr": inst.host if up else None,
            "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(inst.ssh_port)}]} if up else {},
            "direct_port_start": inst.ssh_port if up else -1, "direct_port_end": inst.ssh_port + 63 if up else -1,
            "template_id": None, "template_name": None, "verification": "verified",
        }
