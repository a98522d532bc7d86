"""Write docs/config-reference.md from the registered config schema: every section's every key, its type,
its default and its ``#:`` comment. The schema is the one the service validates with (``aiwg_service.schemas``
registers every section), so the reference cannot drift: ``tests/test_docs.py`` fails when the file is stale.

    .venv/bin/python docs/gen_config_reference.py          # rewrite docs/config-reference.md
    .venv/bin/python docs/gen_config_reference.py --check  # exit 1 if it is stale
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi

OUT = Path(__file__).resolve().parent / "config-reference.md"

HEADER = """# Configuration reference

Generated from the schema the service validates with (`docs/gen_config_reference.py`; do not edit by hand).
Every key may appear in a project's `<project>/.aiwg/daemon.json` and in the service-wide
`$XDG_CONFIG_HOME/aiwg/daemon.json` unless it is marked *service-wide only*: in a project's file such a key
is named as ignored by `aiwgctl config check`. `<name>` stands for a key you choose (a profile, an
executor); `[]` for each item of a list. An unknown key is a warning, never an error. A value that holds a
secret is refused: name an environment variable or systemd credential in the `*_env` key instead.
"""

# sections whose document type is loose (checked by their own code); the type their entries really have
LOOSE_NOTES = {
    "rules": "a list of rule objects, checked by the rules engine's own schema (see the rules chapter of the "
             "manual: `triggers`, `conditions`, `actions`)",
}


def _comments(cls: type) -> dict[str, str]:
    """The ``#:`` lines above each field of a Struct (and a trailing ``# ...``), as written in its source."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in lines[1:]:
        s = line.strip()
        if s.startswith("#:"):
            pending.append(s[2:].strip())
            continue
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:", s)
        if m and not s.startswith(("def ", "class ")):
            text = " ".join(pending)
            trail = re.search(r"\s#\s+(?!noqa|type:)(.+)$", s)
            if not text and trail:
                text = trail.group(1).strip()
            if text:
                out[m.group(1)] = text
        pending = []
    return out


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _type(t: Any) -> str:
    if isinstance(t, mi.UnionType):
        parts = [_type(x) for x in t.types if not isinstance(x, mi.NoneType)]
        nullable = any(isinstance(x, mi.NoneType) for x in t.types)
        return " or ".join(parts) + (" or null" if nullable else "")
    if isinstance(t, mi.LiteralType):
        from aiwg_service import config

        return "one of " + ", ".join(f"`{v}`" for v in config.LITERAL_ORDER.get(frozenset(t.values), t.values))
    if isinstance(t, mi.BoolType):
        return "bool"
    if isinstance(t, mi.IntType | mi.FloatType):
        name = "int" if isinstance(t, mi.IntType) else "number"
        bounds = [f"{op} {_num(getattr(t, k))}" for k, op in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))
                  if getattr(t, k) is not None]
        return name + (f" ({', '.join(bounds)})" if bounds else "")
    if isinstance(t, mi.StrType):
        extra = []
        if t.pattern:
            extra.append(f"matching `{t.pattern}`")
        if t.min_length:
            extra.append(f"at least {t.min_length} chars")
        if t.max_length:
            extra.append(f"at most {t.max_length} chars")
        return "string" + (f" ({', '.join(extra)})" if extra else "")
    if isinstance(t, mi.ListType | mi.SetType | mi.VarTupleType):
        return f"list of {_type(t.item_type)}"
    if isinstance(t, mi.DictType):
        return f"map of string to {_type(t.value_type)}"
    if isinstance(t, mi.StructType):
        return "object"
    if isinstance(t, mi.AnyType):
        return "any"
    if isinstance(t, mi.NoneType):
        return "null"
    return type(t).__name__.removesuffix("Type").lower()


def _default(f: mi.Field) -> str:
    if f.required:
        return "required"
    value = f.default if f.default is not mi.NODEFAULT else f.default_factory()
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return "-"
    if isinstance(value, msgspec.Struct) and len(text) > 60:  # a whole sub-object: its keys have rows below
        return "(see below)"
    return f"`{text}`"


def _struct_of(t: Any) -> list[mi.StructType]:
    """The objects a key's value can be (its keys get rows of their own)."""
    if isinstance(t, mi.StructType):
        return [t]
    if isinstance(t, mi.UnionType):
        return [s for x in t.types for s in _struct_of(x)]
    if isinstance(t, mi.ListType | mi.DictType):
        return _struct_of(t.item_type if isinstance(t, mi.ListType) else t.value_type)
    return []


def _child_path(path: str, t: Any) -> str:
    if isinstance(t, mi.UnionType):
        inner = [x for x in t.types if not isinstance(x, mi.NoneType)]
        return _child_path(path, inner[0]) if len(inner) == 1 else path
    if isinstance(t, mi.ListType):
        return _child_path(path + "[]", t.item_type)
    if isinstance(t, mi.DictType):
        return _child_path(path + ".<name>", t.value_type)
    return path


def _rows(st: mi.StructType, path: str, only: set[str], rows: list[tuple[str, str, str, str]]) -> None:
    notes = _comments(st.cls)
    if st.tag_field and st.tag is not None:
        rows.append((f"{path}.{st.tag_field}", f"`{st.tag}`", "required", "selects this kind"))
    for f in st.fields:
        key = f"{path}.{f.encode_name}"
        note = notes.get(f.name, "")
        if key in only or any(key.startswith(o + ".") for o in only) or path in only:
            note = ("*service-wide only*. " + note).strip()
        rows.append((key, _type(f.type), _default(f), note))
        for sub in _struct_of(f.type):
            _rows(sub, _child_path(key, f.type), only, rows)


def render() -> str:
    sys.path.insert(0, str(OUT.parent.parent))
    from aiwg_service import config, schemas  # noqa: F401  (registers every section)

    only = set(config.SERVICE_ONLY)
    out = [HEADER]
    for name, section in config.SECTIONS.items():
        doc_type = section.doc_type or section.type
        out.append(f"\n## `{name}`\n")
        if name in only:
            out.append("*Service-wide only*: read from the service-wide file; a project's file cannot set it.\n")
        if name in LOOSE_NOTES:
            out.append(f"`{name}` is {LOOSE_NOTES[name]}.\n")
            continue
        info = mi.type_info(doc_type)
        rows: list[tuple[str, str, str, str]] = []
        structs = _struct_of(info)
        if structs:
            own = structs[0].cls.__dict__.get("__doc__") if len(structs) == 1 else None
            doc = inspect.cleandoc(own) if own else ""
            if doc:
                out.append(doc.split("\n\n")[0].replace("\n", " ") + "\n")
            for st in structs:
                _rows(st, _child_path(name, info), only, rows)
        else:
            rows.append((name, _type(info), _default_of(section), ""))
        out.append("| key | type | default | notes |\n|---|---|---|---|")
        out.extend("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in (f"`{k}`", t, d, n)) + " |"
                   for k, t, d, n in rows)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _default_of(section: Any) -> str:
    return f"`{json.dumps(msgspec.to_builtins(section.default()))}`"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run .venv/bin/python docs/gen_config_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
