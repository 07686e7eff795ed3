"""RunPod's names for our families and regions (pure, no I/O)."""

from __future__ import annotations

import re

from gpurent.families import Family, family, norm, vram_agrees
from gpurent.regions import Region, is_us_state, region_for_country

# RunPod GPU type ids (the long names) and their displayNames.
RUNPOD_IDS: dict[str, str] = {
    "NVIDIA GeForce RTX 4090": "rtx-4090",
    "NVIDIA GeForce RTX 5090": "rtx-5090",
    "NVIDIA A100-SXM4-80GB": "a100-80gb",
    "NVIDIA H100 80GB HBM3": "h100-80gb",
    "NVIDIA B200": "b200",
    "NVIDIA B300 SXM6 AC": "b300",
}
RUNPOD_DISPLAY_NAMES: dict[str, str] = {
    "RTX 4090": "rtx-4090",
    "RTX 5090": "rtx-5090",
    "A100 SXM": "a100-80gb",
    "H100 SXM": "h100-80gb",
    "B200": "b200",
    "B300": "b300",
}
_RUNPOD_ID_BY_NORM = {norm(k): v for k, v in RUNPOD_IDS.items()}
_RUNPOD_DISPLAY_BY_NORM = {norm(k): v for k, v in RUNPOD_DISPLAY_NAMES.items()}


def runpod_family(gpu_type_id: str, display_name: str | None = None,
                  memory_gb: float | None = None) -> Family | None:
    """RunPod ``gpuTypes.id`` (or, failing that, its ``displayName``) → family, or None."""
    fid = _RUNPOD_ID_BY_NORM.get(norm(gpu_type_id))
    if fid is None and display_name:
        fid = _RUNPOD_DISPLAY_BY_NORM.get(norm(display_name))
    if fid is None:
        return None
    fam = family(fid)
    if memory_gb is not None and not vram_agrees(fam, memory_gb):
        return None
    return fam


_RUNPOD_DC = re.compile(r"^(US|CA|EU|EUR|AP|OC|SA|AF|ME)-([A-Z]{2,3})-\d+$")


def region_from_runpod(data_center_id: str) -> Region | None:
    """RunPod ``dataCenterId`` ("US-OR-1", "EU-RO-1", "EUR-IS-1", "AP-JP-1") → Region."""
    m = _RUNPOD_DC.match(data_center_id.strip().upper())
    if m is None:
        return None
    prefix, middle = m.groups()
    if prefix == "US":
        return region_for_country("US", middle if is_us_state(middle) else None)
    if prefix == "CA":  # "CA-MTL-1": the middle part is a city
        return region_for_country("CA")
    return region_for_country(middle) if len(middle) == 2 else None
