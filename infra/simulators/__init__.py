"""Provider simulators: vast.ai, RunPod and Lambda Cloud, each on its own loopback port.

    from infra.simulators import start_simulators
    sims = start_simulators(now=clock.now, boot_seconds=20.0)
    adapters = build_adapters(sims.settings())     # gpurent.providers.registry
    ...
    sims.vast.set_knobs(allocate="capacity")       # or POST {base}/_sim/knobs
    sims.shutdown()

From a shell (system clock, until Ctrl-C; prints the settings as JSON):

    PYTHONPATH=layers/gpurent python -c "from infra.simulators import main; main()"
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from infra.simulators.common import Clock, Knobs, SimulatorBase
from infra.simulators.lambdacloud import LambdaSimulator
from infra.simulators.runpod import RunPodSimulator
from infra.simulators.vast import VastSimulator

DEFAULT_API_KEYS: dict[str, str] = {"vast": "sim-vast-key", "runpod": "sim-runpod-key", "lambda": "sim-lambda-key"}
LAMBDA_SSH_KEY_NAME = "gpurent-platform"

__all__ = [
    "DEFAULT_API_KEYS",
    "LAMBDA_SSH_KEY_NAME",
    "Knobs",
    "LambdaSimulator",
    "RunPodSimulator",
    "SimulatorBase",
    "Simulators",
    "VastSimulator",
    "main",
    "start_simulators",
]


@dataclass
class Simulators:
    vast: VastSimulator
    runpod: RunPodSimulator
    lambdacloud: LambdaSimulator

    def all(self) -> tuple[SimulatorBase, ...]:
        return (self.vast, self.runpod, self.lambdacloud)

    def settings(self) -> dict[str, str]:
        """What ``gpurent.providers.registry.build_adapters`` needs to talk to these."""
        return {
            "VAST_BASE_URL": self.vast.base_url,
            "VAST_API_KEY": self.vast.api_key,
            "RUNPOD_BASE_URL": self.runpod.base_url,
            "RUNPOD_API_KEY": self.runpod.api_key,
            "LAMBDA_BASE_URL": self.lambdacloud.base_url,
            "LAMBDA_API_KEY": self.lambdacloud.api_key,
            "LAMBDA_SSH_KEY_NAME": LAMBDA_SSH_KEY_NAME,
        }

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
    started: list[SimulatorBase] = []
    try:
        vast = VastSimulator(now=now, boot_seconds=boot_seconds, api_key=keys["vast"], seed=seed)
        started.append(vast)
        runpod = RunPodSimulator(now=now, boot_seconds=boot_seconds, api_key=keys["runpod"], seed=seed)
        started.append(runpod)
        lam = LambdaSimulator(now=now, boot_seconds=boot_seconds, api_key=keys["lambda"], seed=seed,
                              ssh_key_names=(LAMBDA_SSH_KEY_NAME,))
    except BaseException:
        for sim in started:
            sim.shutdown()
        raise
    return Simulators(vast, runpod, lam)


def main() -> None:
    sims = start_simulators(time.time)
    print(json.dumps(sims.settings(), indent=2), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sims.shutdown()
