"""File names as the operating system gives them: safe to print, safe to store.

On Linux a file name is bytes. Python hands names that are not UTF-8 over as text
with "surrogate escapes" (byte 0xE9 becomes U+DCE9), which open() accepts but a
terminal, SQLite or a font cannot encode. Names also may hold terminal escape codes.
"""

from __future__ import annotations

import os

# Bidirectional overrides and isolates: they reorder what a terminal shows
# ("gpj.exe" shown as "exe.jpg"); line and paragraph separators break lines.
_INVISIBLE_CONTROLS = frozenset(
    "\u2028\u2029\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def safe_display(name: object) -> str:
    """`name` (a str or a path) with control characters and undecodable bytes escaped.

    Escapes are Python's: "\\x1b", "\\n", "\\u202e"; a byte that is not UTF-8 shows as
    "\\xe9". Everything else (any printable Unicode) is kept, so ordinary names print as
    they are.
    """
    return "".join(_display_char(c) for c in str(name))


def _display_char(c: str) -> str:
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a surrogate escape: the original byte
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x20 or 0x7F <= code < 0xA0 or c in _INVISIBLE_CONTROLS:
        return repr(c)[1:-1]
    if 0xD800 <= code <= 0xDFFF:  # any other lone surrogate cannot be printed either
        return f"\\u{code:04x}"
    return c


def to_stored(name: str) -> str | bytes:
    """What the catalog stores for a name: the text, or its raw bytes if it is not UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name)
    return name


def from_stored(value: str | bytes) -> str:
    """The inverse of `to_stored`: a name that open() and os.fsencode() take back."""
    return os.fsdecode(value) if isinstance(value, bytes) else value
