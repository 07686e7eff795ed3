"""The printable-text rule (`gpurent.text`): its written-out table of Unicode 15.1 agrees with the
running Python's Unicode database, and the regular expression the API document carries accepts
exactly what `is_printable` accepts."""

from __future__ import annotations

import re
import unicodedata

import pytest

from gpurent import text

SEPARATORS = {0x2028, 0x2029}


def _in_table(c: int) -> bool:
    return any(a <= c <= b for a, b in text.NOT_PRINTABLE)


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def test_the_table_is_this_pythons_controls_formats_and_separators() -> None:
    """Every character of the table is a control, a format character or a separator in this
    Python's database, or one this database does not know yet (category Cn, older Unicode);
    and on a Python whose Unicode is the table's or older, every such character is in it."""
    same_or_older = _version(unicodedata.unidata_version) <= _version(text.UNICODE_VERSION)
    for c in range(0x110000):
        category = unicodedata.category(chr(c))
        bad = category in ("Cc", "Cf") or c in SEPARATORS
        if _in_table(c):
            assert bad or category == "Cn", f"U+{c:04X} ({category}) is in the table but printable here"
        elif same_or_older:
            assert not bad, f"U+{c:04X} ({category}) is missing from the table"


@pytest.mark.parametrize(("value", "printable"), [
    ("my pod", True), ("Ünïcödé 🚀", True), ("a\tb", False), ("a\u200bb", False), ("\ufeffkey", False),
    ("line\u2028break", False), ("tag\U000e0041", False), ("hieroglyph\U0001343f", False), ("\x7f", False),
    ("soft\u00adhyphen", False), ("", True),
])
def test_is_printable(value: str, printable: bool) -> None:
    assert text.is_printable(value) is printable


def test_the_documents_pattern_accepts_what_is_printable() -> None:
    pattern = re.compile(text.printable_pattern())
    samples = [chr(c) for a, b in text.NOT_PRINTABLE for c in (a, b, b + 1)] + ["plain", "é", "🚀", "\u3000"]
    for s in samples:
        value = f"x{s}y"
        assert (pattern.fullmatch(value) is not None) is text.is_printable(value), repr(value)
