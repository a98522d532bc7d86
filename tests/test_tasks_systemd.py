"""use_systemd_scope=True (a transient unit per task) against a real systemd user manager in a private mount namespace.

Self-contained (no shared fixture): as root, ``unshare -m`` gives us a private
/run/systemd so a throwaway ``systemd --user`` can boot.  Skipped where that
is impossible, unless AIWG_REQUIRE_SYSTEMD is set (then it fails).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tasks_support import kill_quiet, pid_alive

DRIVER = Path(__file__).resolve().parent / "tasks_driver.py"
SYSTEMD = "/lib/systemd/systemd"

SCRIPT = r"""
set -e
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/systemd/system
export XDG_RUNTIME_DIR="$RT"
unset DBUS_SESSION_BUS_ADDRESS
"$SYSTEMD" --user >"$RT/systemd.log" 2>&1 &
sd=$!
trap 'kill $sd 2>/dev/null; wait $sd 2>/dev/null' EXIT
for _ in $(seq 100); do [ -S "$RT/systemd/private" ] && break; sleep 0.05; done
"$PY" "$DRIVER" scope "$STATE" "$PROJ"
"""

pytestmark = pytest.mark.systemd


def _usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("unshare", "systemd-run", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    if not os.path.exists(SYSTEMD):
        return f"{SYSTEMD} not found"
    return None


def test_systemd_scope(tmp_path: Path) -> None:
    why = _usable()
    if why:
        if os.environ.get("AIWG_REQUIRE_SYSTEMD"):
            pytest.fail(f"systemd scope test required but {why}")
        pytest.skip(why)
    rt = tmp_path / "rt"
    rt.mkdir(mode=0o700)
    state, proj = tmp_path / "state", tmp_path / "proj"
    state.mkdir()
    proj.mkdir()
    env = {**os.environ, "RT": str(rt), "SYSTEMD": SYSTEMD, "PY": sys.executable, "DRIVER": str(DRIVER),
           "STATE": str(state), "PROJ": str(proj)}
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", SCRIPT],
                       env=env, capture_output=True, text=True, timeout=90)
    gcfile = state / "gc.pid"
    gc = int(gcfile.read_text()) if gcfile.exists() else 0
    try:
        required = os.environ.get("AIWG_REQUIRE_SYSTEMD")
        if r.returncode != 0 and not required and "Permission denied" in r.stderr:
            pytest.skip(f"cannot set up a private systemd here: {r.stderr[-300:]}")
        assert r.returncode == 0, r.stderr + (rt / "systemd.log").read_text()[-2000:]
        a, b = (json.loads(line) for line in r.stdout.splitlines()[-2:])
        assert a["state"] == "completed", a
        assert f"aiwg-task-{a['id']}.service" in a["result"]  # its own transient unit
        assert f"AIWG_TASK_ID={a['id']}" in a["result"]
        assert b["state"] == "timeout", b
        assert gc and not pid_alive(gc), "grandchild in the scope survived the timeout"
    finally:
        if gc:
            kill_quiet(gc)
