"""A rule's shell command gets umask 0022 even though the hardened unit runs the service with UMask=0077."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import asyncio, os, sys
os.umask(0o077)  # as UMask=0077 in the unit leaves it
from aiwg_service.protocol import Event
from aiwg_service.rules.conditions import Ctx, run_shell
ev = Event(id="e1", type="file.create", time="2026-01-01T00:00:00Z", project=sys.argv[1], source="watch",
           data={"path": "src/a.txt"})
res = asyncio.run(run_shell('touch made.txt; mkdir made.d; echo "$AIWG_EVENT_PATH"; umask; exit 3',
                            Ctx(ev, sys.argv[1], "r", "run1"), 10))
print(repr(res))
open("service-own.txt", "w").close()
"""


def test_rule_commands_create_ordinary_files_under_umask_0077(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=tmp_path, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "made.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "made.d").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "service-own.txt").stat().st_mode & 0o777 == 0o600  # the service's own stay private
    out = res.stdout
    assert "src/a.txt" in out and "0022" in out  # the event reached the command, which ran under 0022
    assert "'exit': 3" in out, out  # and its exit status came back
