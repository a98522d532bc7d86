"""Under the real systemd user manager: `systemctl --user restart aiwg` never kills anyone's tmux sessions,
because the service starts the tmux server in its own scope, outside the service's cgroup."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from systemd_env import UserManager
from test_systemd_e2e import BIN, Svc, dropin

from tests.tasks_support import make_fakebin


@pytest.fixture
def chat_svc(sd: UserManager, tmp_path: Path) -> Iterator[Svc]:
    for d in (sd.config_home / "aiwg", sd.state_home / "aiwg"):
        shutil.rmtree(d, ignore_errors=True)
    config_home = tmp_path / "config"
    config_home.mkdir()
    fakebin = make_fakebin(tmp_path)
    path = f"{fakebin}:{BIN}:/usr/local/bin:/usr/bin:/bin"
    for unit in ("aiwg.service", "aiwg@.service"):
        sd.install_unit_text(f"{unit}.d/test.conf", dropin(config_home) + f"Environment=PATH={path}\n")
    sd.install_units(BIN)
    svc = Svc(sd, config_home)
    yield svc
    sd.run(["tmux", "-S", str(sd.runtime_dir / "aiwg" / "tmux.sock"), "kill-server"], check=False)


def test_restart_of_the_unit_leaves_sessions_alive(chat_svc: Svc) -> None:
    svc, sd = chat_svc, chat_svc.sd
    project = Path(tempfile.mkdtemp(prefix="aiwgc", dir="/tmp"))
    try:
        svc.sd.systemctl("start", "aiwg.socket", check=True)
        svc.ctl("project", "add", str(project))
        sid = svc.ctl("session", "new", "before the restart", "--project", str(project)).stdout.strip()
        sd.wait_for(lambda: "Done: before the restart" in svc.ctl("session", "show", sid).stdout, timeout=30,
                    message="the session's first answer")
        listed = json.loads(svc.ctl("session", "list", "--json").stdout)["sessions"]
        tmux_pid = sd.run(["tmux", "-S", listed[0]["socket"], "display-message", "-p", "#{pid}"],
                          check=True).stdout.strip()
        cgroup = Path(f"/proc/{tmux_pid}/cgroup").read_text()
        assert "aiwg-tmux-" in cgroup and "aiwg.service" not in cgroup, cgroup

        old = svc.main_pid()
        sd.systemctl("restart", "aiwg.service", check=True)
        assert svc.main_pid() != old
        assert Path(f"/proc/{tmux_pid}").exists()  # the tmux server lives on
        state = json.loads(svc.ctl("session", "list", "--json").stdout)["sessions"]
        assert [(s["id"], s["state"]) for s in state] == [(sid, "waiting for input")]
        svc.ctl("session", "send", sid, "after the restart")
        sd.wait_for(lambda: "Done: after the restart" in svc.ctl("session", "show", sid).stdout, timeout=30,
                    message="an answer after the restart")
        svc.ctl("session", "send", sid, "/exit")
        done = sd.wait_for(lambda: (t := json.loads(svc.ctl("task", "get", sid, "--json").stdout))["state"]
                           != "running" and t, timeout=30, message="the session's end to be recorded")
        assert done["state"] == "completed" and done["exit_code"] == 0 and done["source"] == "session"
    finally:
        shutil.rmtree(project, ignore_errors=True)
