"""Interactive sessions get their tasks' sandbox: through bubblewrap in the foreground, as a transient unit with a
terminal (``systemd-run --pty``) under the user manager; a worktree session commits into its repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_fixture import ServiceEnv, wait_for
from systemd_env import UserManager
from test_chat_service import start_chat_service
from test_chat_systemd import chat_svc  # noqa: F401  (the fixture)
from test_systemd_e2e import Svc

SSH_KEY = "SSH-PRIVATE-KEY-PLANTED"


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args], cwd=cwd, check=True,
                   capture_output=True)


def plant(home: Path, project: Path) -> None:
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    (home / ".ssh" / "id_ed25519").write_text(SSH_KEY)
    git(project, "init", "-q", "-b", "main")
    (project / "README").write_text("hi\n")
    (project / ".gitignore").write_text(".aiwg/\nreport*.json\n")
    git(project, "add", "README", ".gitignore")
    git(project, "commit", "-q", "-m", "init")
    subprocess.run(["git", "config", "user.email", "a@t.invalid"], cwd=project, check=True)
    subprocess.run(["git", "config", "user.name", "agent"], cwd=project, check=True)


def words(home: Path, where: Path, report: Path, outside: Path) -> str:
    return (f"probe read={home}/.ssh/id_ed25519 list={home}/.ssh write={where}/mine-{where.name} write={outside}/evil "
            f"run=git+add+-A+&&+git+commit+-qm+from-the-session report={report}")


def check(report: Path, home: Path, where: Path, outside: Path) -> None:
    r = json.loads(report.read_text())
    answers = json.dumps(list(r.values()))
    assert SSH_KEY not in answers and "id_ed25519" not in answers, r
    assert r[f"write={where}/mine-{where.name}"] == "ok", r
    assert not (outside / "evil").exists()
    assert r["run=git+add+-A+&&+git+commit+-qm+from-the-session"] == "ok", r


@pytest.fixture
def fg(svc_env: ServiceEnv) -> Iterator[ServiceEnv]:
    if shutil.which("bwrap") is None and not os.environ.get("AIWG_NO_SKIP"):
        pytest.skip("bubblewrap is not installed")
    plant(svc_env.tmp / "home", svc_env.project)
    start_chat_service(svc_env)
    yield svc_env
    subprocess.run(["tmux", "-S", str(svc_env.runtime / "aiwg" / "tmux.sock"), "kill-server"], capture_output=True,
                   env=svc_env.env)


def test_foreground_sessions_run_under_bubblewrap(fg: ServiceEnv) -> None:
    home, outside = fg.tmp / "home", fg.tmp
    for wt in (None, "feat/box"):
        params = {"worktree": wt} if wt else {}
        report = fg.project / f"report-{wt is not None}.json"
        res = fg.call("session.new", {**params, "prompt": "x"})  # the cwd is known once it exists
        where = Path(res["worktree"]) if wt else fg.project
        fg.call("session.send", {"id": res["id"], "text": words(home, where, report if not wt else where /
                                                                 "report.json", outside)})
        rep = report if not wt else where / "report.json"
        wait_for(lambda rep=rep: rep.exists() and rep.stat().st_size > 0, 30, what="the session's probe")
        check(rep, home, where, outside)
        log = subprocess.run(["git", "log", "-1", "--format=%s", "feat/box" if wt else "main"], cwd=fg.project,
                             capture_output=True, text=True).stdout.strip()
        assert log == "from-the-session"


def test_sessions_under_the_user_manager_run_as_confined_units(chat_svc: Svc) -> None:  # noqa: F811
    svc, sd = chat_svc, chat_svc.sd
    sd_home: Path = sd.home
    project = Path(tempfile.mkdtemp(prefix="aiwgx", dir="/tmp"))
    try:
        plant(sd_home, project)
        svc.sd.systemctl("start", "aiwg.socket", check=True)
        svc.ctl("project", "add", str(project))
        report = project / "report.json"
        sid = svc.ctl("session", "new", "--project", str(project), words(sd_home, project, report, project.parent)
                      ).stdout.strip()
        sd.wait_for(lambda: report.exists() and report.stat().st_size > 0, timeout=30, message="the probe's report")
        check(report, sd_home, project, project.parent)
        units = sd.systemctl("list-units", "--type=service", "--no-legend", "run-*").stdout
        assert "aiwg interactive session" in units, units
        unit = units.split()[0].lstrip("●")
        assert sd.show(unit, "ProtectSystem")["ProtectSystem"] == "strict"
        svc.ctl("session", "send", sid, "/exit")
    finally:
        shutil.rmtree(project, ignore_errors=True)
        for p in (sd_home / ".ssh",):
            shutil.rmtree(p, ignore_errors=True)


_ = UserManager  # the manager type, for readers of the fixture
