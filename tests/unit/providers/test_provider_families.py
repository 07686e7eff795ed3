"""The family table, each provider's GPU and region names, regions and cents rounding."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpurent import families as f
from gpurent import regions
from gpurent.money import dollars_to_cents_up
from gpurent.providers import lambdacloud_names, runpod_names, vast_names


def test_the_six_families():
    table = {fam.id: (fam.model, fam.vram_gb) for fam in f.FAMILIES}
    assert table == {
        "rtx-4090": ("RTX_4090", 24),
        "rtx-5090": ("RTX_5090", 32),
        "a100-80gb": ("A100_SXM_80GB", 80),
        "h100-80gb": ("H100_SXM_80GB", 80),
        "b200": ("B200", 180),
        "b300": ("B300", 288),
    }
    assert all(fam.display_name for fam in f.FAMILIES)
    assert f.get_family("h100-80gb") is not None and f.get_family("h100") is None


@pytest.mark.parametrize(
    ("name", "ram", "family"),
    [
        ("RTX 4090", 24564, "rtx-4090"),
        ("  rtx   4090 ", 24564, "rtx-4090"),
        ("RTX 4090", None, "rtx-4090"),
        ("RTX 5090", 32607, "rtx-5090"),
        ("A100 SXM4", 81920, "a100-80gb"),
        ("H100 SXM", 81559, "h100-80gb"),
        ("B200", 183359, "b200"),
        ("B300", 275040, "b300"),
        # never guessed:
        ("A100 SXM4", 40960, None),  # a 40 GB A100 is not a100-80gb
        ("A100 SXM4", None, None),  # and without gpu_ram we cannot tell
        ("A100 PCIE", 81920, None),
        ("H100 PCIE", 81559, None),
        ("H100 NVL", 95830, None),
        ("RTX 4090", 49140, None),  # a modded 48 GB card is not the 24 GB family
        ("RTX 3090", 24576, None),
        ("B300 PC", 275040, None),
        ("RTX 4090 Ti", 24564, None),
    ],
)
def test_vast_names(name, ram, family):
    fam = vast_names.vast_family(name, ram)
    assert (fam.id if fam else None) == family


@pytest.mark.parametrize(
    ("type_id", "display", "memory", "family"),
    [
        ("NVIDIA GeForce RTX 4090", "RTX 4090", 24, "rtx-4090"),
        ("NVIDIA GeForce RTX 5090", "RTX 5090", 32, "rtx-5090"),
        ("NVIDIA A100-SXM4-80GB", "A100 SXM", 80, "a100-80gb"),
        ("NVIDIA H100 80GB HBM3", "H100 SXM", 80, "h100-80gb"),
        ("NVIDIA B200", "B200", 180, "b200"),
        ("NVIDIA B300 SXM6 AC", "B300", 288, "b300"),
        ("some-new-id", "H100 SXM", 80, "h100-80gb"),  # a known displayName still maps
        ("NVIDIA H100 PCIe", "H100 PCIe", 80, None),
        ("NVIDIA H100 NVL", "H100 NVL", 94, None),
        ("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, None),
        ("NVIDIA GeForce RTX 4090", "RTX 4090", 48, None),  # memory disagrees
        ("NVIDIA RTX A6000", "RTX A6000", 48, None),
    ],
)
def test_runpod_names(type_id, display, memory, family):
    fam = runpod_names.runpod_family(type_id, display, memory)
    assert (fam.id if fam else None) == family


@pytest.mark.parametrize(
    ("description", "parsed"),
    [
        ("1x H100 (80 GB SXM5)", (1, "H100", 80, "SXM5")),
        ("8x A100 (80 GB SXM4)", (8, "A100", 80, "SXM4")),
        ("1x A10 (24 GB PCIe)", (1, "A10", 24, "PCIe")),
        ("8x Tesla V100 (16 GB)", (8, "V100", 16, None)),
        ("1x GH200 (96 GB)", (1, "GH200", 96, None)),
        ("8x B200 (180 GB SXM6)", (8, "B200", 180, "SXM6")),
        ("CPU only instance", None),
        ("1x H100", None),
    ],
)
def test_lambda_description_regex(description, parsed):
    gpu = lambdacloud_names.parse_lambda_description(description)
    assert (None if gpu is None else (gpu.count, gpu.model, gpu.vram_gb, gpu.form)) == parsed


@pytest.mark.parametrize(
    ("description", "family"),
    [
        ("1x H100 (80 GB SXM5)", "h100-80gb"),
        ("8x H100 (80 GB SXM5)", "h100-80gb"),
        ("8x A100 (80 GB SXM4)", "a100-80gb"),
        ("8x B200 (180 GB SXM6)", "b200"),
        ("8x B300 (288 GB SXM6)", "b300"),
        ("1x RTX 4090 (24 GB PCIe)", "rtx-4090"),
        ("1x H100 (80 GB PCIe)", None),
        ("1x A100 (40 GB SXM4)", None),
        ("1x A100 (80 GB PCIe)", None),
        ("1x GH200 (96 GB)", None),
        ("1x A10 (24 GB PCIe)", None),
    ],
)
def test_lambda_families(description, family):
    gpu = lambdacloud_names.parse_lambda_description(description)
    assert gpu is not None
    fam = lambdacloud_names.lambda_family(gpu)
    assert (fam.id if fam else None) == family


@pytest.mark.parametrize(
    ("geo", "expected"),
    [
        ("Oregon, US", ("US-West", "US")),
        ("Virginia, US", ("US-East", "US")),
        ("New Jersey, US", ("US-East", "US")),
        ("Texas, US", ("US-Central", "US")),
        ("US", ("US", "US")),
        ("Sweden, SE", ("EU-North", "SE")),
        ("Germany, DE", ("EU-Central", "DE")),
        ("Romania, RO", ("EU-East", "RO")),
        ("Japan, JP", ("AP-Northeast", "JP")),
        ("Singapore, SG", ("AP-Southeast", "SG")),
        ("Quebec, CA", ("CA-Central", "CA")),
        ("Somewhere, ZZ", ("ZZ", "ZZ")),
        (None, None),
        ("", None),
        ("Atlantis", None),
    ],
)
def test_vast_regions(geo, expected):
    r = vast_names.region_from_vast(geo)
    assert (None if r is None else (r.label, r.code)) == expected


@pytest.mark.parametrize(
    ("dc", "expected"),
    [
        ("US-OR-1", ("US-West", "US")),
        ("US-GA-1", ("US-East", "US")),
        ("US-TX-3", ("US-Central", "US")),
        ("EU-RO-1", ("EU-East", "RO")),
        ("EU-NL-1", ("EU-West", "NL")),
        ("EUR-IS-1", ("EU-North", "IS")),
        ("CA-MTL-1", ("CA-Central", "CA")),
        ("AP-JP-1", ("AP-Northeast", "JP")),
        ("OC-AU-1", ("AP-Southeast", "AU")),
        ("MOON-1", None),
        ("US", None),
    ],
)
def test_runpod_regions(dc, expected):
    r = runpod_names.region_from_runpod(dc)
    assert (None if r is None else (r.label, r.code)) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("us-east-1", ("US-East", "US")),
        ("us-west-1", ("US-West", "US")),
        ("us-south-1", ("US-Central", "US")),
        ("europe-central-1", ("EU-Central", "DE")),
        ("asia-northeast-1", ("AP-Northeast", "JP")),
        ("asia-south-1", ("AP-South", "IN")),
        ("mars-central-1", None),
    ],
)
def test_lambda_regions(name, expected):
    r = lambdacloud_names.region_from_lambda(name)
    assert (None if r is None else (r.label, r.code)) == expected


@pytest.mark.parametrize(
    ("flt", "code", "match"),
    [
        ("us", "US", True),
        ("US", "US", True),
        ("us", "CA", False),
        ("eu", "DE", True),
        ("EU", "RO", True),
        ("eu", "GB", True),
        ("eu", "US", False),
        ("apac", "SG", True),
        ("APAC", "JP", True),
        ("apac", "DE", False),
        ("de", "DE", True),
        ("DE", "NL", False),
        ("ca", "CA", True),
        ("eu", "CA", False),
    ],
)
def test_region_matches(flt, code, match):
    assert regions.region_matches(flt, code) is match


def test_region_groups():
    assert [regions.region_group(c) for c in ("US", "de", "JP", "CA", "BR")] == ["us", "eu", "apac", None, None]


def test_interconnect():
    h100 = f.get_family("h100-80gb")
    rtx = f.get_family("rtx-4090")
    assert h100 is not None and rtx is not None
    assert f.interconnect_for(h100, 8) == "NVLink"
    assert f.interconnect_for(h100, 1) == "NVLink"  # an SXM board, as api.md's H100 x1 example shows
    assert f.interconnect_for(rtx, 8) == "PCIe"
    assert f.interconnect_for(rtx, 0) is None


@pytest.mark.parametrize(
    ("amount", "cents"),
    [
        (0.3569, 36),
        ("0.30", 30),
        (Decimal("2.69"), 269),
        (2.691, 270),
        (17.61388888888889, 1762),
        (1.0, 100),
        (0, 0),
        (1e-9, 1),
        ("  4.50 ", 450),
    ],
)
def test_dollars_to_cents_up(amount, cents):
    assert dollars_to_cents_up(amount) == cents


@pytest.mark.parametrize("bad", [-0.01, "abc", float("nan"), float("inf"), ""])
def test_dollars_to_cents_rejects(bad):
    with pytest.raises(ValueError):
        dollars_to_cents_up(bad)


@given(st.decimals(min_value=0, max_value=10_000, places=6, allow_nan=False, allow_infinity=False))
def test_cents_never_below_cost_and_less_than_a_cent_above(d):
    cents = dollars_to_cents_up(d)
    assert Decimal(cents) >= d * 100
    assert Decimal(cents) - d * 100 < 1
    assert cents == math.ceil(d * 100)
