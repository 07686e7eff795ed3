"""A fake of `providers.base.ProviderAdapter`: instances in a dict, every call recorded."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gpurent.providers.base import AllocateRequest, Instance, InstanceStatus, Offer, ProviderError, labelled


class FakeProvider:
    def __init__(self, code: str = "fake") -> None:
        self.code = code
        self.instances: dict[str, Instance] = {}
        self.calls: list[tuple[str, str]] = []
        self.refuse: ProviderError | None = None  # the next allocate raises it
        self._ids = itertools.count(1)

    async def list_offers(self) -> list[Offer]:
        return []

    async def allocate(self, req: AllocateRequest) -> str:
        self.calls.append(("allocate", req.rental_id))
        if self.refuse is not None:
            refused, self.refuse = self.refuse, None
            raise refused
        iid = f"i-{next(self._ids)}"
        self.instances[iid] = Instance(iid, req.rental_id, "provisioning", None, None)
        return iid

    def set_status(self, instance_id: str, status: InstanceStatus) -> None:
        inst = self.instances[instance_id]
        up = status == "running"
        self.instances[instance_id] = Instance(inst.instance_id, inst.label, status,
                                               "10.0.0.1" if up else None, 22 if up else None)

    async def get_instance(self, instance_id: str) -> Instance | None:
        self.calls.append(("get", instance_id))
        return self.instances.get(instance_id)

    async def terminate(self, instance_id: str) -> None:
        self.calls.append(("terminate", instance_id))
        if instance_id in self.instances:
            self.set_status(instance_id, "terminated")

    async def list_instances(self, expected: Sequence[str] = ()) -> list[Instance]:
        self.calls.append(("list", ""))
        return [i for i in self.instances.values() if i.status != "terminated"]

    async def find_by_label(self, label: str) -> Instance | None:
        self.calls.append(("find", label))
        return labelled(await self.list_instances(), label)


if TYPE_CHECKING:
    from gpurent.providers.base import ProviderAdapter

    _port: ProviderAdapter = FakeProvider()
