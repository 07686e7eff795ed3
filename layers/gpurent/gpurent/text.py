"""What counts as printable text in names, reasons and descriptions."""

from __future__ import annotations

import unicodedata

from gpurent.errors import ApiError

# Line/paragraph separators and bidirectional overrides/isolates: they reorder or break
# what a terminal, a dashboard or an email shows.
_INVISIBLE = {"\u2028", "\u2029"} | {chr(c) for c in range(0x202A, 0x202F)} | {chr(c) for c in range(0x2066, 0x206A)}


def is_printable(value: str) -> bool:
    """No control characters (C0, DEL, C1), no line separators, no bidirectional overrides."""
    return not any(unicodedata.category(c) == "Cc" or c in _INVISIBLE for c in value)


def check_name(name: str, field: str = "name", limit: int = 64) -> str:
    """A user-given name (an SSH key's, a rental's), trimmed; 400 `validation_failed` unless printable."""
    clean = name.strip()
    if not clean or not is_printable(clean):
        raise ApiError("validation_failed", f"{field} must be 1-{limit} printable characters",
                       {field: f"must be 1-{limit} printable characters"})
    return clean
