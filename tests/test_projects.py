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


def test_a_chat_picks_its_project_for_ask(svc_env: ServiceEnv, tmp_path: Path) -> None:
    """/ask in a chat bound to each of two projects; unbound, the answer says how to pick one."""
    from fake_telegram import FakeTelegram
    from messaging_support import TG_TOKEN, WRITER, telegram_section, write_service_config
    from tasks_support import make_fakebin

    a, b = svc_env.project, tmp_path / "second"
    b.mkdir()
    svc_env.env["PATH"] = f"{make_fakebin(svc_env.tmp)}:{svc_env.env['PATH']}"
    with FakeTelegram() as tg:
        svc_env.env["AIWG_TELEGRAM_TOKEN"] = TG_TOKEN
        svc_env.env["AIWG_TELEGRAM_CHAT_ID"] = "777"
        write_service_config(svc_env, telegram_section(tg.base))
        svc_env.start(projects=[a, b])
        tg.push_message(WRITER, "/ask which project?")
        tg.wait(lambda: tg.texts(WRITER), 60, what="the refusal")
        hint = tg.texts(WRITER)[0]
        assert "/project NAME" in hint and "messaging.project" in hint and "second" in hint
        tg.push_message(WRITER, "/project second")
        tg.wait(lambda: len(tg.texts(WRITER)) >= 2, 60, what="the binding")
        assert str(b) in tg.texts(WRITER)[1]
        tg.push_message(WRITER, "/ask in b")
        tg.push_message(WRITER, "/project project", chat_id=-100)
        tg.wait(lambda: tg.texts(-100), 60, what="the group's binding")
        tg.push_message(WRITER, "/ask in a", chat_id=-100)
        tg.wait(lambda: len(tg.texts(WRITER)) >= 3 and len(tg.texts(-100)) >= 2, 60, what="both answers")

        def projects() -> dict[str, str]:
            return {t["prompt"]: t["project"] for t in svc_env.call("task.list", {"source": "messaging"})}

        assert wait_for(lambda: len(projects()) == 2 and projects(), 30) == {"in b": str(b), "in a": str(a)}
        tg.push_message(WRITER, "/project")
        tg.wait(lambda: len(tg.texts(WRITER)) >= 4, 60, what="the chat's project")
        assert f"works in {b} (picked with /project)" in tg.texts(WRITER)[3]
        assert svc_env.stop() == 0


def test_enable_without_a_rule_restores_the_config(svc_env: ServiceEnv) -> None:
    """automation.disable then automation.enable (no id) leaves a rule the config disables off; it never fires."""
    (svc_env.project / "src").mkdir()
    svc_env.write_project_config({"watch": {"paths": [{"path": "src/"}], "debounce_ms": 50}, "rules": [
        {"id": "on", "trigger": {"type": "file.create"}, "action": {"type": "notify", "message": "on"}},
        {"id": "off", "enabled": False, "trigger": {"type": "file.create"},
         "action": {"type": "notify", "message": "off"}},
    ]})
    start(svc_env)
    assert {"on", "off"} <= set(svc_env.call("automation.disable", {})["rules"])
    res = svc_env.call("automation.enable", {})
    assert res["restored"] is True and "on" in res["enabled_rules"] and res["disabled_in_config"] == ["off"]
    st = {r["id"]: r for r in svc_env.call("automation.status")["rules"]}
    assert st["on"]["enabled"] is True and st["off"]["enabled"] is False and st["off"]["override"] is None
    (svc_env.project / "src" / "a.txt").write_text("x")
    def runs() -> dict[str, int]:
        return {r["id"]: r["runs"] for r in svc_env.call("automation.status")["rules"]}

    wait_for(lambda: runs()["on"] == 1, 20, what="rule on to run")
    svc_env.call("daemon.reload")  # a reload keeps it as the config says, too
    (svc_env.project / "src" / "b.txt").write_text("x")
    wait_for(lambda: runs()["on"] == 2, 20, what="rule on to run again")
    assert runs()["off"] == 0
    # an override of one rule shows in aiwgctl rules, and holds across a reload
    svc_env.call("automation.enable", {"ruleId": "off"})
    svc_env.call("daemon.reload")
    out = svc_env.ctl("rules", check=True).stdout
    assert "yes (override)" in out and "off: enabled by automation.enable (the config disables it)" in out
    svc_env.ctl("rules", "enable", check=True)
    assert "(override)" not in svc_env.ctl("rules", check=True).stdout


def test_project_daemon_keys_and_the_services_own_files(svc_env: ServiceEnv) -> None:
    """A project's ``daemon``: fractional minutes work; service-wide keys are named as ignored, with where they
    belong; the service's own ``.aiwg/daemon.pid`` never makes an event, even watched."""
    svc_env.write_project_config({"daemon": {"action_timeout_minutes": 0.05, "retention_days": 7},
                                  "watch": {"paths": [{"path": ".aiwg/"}], "debounce_ms": 50}})
    chk = svc_env.ctl("config", "check")
    assert chk.returncode == 0, chk.stderr
    assert "daemon.retention_days: applies to the whole service" in chk.stdout + chk.stderr
    assert str(svc_env.config_home / "aiwg" / "daemon.json") in chk.stdout + chk.stderr
    start(svc_env)
    t = svc_env.call("task.submit", {"prompt": "sleep=60"})
    # 0.05 minutes: it times out after 3 s of its 60 (the default would be 120 minutes)
    assert wait_state(svc_env, t["id"], "timeout", "completed", timeout=40)["state"] == "timeout"
    (svc_env.project / ".aiwg" / "note.txt").write_text("a change of the project's own")
    wait_for(lambda: svc_env.call("events.list", {"type": "file.*"})["events"], 15, what="the note's event")
    paths = [e["data"].get("path") for e in svc_env.call("events.list", {"type": "file.*"})["events"]]
    assert paths and not [p for p in paths if "daemon" in str(p)], paths


def test_aiwgctl_chat_list(svc_env: ServiceEnv) -> None:
    start(svc_env)
    assert "no conversations yet" in svc_env.ctl("chat", "list", check=True).stdout
    assert svc_env.ctl("chat", "-m", "hello there", check=True).returncode == 0
    (conv,) = json.loads(svc_env.ctl("chat", "list", "--json", check=True).stdout)["conversations"]
    assert conv["project"] == str(svc_env.project) and conv["turns"] == 1
    assert conv["id"] in svc_env.ctl("chat", "list", check=True).stdout
