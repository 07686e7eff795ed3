"""vast.ai's names for our families and regions (pure, no I/O).

vast.ai's ``gpu_ram`` is in MiB-ish units (24564 for a 24 GB card) and is what tells an
80 GB "A100 SXM4" from a 40 GB one, so for that name it is required. vast.ai's
``"B300 PC"`` (which gpuhunt folds into B300) is left out: what it is is not documented
anywhere we can check.
"""

from __future__ import annotations

from gpurent.families import Family, family, norm, vram_agrees
from gpurent.regions import Region, is_iso2, region_for_country, us_state_by_name

# The exact vast spellings (what the search filter sends), per family.
VAST_NAMES: dict[str, str] = {
    "RTX 4090": "rtx-4090",
    "RTX 5090": "rtx-5090",
    "A100 SXM4": "a100-80gb",
    "H100 SXM": "h100-80gb",
    "B200": "b200",
    "B300": "b300",
}
_VAST_BY_NORM = {norm(k): v for k, v in VAST_NAMES.items()}
# Names that exist in more than one memory size: gpu_ram decides, and must be present.
_VAST_NEEDS_RAM = frozenset({norm("A100 SXM4")})


def vast_family(gpu_name: str, gpu_ram_mb: float | None) -> Family | None:
    """vast ``gpu_name`` + ``gpu_ram`` (MiB) → family, or None."""
    key = norm(gpu_name)
    fid = _VAST_BY_NORM.get(key)
    if fid is None:
        return None
    fam = family(fid)
    if gpu_ram_mb is None:
        return None if key in _VAST_NEEDS_RAM else fam
    return fam if vram_agrees(fam, gpu_ram_mb / 1024) else None


def region_from_vast(geolocation: str | None) -> Region | None:
    """vast ``geolocation`` ("Oregon, US", "Sweden, SE", "US") → Region, or None."""
    if not geolocation:
        return None
    parts = [p.strip() for p in geolocation.split(",") if p.strip()]
    if not parts or not is_iso2(parts[-1]):
        return None
    state = us_state_by_name(parts[0]) if len(parts) > 1 else None
    return region_for_country(parts[-1], state)
