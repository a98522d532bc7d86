"""File names on the wire: lossless even when they are not valid UTF-8.

Linux names are bytes; Python hands them to us as ``str`` with surrogate escapes, which no JSON encoder
(and no client decoder) accepts. A name that is not valid UTF-8 goes out as its UTF-8 rendering with
U+FFFD for the bad bytes, plus ``<key>_b64``: the raw bytes, base64. Valid names are untouched.
"""

from __future__ import annotations

import base64
import os


def wire_name(name: str) -> tuple[str, str | None]:
    """(printable form, base64 of the raw bytes or None when the name is valid UTF-8)."""
    if name.isascii():
        return name, None
    try:
        name.encode("utf-8")
        return name, None
    except UnicodeEncodeError:
        raw = os.fsencode(name)
        return raw.decode("utf-8", "replace"), base64.b64encode(raw).decode("ascii")


def wire_path(data: dict, key: str, value: str) -> None:
    """``data[key] = value``, made safe for JSON, with ``data[key + "_b64"]`` when bytes were replaced."""
    shown, raw = wire_name(value)
    data[key] = shown
    if raw is not None:
        data[key + "_b64"] = raw
