"""Upstream GPU providers: one adapter per provider behind one small interface."""

from gpurent.providers.base import (
    RENTAL_LABEL_PREFIX,
    AllocateRequest,
    ErrorKind,
    Instance,
    InstanceStatus,
    Offer,
    ProviderAdapter,
    ProviderError,
)

__all__ = [
    "RENTAL_LABEL_PREFIX",
    "AllocateRequest",
    "ErrorKind",
    "Instance",
    "InstanceStatus",
    "Offer",
    "ProviderAdapter",
    "ProviderError",
]
