"""Event sources wired into the real service: inotify -> bus -> RPC, and cron -> bus, catch-up included."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvloop
from service_fixture import ServiceEnv, wait_for

from aiwg_service import config, schemas  # noqa: F401  (schemas registers every section)
from aiwg_service.config import Configs, Project
from aiwg_service.events.bus import EventBus
from aiwg_service.events.scheduler import CronScheduler
from aiwg_service.protocol import Event

WATCH_SRC = {"watch": {"debounce_ms": 0, "paths": [{"path": "src/", "events": ["create", "modify", "delete"],
                                                   "extensions": [".py"], "ignore": ["gen/**"]}]},
             "schedule": {"jobs": []}}


def file_events(svc: ServiceEnv, pattern: str = "file.*") -> list[dict[str, Any]]:
    return svc.call("events.list", {"type": pattern, "limit": 1000})["events"]


def test_file_changes_reach_the_bus_and_clients(svc_env: ServiceEnv) -> None:
    svc_env.write_project_config(WATCH_SRC)
    (svc_env.project / "src" / "gen").mkdir(parents=True)
    svc_env.start()
    sub = svc_env.connect()
    sub.request("events.subscribe", {"type": "file.*"})
    (svc_env.project / "src" / "a.py").write_text("x = 1\n")
    (svc_env.project / "src" / "notes.txt").write_text("ignored: extension\n")
    (svc_env.project / "src" / "gen" / "b.py").write_text("ignored: glob\n")
    deep = svc_env.project / "src" / "pkg" / "sub"
    deep.mkdir(parents=True)
    (deep / "c.py").write_text("y = 2\n")
    seen: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not {"src/a.py", "src/pkg/sub/c.py"} <= set(seen):
        note = sub.read()
        seen.setdefault(note["params"]["data"]["path"], []).append(note["params"])
    first = seen["src/a.py"][0]  # with debounce 0 the write after the create may follow as a modify
    assert first["type"] == "file.create" and first["project"] == str(svc_env.project)
    assert first["source"] == "watch" and first["data"]["abs_path"] == str(svc_env.project / "src" / "a.py")
    assert seen["src/pkg/sub/c.py"][0]["type"] == "file.create"
    (svc_env.project / "src" / "a.py").unlink()
    wait_for(lambda: any(e["type"] == "file.delete" for e in file_events(svc_env)), what="file.delete")
    paths = {e["data"].get("path") for e in file_events(svc_env)}
    assert "src/notes.txt" not in paths and "src/gen/b.py" not in paths
    st = svc_env.call("daemon.status")
    watcher = st["subsystems"]["watcher"]
    # src, src/pkg, src/pkg/sub: the ignored src/gen is not even watched
    assert watcher["roots"][str(svc_env.project)]["watched_dirs"] == 3
    assert watcher["watched_dirs"] == 3
    router = st["subsystems"]["router"]
    assert router["events_by_type"]["file.create"] >= 2
    assert {"dead_letters", "queue_depth", "dropped"} <= set(router)


def test_watches_follow_a_reload(svc_env: ServiceEnv) -> None:
    svc_env.write_project_config(WATCH_SRC)
    svc_env.start()
    (svc_env.project / "docs").mkdir()
    (svc_env.project / "docs" / "one.md").write_text("before\n")
    time.sleep(0.3)
    assert not [e for e in file_events(svc_env) if e["data"]["path"].startswith("docs/")]
    cfg = json.loads(json.dumps(WATCH_SRC))
    cfg["watch"]["paths"].append({"path": "docs/", "events": ["modify", "create"]})
    svc_env.write_project_config(cfg)
    svc_env.call("daemon.reload")
    (svc_env.project / "docs" / "one.md").write_text("after\n")
    wait_for(lambda: [e for e in file_events(svc_env) if e["data"]["path"] == "docs/one.md"],
             what="docs/ to be watched after the reload")


def test_removed_project_stops_being_watched(service: ServiceEnv, tmp_path: Path) -> None:
    other = tmp_path / "other"
    (other / "src").mkdir(parents=True)
    service.write_project_config(WATCH_SRC, project=other)
    service.call("project.add", {"path": str(other)})
    (other / "src" / "x.py").write_text("1")
    wait_for(lambda: [e for e in file_events(service) if e["project"] == str(other)], what="event from other")
    service.call("project.remove", {"path": str(other)})
    n = len(file_events(service))
    (other / "src" / "y.py").write_text("2")
    time.sleep(0.3)
    assert len(file_events(service)) == n
    assert str(other) not in service.call("daemon.status")["subsystems"]["watcher"]["roots"]


# -- cron ---------------------------------------------------------------------------------------------


def configs_with_jobs(root: Path, jobs: list[dict[str, Any]]) -> Configs:
    loaded = config.validate({"schedule": {"jobs": jobs}}, "test")
    return Configs(config.Config(), [], {str(root): Project(str(root), loaded.config)})


def run_scheduler(tmp_path: Path, jobs: list[dict[str, Any]], before: Any = None,
                  wait: float = 0.3) -> list[Event]:
    async def scenario() -> list[Event]:
        bus = EventBus(None)
        got: list[Event] = []
        bus.subscribe("cron.fired", got.append, name="test")
        await bus.start()
        sched = CronScheduler(bus, tmp_path)
        await sched.start()
        sched.apply(configs_with_jobs(tmp_path, jobs))
        if before is not None:
            before(sched)
        await asyncio.sleep(wait)
        await sched.stop()
        await bus.stop()
        return got

    return uvloop.run(scenario())


def test_cron_fires_on_the_wall_clock_timer(tmp_path: Path) -> None:
    def soon(sched: CronScheduler) -> None:
        job = sched.jobs[f"{tmp_path}|tick"]
        job.next_fire = datetime.now(UTC) + timedelta(milliseconds=150)
        sched._arm()

    got = run_scheduler(tmp_path, [{"id": "tick", "cron": "0 3 * * *", "action": "doctor"}], soon, wait=0.6)
    assert len(got) == 1
    ev = got[0]
    assert ev.type == "cron.fired" and ev.project == str(tmp_path) and ev.source == "cron"
    assert ev.data["job_id"] == "tick" and ev.data["action"] == "doctor" and ev.data["catch_up"] is False
    lag = datetime.fromisoformat(ev.data["actual"]) - datetime.fromisoformat(ev.data["scheduled"])
    assert timedelta(0) <= lag < timedelta(seconds=0.3)
    # the next fire is tomorrow at 03:00, not another immediate one
    assert json.loads((tmp_path / "cron.json").read_text())[f"{tmp_path}|tick"]


def test_catch_up_fires_once_for_many_missed_slots(tmp_path: Path) -> None:
    key = f"{tmp_path}|hourly"
    (tmp_path / "cron.json").write_text(json.dumps({key: (datetime.now(UTC) - timedelta(hours=5)).isoformat()}))
    got = run_scheduler(tmp_path, [{"id": "hourly", "cron": "0 * * * *", "action": "doctor", "catch_up": True}])
    assert len(got) == 1 and got[0].data["catch_up"] is True
    # without catch_up, a missed run is simply skipped
    (tmp_path / "cron.json").write_text(json.dumps({key: (datetime.now(UTC) - timedelta(hours=5)).isoformat()}))
    assert run_scheduler(tmp_path, [{"id": "hourly", "cron": "0 * * * *", "action": "doctor"}]) == []


def test_no_fire_and_no_wakeups_while_nothing_is_due(tmp_path: Path) -> None:
    calls = 0

    def count(sched: CronScheduler) -> None:
        original = sched._due

        def wrapped() -> None:
            nonlocal calls
            calls += 1
            original()

        assert sched.timer is not None
        sched.timer.callback = wrapped

    got = run_scheduler(tmp_path, [{"id": "y", "cron": "@yearly", "action": "doctor"}], count, wait=0.5)
    assert got == [] and calls == 0


def test_cron_validation_and_cli(svc_env: ServiceEnv) -> None:
    svc_env.write_project_config({"schedule": {"jobs": [{"id": "a", "cron": "61 * * * *"},
                                                         {"id": "b", "cron": "* * * * *", "tz": "Mars/Base"}]}})
    res = svc_env.ctl("config", "check")
    assert res.returncode == 1
    assert 'schedule.jobs[0].cron: "61 * * * *": minute field: 61 is out of range 0-59' in res.stderr
    assert 'schedule.jobs[1].tz: unknown time zone "Mars/Base"' in res.stderr
    out = svc_env.ctl("cron", "next", "30 2 * * *", "-n", "3", "--tz", "Europe/Berlin", "--from",
                      "2026-03-28T12:00:00+01:00", check=True).stdout.split()
    assert out == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]
    res = svc_env.ctl("cron", "next", "not cron")
    assert res.returncode == 1 and "expected 5" in res.stderr


def test_cron_list_from_the_service(svc_env: ServiceEnv) -> None:
    svc_env.start()  # the default config has the health-check job
    res = json.loads(svc_env.ctl("cron", "list", "--json", check=True).stdout)
    job = res["jobs"][0]
    assert job["id"] == "health-check" and job["cron"] == "0 */6 * * *" and job["project"] == str(svc_env.project)
    nxt = datetime.fromisoformat(job["next_fire"])
    assert nxt > datetime.now(UTC) and nxt.hour % 6 == 0 and nxt.minute == 0
    table = svc_env.ctl("cron", "list", check=True).stdout
    assert "health-check" in table and "NEXT FIRE" in table
