"""``systemd-escape --path`` in pure Python, so instance names match what systemd computes."""

from __future__ import annotations

import os

_SAFE = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.")


def escape_path(path: str) -> str:
    """Escape like ``systemd-escape --path``: strip and collapse slashes, ``/`` -> ``-``, others \\xNN."""
    p = os.path.normpath(path).strip("/")
    if not p:
        return "-"
    out: list[str] = []
    for i, b in enumerate(p.encode()):
        if b == ord("/"):
            out.append("-")
        elif b in _SAFE and not (i == 0 and b == ord(".")):
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)
