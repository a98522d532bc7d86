"""Many projects, one service: aiwgctl knows which project it means from where it runs, as git does."""

from __future__ import annotations

import json
from pathlib import Path

from service_fixture import ServiceEnv, wait_for
from test_tasks_api import start, wait_state


def test_aiwgctl_infers_the_project_from_the_working_directory(svc_env: ServiceEnv, tmp_path: Path) -> None:
    a, b = svc_env.project, tmp_path / "second"
    nested = a / "vendor" / "inner"  # a served project inside another: the innermost one wins
    for p in (a / "src" / "deep", b / "docs", nested / "lib"):
        p.mkdir(parents=True)
    start(svc_env, projects=[a, b, nested])
    for p in (a, b, nested):
        wait_for(lambda p=p: (p / ".aiwg" / "daemon" / "daemon.sock").resolve().is_socket(), 15,
                 what=f"{p}'s own socket")
    for root, cwd in ((a, a / "src" / "deep"), (b, b / "docs"), (nested, nested / "lib")):
        out = svc_env.ctl("task", "submit", f"from {cwd.name}", "--json", cwd=cwd, check=True).stdout
        task = json.loads(out)
        assert task["project"] == str(root), (cwd, task["project"])
        wait_state(svc_env, task["id"], "completed")
        listed = json.loads(svc_env.ctl("task", "list", "--json", cwd=cwd, check=True).stdout)
        assert [t["id"] for t in listed] == [task["id"]]  # that project's tasks only
    # --project overrides the working directory
    out = svc_env.ctl("task", "submit", "explicit", "--project", str(b), "--json", cwd=a / "src", check=True).stdout
    assert json.loads(out)["project"] == str(b)
    # outside every project, with several served: the error lists them
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    res = svc_env.ctl("task", "submit", "where?", cwd=outside)
    assert res.returncode == 1
    for root in (a, b, nested):
        assert str(root) in res.stderr
