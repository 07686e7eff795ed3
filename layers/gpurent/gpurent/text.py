"""What counts as printable text in names, reasons and descriptions."""

from __future__ import annotations

import re

from gpurent.errors import ApiError

# What is not printable: control (Cc) and format (Cf) characters and the line/paragraph
# separators U+2028/U+2029, as inclusive code-point ranges of Unicode 15.1 (the database of the
# Lambda runtime's Python, 3.13). Written out rather than read from `unicodedata`, so every Python
# (3.11 has Unicode 14.0, which lacks U+13439-1343F) refuses the same names and the API document
# (`printable_pattern`) is the same whichever Python generates it. tests/unit/test_text.py checks
# the table against the running Python's database.
UNICODE_VERSION = "15.1.0"
NOT_PRINTABLE: tuple[tuple[int, int], ...] = (
    (0x0000, 0x001F), (0x007F, 0x009F), (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C),
    (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E),
    (0x200B, 0x200F), (0x2028, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F), (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F),
)


# Code points of the basic plane are `\\uXXXX` escapes in the document's patterns; the few beyond
# it (tag characters, ...) are written as themselves, so a code-point regex (Python's, ECMA-262's
# with the `u` flag) reads each as one character.
def _escape(c: int) -> str:
    return f"\\u{c:04X}" if c <= 0xFFFF else chr(c)


def _ranges() -> str:
    return "".join(_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b in NOT_PRINTABLE)


_NOT_PRINTABLE = re.compile("[" + "".join(
    re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in NOT_PRINTABLE) + "]")


def is_printable(value: str) -> bool:
    """No control characters (C0, DEL, C1), no invisible format characters (Unicode category Cf:
    zero-width spaces and joiners, byte-order marks, bidirectional overrides and isolates, tag
    characters, ...) and no line separators."""
    return _NOT_PRINTABLE.search(value) is None


def printable_pattern(nonblank: bool = False) -> str:
    """A JSON Schema `pattern` matching exactly the strings `is_printable` accepts, or with
    `nonblank` the names the API accepts: `is_printable(value.strip())` and not empty (names are
    stripped of surrounding whitespace first)."""
    bad = _ranges()
    if not nonblank:
        return f"^[^{bad}]*$"
    # Whitespace around is stripped; what remains starts and ends with a visible character.
    edge = f"[^\\s{bad}]"
    return f"^\\s*{edge}(?:[^{bad}]*{edge})?\\s*$"


# Idempotency-Key: 1-255 visible ASCII characters, spaces allowed inside (an HTTP header value;
# leading and trailing spaces would not survive the trip).
IDEMPOTENCY_KEY_PATTERN = "^[!-~]([ -~]{0,253}[!-~])?$"


def check_name(name: str, field: str = "name", limit: int = 64) -> str:
    """A user-given name (an SSH key's, a rental's), trimmed; 400 `validation_failed` unless printable."""
    clean = name.strip()
    if not clean or not is_printable(clean):
        raise ApiError("validation_failed", f"{field} must be 1-{limit} printable characters",
                       {field: f"must be 1-{limit} printable characters"})
    return clean
