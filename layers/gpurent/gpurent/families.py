"""The six GPU families (pure, no I/O).

Families (decisions.md G27): one family id, one canonical model code, one VRAM size.
Each provider's own names for them (and for its regions) live with its adapter
(`gpurent/providers/<provider>_names.py`); regions are `gpurent.regions`.

Choices written down here because the provider names leave room for doubt:

- ``h100-80gb`` is the **H100 SXM 80 GB** only (model ``H100_SXM_80GB``). An H100 PCIe
  (80 GB, lower clocks and power, no NVLink switch) and an H100 NVL (94 GB) are other
  products; mapping them here would put a slower card behind a model code that says SXM.
  They are left out (the caller logs and drops them). The same rule holds for
  ``a100-80gb`` (model ``A100_SXM_80GB``): A100 PCIe is left out, and an A100 SXM4 with
  40 GB is not an ``a100-80gb`` whatever its name says.
- Every provider name is matched exactly (case and runs of spaces aside, `norm`)
  against its provider's table. Nothing is inferred from a substring: an unknown
  name is ``None``, never a guess.
- When a provider also reports the card's memory, it must agree with the family's VRAM
  (within 15 %, `vram_agrees`); otherwise the offer is ``None`` (for example a modded
  48 GB "RTX 4090").
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Family:
    id: str
    model: str  # canonical model code, e.g. "H100_SXM_80GB"
    vram_gb: int
    display_name: str
    sxm: bool  # SXM/HGX board: the GPUs of one machine talk over NVLink


FAMILIES: tuple[Family, ...] = (
    Family("rtx-4090", "RTX_4090", 24, "RTX 4090 24GB", sxm=False),
    Family("rtx-5090", "RTX_5090", 32, "RTX 5090 32GB", sxm=False),
    Family("a100-80gb", "A100_SXM_80GB", 80, "A100 SXM 80GB", sxm=True),
    Family("h100-80gb", "H100_SXM_80GB", 80, "H100 SXM 80GB", sxm=True),
    Family("b200", "B200", 180, "B200 180GB", sxm=True),
    Family("b300", "B300", 288, "B300 288GB", sxm=True),
)
_BY_ID: dict[str, Family] = {f.id: f for f in FAMILIES}

_VRAM_TOLERANCE = Decimal("0.15")


def get_family(family_id: str) -> Family | None:
    return _BY_ID.get(family_id)


def family(family_id: str) -> Family:
    """A family a provider's name table names (a KeyError is a bug in that table)."""
    return _BY_ID[family_id]


def norm(name: str) -> str:
    """A provider's name as the tables match it: case and runs of spaces aside."""
    return " ".join(name.split()).casefold()


def vram_agrees(fam: Family, gb: float) -> bool:
    return abs(Decimal(str(gb)) - fam.vram_gb) <= fam.vram_gb * _VRAM_TOLERANCE


def interconnect_for(fam: Family, gpu_count: int) -> str | None:
    """``NVLink`` for an SXM board (as the documented H100 SXM ×1 example shows), ``PCIe`` otherwise."""
    if gpu_count < 1:
        return None
    return "NVLink" if fam.sxm else "PCIe"
