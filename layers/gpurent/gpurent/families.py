"""GPU families, provider GPU names, regions and price normalisation (pure, no I/O).

Families (decisions.md G27): one family id, one canonical model code, one VRAM size.

Choices written down here because the provider names leave room for doubt:

- ``h100-80gb`` is the **H100 SXM 80 GB** only (model ``H100_SXM_80GB``). An H100 PCIe
  (80 GB, lower clocks and power, no NVLink switch) and an H100 NVL (94 GB) are other
  products; mapping them here would put a slower card behind a model code that says SXM.
  They are left out (the caller logs and drops them). The same rule holds for
  ``a100-80gb`` (model ``A100_SXM_80GB``): A100 PCIe is left out, and an A100 SXM4 with
  40 GB is not an ``a100-80gb`` whatever its name says.
- Every name is matched exactly (case and runs of spaces aside) against the tables below.
  Nothing is inferred from a substring: an unknown name is ``None``, never a guess.
- When a provider also reports the card's memory, it must agree with the family's VRAM
  (within 15 %); otherwise the offer is ``None`` (for example a modded 48 GB "RTX 4090").
  vast.ai's ``gpu_ram`` is in MiB-ish units (24564 for a 24 GB card) and is what tells an
  80 GB "A100 SXM4" from a 40 GB one, so for that name it is required.
- vast.ai's ``"B300 PC"`` (which gpuhunt folds into B300) is left out: what it is is not
  documented anywhere we can check.

Regions: a listing carries a human label (``US-West``, ``EU-Central``, ``AP-Northeast`` …)
and an ISO-3166 alpha-2 ``regionCode``. The broad filter groups are ``us`` (the United
States only), ``eu`` (Europe: the EU, the EEA, Switzerland and the United Kingdom) and
``apac`` (East, South-East and South Asia and Oceania). Countries outside them (Canada,
Israel, Brazil …) are still listed and matched by their ISO code alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Literal

RegionGroup = Literal["us", "eu", "apac"]


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


def _norm(name: str) -> str:
    return " ".join(name.split()).casefold()


def _vram_agrees(fam: Family, gb: float) -> bool:
    return abs(Decimal(str(gb)) - fam.vram_gb) <= fam.vram_gb * _VRAM_TOLERANCE


# --- vast.ai -------------------------------------------------------------------------

# The exact vast spellings (what the search filter sends), per family.
VAST_NAMES: dict[str, str] = {
    "RTX 4090": "rtx-4090",
    "RTX 5090": "rtx-5090",
    "A100 SXM4": "a100-80gb",
    "H100 SXM": "h100-80gb",
    "B200": "b200",
    "B300": "b300",
}
_VAST_BY_NORM = {_norm(k): v for k, v in VAST_NAMES.items()}
# Names that exist in more than one memory size: gpu_ram decides, and must be present.
_VAST_NEEDS_RAM = frozenset({_norm("A100 SXM4")})


def vast_family(gpu_name: str, gpu_ram_mb: float | None) -> Family | None:
    """vast ``gpu_name`` + ``gpu_ram`` (MiB) → family, or None."""
    key = _norm(gpu_name)
    fid = _VAST_BY_NORM.get(key)
    if fid is None:
        return None
    fam = _BY_ID[fid]
    if gpu_ram_mb is None:
        return None if key in _VAST_NEEDS_RAM else fam
    return fam if _vram_agrees(fam, gpu_ram_mb / 1024) else None


# --- RunPod --------------------------------------------------------------------------

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
_RUNPOD_ID_BY_NORM = {_norm(k): v for k, v in RUNPOD_IDS.items()}
_RUNPOD_DISPLAY_BY_NORM = {_norm(k): v for k, v in RUNPOD_DISPLAY_NAMES.items()}


def runpod_family(gpu_type_id: str, display_name: str | None = None,
                  memory_gb: float | None = None) -> Family | None:
    """RunPod ``gpuTypes.id`` (or, failing that, its ``displayName``) → family, or None."""
    fid = _RUNPOD_ID_BY_NORM.get(_norm(gpu_type_id))
    if fid is None and display_name:
        fid = _RUNPOD_DISPLAY_BY_NORM.get(_norm(display_name))
    if fid is None:
        return None
    fam = _BY_ID[fid]
    if memory_gb is not None and not _vram_agrees(fam, memory_gb):
        return None
    return fam


# --- Lambda Cloud --------------------------------------------------------------------

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
    fid = _LAMBDA_TABLE.get((_norm(gpu.model), _norm(gpu.form) if gpu.form else None))
    if fid is None:
        return None
    fam = _BY_ID[fid]
    return fam if _vram_agrees(fam, gpu.vram_gb) else None


# --- interconnect --------------------------------------------------------------------


def interconnect_for(fam: Family, gpu_count: int) -> str | None:
    """``NVLink`` for an SXM board (as the documented H100 SXM ×1 example shows), ``PCIe`` otherwise."""
    if gpu_count < 1:
        return None
    return "NVLink" if fam.sxm else "PCIe"


# --- regions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    label: str  # "US-West"
    code: str  # ISO-3166 alpha-2, "US"


_US_STATES: dict[str, str] = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California",
    "CO": "Colorado", "CT": "Connecticut", "DE": "Delaware", "DC": "District of Columbia",
    "FL": "Florida", "GA": "Georgia", "HI": "Hawaii", "ID": "Idaho", "IL": "Illinois",
    "IN": "Indiana", "IA": "Iowa", "KS": "Kansas", "KY": "Kentucky", "LA": "Louisiana",
    "ME": "Maine", "MD": "Maryland", "MA": "Massachusetts", "MI": "Michigan", "MN": "Minnesota",
    "MS": "Mississippi", "MO": "Missouri", "MT": "Montana", "NE": "Nebraska", "NV": "Nevada",
    "NH": "New Hampshire", "NJ": "New Jersey", "NM": "New Mexico", "NY": "New York",
    "NC": "North Carolina", "ND": "North Dakota", "OH": "Ohio", "OK": "Oklahoma", "OR": "Oregon",
    "PA": "Pennsylvania", "RI": "Rhode Island", "SC": "South Carolina", "SD": "South Dakota",
    "TN": "Tennessee", "TX": "Texas", "UT": "Utah", "VT": "Vermont", "VA": "Virginia",
    "WA": "Washington", "WV": "West Virginia", "WI": "Wisconsin", "WY": "Wyoming",
}
_US_STATE_BY_NAME = {_norm(v): k for k, v in _US_STATES.items()}
_US_WEST = frozenset("WA OR CA NV ID UT AZ MT WY CO NM AK HI".split())
_US_CENTRAL = frozenset("TX OK KS NE SD ND MN IA MO AR LA WI IL".split())

# Country → label; membership here also gives the broad group.
_EU_LABELS: dict[str, str] = {
    **dict.fromkeys("GB IE FR BE NL LU".split(), "EU-West"),
    **dict.fromkeys("DE AT CH CZ PL SK HU SI LI".split(), "EU-Central"),
    **dict.fromkeys("SE NO FI DK IS EE LV LT".split(), "EU-North"),
    **dict.fromkeys("ES PT IT GR HR MT CY".split(), "EU-South"),
    **dict.fromkeys("RO BG".split(), "EU-East"),
}
_APAC_LABELS: dict[str, str] = {
    **dict.fromkeys("JP KR".split(), "AP-Northeast"),
    **dict.fromkeys("CN HK TW".split(), "AP-East"),
    **dict.fromkeys("SG MY TH ID VN PH AU NZ".split(), "AP-Southeast"),
    **dict.fromkeys("IN".split(), "AP-South"),
}
_OTHER_LABELS: dict[str, str] = {"CA": "CA-Central", "BR": "SA-East", "IL": "ME-West", "AE": "ME-Central"}

_ISO2 = re.compile(r"^[A-Za-z]{2}$")


def _us_label(state: str | None) -> str:
    if state in _US_WEST:
        return "US-West"
    if state in _US_CENTRAL:
        return "US-Central"
    if state in _US_STATES:
        return "US-East"
    return "US"


def region_for_country(code: str, us_state: str | None = None) -> Region | None:
    """An ISO country code (and, for the US, a two-letter state) → Region."""
    if not _ISO2.match(code):
        return None
    cc = code.upper()
    if cc == "US":
        return Region(_us_label(us_state.upper() if us_state else None), "US")
    label = _EU_LABELS.get(cc) or _APAC_LABELS.get(cc) or _OTHER_LABELS.get(cc) or cc
    return Region(label, cc)


def region_from_vast(geolocation: str | None) -> Region | None:
    """vast ``geolocation`` ("Oregon, US", "Sweden, SE", "US") → Region, or None."""
    if not geolocation:
        return None
    parts = [p.strip() for p in geolocation.split(",") if p.strip()]
    if not parts or not _ISO2.match(parts[-1]):
        return None
    state = _US_STATE_BY_NAME.get(_norm(parts[0])) if len(parts) > 1 else None
    return region_for_country(parts[-1], state)


_RUNPOD_DC = re.compile(r"^(US|CA|EU|EUR|AP|OC|SA|AF|ME)-([A-Z]{2,3})-\d+$")


def region_from_runpod(data_center_id: str) -> Region | None:
    """RunPod ``dataCenterId`` ("US-OR-1", "EU-RO-1", "EUR-IS-1", "AP-JP-1") → Region."""
    m = _RUNPOD_DC.match(data_center_id.strip().upper())
    if m is None:
        return None
    prefix, middle = m.groups()
    if prefix == "US":
        return region_for_country("US", middle if middle in _US_STATES else None)
    if prefix == "CA":  # "CA-MTL-1": the middle part is a city
        return region_for_country("CA")
    return region_for_country(middle) if len(middle) == 2 else None


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


def region_group(code: str) -> RegionGroup | None:
    cc = code.upper()
    if cc == "US":
        return "us"
    if cc in _EU_LABELS:
        return "eu"
    if cc in _APAC_LABELS:
        return "apac"
    return None


def region_matches(filter_value: str, region_code: str) -> bool:
    """True when ``region_code`` is the ISO code named, or lies in the named group."""
    f = filter_value.strip().lower()
    if f in ("eu", "apac"):
        return region_group(region_code) == f
    # Otherwise an ISO code. "us" is both the group and the ISO code of the United
    # States, and the group holds the United States only: the same answer either way.
    return f == region_code.strip().lower()


# --- prices --------------------------------------------------------------------------


def dollars_to_cents_up(amount: float | str | Decimal) -> int:
    """Dollars → whole cents, rounding **up** (never bill below cost), exactly.

    Goes through ``Decimal(str(x))`` so a float from JSON is taken at its shortest
    decimal spelling ("0.3569"), not its binary expansion.
    """
    try:
        d = amount if isinstance(amount, Decimal) else Decimal(str(amount).strip())
    except InvalidOperation as e:
        raise ValueError(f"not a price: {amount!r}") from e
    if not d.is_finite() or d < 0:
        raise ValueError(f"not a price: {amount!r}")
    return int((d * 100).to_integral_value(rounding=ROUND_CEILING))
