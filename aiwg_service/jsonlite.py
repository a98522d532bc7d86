"""JSON on the C accelerators CPython ships (``_json``), without importing ``json``, ``re`` or ``enum``.

``json`` imports ``re``, and ``re`` imports ``enum``: about 8 ms before ``aiwgctl ping`` could say a word.
The client's replies and requests are plain JSON, so the C scanner and string encoders are all it needs.
"""

from __future__ import annotations

import _json

# typing and collections.abc cost milliseconds at import: this module is on aiwgctl's fast path
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class _Context:
    """The attributes ``_json.make_scanner`` reads, with the same meaning as ``json.JSONDecoder``'s."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    def __init__(self) -> None:
        self.memo: dict[str, str] = {}
        self.parse_constant = float  # NaN, Infinity, -Infinity


_scan = _json.make_scanner(_Context())
_WS = " \t\n\r"


class JSONDecodeError(ValueError):
    pass


def loads(data: str | bytes) -> Any:
    text = data.decode() if isinstance(data, bytes | bytearray) else data
    start = len(text) - len(text.lstrip(_WS))
    try:
        value, end = _scan(text, start)
    except StopIteration as exc:
        raise JSONDecodeError(f"invalid JSON at position {exc.value}") from None
    if text[end:].strip(_WS):
        raise JSONDecodeError(f"extra data at position {end}")
    return value


def dumps(obj: Any, indent: int | None = None, default: Callable[[Any], Any] | None = None,
          ensure_ascii: bool = False, separators: tuple[str, str] | None = None) -> str:
    """Like ``json.dumps`` (same separators and layout) for the types JSON has, plus ``default`` for the rest."""
    enc = _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring
    sep, colon = separators or ((", ", ": ") if indent is None else (",", ": "))
    out: list[str] = []
    _write(obj, out, _Style(enc, indent, sep, colon, default), 0)
    return "".join(out)


class _Style:
    __slots__ = ("colon", "default", "enc", "indent", "sep")

    def __init__(self, enc: Callable[[str], str], indent: int | None, sep: str, colon: str,
                 default: Callable[[Any], Any] | None) -> None:
        self.enc, self.indent, self.sep, self.colon, self.default = enc, indent, sep, colon, default


def _write(obj: Any, out: list[str], st: _Style, level: int) -> None:
    enc, indent = st.enc, st.indent
    if isinstance(obj, str):
        out.append(enc(obj))
    elif obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, int):
        out.append(int.__repr__(obj))
    elif isinstance(obj, float):
        out.append(_float(obj))
    elif isinstance(obj, dict | list | tuple):
        is_dict = isinstance(obj, dict)
        if not obj:
            out.append("{}" if is_dict else "[]")
            return
        out.append("{" if is_dict else "[")
        inner = "" if indent is None else "\n" + " " * (indent * (level + 1))
        for i, item in enumerate(obj.items() if is_dict else obj):
            if i:
                out.append(st.sep)
            out.append(inner)
            if is_dict:
                key, item = item
                out.append(enc(key if isinstance(key, str) else _key(key)))
                out.append(st.colon)
            _write(item, out, st, level + 1)
        out.append("" if indent is None else "\n" + " " * (indent * level))
        out.append("}" if is_dict else "]")
    elif st.default is not None:
        _write(st.default(obj), out, st, level)
    else:
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _float(f: float) -> str:
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "Infinity" if f > 0 else "-Infinity"
    return float.__repr__(f)


def _key(k: Any) -> str:
    if k is True:
        return "true"
    if k is False:
        return "false"
    if k is None:
        return "null"
    return _float(k) if isinstance(k, float) else str(k)
