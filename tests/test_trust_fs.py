"""Issue 18, part 3: no write lands outside the project, whatever symlinks a repository commits."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from service_fixture import BIN, ServiceEnv, wait_for
from trust_support import Origin

from aiwg_service import config, schemas  # noqa: F401  (schemas registers every section)
from aiwg_service.safefs import private_dir


def tree(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def run_service(env: ServiceEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "aiwg-service"), "run", *args], env=env.env, cwd=env.tmp, capture_output=True,
                          text=True, timeout=60)


def failed_reason(env: ServiceEnv, project: Path) -> str:
    """Serve ``project`` alone: the service runs, the project is listed as failed; its reason, after a stop."""
    env.start(projects=[project])
    (pr,) = env.call("project.list")["projects"]
    env.stop()
    assert pr["state"] == "failed" and pr["served"] is False and "Traceback" not in env.log_text()
    return str(pr["reason"])


def test_a_symlinked_aiwg_dir_is_refused(svc_env: ServiceEnv, tmp_path: Path) -> None:
    ssh = tmp_path / "dot-ssh"
    ssh.mkdir()
    (ssh / "id_ed25519").write_text("key")
    origin = Origin(tmp_path)
    origin.commit({"README": "hi"}, links={".aiwg": "../dot-ssh"})
    clone = origin.clone(tmp_path / "clone")
    svc_env.start(projects=[])
    res = svc_env.ctl("project", "add", str(clone))
    assert res.returncode == 1 and f"{clone}/.aiwg is a symlink; refusing to write through it" in res.stderr
    svc_env.stop()
    assert "is a symlink" in failed_reason(svc_env, clone)
    assert tree(ssh) == ["id_ed25519"]


def test_a_symlinked_daemon_dir_gets_no_socket_link(svc_env: ServiceEnv, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "daemon.sock").symlink_to("/etc/passwd")
    origin = Origin(tmp_path)
    origin.commit({".aiwg/daemon.json": "{}"}, links={".aiwg/daemon": "../../outside"})
    clone = origin.clone(tmp_path / "clone")
    svc_env.start(projects=[clone])
    wait_for(lambda: "cannot link" in svc_env.log_text(), 10, what="the refusal in the log")
    assert "is a symlink; refusing to write through it" in svc_env.log_text()
    assert os.readlink(outside / "daemon.sock") == "/etc/passwd" and tree(outside) == ["daemon.sock"]
    assert svc_env.call("ping")["pong"] is True  # the project is still served


def test_the_default_config_temp_file_cannot_be_predicted(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "p" / ".aiwg").mkdir(parents=True)
    planted = tmp_path / "p" / ".aiwg" / f".daemon.json.{os.getpid()}.tmp"  # the old, predictable name
    planted.symlink_to(victim)
    cfg = tmp_path / "p" / ".aiwg" / "daemon.json"
    assert config.write_default(cfg) is True
    assert victim.read_text() == "precious" and planted.is_symlink()
    assert json.loads(cfg.read_text()) == config.default_dict() and not cfg.is_symlink()
    assert sorted(p.name for p in cfg.parent.iterdir()) == [planted.name, "daemon.json"]


def test_a_config_that_is_not_a_small_regular_file_is_refused(svc_env: ServiceEnv) -> None:
    cfg = svc_env.project / ".aiwg" / "daemon.json"
    cfg.parent.mkdir()
    cfg.symlink_to("/dev/zero")
    assert ".aiwg/daemon.json: cannot read: not a regular file" in failed_reason(svc_env, svc_env.project)
    res = svc_env.ctl("config", "check")
    assert res.returncode == 1 and "not a regular file" in res.stderr
    cfg.unlink()
    cfg.write_text(json.dumps({"daemon": {}, "pad": "x" * (1 << 20)}))
    res = svc_env.ctl("config", "check")
    assert res.returncode == 1 and "the limit is 1,048,576" in res.stderr


def test_watch_paths_are_checked_by_real_path(svc_env: ServiceEnv, tmp_path: Path) -> None:
    (svc_env.project / "up").symlink_to("..")
    svc_env.write_project_config({"watch": {"paths": [{"path": "up/.ssh"}, {"path": "../../etc"},
                                                      {"path": "src/"}]}})
    res = svc_env.ctl("config", "check")
    assert res.returncode == 1
    assert f'watch.paths[0].path: "up/.ssh" leads outside the project root (to {tmp_path}/.ssh' in res.stderr
    assert 'watch.paths[1].path: "../../etc" is outside the project root' in res.stderr
    assert "watch.paths[2]" not in res.stderr
    assert "up/.ssh" in failed_reason(svc_env, svc_env.project)


def test_a_socket_path_that_is_not_a_socket_is_never_deleted(svc_env: ServiceEnv, tmp_path: Path) -> None:
    precious = tmp_path / "run" / "notes.txt"
    precious.write_text("keep me")
    res = run_service(svc_env, "--socket", str(precious), "--project", str(svc_env.project))
    assert res.returncode != 0 and "exists and is not a socket; refusing to replace it" in res.stderr
    assert precious.read_text() == "keep me"
    # a file put where the socket was, while the service runs, survives its stop
    svc_env.start()
    svc_env.socket.unlink()
    svc_env.socket.write_text("mine now")
    assert svc_env.stop() == 0
    assert svc_env.socket.read_text() == "mine now"


def test_private_dir_checks_the_last_component_with_lstat(tmp_path: Path) -> None:
    target = tmp_path / "somewhere"
    target.mkdir(mode=0o755)
    os.chmod(target, 0o755)
    link = tmp_path / "aiwg-0"
    link.symlink_to(target)
    try:
        private_dir(link)
        raise AssertionError("a symlink was accepted")
    except PermissionError as exc:
        assert "is a symlink" in str(exc)
    assert target.stat().st_mode & 0o777 == 0o755
    # a state directory the user moved elsewhere and linked is still theirs to use (and gets made private)
    private_dir(link, allow_link=True)
    assert target.stat().st_mode & 0o777 == 0o700


def test_a_watch_path_that_a_pull_turns_into_a_symlink_is_not_followed(svc_env: ServiceEnv, tmp_path: Path) -> None:
    """``up`` did not exist when the config was checked; a later ``up -> ../outside`` must not be watched."""
    outside = tmp_path / "outside"
    (outside / ".ssh").mkdir(parents=True)
    svc_env.write_project_config({"watch": {"paths": [{"path": "up/.ssh"}, {"path": "src/"}], "debounce_ms": 50},
                                  "schedule": {"jobs": []}})
    (svc_env.project / "src").mkdir()
    svc_env.start()
    (svc_env.project / "up").symlink_to(outside)
    (outside / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA")
    (svc_env.project / "src" / "canary").write_text("1")  # an event that must arrive, so we know when to look
    wait_for(lambda: svc_env.call("events.list", {"type": "file.*"})["events"], 20, what="the canary's event")
    paths = [e["data"].get("path") for e in svc_env.call("events.list", {"type": "file.*"})["events"]]
    assert paths == ["src/canary"]
    watched = svc_env.call("daemon.status")["subsystems"]["watcher"]
    assert str(outside) not in json.dumps(watched)
