"""Agents outlive the service under the real systemd user manager (tests/systemd_env.py): each task
runs as its own transient unit ``aiwg-task-<id>.service``, outside ``aiwg.service``'s cgroup, and
survives ``systemctl --user restart aiwg``, a ``kill -9`` of the service and ``stop`` + ``start``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import test_systemd_e2e
from systemd_env import UserManager
from test_agents_survive import ticks_in
from test_systemd_e2e import BIN, Svc

project = test_systemd_e2e.project  # fixtures shared with the service's e2e tests
svc = test_systemd_e2e.svc

FAKE = str(Path(__file__).with_name("fake_claude.py"))


def configure(s: Svc) -> None:
    cfg = s.config_home / "aiwg" / "daemon.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps({"daemon": {"stop_timeout_seconds": 1}, "agents": {"fake": {
        "kind": "command", "command": [sys.executable, FAKE, "-p", "{prompt}"], "memory_max": "512M",
        "cpu_quota": "80%"}}}))


def task(s: Svc, tid: str) -> dict:
    return json.loads(s.ctl("task", "get", tid, "--json").stdout)


def wait_task(s: Svc, tid: str, pred, timeout: float = 30.0) -> dict:
    def check() -> dict | None:
        t = task(s, tid)
        return t if pred(t) else None

    return s.sd.wait_for(check, timeout=timeout, message=f"task {tid}")


def test_agent_survives_restart_kill9_and_stop_start(svc: Svc, project: Path) -> None:
    sd: UserManager = svc.sd
    configure(svc)
    sd.systemctl("start", "aiwg.socket", check=True)
    svc.ctl("project", "add", str(project))
    mark = project / "mark"
    n = 60
    res = json.loads(svc.ctl("task", "submit", f"ticks={n} tick=0.25 mark={mark}", "--agent", "fake",
                             "--json", cwd=project).stdout)
    tid = res["taskId"]
    unit = f"aiwg-task-{tid}.service"
    wait_task(svc, tid, lambda t: t["state"] == "running" and t.get("handle"))
    props = sd.show(unit, "ActiveState", "ControlGroup", "MemoryMax", "CPUQuotaPerSecUSec", "NoNewPrivileges")
    assert props["ActiveState"] == "active"
    assert "aiwg.service" not in props["ControlGroup"]  # not in the service's cgroup
    assert props["MemoryMax"] == str(512 * 1024 * 1024) and props["CPUQuotaPerSecUSec"] == "800ms"
    assert props["NoNewPrivileges"] == "yes"  # the agent has its own sandbox (not the service's)
    follower = subprocess.Popen([str(BIN / "aiwgctl"), "task", "logs", tid, "-f", "--raw"], env=svc.env,
                                cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        log = Path(task(svc, tid)["log_path"])
        sd.wait_for(lambda: log.exists() and len(ticks_in(log.read_text())) >= 2, timeout=20, message="ticks")
        # the follower is connected (it printed) before the service goes: aiwgctl's start-up on a loaded
        # machine can outlast the first ticks, and a follower that never connected rightly gives up
        assert follower.stdout is not None
        assert select.select([follower.stdout], [], [], 30)[0], "the follower printed nothing"
        first = os.read(follower.stdout.fileno(), 1 << 20).decode()  # communicate() reads the fd too
        pid = svc.main_pid()
        sd.systemctl("restart", "aiwg.service", check=True)
        assert svc.main_pid() not in (0, pid)
        assert task(svc, tid)["adopted"] == 1
        time.sleep(1.0)
        pid = svc.main_pid()
        os.kill(pid, signal.SIGKILL)  # systemd restarts it (Restart=on-failure)
        sd.wait_for(lambda: svc.main_pid() not in (0, pid) and svc.show("ActiveState")["ActiveState"] == "active",
                    timeout=20, message="restart after kill -9")
        wait_task(svc, tid, lambda t: t["adopted"] == 2)
        time.sleep(1.0)
        sd.systemctl("stop", "aiwg.service", check=True)
        assert sd.show(unit, "ActiveState")["ActiveState"] == "active"  # still running
        time.sleep(0.5)
        sd.systemctl("start", "aiwg.service", check=True)
        done = wait_task(svc, tid, lambda t: t["state"] not in ("queued", "running"), timeout=40)
        out, err = follower.communicate(timeout=30)
        out = first + out
    finally:
        if follower.poll() is None:
            follower.kill()
    assert done["state"] == "completed", done
    assert done["attempts"] == 1 and done["interruptions"] == 0 and done["adopted"] == 3
    assert done["cost_usd"] == 0.0123 and done["session_id"] and done["result"].startswith("Done: ticks=")
    text = Path(done["log_path"]).read_text()
    assert ticks_in(text) == list(range(n))
    assert follower.returncode == 0, err
    assert ticks_in(out) == list(range(n)) and out == text  # every line, once
    assert [ln.split()[0] for ln in mark.read_text().splitlines()] == ["start", "end"]  # ran once
    sd.wait_for(lambda: sd.show(unit, "LoadState")["LoadState"] == "not-found", timeout=10,
                message="the finished unit is collected")
    listing = svc.ctl("task", "list", cwd=project).stdout
    assert tid in listing


def test_stop_agents_stops_the_unit(svc: Svc, project: Path) -> None:
    sd = svc.sd
    configure(svc)
    sd.systemctl("start", "aiwg.socket", check=True)
    svc.ctl("project", "add", str(project))
    tid = json.loads(svc.ctl("task", "submit", "sleep=300", "--agent", "fake", "--json", cwd=project).stdout)["taskId"]
    wait_task(svc, tid, lambda t: t["state"] == "running" and t.get("handle"))
    listing = svc.ctl("task", "list", cwd=project).stdout
    assert "running" in listing
    res = sd.run([str(BIN / "aiwgctl"), "stop", "--agents"], env=svc.env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert svc.show("ActiveState")["ActiveState"] == "inactive"
    unit = f"aiwg-task-{tid}.service"
    sd.wait_for(lambda: sd.show(unit, "ActiveState")["ActiveState"] in ("inactive", "failed")
                or sd.show(unit, "LoadState")["LoadState"] == "not-found", timeout=20, message="agent unit stopped")
    t = task(svc, tid)  # re-queued per retry (1) and started again by the activated service
    assert t["interruptions"] == 1
    svc.ctl("task", "cancel", tid)


def test_claude_only_in_local_bin_runs_under_the_user_manager(svc: Svc, project: Path) -> None:
    """Claude Code's installer puts ``claude`` in ~/.local/bin, which a user manager's PATH lacks: the
    service finds it there, and ``aiwgctl doctor`` says which binary the profile runs."""
    sd: UserManager = svc.sd
    local_bin = sd.home / ".local" / "bin"
    local_bin.mkdir(parents=True, exist_ok=True)
    (local_bin / "claude").symlink_to(FAKE)
    try:
        configure(svc)
        sd.systemctl("start", "aiwg.socket", check=True)
        svc.ctl("project", "add", str(project))
        on_path = sd.run(["systemd-run", "--user", "--wait", "--pipe", "--quiet", "sh", "-c",
                          "command -v claude || echo none"], as_user=True).stdout.strip()
        assert on_path == "none", "the user manager's PATH must not have claude for this test"
        res = json.loads(svc.ctl("task", "submit", "hello from local bin", "--json", cwd=project).stdout)
        done = wait_task(svc, res["taskId"], lambda t: t["state"] not in ("queued", "running"), timeout=60)
        assert done["state"] == "completed", done
        assert done["result"] == "Done: hello from local bin"
        doc = svc.ctl("doctor", check=False).stdout
        row = next(ln for ln in doc.splitlines() if ln.split()[:1] == ["agent"])  # the claude profile's row
        assert row.split()[-1] == str(local_bin / "claude"), doc
    finally:
        (local_bin / "claude").unlink()
