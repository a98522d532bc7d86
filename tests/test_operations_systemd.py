"""A reload that its third subsystem refuses, under a real systemd user manager: the old config everywhere,
the error in ``status`` and the unit's status line, and READY=1 after RELOADING=1 (the unit never stays
"reloading"). The fault is injected through ``AIWG_FAULTS`` (see aiwg_service/faults.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from service_fixture import wait_for
from systemd_env import UserManager
from test_systemd_e2e import Svc, project, svc  # noqa: F401  (fixtures)


def test_a_reload_the_third_subsystem_refuses_is_rolled_back(sd: UserManager, svc: Svc,  # noqa: F811
                                                              project: Path) -> None:  # noqa: F811
    sd.install_unit_text("aiwg.service.d/faults.conf", "[Service]\nEnvironment=AIWG_FAULTS=reload.apply=supervisor\n",
                         reload=True)
    sd.systemctl("start", "aiwg.socket", check=True)
    svc.ctl("project", "add", str(project))
    st = svc.status()
    old_max = st["subsystems"]["supervisor"]["max_parallel"]
    pid = svc.main_pid()
    # budgets, then executors, then the supervisor apply: the first two take the new config, the third raises
    cfg = svc.config_home / "aiwg" / "daemon.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps({"daemon": {"max_parallel_actions": old_max + 3},
                               "executors": {"far": {"kind": "ssh", "host": "far.invalid",
                                                     "connect_timeout_seconds": 1}}}))
    cursor = svc.cursor()
    sd.systemctl("log-level", "debug", check=True)  # the manager then logs each notify message
    try:
        sd.systemctl("reload", "aiwg.service", check=True)  # returns once READY=1 came
    finally:
        sd.systemctl("log-level", "info", check=True)
    def ready_after_reloading() -> str | None:  # journald stores the manager's lines a moment later
        text = "\n".join(svc.messages(cursor, ident="systemd"))
        at = text.find("RELOADING=1")
        return text if at >= 0 and "READY=1" in text[at:] else None

    manager = wait_for(ready_after_reloading, 30, what="the manager's RELOADING=1 then READY=1 in the journal")
    assert re.search(r"\(RELOADING=1, MONOTONIC_USEC=\d+", manager), manager
    props = svc.show("ActiveState", "SubState", "StatusText", "MainPID")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    assert int(props["MainPID"]) == pid
    assert "reload failed in supervisor; old config restored" in props["StatusText"], props
    st = svc.status()
    assert st["config"]["ok"] is False and st["config"]["rolled_back"] is True
    assert "reload failed in supervisor" in st["config"]["errors"][0]
    assert st["subsystems"]["supervisor"]["max_parallel"] == old_max
    assert "far" not in st["subsystems"]["executors"]
    wait_for(lambda: any("supervisor refused the new config" in m for m in svc.messages(cursor)),
             what="the refusal in the journal")
    # and the service still takes changes: the project can go
    svc.ctl("project", "remove", str(project))
    assert svc.status()["projects"] == []
