"""The manual cannot drift from the code: the config reference is generated from the registered schema and
must be current (a schema change without `docs/gen_config_reference.py` fails here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_config_reference_is_current() -> None:
    res = subprocess.run([sys.executable, str(REPO / "docs" / "gen_config_reference.py"), "--check"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr + "\n(regenerate it: .venv/bin/python docs/gen_config_reference.py)"


def test_config_reference_names_every_section_and_service_only_keys() -> None:
    text = (REPO / "docs" / "config-reference.md").read_text()
    from aiwg_service import config, schemas  # noqa: F401

    for name in config.SECTIONS:
        assert f"\n## `{name}`\n" in text, name
    assert "| `messaging.users` | map of string to one of `read`, `write` | `{}` | *service-wide only*." in text
    assert "| `daemon.max_parallel_actions` | int (≥ 1, ≤ 256) | `3` |" in text


def _anchors(md: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to dashes (code fences skipped)."""
    out, fence = set(), False
    for line in md.splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and re.match(r"^#{1,6} ", line):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_every_link_of_the_manual_leads_somewhere() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue  # a URL
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
