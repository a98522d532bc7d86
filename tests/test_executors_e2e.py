"""Tasks routed to remote executors through the real service: Slurm end to end (output, exit code, timeout,
cancel, a service restart while a job runs), an ssh host that is down holds its task queued with the reason
until it is back, and an executor's max_parallel."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

from service_fixture import ServiceEnv, wait_for
from slurm_env import SlurmCluster
from sshd_env import SshServer

FAKE = str(Path(__file__).resolve().parent / "fake_claude.py")


def profile(executor: str) -> dict[str, Any]:
    return {"kind": "command", "command": [sys.executable, FAKE, "-p", "{prompt}"], "executor": executor}


def configure(env: ServiceEnv, executors: dict[str, Any]) -> None:
    path = env.config_home / "aiwg" / "daemon.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"executors": executors,
                                "agents": {name: profile(name) for name in executors}}))


def submit(env: ServiceEnv, prompt: str, agent: str, **kw: Any) -> str:
    return env.call("task.submit", {"prompt": prompt, "agent": agent, **kw})["taskId"]


def task(env: ServiceEnv, tid: str) -> dict[str, Any]:
    return env.call("task.get", {"taskId": tid})


def until_state(env: ServiceEnv, tid: str, states: set[str], timeout: float = 60.0) -> dict[str, Any]:
    return wait_for(lambda: (t := task(env, tid))["state"] in states and t, timeout,
                    interval=0.2, what=f"task {tid} to reach {states}")


def test_slurm_end_to_end(svc_env: ServiceEnv, slurm_cluster: SlurmCluster) -> None:
    svc_env.env["PATH"] = f"{slurm_cluster.bin_dir}:{svc_env.env['PATH']}"
    configure(svc_env, {"cluster": {"kind": "slurm", "poll_min_seconds": 0.5, "poll_max_seconds": 2}})
    svc_env.start()

    ok = submit(svc_env, "hello from slurm", "cluster")
    fail = submit(svc_env, "fail", "cluster")
    slow = submit(svc_env, "sleep=30", "cluster", timeout=2)
    done = until_state(svc_env, ok, {"completed", "failed"})
    assert done["state"] == "completed" and done["executor"] == "cluster" and done["handle"]["job"].isdigit()
    assert done["session_id"] and done["result"]
    assert until_state(svc_env, fail, {"completed", "failed"})["exit_code"] == 1
    to = until_state(svc_env, slow, {"timeout", "failed", "completed"})
    assert to["state"] == "timeout"

    # cancel: the job is gone from squeue
    c = submit(svc_env, "sleep=60", "cluster")
    job = until_state(svc_env, c, {"running"}) and wait_for(lambda: (task(svc_env, c).get("handle") or {}).get("job"),
                                                             30, what="the job id")
    svc_env.call("task.cancel", {"taskId": c})
    assert until_state(svc_env, c, {"cancelled", "failed", "completed"})["state"] == "cancelled"
    wait_for(lambda: job not in slurm_cluster.run("squeue", "-h", "-o", "%i").stdout.split(), 30,
             interval=0.2, what=f"job {job} gone from squeue")

    # a restart while a job runs: re-adopted by job id, completed once
    r = submit(svc_env, "sleep=4", "cluster")
    wait_for(lambda: (task(svc_env, r).get("handle") or {}).get("job"), 30, what="the job id")
    assert svc_env.stop(signal.SIGTERM) == 0
    svc_env.start()
    final = until_state(svc_env, r, {"completed", "failed", "timeout", "cancelled"})
    assert final["state"] == "completed" and final["attempts"] == 1 and final["adopted"] >= 1
    log = Path(final["log_path"]).read_text()
    assert log.count('"type":"result"') + log.count('"type": "result"') == 1


def test_ssh_down_holds_queued_then_runs_and_max_parallel(svc_env: ServiceEnv, sshd: SshServer) -> None:
    configure(svc_env, {"box": {"kind": "ssh", "host": sshd.alias, "ssh_config": str(sshd.ssh_config),
                                "remote_state_dir": str(svc_env.tmp / "remote"), "max_parallel": 1,
                                "connect_timeout_seconds": 3}})
    sshd.stop()
    try:
        svc_env.start()
        held = submit(svc_env, "hello over ssh", "box")
        t = wait_for(lambda: (x := task(svc_env, held))["held_reason"] and x, 30, what="the held reason")
        assert t["state"] == "queued" and "box" in t["held_reason"] and t["attempts"] in (0, 1)
        status = svc_env.call("daemon.status")
        assert status["subsystems"]["executors"]["box"]["state"] == "down"
    finally:
        sshd.start()
    done = until_state(svc_env, held, {"completed", "failed"}, timeout=90)
    assert done["state"] == "completed" and done["held_reason"] is None and done["result"]

    # max_parallel 1: the second waits queued, with the reason, while the first runs
    a = submit(svc_env, "sleep=3", "box")
    b = submit(svc_env, "sleep=1", "box")
    until_state(svc_env, a, {"running"})
    tb = wait_for(lambda: (x := task(svc_env, b))["held_reason"] and x, 30, what="b waiting")
    assert tb["state"] == "queued" and "max_parallel" in tb["held_reason"]
    assert until_state(svc_env, a, {"completed"})["state"] == "completed"
    fb = until_state(svc_env, b, {"completed", "failed"})
    assert fb["state"] == "completed" and fb["started_at"] >= task(svc_env, a)["finished_at"]
    def box() -> dict[str, Any]:
        return {e["name"]: e for e in svc_env.call("executors.list")["executors"]}["box"]

    row = wait_for(lambda: (r := box())["running"] == 0 and r, 30, what="the run's slot freed")
    assert row["queued"] == 0 and row["state"] == "up" and row["max_parallel"] == 1
