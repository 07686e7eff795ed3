"""What counts as printable text in names, reasons and descriptions."""

from __future__ import annotations

import unicodedata

from gpurent.errors import ApiError

# Line/paragraph separators: they break what a terminal, a dashboard or an email shows.
_SEPARATORS = {"\u2028", "\u2029"}

# The same rule as a regular expression, for the API contract (JSON Schema `pattern`):
# no control (Cc) or format (Cf) character, no line/paragraph separator. Generated from
# the Unicode database of this Python, so it agrees with `is_printable` exactly. Code
# points of the basic plane are `\\uXXXX` escapes; the few beyond it (tag characters, …)
# are written as themselves, so a code-point regex (Python's, ECMA-262's with the `u`
# flag) reads each as one character.
def _escape(c: int) -> str:
    return f"\\u{c:04X}" if c <= 0xFFFF else chr(c)


def _ranges() -> str:
    bad = [c for c in range(0x110000) if unicodedata.category(chr(c)) in ("Cc", "Cf") or chr(c) in _SEPARATORS]
    out: list[str] = []
    start = prev = bad[0]
    for c in [*bad[1:], -1]:
        if c == prev + 1:
            prev = c
            continue
        out.append(_escape(start) if start == prev else f"{_escape(start)}-{_escape(prev)}")
        if c != -1:
            start = prev = c
    return "".join(out)


def is_printable(value: str) -> bool:
    """No control characters (C0, DEL, C1), no invisible format characters (Unicode category Cf:
    zero-width spaces and joiners, byte-order marks, bidirectional overrides and isolates, tag
    characters, …) and no line separators."""
    return not any(unicodedata.category(c) in ("Cc", "Cf") or c in _SEPARATORS for c in value)


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
