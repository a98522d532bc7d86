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


def test_dashboard_panes_ride_out_a_kill_9_and_a_restart_of_the_unit(chat_svc: Svc) -> None:
    svc, sd = chat_svc, chat_svc.sd
    project = Path(tempfile.mkdtemp(prefix="aiwgd", dir="/tmp"))
    sock = str(sd.runtime_dir / "aiwg" / "tmux.sock")

    def pane(target: str) -> str:
        return sd.run(["tmux", "-S", sock, "capture-pane", "-p", "-J", "-t", target]).stdout

    def typed(text: str) -> None:
        sd.run(["tmux", "-S", sock, "send-keys", "-t", "=aiwg:.{top}", "-l", text], check=True)
        sd.run(["tmux", "-S", sock, "send-keys", "-t", "=aiwg:.{top}", "Enter"], check=True)

    try:
        svc.sd.systemctl("start", "aiwg.socket", check=True)
        svc.ctl("project", "add", str(project))
        assert "aiwg: created" in svc.ctl("attach", "--detach", "--project", str(project)).stdout
        sd.wait_for(lambda: "aiwg top" in pane("=aiwg:.{bottom}"), timeout=30, message="top in the dashboard")
        sd.wait_for(lambda: "you>" in pane("=aiwg:.{top}"), timeout=30, message="the REPL in the dashboard")
        tmux_pid = sd.run(["tmux", "-S", sock, "display-message", "-p", "#{pid}"], check=True).stdout.strip()
        cgroup = Path(f"/proc/{tmux_pid}/cgroup").read_text()
        assert "aiwg-tmux-" in cgroup and "aiwg.service" not in cgroup, cgroup
        # kill -9: systemd restarts it (Restart=on-failure); a line typed meanwhile is answered once
        old = svc.main_pid()
        sd.systemctl("kill", "--signal=SIGKILL", "aiwg.service", check=True)
        typed("typed across a kill")
        sd.wait_for(lambda: "Done: typed across a kill" in pane("=aiwg:.{top}"), timeout=60,
                    message="the answer after the kill -9")
        assert svc.main_pid() not in (0, old)
        # a plain restart: the panes stay and go on
        sd.systemctl("restart", "aiwg.service", check=True)
        typed("after the restart")
        sd.wait_for(lambda: "Done: after the restart" in pane("=aiwg:.{top}"), timeout=60,
                    message="the answer after the restart")
        task = json.loads(svc.ctl("task", "submit", "echo hi", "--agent", "shell", "--project", str(project),
                                  "--json").stdout)
        tid = task.get("taskId") or task.get("id")
        sd.wait_for(lambda: tid in pane("=aiwg:.{bottom}"), timeout=30, message="top following events again")
        assert Path(f"/proc/{tmux_pid}").exists()  # the same tmux server throughout
        screen = pane("=aiwg:.{top}")
        assert screen.count("Done: typed across a kill") == 1 and "reconnected to the service" in screen
        panes = sd.run(["tmux", "-S", sock, "list-panes", "-t", "=aiwg:", "-F", "#{pane_dead}"]).stdout.split()
        assert panes == ["0", "0"]
    finally:
        shutil.rmtree(project, ignore_errors=True)
