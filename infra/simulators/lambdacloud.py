"""Lambda Cloud simulator: REST under ``/api/v1`` (provider-wire.md §3).

Fidelity points kept (§5): integer ``price_cents_per_hour`` and specs; every instance
carries ``file_system_names`` (even empty) and every type ``regions_with_capacity_available``;
statuses only from ``booting | active | unhealthy | terminated`` (what the OpenAPI client
accepts); errors ``{"error": {"code", "message", "suggestion"}}``; ``/images`` is served
so gpuhunt finds regions. Auth: Bearer, or Basic with the key as the user name.
"""

from __future__ import annotations

import base64
import random
import re
from typing import Any

from infra.simulators.common import Clock, Reply, Request, SimInstance, SimulatorBase

PREFIX = "/api/v1"

REGIONS: dict[str, str] = {
    "us-east-1": "Virginia, USA",
    "us-west-1": "California, USA",
    "us-south-1": "Texas, USA",
    "us-midwest-1": "Illinois, USA",
    "europe-central-1": "Germany",
    "asia-northeast-1": "Tokyo, Japan",
    "asia-south-1": "India",
}
# (name, description, cents/h, vcpus, memory GiB, storage GiB, ours?)
INSTANCE_TYPES: tuple[tuple[str, str, int, int, int, int, bool], ...] = (
    ("gpu_1x_rtx4090", "1x RTX 4090 (24 GB PCIe)", 59, 16, 64, 512, True),
    ("gpu_2x_rtx4090", "2x RTX 4090 (24 GB PCIe)", 118, 32, 128, 1024, True),
    ("gpu_1x_rtx5090", "1x RTX 5090 (32 GB PCIe)", 89, 16, 64, 512, True),
    ("gpu_8x_a100_80gb_sxm4", "8x A100 (80 GB SXM4)", 1432, 240, 1800, 19660, True),
    ("gpu_1x_a100_sxm4_80gb", "1x A100 (80 GB SXM4)", 179, 30, 225, 2750, True),
    ("gpu_1x_h100_sxm5", "1x H100 (80 GB SXM5)", 329, 26, 225, 2816, True),
    ("gpu_2x_h100_sxm5", "2x H100 (80 GB SXM5)", 638, 52, 450, 5632, True),
    ("gpu_8x_h100_sxm5", "8x H100 (80 GB SXM5)", 2392, 208, 1800, 22528, True),
    ("gpu_1x_b200_sxm6", "1x B200 (180 GB SXM6)", 499, 26, 225, 2816, True),
    ("gpu_8x_b200_sxm6", "8x B200 (180 GB SXM6)", 3992, 208, 2900, 22528, True),
    ("gpu_8x_b300_sxm6", "8x B300 (288 GB SXM6)", 4792, 240, 3600, 30000, True),
    # Not ours: the adapter leaves these out.
    ("gpu_1x_a10", "1x A10 (24 GB PCIe)", 75, 30, 200, 1400, False),
    ("gpu_1x_a100_sxm4", "1x A100 (40 GB SXM4)", 129, 30, 200, 512, False),
    ("gpu_1x_h100_pcie", "1x H100 (80 GB PCIe)", 249, 26, 200, 1024, False),
    ("gpu_1x_gh200", "1x GH200 (96 GB)", 149, 64, 432, 4096, False),
    # Appended last so the capacity seeded for the types above stays what it was.
    ("gpu_4x_h100_sxm5", "4x H100 (80 GB SXM5)", 1276, 104, 900, 11264, True),
)

_INSTANCE = re.compile(rf"^{PREFIX}/instances/([^/]+)$")


def _error(status: int, code: str, message: str, suggestion: str | None = None) -> Reply:
    err: dict[str, Any] = {"code": code, "message": message}
    if suggestion:
        err["suggestion"] = suggestion
    return Reply(status, {"error": err})


class LambdaSimulator(SimulatorBase):
    code = "lambda"
    path_prefix = PREFIX

    def __init__(self, *, now: Clock, boot_seconds: float = 20.0, api_key: str, seed: int = 7,
                 ssh_key_names: tuple[str, ...] = ("gpurent-platform",)) -> None:
        self.ssh_key_names = ssh_key_names
        self.capacity: dict[str, list[str]] = {}
        self._rng = random.Random(0)
        super().__init__(now=now, boot_seconds=boot_seconds, api_key=api_key, seed=seed)

    def settings(self) -> dict[str, str]:
        return {**super().settings(), "LAMBDA_SSH_KEY_NAME": self.ssh_key_names[0]}

    def seed(self) -> None:
        rng = random.Random(f"lambda-{self.seed_value}")
        self._rng = random.Random(f"lambda-ids-{self.seed_value}")
        self.capacity = {}
        for name, *_ in INSTANCE_TYPES:
            self.capacity[name] = sorted(rng.sample(sorted(REGIONS), rng.randint(1, 4)))
        self.capacity["gpu_1x_h100_sxm5"] = sorted({*self.capacity["gpu_1x_h100_sxm5"], "us-east-1"})

    def _authed(self, req: Request) -> bool:
        if self.bearer_ok(req):
            return True
        auth = req.headers.get("authorization") or ""
        if auth.startswith("Basic "):
            try:
                user = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
            except ValueError:
                return False
            return user == self.api_key
        return False

    def _type(self, name: str) -> dict[str, Any] | None:
        for n, desc, cents, vcpus, mem, disk, _ours in INSTANCE_TYPES:
            if n == name:
                gpus = int(desc.split("x", 1)[0])
                return {"name": n, "description": desc, "gpu_description": desc.split(" (", 1)[0][3:],
                        "price_cents_per_hour": cents,
                        "specs": {"vcpus": vcpus, "memory_gib": mem, "storage_gib": disk, "gpus": gpus}}
        return None

    # --- routes --------------------------------------------------------------------

    def route(self, req: Request) -> Reply:
        if not req.path.startswith(PREFIX):
            return _error(404, "global/object-does-not-exist", "Not found.")
        if not self._authed(req):
            return _error(401, "global/invalid-api-key", "API key was invalid, expired, or deleted.",
                          "Check your API key or create a new one, then try again.")
        m, p = req.method, req.path[len(PREFIX):]
        if p == "/instance-types" and m == "GET":
            return self._instance_types()
        if p == "/images" and m == "GET":
            return Reply(200, {"data": [
                {"id": f"img-{r}", "name": "lambda-stack-24-04", "family": "lambda-stack",
                 "region": {"name": r, "description": d}} for r, d in REGIONS.items()]})
        if p == "/ssh-keys" and m == "GET":
            return Reply(200, {"data": [{"id": f"key{i}", "name": n, "public_key": "ssh-ed25519 AAAA sim"}
                                        for i, n in enumerate(self.ssh_key_names)]})
        if p == "/file-systems" and m == "GET":
            return Reply(200, {"data": []})
        if p == "/instance-operations/launch" and m == "POST":
            return self._launch(req.json())
        if p == "/instance-operations/terminate" and m == "POST":
            return self._terminate(req.json())
        if p == "/instances" and m == "GET":
            with self.lock:
                rows = [self._row(i) for i in self.instances.values() if i.terminated_at is None]
            return Reply(200, {"data": rows})
        if (i := _INSTANCE.match(req.path)) and m == "GET":
            with self.lock:
                inst = self.instances.get(i.group(1))
                if inst is None:
                    return _error(404, "global/object-does-not-exist", "Specified instance does not exist.")
                return Reply(200, {"data": self._row(inst)})
        return _error(404, "global/object-does-not-exist", f"No route {m} {req.path}.")

    def _instance_types(self) -> Reply:
        with self.lock:
            mode = self.knobs.list_offers
        if mode == "error":
            return _error(500, "global/unknown", "An unexpected error occurred.")
        if mode == "timeout":
            self.hang()
        data = {}
        for name, *_ in INSTANCE_TYPES:
            data[name] = {
                "instance_type": self._type(name),
                "regions_with_capacity_available": [
                    {"name": r, "description": REGIONS[r]} for r in self.capacity.get(name, [])
                ],
            }
        return Reply(200, {"data": data})

    def _launch(self, body: Any) -> Reply:
        with self.lock:
            mode = self.knobs.allocate
        if mode == "capacity":
            return self._no_capacity()
        if mode == "quota":
            return _error(400, "global/quota-exceeded", "Quota exceeded for this instance type.",
                          "Contact support to raise your quota.")
        if mode == "auth":
            return _error(403, "global/account-inactive", "Your account is inactive.",
                          "Contact support to reactivate your account.")
        if mode == "error":
            return _error(500, "global/unknown", "An unexpected error occurred.")
        if mode == "refuse":
            with self.lock:
                code, text = self.knobs.refusal_code, self.knobs.refusal_text
            return _error(400, code or "global/invalid-parameters", text)
        invalid = self._invalid_launch(body)
        if invalid is not None:
            return _error(400, "global/invalid-parameters", invalid)
        type_name, region = body["instance_type_name"], body["region_name"]
        with self.lock:
            if region not in self.capacity.get(type_name, []):
                return self._no_capacity()
            iid = f"{self._rng.getrandbits(128):032x}"
            self.new_instance(iid, body.get("name"), {
                "type": type_name, "region": region, "ssh_key_names": list(body["ssh_key_names"]),
                "file_system_names": list(body.get("file_system_names") or []), "user_data": body.get("user_data"),
            })
        if mode == "timeout":
            self.hang()
        return Reply(200, {"data": {"instance_ids": [iid]}})

    @staticmethod
    def _no_capacity() -> Reply:
        return _error(400, "instance-operations/launch/insufficient-capacity",
                      "Not enough capacity to fulfill launch request.",
                      "Choose an instance type with more availability, or try again later.")

    def _invalid_launch(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "The request body must be a JSON object."
        for key in ("region_name", "instance_type_name"):
            if not isinstance(body.get(key), str) or not body[key]:
                return f"{key} is required."
        if self._type(body["instance_type_name"]) is None:
            return "Unknown instance type."
        if body["region_name"] not in REGIONS:
            return "Unknown region."
        keys = body.get("ssh_key_names")
        if not isinstance(keys, list) or len(keys) != 1 or keys[0] not in self.ssh_key_names:
            return "Exactly one registered SSH key name is required."
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 64):
            return "name must be 1 to 64 characters."
        if body.get("quantity", 1) != 1:
            return "quantity must be 1."
        user_data = body.get("user_data")
        if user_data is not None and (not isinstance(user_data, str) or len(user_data) > 1_000_000):
            return "user_data must be a string of at most 1 MB."
        return None

    def _terminate(self, body: Any) -> Reply:
        ids = body.get("instance_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids:
            return _error(400, "global/invalid-parameters", "instance_ids is required.")
        with self.lock:
            if self.knobs.terminate == "error":
                return _error(500, "global/unknown", "An unexpected error occurred.")
            found = [self.instances.get(str(i)) for i in ids]
            if any(inst is None for inst in found):
                return _error(404, "global/object-does-not-exist", "Specified instance does not exist.")
            rows = []
            for inst in found:
                assert inst is not None
                self.terminate_instance(inst, forget=False)
                rows.append(self._row(inst))
        return Reply(200, {"data": {"terminated_instances": rows}})

    def _row(self, inst: SimInstance) -> dict[str, Any]:
        phase = inst.phase(self.now())
        status = {"provisioning": "booting", "running": "active", "crashed": "unhealthy",
                  "stopped": "unhealthy", "terminated": "terminated"}[phase]
        if inst.forced_status is not None and phase != "terminated":  # terminating, preempted, unhealthy, …
            status = inst.forced_status
        d = inst.details
        up = status == "active"
        return {
            "id": inst.id, "name": inst.label, "status": status,
            "ip": inst.host if up else None, "private_ip": "10.19.0.2" if up else None,
            "hostname": f"{inst.host.replace('.', '-')}.sim.lambda" if up else None,
            "ssh_key_names": d["ssh_key_names"], "file_system_names": d["file_system_names"],
            "region": {"name": d["region"], "description": REGIONS[d["region"]]},
            "instance_type": self._type(d["type"]), "jupyter_token": None, "jupyter_url": None,
            "is_reserved": False,
        }
