"""Many projects, one service, under the real user manager: one project's bad file never takes down another.

Three registered projects; one file at a time is replaced by each bad case (invalid, unreadable, nested too
deep, a hook whose secret nobody set, group-writable, ``.aiwg`` turned into a symlink); across a reload and a
restart the other two keep running, and the bad one runs its last good config, shown as failed with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_systemd_e2e import BIN, Svc, svc  # noqa: F401  (the fixture)

#: a rule that runs a command: its project needs trust, so StrictModes matters
RULE = {"id": "note", "triggers": [{"type": "file.create", "paths": ["src/**"]}], "actions": [{"shell": "echo seen"}]}


@pytest.fixture
def three() -> Iterator[list[Path]]:
    made = [Path(tempfile.mkdtemp(prefix=f"aiwg{n}", dir="/tmp")) for n in "abc"]
    for p in made:
        (p / "src").mkdir()
        (p / ".aiwg").mkdir()
        (p / ".aiwg" / "daemon.json").write_text(json.dumps({"watch": {"debounce_ms": 50}, "rules": [RULE]}))
    yield made
    for p in made:
        shutil.rmtree(p, ignore_errors=True)


def _invalid(cfg: Path) -> None:
    cfg.write_text('{"watch": 5}')


def _unreadable(cfg: Path) -> None:
    cfg.unlink()
    os.mkfifo(cfg, 0o600)  # not a regular file: never read (a root test process reads any mode)


def _too_deep(cfg: Path) -> None:
    cfg.write_text("[" * 200_000 + "]" * 200_000)  # 400 KB, under the 1 MiB cap


def _secret_unset(cfg: Path) -> None:
    cfg.write_text(json.dumps({"webhook": {"hooks": [{"id": "gh", "kind": "github", "secret_env": "NOBODY_SET"}]}}))


def _group_writable(cfg: Path) -> None:
    cfg.chmod(0o664)


def _aiwg_symlink(cfg: Path) -> None:
    aiwg = cfg.parent
    moved = aiwg.with_name("aiwg-moved")
    aiwg.rename(moved)
    aiwg.symlink_to(moved.name)


def _restore(project: Path, good: bytes) -> None:
    aiwg = project / ".aiwg"
    if aiwg.is_symlink():
        aiwg.unlink()
        aiwg.with_name("aiwg-moved").rename(aiwg)
    cfg = aiwg / "daemon.json"
    cfg.unlink(missing_ok=True)
    cfg.write_bytes(good)
    cfg.chmod(0o644)


CASES: dict[str, Callable[[Path], None]] = {
    "invalid": _invalid, "unreadable": _unreadable, "too deep": _too_deep, "hook secret unset": _secret_unset,
    "group-writable (StrictModes)": _group_writable, ".aiwg is a symlink": _aiwg_symlink,
}


def projects(env: Svc) -> dict[str, dict[str, Any]]:
    return {p["path"]: p for p in env.status()["projects"]}


def test_one_bad_project_never_takes_down_the_others(svc: Svc, three: list[Path]) -> None:  # noqa: F811
    since = svc.cursor()  # the session's journal holds earlier tests' lines (a fault injected on purpose)
    svc.sd.systemctl("start", "aiwg.socket", check=True)
    for p in three:
        svc.ctl("project", "add", str(p))
        svc.ctl("trust", "--yes", str(p))
    good_a, bad, good_c = (str(p) for p in three)
    good_bytes = (three[1] / ".aiwg" / "daemon.json").read_bytes()
    pid = svc.main_pid()

    def others_run() -> None:
        st = svc.status()
        assert svc.show("ActiveState")["ActiveState"] == "active"
        by = {p["path"]: p for p in st["projects"]}
        for root in (good_a, good_c):
            assert by[root]["state"] == "ok" and by[root]["served"] is True, by[root]
            assert by[root]["trusted"] is True
            assert root in st["subsystems"]["watcher"]["roots"]

    for name, breaks in CASES.items():
        breaks(three[1] / ".aiwg" / "daemon.json")
        # reload: the bad one keeps the config it runs; the others reload
        res = svc.ctl("reload", check=False)
        assert "Traceback" not in res.stderr
        others_run()
        b = projects(svc)[bad]
        if name.startswith("group-writable"):  # StrictModes: never trusted (or failed, once trust fails a project)
            assert b["state"] == "failed" or b["trusted"] is False, (name, b)
        else:
            assert res.returncode == 1 and bad in res.stderr, (name, res.stderr)
            assert b["state"] == "failed" and b["served"] is True and bad in b["reason"], (name, b)
        assert svc.main_pid() == pid
        # restart (a start): the others run, the bad one runs the good copy saved from before
        svc.sd.systemctl("reset-failed", "aiwg.service")  # six restarts in a row: past systemd's start limit
        res = svc.sd.systemctl("restart", "aiwg.service")
        assert res.returncode == 0, (name, res.stderr, svc.messages()[-30:])
        others_run()
        b = projects(svc)[bad]
        assert b["served"] is True, (name, b)
        if not name.startswith("group-writable"):
            assert b["state"] == "failed" and "last good config saved from an earlier run" in b["reason"], (name, b)
        assert "Traceback" not in "\n".join(svc.messages(since))
        pid = svc.main_pid()
        _restore(three[1], good_bytes)
        svc.ctl("reload")
        assert projects(svc)[bad]["state"] == "ok", name


def test_install_at_login_gives_the_aiwg_cli_a_running_service(svc: Svc, three: list[Path]) -> None:  # noqa: F811
    """An idle socket-activated service has no daemon.pid for the AIWG CLI; `install --at-login` runs it."""
    sd = svc.sd
    for name in ("aiwg.socket", "aiwg.service", "aiwg@.socket", "aiwg@.service"):
        (sd.unit_dir / name).unlink()
    sd.daemon_reload()
    try:
        res = sd.run([str(BIN / "aiwgctl"), "install"], env=svc.env)
        assert res.returncode == 0 and "aiwgctl install --at-login" in res.stdout, res.stdout + res.stderr
        res = sd.run([str(BIN / "aiwgctl"), "install", "--at-login"], env=svc.env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert sd.systemctl("is-enabled", "aiwg.service").stdout.strip() == "enabled"
        assert svc.show("ActiveState")["ActiveState"] == "active"  # running now, without a first connection
        svc.ctl("project", "add", str(three[0]))
        pid = int((three[0] / ".aiwg" / "daemon.pid").read_text())
        assert pid == svc.main_pid()
    finally:
        sd.run([str(BIN / "aiwgctl"), "uninstall"], env=svc.env)
