"""Text from messages made safe for an operator's terminal (docs/security.md#operator-output).

Message content is untrusted: an escape sequence in a payload, an error text, a saga id or a
header could move the cursor, rewrite what was printed before (``\\r``, backspace), set the
window title, plant a hyperlink (OSC 8) or reorder a line (bidi overrides). Every command that
prints message content passes it through :func:`visible` (plain text) or :func:`safe` (rich
markup), so those characters show as ``\\x1b`` or ``\\u202e`` instead of acting.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from typing import Any

from rich.markup import escape

#: Unicode categories that act instead of showing: controls (C0, DEL, C1), format characters
#: (bidi overrides and isolates, zero-width joiners, ...), line and paragraph separators, and
#: lone surrogates (undecodable bytes).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_KEPT_IN_MULTILINE = frozenset({"\n", "\t"})


def _escaped(char: str, json_style: bool) -> str:
    code = ord(char)
    if json_style:
        if code > 0xFFFF:  # a JSON string spells it as a surrogate pair
            code -= 0x10000
            return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
        return f"\\u{code:04x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text: str, *, multiline: bool = False, json_style: bool = False) -> str:
    """``text`` with every control, format and separator character written out as an escape
    (``\\x1b``, ``\\x9b``, ``\\r``→``\\x0d``, ``\\u202e``); newlines and tabs are kept only if
    ``multiline``. With ``json_style`` the escapes are ``\\u00XX`` so JSON text stays valid."""
    if text.isascii() and text.isprintable():
        return text
    out = []
    for char in text:
        if multiline and char in _KEPT_IN_MULTILINE:
            out.append(char)
        elif unicodedata.category(char) in _UNSAFE_CATEGORIES:
            out.append(_escaped(char, json_style))
        else:
            out.append(char)
    return "".join(out)


def safe(value: object, *, multiline: bool = False) -> str:
    """``value`` as text for rich markup: control characters made visible, markup escaped."""
    return escape(visible(str(value), multiline=multiline))


def bytes_text(raw: bytes | None, *, multiline: bool = False) -> str:
    """Bytes decoded as UTF-8 (bad bytes shown as U+FFFD), made visible; no markup escaping."""
    if raw is None:
        return ""
    return visible(raw.decode("utf-8", errors="replace"), multiline=multiline)


def emit_json(data: Any) -> None:
    """``data`` as JSON on stdout for programs to read (``--json``): never wrapped at the
    terminal's width, and ASCII-only, so every control or format character is a ``\\uXXXX``
    escape and nothing in it can drive a terminal."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=True, default=str) + "\n")
    sys.stdout.flush()
