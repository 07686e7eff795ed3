"""Lambda Cloud's names for our families and regions (pure, no I/O)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpurent.families import Family, family, norm, vram_agrees
from gpurent.regions import Region, region_for_country

# gpuhunt's pattern (provider-wire §4.3), widened to any count and to capture the form
# factor after "GB": "8x A100 (80 GB SXM4)" → (8, "A100", 80, "SXM4").
LAMBDA_DESCRIPTION_RE = re.compile(r"^(\d+)x (?:Tesla )?(.+?) \((\d+) GB(?:\s+([^)]*?))?\s*\)")


@dataclass(frozen=True)
class LambdaGpu:
    count: int
    model: str
    vram_gb: int
    form: str | None  # "SXM5", "PCIe", … or None when the description has none


def parse_lambda_description(description: str) -> LambdaGpu | None:
    m = LAMBDA_DESCRIPTION_RE.match(description.strip())
    if m is None:
        return None
    count, model, vram, form = m.groups()
    return LambdaGpu(int(count), model.strip(), int(vram), form.strip() if form else None)


# (model, form) → family; a form of None means the description gives none.
_LAMBDA_TABLE: dict[tuple[str, str | None], str] = {
    ("rtx 4090", None): "rtx-4090",
    ("rtx 4090", "pcie"): "rtx-4090",
    ("rtx 5090", None): "rtx-5090",
    ("rtx 5090", "pcie"): "rtx-5090",
    ("a100", "sxm4"): "a100-80gb",
    ("h100", "sxm5"): "h100-80gb",
    ("b200", None): "b200",
    ("b200", "sxm6"): "b200",
    ("b300", None): "b300",
    ("b300", "sxm6"): "b300",
}


def lambda_family(gpu: LambdaGpu) -> Family | None:
    fid = _LAMBDA_TABLE.get((norm(gpu.model), norm(gpu.form) if gpu.form else None))
    if fid is None:
        return None
    fam = family(fid)
    return fam if vram_agrees(fam, gpu.vram_gb) else None


# Lambda Cloud region names → (country, US state). Unknown names are None, not guessed.
_LAMBDA_REGIONS: dict[str, tuple[str, str | None]] = {
    "us-east-1": ("US", "VA"),
    "us-east-2": ("US", "DC"),
    "us-east-3": ("US", "VA"),
    "us-west-1": ("US", "CA"),
    "us-west-2": ("US", "AZ"),
    "us-west-3": ("US", "UT"),
    "us-south-1": ("US", "TX"),
    "us-south-2": ("US", "TX"),
    "us-south-3": ("US", "TX"),
    "us-midwest-1": ("US", "IL"),
    "europe-central-1": ("DE", None),
    "asia-northeast-1": ("JP", None),
    "asia-northeast-2": ("JP", None),
    "asia-south-1": ("IN", None),
    "australia-east-1": ("AU", None),
    "me-west-1": ("IL", None),
}


def region_from_lambda(region_name: str) -> Region | None:
    known = _LAMBDA_REGIONS.get(region_name.strip().lower())
    if known is None:
        return None
    return region_for_country(*known)
