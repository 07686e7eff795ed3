"""Regions: what a listing says about where it runs (pure, no I/O).

A listing carries a human label (``US-West``, ``EU-Central``, ``AP-Northeast`` …) and an
ISO-3166 alpha-2 ``regionCode``. The broad filter groups are ``us`` (the United States
only), ``eu`` (Europe: the EU, the EEA, Switzerland and the United Kingdom) and ``apac``
(East, South-East and South Asia and Oceania). Countries outside them (Canada, Israel,
Brazil …) are still listed and matched by their ISO code alone.

Each provider's own region names are turned into a `Region` beside its adapter
(`gpurent/providers/<provider>_names.py`), through `region_for_country`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from gpurent.families import norm

RegionGroup = Literal["us", "eu", "apac"]

# What a request's `region` filter may be: a country code or a group (us, eu: two letters too;
# apac), any case. The request bodies and the query schema state it; `catalog.check_region` agrees.
REGION_PATTERN = "^([A-Za-z]{2}|[Aa][Pp][Aa][Cc])$"


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
_US_STATE_BY_NAME = {norm(v): k for k, v in _US_STATES.items()}
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


def is_iso2(code: str) -> bool:
    """Two ASCII letters: the shape of an ISO-3166 alpha-2 code."""
    return bool(_ISO2.match(code))


def is_us_state(code: str) -> bool:
    """A two-letter US state (or DC) code."""
    return code in _US_STATES


def us_state_by_name(name: str) -> str | None:
    """"Oregon" → "OR" (case and spaces aside), else None."""
    return _US_STATE_BY_NAME.get(norm(name))


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
    if not is_iso2(code):
        return None
    cc = code.upper()
    if cc == "US":
        return Region(_us_label(us_state.upper() if us_state else None), "US")
    label = _EU_LABELS.get(cc) or _APAC_LABELS.get(cc) or _OTHER_LABELS.get(cc) or cc
    return Region(label, cc)


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
