"""Provider simulators: vast.ai, RunPod and Lambda Cloud, each on its own loopback port.

    from infra.simulators import start_simulators
    sims = start_simulators(now=clock.now, boot_seconds=20.0)
    adapters = build_adapters(sims.settings())     # gpurent.providers.registry
    ...
    sims.vast.set_knobs(allocate="capacity")       # or POST {base}/_sim/knobs
    sims["vast"] is sims.vast                      # by provider code
    sims.shutdown()

From a shell (system clock, until Ctrl-C; prints the settings as JSON):

    PYTHONPATH=layers/gpurent python -c "from infra.simulators import main; main()"
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping

from infra.simulators.common import Clock, Knobs, SimulatorBase
from infra.simulators.lambdacloud import LambdaSimulator
from infra.simulators.runpod import RunPodSimulator
from infra.simulators.vast import VastSimulator

# One simulator per provider of `gpurent.providers.registry.PROVIDERS` (same order).
SIMULATORS: tuple[type[SimulatorBase], ...] = (VastSimulator, RunPodSimulator, LambdaSimulator)

DEFAULT_API_KEYS: dict[str, str] = {sim.code: f"sim-{sim.code}-key" for sim in SIMULATORS}
LAMBDA_SSH_KEY_NAME = "gpurent-platform"

__all__ = [
    "DEFAULT_API_KEYS",
    "LAMBDA_SSH_KEY_NAME",
    "SIMULATORS",
    "Knobs",
    "LambdaSimulator",
    "RunPodSimulator",
    "SimulatorBase",
    "Simulators",
    "VastSimulator",
    "main",
    "start_simulators",
]


class Simulators:
    """The running simulators, by provider code (`sims["vast"]`, or `sims.vast` for the first three)."""

    def __init__(self, sims: Mapping[str, SimulatorBase]) -> None:
        self.by_code: dict[str, SimulatorBase] = dict(sims)

    def __getitem__(self, code: str) -> SimulatorBase:
        return self.by_code[code]

    @property
    def vast(self) -> VastSimulator:
        sim = self.by_code["vast"]
        assert isinstance(sim, VastSimulator)
        return sim

    @property
    def runpod(self) -> RunPodSimulator:
        sim = self.by_code["runpod"]
        assert isinstance(sim, RunPodSimulator)
        return sim

    @property
    def lambdacloud(self) -> LambdaSimulator:
        sim = self.by_code["lambda"]
        assert isinstance(sim, LambdaSimulator)
        return sim

    def all(self) -> tuple[SimulatorBase, ...]:
        return tuple(self.by_code.values())

    def settings(self) -> dict[str, str]:
        """What ``gpurent.providers.registry.build_adapters`` needs to talk to these."""
        out: dict[str, str] = {}
        for sim in self.all():
            out.update(sim.settings())
        return out

    def reset(self) -> None:
        for sim in self.all():
            sim.reset()

    def shutdown(self) -> None:
        for sim in self.all():
            sim.shutdown()


def start_simulators(
    now: Clock,
    boot_seconds: float = 20.0,
    api_keys: Mapping[str, str] | None = None,
    *,
    seed: int = 7,
) -> Simulators:
    keys = {**DEFAULT_API_KEYS, **(api_keys or {})}
    started: dict[str, SimulatorBase] = {}
    try:
        for cls in SIMULATORS:
            started[cls.code] = cls(now=now, boot_seconds=boot_seconds, api_key=keys[cls.code], seed=seed)
    except BaseException:
        for sim in started.values():
            sim.shutdown()
        raise
    return Simulators(started)


def main() -> None:
    sims = start_simulators(time.time)
    print(json.dumps(sims.settings(), indent=2), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sims.shutdown()
