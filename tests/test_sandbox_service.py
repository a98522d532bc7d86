"""The sandbox through the real service in the foreground (no user manager: bubblewrap): on by default for
the built-in profiles, shown by ``task get``, ``sandbox check`` and ``doctor``, narrowed (never widened) by a
project file, and a task refused with a clear message where no mechanism exists."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from service_fixture import ServiceEnv, wait_for

from tests.tasks_support import make_fakebin

SSH_KEY = "SSH-PRIVATE-KEY-PLANTED"


@pytest.fixture(autouse=True)
def _bwrap() -> None:
    if shutil.which("bwrap") is None:
        if os.environ.get("AIWG_NO_SKIP"):
            pytest.fail("bubblewrap is not installed")
        pytest.skip("bubblewrap is not installed")


def setup(env: ServiceEnv, agents: dict[str, Any] | None = None, path: str | None = None) -> Path:
    home = env.tmp / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text(SSH_KEY)
    (home / ".claude").mkdir()
    other = env.tmp / "other"
    other.mkdir()
    (other / ".env").write_text("OTHER-PROJECT-SECRET")
    env.env["HOME"] = str(home)
    env.env["PATH"] = f"{make_fakebin(env.tmp)}:{path or env.env['PATH']}"
    cfg = env.config_home / "aiwg" / "daemon.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps({"daemon": {"stop_timeout_seconds": 0}, "agents": agents or {}}))
    env.start(projects=[env.project, other])
    return home


def run_task(env: ServiceEnv, prompt: str, agent: str = "claude") -> dict[str, Any]:
    tid = env.call("task.submit", {"prompt": prompt, "agent": agent, "project": str(env.project)})["taskId"]
    return wait_for(lambda: (t := env.call("task.get", {"taskId": tid}))["state"] in
                    ("completed", "failed") and t, 60, what=f"{tid} to finish")


def test_on_by_default_for_claude_and_shell(svc_env: ServiceEnv) -> None:
    home = setup(svc_env)
    other = svc_env.tmp / "other"
    sock = svc_env.socket
    t = run_task(svc_env, f"probe read={home}/.ssh/id_ed25519 list={home}/.ssh read={other}/.env "
                          f"write={svc_env.project}/mine write={other}/evil unix={sock}")
    assert t["state"] == "completed", t
    r = json.loads(t["result"].removeprefix("PROBE "))
    assert r[f"write={svc_env.project}/mine"] == "ok"
    assert SSH_KEY not in json.dumps(r) and "OTHER-PROJECT" not in json.dumps(r)
    assert not r[f"unix={sock}"].startswith("ok")
    assert not (other / "evil").exists()
    assert t["handle"]["sandbox"]["mechanism"] == "bubblewrap"
    shown = svc_env.ctl("task", "get", t["id"], check=True).stdout
    assert "sandbox:" in shown and "bubblewrap" in shown and str(svc_env.project) in shown

    # the built-in shell profile too
    t = run_task(svc_env, f"cat {home}/.ssh/id_ed25519 > leaked.txt 2>&1; echo yes > wrote.txt", agent="shell")
    assert (svc_env.project / "wrote.txt").read_text() == "yes\n"
    assert SSH_KEY not in (svc_env.project / "leaked.txt").read_text()
    assert t["handle"]["sandbox"]["mechanism"] == "bubblewrap"


def test_check_doctor_and_a_project_file_only_narrows(svc_env: ServiceEnv) -> None:
    setup(svc_env, agents={"open": {"kind": "shell", "sandbox": "off"},
                           "web": {"kind": "shell", "sandbox": {"network": "allow", "allow_hosts": ["example.com"]}}})
    out = svc_env.ctl("sandbox", "check", "claude", "--project", str(svc_env.project), check=True).stdout
    lines = {k.strip(): v.strip() for k, _, v in (x.partition(":") for x in out.splitlines())}
    assert lines["mechanism"].startswith("bubblewrap") and lines["network"] == "full", out
    assert float(lines["exposure"].split()[0]) <= 4.0, out
    res = svc_env.call("sandbox.check", {"project": str(svc_env.project)})
    rows = {r["profile"]: r for r in res["profiles"]}
    assert rows["open"]["mechanism"] == "off" and rows["shell"]["mechanism"] == "bubblewrap"
    assert rows["claude"]["score"] is not None and rows["claude"]["score"] <= 4.0
    assert rows["shell"]["memory_deny_write_execute"] is True and rows["claude"]["memory_deny_write_execute"] is False
    assert rows["web"]["allow_hosts"] == ["example.com"]
    doc = svc_env.ctl("doctor", "--json").stdout
    checks = {c["name"]: c for c in json.loads(doc)["checks"]}
    assert checks["sandbox claude"]["detail"] == "bubblewrap" and checks["sandbox open"]["detail"].startswith("off")

    # a cloned repository tries to turn it off, to widen the network and to write the owner's home: ignored;
    # it may narrow the network
    svc_env.write_project_config({"agents": {
        "claude": {"sandbox": "off"},
        "web": {"kind": "shell", "sandbox": {"network": "full", "write": ["~"], "allow_hosts": ["evil.example"]}},
        "shell": {"kind": "shell", "sandbox": {"network": "none"}}}})
    svc_env.call("daemon.reload")
    wait_for(lambda: svc_env.call("sandbox.check", {"project": str(svc_env.project), "profile": "shell"})
             ["profiles"][0]["network"] == "none", 20, what="the project's narrowing to apply")
    rows = {r["profile"]: r for r in svc_env.call("sandbox.check", {"project": str(svc_env.project)})["profiles"]}
    assert rows["claude"]["mechanism"] == "bubblewrap" and rows["claude"]["enabled"]
    assert rows["web"]["network"] == "allow" and rows["web"]["allow_hosts"] == ["example.com"]  # not widened
    assert str(svc_env.tmp / "home") not in rows["web"]["write"]
    res = svc_env.ctl("sandbox", "check", "nosuch")
    assert res.returncode != 0 and "profile" in res.stderr


def test_refused_without_a_mechanism_unless_off(svc_env: ServiceEnv) -> None:
    tools = svc_env.tmp / "tools"  # a PATH with what the agents need, and no bwrap
    tools.mkdir()
    for name in ("python3", "env", "sh", "cat"):
        src = sys.executable if name == "python3" else shutil.which(name)
        assert src
        (tools / name).symlink_to(src)
    setup(svc_env, agents={"open": {"kind": "shell", "sandbox": "off"}}, path=str(tools))
    t = run_task(svc_env, "hello")
    assert t["state"] == "failed" and "no sandbox is possible here" in t["error"] and "bubblewrap" in t["error"]
    t = run_task(svc_env, "echo unconfined > open.txt", agent="open")
    assert t["state"] == "completed" and (svc_env.project / "open.txt").exists()
    assert t["handle"]["sandbox"]["mechanism"] == "off"
    doc = json.loads(svc_env.ctl("doctor", "--json").stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    assert not checks["sandbox claude"]["ok"] and "refused" in checks["sandbox claude"]["detail"]
