"""Agents outlive the service, in the foreground (the detached runner): graceful stop, kill -9,
a run that ends while the service is down, the start-up crash window, and ``stop --agents``.
(The same under the real systemd user manager: test_agents_systemd.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from service_fixture import BIN, ServiceEnv, wait_for

from aiwg_service.executors.local import SHIM_FILE
from aiwg_service.tasks.model import TaskState
from aiwg_service.tasks.store import Store
from tests.tasks_support import make_fakebin
from tests.test_tasks_api import wait_state, write_service_config

FAKE = str(Path(__file__).with_name("fake_claude.py"))
#: The fake claude run with this interpreter, whatever PATH the service has.
FAKE_PROFILE = {"kind": "command", "command": [sys.executable, FAKE, "-p", "{prompt}"]}


def agents(**extra: Any) -> dict[str, Any]:
    return {"fake": FAKE_PROFILE, "sh": {"kind": "shell"}, **extra}


def start(env: ServiceEnv, daemon: dict[str, Any] | None = None, *, agents: dict[str, Any]) -> None:
    env.env["PATH"] = f"{make_fakebin(env.tmp)}:{env.env['PATH']}"
    write_service_config(env, daemon, agents)
    env.start()


def follower(env: ServiceEnv, tid: str) -> subprocess.Popen[str]:
    """``aiwgctl task logs -f --raw``: the log as written, every byte once."""
    return subprocess.Popen([str(BIN / "aiwgctl"), "task", "logs", tid, "-f", "--raw"], env=env.env,
                            cwd=env.project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ticks_in(text: str) -> list[int]:
    out = []
    for line in text.splitlines():
        if line.startswith("{") and '"tick ' in line:
            msg = json.loads(line)
            out.append(int(msg["message"]["content"][0]["text"].split()[1]))
    return out


def test_agent_survives_stop_and_kill9_with_every_line_once(svc_env: ServiceEnv) -> None:
    start(svc_env, agents=agents())
    mark = svc_env.tmp / "mark"
    n = 40
    t = svc_env.call("task.submit", {"agent": "fake", "prompt": f"ticks={n} tick=0.25 mark={mark}"})
    tid = t["taskId"]
    wait_state(svc_env, tid, "running")
    f = follower(svc_env, tid)
    try:
        log_path = Path(svc_env.call("task.get", {"taskId": tid})["log_path"])
        wait_for(lambda: log_path.exists() and len(ticks_in(log_path.read_text())) >= 3, 20, what="first ticks")
        # the follower is connected before the stop (a follower that never reached the service fails at once)
        wait_for(lambda: svc_env.call("daemon.status")["subsystems"]["supervisor"]["log_followers"] >= 1, 20,
                 what="the follower to be connected")
        assert svc_env.stop() == 0  # graceful: the agent keeps running
        assert "start" in mark.read_text() and "end" not in mark.read_text()
        svc_env.start()
        got = svc_env.call("task.get", {"taskId": tid})
        assert got["state"] == "running" and got["adopted"] == 1 and got["detached_at"]
        listing = svc_env.ctl("task", "list", check=True).stdout
        assert any(tid in ln and "running (adopted)" in ln for ln in listing.splitlines()), listing
        time.sleep(1.0)
        assert svc_env.proc is not None
        svc_env.proc.send_signal(signal.SIGKILL)
        svc_env.proc.wait(10)
        time.sleep(0.5)
        svc_env.start()
        done = wait_state(svc_env, tid, "completed", timeout=40)
        out, err = f.communicate(timeout=30)
    finally:
        if f.poll() is None:
            f.kill()
    assert f.returncode == 0, err
    assert done["attempts"] == 1 and done["interruptions"] == 0 and done["adopted"] == 2
    assert done["result"] == f"Done: ticks={n} tick=0.25 mark={mark}"
    assert done["cost_usd"] == 0.0123 and done["cost_status"] == "reported" and done["session_id"]
    log = Path(done["log_path"]).read_text()
    assert ticks_in(log) == list(range(n))
    assert ticks_in(out) == list(range(n)), "the follower saw every line exactly once"
    assert out == log
    assert [ln.split()[0] for ln in mark.read_text().splitlines()] == ["start", "end"]  # ran once
    started = svc_env.call("events.list", {"type": "task.started"})["events"]
    assert [e["data"]["taskId"] for e in started].count(tid) <= 1


def test_agent_that_finished_while_down_is_recorded_with_its_real_result(svc_env: ServiceEnv) -> None:
    start(svc_env, agents=agents())
    ok = svc_env.call("task.submit", {"agent": "fake", "prompt": "sleep=1 ok"})["taskId"]
    bad = svc_env.call("task.submit", {"agent": "fake", "prompt": "sleep=1 fail bad-cost"})["taskId"]
    wait_state(svc_env, ok, "running")
    wait_state(svc_env, bad, "running")
    assert svc_env.stop() == 0
    time.sleep(2.0)
    svc_env.start()
    a = wait_state(svc_env, ok, "completed")
    assert a["result"] == "Done: sleep=1 ok" and a["cost_usd"] == 0.0123 and a["exit_code"] == 0
    assert a["attempts"] == 1 and a["interruptions"] == 0
    b = wait_state(svc_env, bad, "failed")
    assert b["exit_code"] == 1 and b["error"] == "agent reported error_during_execution"
    assert b["cost_usd"] is None and b["cost_status"] == "malformed"  # cost unknown, and marked so
    left = [p.name for p in (svc_env.state_dir / "runs").iterdir() if p.name != SHIM_FILE]
    assert not left  # run records are dropped once recorded


def test_crash_window_launch_never_recorded_runs_once(svc_env: ServiceEnv) -> None:
    """A row recorded 'running' whose launch never happened (the service died in between): the
    next start claims the attempt (a launch still in flight would give up) and runs it once."""
    start(svc_env, agents=agents())
    assert svc_env.stop() == 0
    mark = svc_env.tmp / "mark"
    store = Store(svc_env.state_dir)
    t = store.submit(str(svc_env.project), f"mark={mark}", agent="fake")
    started = store.mark_started(t.id, log_path=str(svc_env.state_dir / "logs" / f"{t.id}.log"), executor="local")
    assert started is not None and started.state is TaskState.running
    store.close()
    svc_env.start()
    done = wait_state(svc_env, t.id, "completed")
    assert done["attempts"] == 2  # attempt 1 was claimed by recovery; attempt 2 ran
    assert [ln.split()[0] for ln in mark.read_text().splitlines()] == ["start", "end"]


def test_stop_with_agents_interrupts_them(svc_env: ServiceEnv) -> None:
    start(svc_env, {"stop_timeout_seconds": 0}, agents=agents(sh0={"kind": "shell", "retry": 0}))
    tid = svc_env.call("task.submit", {"agent": "sh0", "prompt": "sleep 60"})["taskId"]
    wait_state(svc_env, tid, "running")
    res = svc_env.ctl("stop", "--agents", check=True)  # no user manager here: asks the service itself
    assert res.stdout.strip() == "stopping the foreground service and its agents"
    assert svc_env.proc is not None
    assert svc_env.proc.wait(20) == 0
    svc_env.start()
    t = svc_env.call("task.get", {"taskId": tid})
    assert t["state"] == "failed" and t["error"] == "interrupted" and t["interruptions"] == 1
