"""aiwgctl against the real service: readable output, --json, clear errors, never a traceback."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from service_fixture import BIN, ServiceEnv


def test_not_running_is_one_clear_line(svc_env: ServiceEnv) -> None:
    for cmd in (["ping"], ["status"], ["status", "--json"], ["reload"], ["project", "list"]):
        res = svc_env.ctl(*cmd)
        assert res.returncode == 1
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        assert "aiwg-service is not running" in lines[0]
        assert "systemctl --user start aiwg.socket" in lines[0] and "aiwg-service run" in lines[0]


def test_ping_status_json_and_readable(service: ServiceEnv) -> None:
    res = service.ctl("ping", check=True)
    assert res.stdout.startswith("pong from ")
    assert json.loads(service.ctl("ping", "--json", check=True).stdout)["pong"] is True
    st = json.loads(service.ctl("status", "--json", check=True).stdout)
    assert st["pid"] == service.proc.pid  # type: ignore[union-attr]
    out = service.ctl("status", check=True).stdout
    assert "running, pid" in out and str(service.project) in out and "SUBSYSTEM" in out
    # the typer path gives the same answers as the fast path
    out2 = service.ctl("--socket", str(service.socket), "status", "--json", check=True).stdout
    assert json.loads(out2)["pid"] == st["pid"]


def test_project_commands(service: ServiceEnv, tmp_path: Path) -> None:
    other = tmp_path / "p2"
    other.mkdir()
    assert "added: " in service.ctl("project", "add", str(other), check=True).stdout
    assert "already registered" in service.ctl("project", "add", str(other), check=True).stdout
    listing = service.ctl("project", "list", check=True).stdout
    assert listing.splitlines()[0].split() == ["PROJECT", "STATE", "PERSISTENT", "TRUSTED", "CONFIG"]
    assert str(other) in listing
    data = json.loads(service.ctl("project", "list", "--json", check=True).stdout)
    assert str(other) in {p["path"] for p in data["projects"]}
    assert "removed" in service.ctl("project", "remove", str(other), check=True).stdout
    res = service.ctl("project", "remove", str(other))
    assert res.returncode == 1 and "is not a registered project" in res.stderr
    res = service.ctl("project", "add", str(tmp_path / "missing"))
    assert res.returncode == 1 and "not a directory" in res.stderr


def test_reload_reports_errors(service: ServiceEnv) -> None:
    assert "reloaded" in service.ctl("reload", check=True).stdout
    service.write_project_config({"schedule": {"jobs": [{"id": "x"}]}})
    res = service.ctl("reload")
    assert res.returncode == 1
    assert "reload refused" in res.stderr and "schedule.jobs[0].cron: is required" in res.stderr


def test_config_check_without_a_service(svc_env: ServiceEnv) -> None:
    good = svc_env.write_project_config({"watch": {"debounce_ms": 10}, "colour": 1})
    res = svc_env.ctl("config", "check", str(good), check=True)
    assert "valid" in res.stdout and "colour: unknown key" in res.stdout
    res = svc_env.ctl("config", "check")  # default: ./.aiwg/daemon.json in the cwd (the project)
    assert res.returncode == 0
    svc_env.write_project_config({"watch": {"paths": [{"path": "src/", "events": ["modfy"]}]}})
    res = svc_env.ctl("config", "check")
    assert res.returncode == 1
    assert 'watch.paths[0].events[0]: "modfy" is not one of create, modify, delete' in res.stderr
    data = json.loads(svc_env.ctl("config", "check", "--json").stdout)
    assert data["valid"] is False and len(data["errors"]) == 1
    res = svc_env.ctl("config", "check", "/nonexistent.json")
    assert res.returncode == 1 and "no such file" in res.stderr


def test_help_and_completion(svc_env: ServiceEnv) -> None:
    res = svc_env.ctl("--help", check=True)
    assert "project" in res.stdout and "status" in res.stdout
    # commands in a sensible order (the service first, configuration last) and plain flag types
    listed = re.findall(r"^│ ([a-z]+) ", res.stdout.split("Commands", 1)[1], re.M)
    assert listed.index("status") < listed.index("chat") < listed.index("task") < listed.index("config")
    assert listed[0] == "status"
    assert "<bool>" not in res.stdout and "<path>" not in res.stdout and "PATH" in res.stdout
    sub = svc_env.ctl("task", "list", "--help", check=True).stdout
    assert "<" not in sub.replace("<=", "") and "--json " in sub
    # Tab on a command word answers from a table (no typer import); the table is the app's own
    from aiwg_service.cli.words import TREE, from_app

    assert from_app() == TREE, "run `python -m aiwg_service.cli.words` to rewrite the table"
    for words, cword, want in (("aiwgctl ta", "1", "task"), ("aiwgctl task ", "2", "submit\nlist\nget\ncancel"
                                                                                    "\nstats\nlogs"),
                               ("aiwgctl messaging st", "2", "status")):
        out = subprocess.run([str(BIN / "aiwgctl")], env={**svc_env.env, "_AIWGCTL_COMPLETE": "complete_bash",
                                                         "COMP_WORDS": words, "COMP_CWORD": cword},
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and out.stdout == want, (words, out.stdout, out.stderr)
    # typer detects the shell from the parent process, so ask from inside bash
    res = subprocess.run(["bash", "-c", "aiwgctl --show-completion"], env=svc_env.env, capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0 and "complete" in res.stdout, res.stderr


def test_socket_found_through_the_project_link(service: ServiceEnv, tmp_path: Path) -> None:
    env = dict(service.env)
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "elsewhere")  # the default path would miss the service
    sub = service.project / "src" / "deep"
    sub.mkdir(parents=True)
    import subprocess

    from service_fixture import BIN

    res = subprocess.run([str(BIN / "aiwgctl"), "ping", "--json"], cwd=sub, env=env, capture_output=True,
                         text=True, timeout=20)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["pong"] is True


def test_json_wherever_the_user_puts_it(service: ServiceEnv) -> None:
    """``aiwgctl --json status`` (once "No such option") and ``aiwgctl status --json`` are the same command."""
    pid = service.proc.pid  # type: ignore[union-attr]
    for argv in (["--json", "status"], ["status", "--json"], ["--socket", str(service.socket), "--json", "status"]):
        assert json.loads(service.ctl(*argv, check=True).stdout)["pid"] == pid, argv
    assert json.loads(service.ctl("--json", "ping", check=True).stdout)["pong"] is True
    # through typer too, and between a group and its command
    for argv in (["--json", "project", "list"], ["project", "--json", "list"], ["project", "list", "--json"]):
        listed = json.loads(service.ctl(*argv, check=True).stdout)["projects"]
        assert str(service.project) in {p["path"] for p in listed}, argv


def test_json_anywhere_leaves_what_follows_a_double_dash() -> None:
    from aiwg_service.cli.entry import json_anywhere

    assert json_anywhere(["--json", "task", "list"]) == ["task", "list", "--json"]
    assert json_anywhere(["status"]) == ["status"]
    assert json_anywhere(["--json", "task", "submit", "--", "--json"]) == ["task", "submit", "--json", "--", "--json"]
