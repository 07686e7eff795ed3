"""A made-up fourth provider, written the way docs/architecture.md says to add one:
this module (its adapter, settings model and SPEC) plus one line in the registry."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from gpurent.providers.base import AllocateRequest, Instance, Offer
from gpurent.providers.spec import BuildContext, ProviderConfig, ProviderSpec


class AcmeConfig(ProviderConfig):
    project: str = Field(min_length=1)  # ACME_PROJECT


class AcmeAdapter:
    code = "acme"

    def __init__(self, config: AcmeConfig, ctx: BuildContext) -> None:
        self.config = config
        self.ctx = ctx

    async def list_offers(self) -> list[Offer]:
        return []

    async def allocate(self, req: AllocateRequest) -> str:
        return f"acme-{req.rental_id}"

    async def get_instance(self, instance_id: str) -> Instance | None:
        return None

    async def terminate(self, instance_id: str) -> None:
        return None

    async def list_instances(self, expected: Sequence[str] = ()) -> list[Instance]:
        return []

    async def find_by_label(self, label: str) -> Instance | None:
        return None


SPEC = ProviderSpec("acme", AcmeConfig, AcmeAdapter)
