"""The manual cannot drift from the code: the config reference is generated from the registered schema and
must be current (a schema change without `docs/gen_config_reference.py` fails here)."""

from __future__ import annotations

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
