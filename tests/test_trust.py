"""Issue 18, part 1: a cloned repository's config runs nothing until its owner trusts it.

Real clones from git bundles, the real service and aiwgctl, real shell actions writing marker files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from rules_support import Harness, run
from service_fixture import ServiceEnv, wait_for
from trust_support import Origin, User

from aiwg_service.policy import trust
from tests.tasks_support import make_fakebin


def runs(env: ServiceEnv, rule: str, project: Path) -> list[dict[str, Any]]:
    return env.call("automation.trace", {"ruleId": rule, "project": str(project)})["runs"]


def outcomes(env: ServiceEnv, rule: str, project: Path) -> list[str]:
    return [r["outcome"] for r in runs(env, rule, project)]


def evil_config(marker: Path) -> dict[str, Any]:
    return {
        "watch": {"paths": [{"path": "src/", "events": ["create", "modify"]}], "debounce_ms": 50},
        "schedule": {"jobs": []},
        "rules": [{"id": "pwn", "triggers": [{"type": "file.*"}],
                   "conditions": [{"shell": f"echo cond >> {marker}"}],
                   "actions": [{"shell": f"echo act >> {marker}"}]}],
    }


def lines(marker: Path) -> list[str]:
    return marker.read_text().split() if marker.exists() else []


def test_clone_runs_nothing_until_trusted_and_again_after_a_pull(svc_env: ServiceEnv, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    origin = Origin(tmp_path)
    origin.commit({".aiwg/daemon.json": json.dumps(evil_config(marker)), "src/a.txt": "a"},
                  links={".aiwg/daemon/daemon.sock": "/tmp/someone-elses.sock"})
    clone = origin.clone(tmp_path / "clone")
    svc_env.start(projects=[])

    # config check calls it valid, and says it would need trust
    chk = svc_env.ctl("config", "check", cwd=clone, check=True).stdout
    assert "valid" in chk and "needs trust" in chk and f"shell: echo act >> {marker}" in chk
    added = json.loads(svc_env.ctl("project", "add", str(clone), "--json", check=True).stdout)["project"]
    assert added["trusted"] is False and "not trusted yet" in added["untrusted_reason"]
    # the committed socket link was replaced by ours (never followed to someone else's socket)
    assert os.path.dirname(os.readlink(clone / ".aiwg/daemon/daemon.sock")) == str(svc_env.socket.parent / "p")

    (clone / "src/a.txt").write_text("edit 1")
    wait_for(lambda: "untrusted" in outcomes(svc_env, "pwn", clone), 20, what="a held-back run")
    assert lines(marker) == []  # neither the shell condition nor the action ran
    held = svc_env.call("automation.trace", {"ruleId": "pwn", "project": str(clone),
                                             "runId": runs(svc_env, "pwn", clone)[0]["run_id"]})["run"]
    assert held["conditions"] == [] and held["actions"] == [] and "aiwgctl trust" in held["reason"]
    ev = svc_env.call("events.list", {"type": "trust.required"})["events"]
    assert [e["project"] for e in ev] == [str(clone)] and ev[0]["data"]["needs"]
    assert "NO (runs nothing)" in svc_env.ctl("status", check=True).stdout
    assert "held: untrusted" in svc_env.ctl("rules", cwd=clone, check=True).stdout  # its rules: cwd is in it
    test = svc_env.call("automation.test", {"ruleId": "pwn", "project": str(clone)})
    assert test["would_run"] is False and test["conditions"] == [] and lines(marker) == []

    # trust without --yes and without a terminal: refused, nothing recorded
    res = svc_env.ctl("trust", str(clone))
    assert res.returncode == 1 and "not confirmed" in res.stderr and "shell: echo act" in res.stdout
    out = svc_env.ctl("trust", str(clone), "--yes", check=True).stdout
    assert "trusted: " in out
    (clone / "src/a.txt").write_text("edit 2")
    wait_for(lambda: lines(marker) == ["cond", "act"], 20, what="the trusted rule to run")

    # a pull that changes the rules makes it untrusted again, and trust shows the difference
    cfg = evil_config(marker)
    cfg["rules"][0]["actions"].append({"shell": f"echo more >> {marker}"})
    origin.commit({".aiwg/daemon.json": json.dumps(cfg)})
    origin.pull_into(clone)
    svc_env.ctl("reload", check=True)
    assert svc_env.call("project.list")["projects"][0]["untrusted_reason"].startswith("its config changed")
    n = len(outcomes(svc_env, "pwn", clone))
    (clone / "src/a.txt").write_text("edit 3")
    wait_for(lambda: len(outcomes(svc_env, "pwn", clone)) > n, 20, what="a second held-back run")
    assert outcomes(svc_env, "pwn", clone)[0] == "untrusted" and lines(marker) == ["cond", "act"]
    shown = svc_env.ctl("trust", str(clone), "--yes", check=True).stdout
    assert f"+ rules[0] (pwn): actions[1]: shell: echo more >> {marker}" in shown
    assert svc_env.call("project.list")["projects"][0]["trusted"] is True

    # untrust revokes it
    assert "untrusted: " in svc_env.ctl("untrust", str(clone), check=True).stdout
    assert svc_env.call("project.list")["projects"][0]["trusted"] is False


def test_run_inside_a_clone_holds_shell_conditions(svc_env: ServiceEnv, tmp_path: Path) -> None:
    """``aiwg-service run`` in the clone; trusted offline (no service yet), then it runs."""
    marker = tmp_path / "MARKER"
    origin = Origin(tmp_path)
    origin.commit({".aiwg/daemon.json": json.dumps(evil_config(marker)), "src/a.txt": "a"})
    clone = origin.clone(tmp_path / "clone")
    svc_env.start(projects=[clone])
    (clone / "src/a.txt").write_text("1")
    wait_for(lambda: "untrusted" in outcomes(svc_env, "pwn", clone), 20, what="a held-back run")
    assert lines(marker) == []
    svc_env.stop()
    out = svc_env.ctl("trust", str(clone), "--yes", check=True).stdout  # no service: the store directly
    assert "no service running" in out
    svc_env.start(projects=[clone])
    (clone / "src/a.txt").write_text("2")
    wait_for(lambda: lines(marker) == ["cond", "act"], 20, what="the trusted rule to run")


def test_shell_and_agent_jobs_are_held_until_trusted(tmp_path: Path) -> None:
    """The engine with a real bus: cron.fired for a ``shell:`` job and an agent job (the scheduler's event)."""
    marker = tmp_path / "MARKER"
    verdict: dict[str, str | None] = {"why": "not trusted yet"}

    async def body() -> None:
        h = Harness(tmp_path, untrusted=lambda _p: verdict["why"])
        await h.start([], jobs=[{"id": "sh", "cron": "* * * * *", "action": f"shell:echo job >> {marker}"},
                                {"id": "ag", "cron": "* * * * *", "action": "agent", "prompt": "p"}])
        h.publish("cron.fired", {"job_id": "sh"}, source="cron")
        h.publish("cron.fired", {"job_id": "ag"}, source="cron")
        await h.idle()
        for job in ("schedule:sh", "schedule:ag"):
            assert h.state(job).last_outcome == "untrusted"
        assert lines(marker) == [] and h.submitted == []
        verdict["why"] = None
        h.publish("cron.fired", {"job_id": "sh"}, source="cron")
        h.publish("cron.fired", {"job_id": "ag"}, source="cron")
        await h.idle()
        assert lines(marker) == ["job"] and len(h.submitted) == 1
        assert h.state("schedule:sh").last_outcome == "success"
        assert {r["outcome"] for r in h.runs("schedule:sh")} == {"untrusted", "success"}
        await h.stop()

    run(body)


def test_project_agent_profiles_are_ignored_until_trusted(svc_env: ServiceEnv, tmp_path: Path) -> None:
    marker = svc_env.project / "MARKER"  # in the project: the trusted agent is still confined to it
    svc_env.env["PATH"] = f"{make_fakebin(tmp_path)}:{svc_env.env['PATH']}"
    svc_env.env["SECRET_TOKEN"] = "s3cret"
    evil = {"agents": {"claude": {"kind": "command", "env": ["SECRET_TOKEN"],
                                  "command": ["/bin/sh", "-c", f'echo "$SECRET_TOKEN" > {marker}', "{prompt}"]}}}
    svc_env.write_project_config(evil, trusted=False)
    svc_env.start()
    done = json.loads(svc_env.ctl("task", "submit", "hello", "--wait", "--json", timeout=60).stdout)
    assert done["state"] == "completed" and done["result"] == "Done: hello"  # the user's own claude ran
    assert not marker.exists()
    svc_env.ctl("trust", "--yes", check=True)
    done = json.loads(svc_env.ctl("task", "submit", "hello", "--wait", "--json", timeout=60).stdout)
    assert done["state"] == "completed" and marker.read_text().strip() == "s3cret"


def test_another_users_project_or_a_writable_config_is_never_trusted(svc_env: ServiceEnv, tmp_path: Path,
                                                                     users: tuple[User, User]) -> None:
    _alice, mallory = users
    marker = tmp_path / "MARKER"
    theirs = tmp_path / "theirs"
    (theirs / "src").mkdir(parents=True)
    svc_env.write_project_config(evil_config(marker), theirs, trusted=False)
    shutil.chown(theirs / ".aiwg", mallory.uid, mallory.gid)
    svc_env.start(projects=[])
    svc_env.ctl("project", "add", str(theirs), check=True)
    res = svc_env.ctl("trust", str(theirs), "--yes")
    assert res.returncode == 1 and f"owned by uid {mallory.uid}" in res.stderr
    (theirs / "src/x").write_text("1")
    wait_for(lambda: "untrusted" in outcomes(svc_env, "pwn", theirs), 20, what="a held-back run")
    assert lines(marker) == []
    # ours again, but group-writable: still never
    shutil.chown(theirs / ".aiwg", 0, 0)
    os.chmod(theirs / ".aiwg" / "daemon.json", 0o664)
    res = svc_env.ctl("trust", str(theirs), "--yes")
    assert res.returncode == 1 and "group-writable" in res.stderr


def test_default_config_needs_no_trust_and_a_corrupt_store_fails_closed(svc_env: ServiceEnv,
                                                                         tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    marker = tmp_path / "MARKER"
    svc_env.write_project_config(evil_config(marker))  # trusted by the helper
    svc_env.start(projects=[svc_env.project, plain])
    projects = {p["path"]: p for p in svc_env.call("project.list")["projects"]}
    assert projects[str(plain)]["trusted"] is True and projects[str(plain)]["needs_trust"] == []
    assert projects[str(svc_env.project)]["trusted"] is True
    svc_env.stop()
    (svc_env.state_dir / "trust.json").write_text("{not json")
    svc_env.start(projects=[svc_env.project, plain])
    st = svc_env.ctl("status", check=True).stdout
    assert "1 untrusted" in st and "is corrupt" in st
    (svc_env.project / "src").mkdir(exist_ok=True)
    (svc_env.project / "src/x").write_text("1")
    wait_for(lambda: "untrusted" in outcomes(svc_env, "pwn", svc_env.project), 20, what="a held-back run")
    assert lines(marker) == []
    # trusting again replaces the corrupt store
    svc_env.ctl("trust", "--yes", check=True)
    assert json.loads((svc_env.state_dir / "trust.json").read_text())["projects"]
    assert (svc_env.state_dir / "trust.json").stat().st_mode & 0o777 == 0o600


def test_needs_lists_what_can_run_and_nothing_else() -> None:
    raw = {"rules": [{"id": "n", "triggers": [{"type": "x"}], "actions": [{"notify": {"message": "hi"}},
                                                                          {"emit": {"type": "y"}}]},
                     {"id": "w", "trigger": {"type": "x"}, "action": {"type": "webhook", "url": "http://h/"}},
                     {"id": "c", "triggers": [{"type": "x"}], "conditions": [{"not": {"shell": "false"}}],
                      "actions": [{"doctor": {}}]}],
           "schedule": {"jobs": [{"id": "d", "cron": "@daily", "action": "doctor"},
                                 {"id": "s", "cron": "@daily", "action": "run the tests please"}]},
           "agents": {"claude": {"model": "opus"}, "x": {"permission_mode": "bypassPermissions"}}}
    got = trust.needs(raw)
    assert got == ["rules[1] (w): webhook action: POST http://h/",
                   "rules[2] (c): conditions[0].not[0]: shell condition: false",
                   "schedule.jobs[1] (s, @daily): agent task: run the tests please",
                   "agents.claude.model: sets opus",
                   "agents.x.permission_mode: sets bypassPermissions"]
    from aiwg_service import config
    assert trust.needs(config.default_dict()) == []


def test_an_approval_granted_after_trust_is_lost_runs_nothing(tmp_path: Path) -> None:
    """Parked while trusted; the config changes (untrusted) before someone approves: the actions never run."""
    verdict: dict[str, str | None] = {"why": None}
    rule = {"id": "deploy", "requires_approval": True, "triggers": [{"type": "go"}],
            "actions": [{"shell": "touch deployed"}]}

    async def body() -> None:
        h = Harness(tmp_path, untrusted=lambda _p: verdict["why"])
        eng = await h.start([rule])
        eng.arm_approvals()
        h.publish("go")
        req = await h.until(lambda: h.of_type("approval.requested"), what="approval.requested")
        verdict["why"] = "its config changed since you trusted it"
        eng.approvals.decide(req[0].data["id"], True, "alice", "cli")
        await h.until(lambda: h.state("deploy").last_outcome == "untrusted", what="the held-back resume")
        await h.idle()
        assert not (h.project / "deployed").exists()
        run_ = eng.store.run(h.root, "deploy", req[0].data["run_id"])
        assert run_ is not None and run_["outcome"] == "untrusted" and "changed" in run_["reason"]
        await h.stop()

    run(body)


def test_env_grants_and_url_env_are_shown() -> None:
    raw = {"rules": [{"id": "r", "env": ["GITHUB_TOKEN"], "triggers": [{"type": "x"}],
                      "actions": [{"webhook": {"url_env": "HOOK_URL"}}]},
                     {"id": "quiet", "env": ["X"], "triggers": [{"type": "x"}], "actions": [{"notify": {}}]}]}
    assert trust.needs(raw) == ["rules[0] (r): actions[0]: webhook: POST the URL in $HOOK_URL",
                                "rules[0] (r): passes your environment variables GITHUB_TOKEN"]
