"""How a provider's adapter is built: its own settings model, and the `SPEC` each adapter
module exports for `providers.registry`. Imported only where adapters are built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gpurent.providers.base import ProviderAdapter

if TYPE_CHECKING:
    import httpx

    from gpurent.providers.http import HttpPolicy, Sleep


class ProviderConfig(BaseModel):
    """One provider's own settings, validated: ``<CODE>_API_KEY`` (in a deployment read
    from the SSM parameter ``<CODE>_API_KEY_PARAM`` names), ``<CODE>_BASE_URL`` (default:
    the provider's own), and whatever field an adapter's subclass adds (``<CODE>_<FIELD>``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    api_key: SecretStr = Field(min_length=1)
    base_url: str | None = Field(default=None, min_length=1)


C = TypeVar("C", bound=ProviderConfig)


@dataclass(frozen=True)
class BuildContext:
    """What every adapter is built with besides its own settings (`config.ProviderSettings`)."""

    policy: HttpPolicy
    disk_gb: int
    sleep: Sleep
    client: httpx.AsyncClient | None


@dataclass(frozen=True)
class ProviderSpec(Generic[C]):
    """How the registry builds one provider's adapter: each adapter module has one (``SPEC``)."""

    code: str
    config: type[C]
    build: Callable[[C, BuildContext], ProviderAdapter]
