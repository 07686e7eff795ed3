"""The one small interface every provider adapter implements.

Errors: every failure an adapter raises is a ``ProviderError`` whose ``kind`` says what
the caller may do next:

=============  ==========================================================================
kind           meaning / what the caller does
=============  ==========================================================================
capacity       the offer is gone or out of stock: try the next listing
quota          our provider account may not allocate more (limit, credit): next listing
auth           our API key was refused: page someone, try another provider
invalid        the request itself was wrong (image, parameters): do not retry as is
transient      timeout, 5xx, rate limit after retries, malformed answer: retry later;
               after an allocate it may mean the instance exists — reconcile by label
not_found      the object named does not exist
=============  ==========================================================================

Instance states: an instance is ``running`` only when it is reachable — the provider
says it runs **and** a host and an SSH port are known. Otherwise it is still
``provisioning``.

==========  =========================================  ===================================
provider    provider state                             InstanceStatus
==========  =========================================  ===================================
vast        actual_status null, created, loading,      provisioning (failed when its status_msg
            rebooting                                  says "OCI runtime create failed" or
                                                       "Error", as dstack and vast's own
                                                       machine tester read it)
vast        running (+ ssh host/port known)            running (else provisioning)
vast        stopped, frozen                            stopped
vast        exited, offline, unknown (no heartbeat)    failed
vast        instance gone (``instances: null``/404)    ``None``
runpod      desiredStatus RUNNING, runtime null or     provisioning
            no public tcp 22 port yet
runpod      RUNNING + public tcp 22 in runtime.ports   running
runpod      EXITED                                     failed (gpurent never stops pods, so
                                                       an exited pod died or was stopped
                                                       by RunPod)
runpod      TERMINATED                                 terminated
runpod      any other desiredStatus                    provisioning (logged: not documented)
runpod      ``pod: null``                              ``None``
lambda      booting                                    provisioning
lambda      active (+ ip known)                        running (else provisioning)
lambda      unhealthy                                  failed (may recover: callers give grace)
lambda      preempted                                  terminated, ``ending``
lambda      terminating                                stopped, ``ending`` (billing until
                                                       terminated)
lambda      terminated                                 terminated
lambda      object-does-not-exist / 404                ``None``
==========  =========================================  ===================================

vast ``unknown``/``offline`` are mapped to ``failed`` because the machine cannot be
reached; a short heartbeat loss gets a grace period from the caller (the rentals' health
check), except for instances marked ``ending``. Any status an adapter does not know is
logged and reported ``provisioning``: never running, and bounded by the provider's
provisioning deadline (`registry.Provider.provision_deadline_seconds`).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

ErrorKind = Literal["capacity", "quota", "auth", "invalid", "transient", "not_found"]
InstanceStatus = Literal["provisioning", "running", "stopped", "terminated", "failed"]

# Our rental ids are sent to the providers as the instance label/name; only instances
# whose label starts with this are ours.
RENTAL_LABEL_PREFIX = "rent_"


class ProviderError(Exception):
    def __init__(self, provider: str, kind: ErrorKind, message: str) -> None:
        self.provider = provider
        self.kind: ErrorKind = kind
        self.message = message
        super().__init__(f"{provider}: {message}")

    def __str__(self) -> str:
        return f"{self.provider}: {self.message}"

    def __repr__(self) -> str:
        return f"ProviderError({self.provider!r}, {self.kind!r}, {self.message!r})"


@dataclass(frozen=True)
class Offer:
    provider: str  # "vast" | "runpod" | "lambda"
    # Stable upstream identity: vast ask id; runpod "<gpuTypeId>|<SECURE|COMMUNITY>|
    # <dataCenter or country>|<count>"; lambda "<instance type>|<region>".
    offer_key: str
    gpu_name: str  # the provider's raw GPU name
    family: str
    model: str
    vram_gb: int
    gpu_count: int
    # Our cost for the whole offer (all GPUs), integer cents per hour rounded UP, storage
    # included where the provider bills it with the pod; no margin.
    price_cents_per_hour: int
    region: str
    region_code: str
    interconnect: str | None


@dataclass(frozen=True)
class AllocateRequest:
    rental_id: str  # our id ("rent_01J…"), sent as the instance label/name
    offer: Offer
    image: str
    start_command: str | None
    ssh_public_keys: tuple[str, ...]
    disk_gb: int = 50


@dataclass(frozen=True)
class Instance:
    instance_id: str
    label: str | None
    status: InstanceStatus
    host: str | None
    ssh_port: int | None
    error: str | None = None
    # What the provider bills for this instance, integer cents per hour rounded up, on the
    # same footing as `Offer.price_cents_per_hour` (storage included where the offer's
    # price includes it); None when the provider's answer does not say.
    cost_cents_per_hour: int | None = None
    # The provider has ended (or is ending) this instance for good on its own (Lambda
    # `preempted`, `terminating`): no grace period, it will not come back.
    ending: bool = False


class ProviderAdapter(Protocol):
    code: str

    async def list_offers(self) -> list[Offer]: ...

    async def allocate(self, req: AllocateRequest) -> str:
        """Create the instance; return the provider's instance id."""
        ...

    async def get_instance(self, instance_id: str) -> Instance | None:
        """None when the provider does not know the instance (it is gone)."""
        ...

    async def terminate(self, instance_id: str) -> None:
        """Idempotent: an unknown or already terminated instance is success."""
        ...

    async def list_instances(self, expected: Sequence[str] = ()) -> list[Instance]:
        """Only ours: instances whose label starts with ``rent_``. `expected`: the instance ids
        the caller expects among them, a hint an adapter may use to split a long list (never a
        filter: every instance of ours is listed)."""
        ...

    async def find_by_label(self, label: str) -> Instance | None:
        """The instance of ours under this label (a rental id), if any: how a launch whose create
        may have taken effect (its answer lost) finds its machine. An adapter whose provider
        filters its list by label asks for that label only; one whose list is a single call
        looks through it (`labelled`)."""
        ...


def labelled(found: Iterable[Instance], label: str) -> Instance | None:
    """The first of `found` under `label` (None: none is)."""
    return next((inst for inst in found if inst.label == label), None)


def is_ours(label: str | None) -> bool:
    return bool(label) and str(label).startswith(RENTAL_LABEL_PREFIX)


def reachable_status(up: bool, host: str | None, port: int | None) -> InstanceStatus:
    """``running`` only when the provider says up and host and port are both known."""
    return "running" if up and host and port else "provisioning"


def _check_keys(provider: str, keys: tuple[str, ...]) -> list[str]:
    out = []
    for k in keys:
        k = k.strip()
        if not k:
            continue
        if "\n" in k or "\r" in k:
            raise ProviderError(provider, "invalid", "an SSH public key spans more than one line")
        out.append(k)
    return out


def bootstrap_script(provider: str, keys: tuple[str, ...], start_command: str | None,
                     user_dirs: tuple[str, ...] = ("/root",)) -> str:
    """A POSIX shell script that installs every user key and runs the start command.

    Used as vast's ``onstart`` and Lambda's ``user_data`` (cloud-init runs a user_data
    that starts with ``#!`` as a script). Keys are appended, never replace what the
    provider put there; the start command runs in the background so the script returns.
    """
    lines = ["#!/bin/sh", "umask 077"]
    good = _check_keys(provider, keys)
    for home in user_dirs:
        q = shlex.quote(home)
        lines.append(f"if [ -d {q} ]; then mkdir -p {q}/.ssh")
        for k in good:
            lines.append(f"  grep -qxF {shlex.quote(k)} {q}/.ssh/authorized_keys 2>/dev/null"
                         f" || echo {shlex.quote(k)} >> {q}/.ssh/authorized_keys")
        lines.append(f"  chmod 700 {q}/.ssh; chmod 600 {q}/.ssh/authorized_keys; fi")
        if home != "/root":
            owner = shlex.quote(home.rsplit("/", 1)[-1])
            lines.append(f"[ -d {q}/.ssh ] && chown -R {owner}:{owner} {q}/.ssh 2>/dev/null || true")
    lines.append("umask 022")  # the start command gets the usual umask, not ours
    if start_command:
        lines.append(f"nohup sh -c {shlex.quote(start_command)} > /var/log/gpurent-start.log 2>&1 &")
    return "\n".join(lines) + "\n"
