"""The ssh executor against a real sshd on a loopback port (sshd_env.py): run, stream, cancel, exit codes,
an unknown host key refused, the host going away mid-task (held, reported) and coming back (re-adopted),
a missing remote path and a checkout at another commit."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from sshd_env import SshServer
from systemd_env import UserManager

from aiwg_service.executors.base import LaunchError, LaunchSpec, RunRef
from aiwg_service.executors.remote_common import ExecutorUnavailable
from aiwg_service.executors.schema import SshExecutorConfig
from aiwg_service.executors.ssh import SshExecutor


def make(sshd: SshServer, tmp: Path, **cfg: object) -> SshExecutor:
    return SshExecutor("box", SshExecutorConfig(host=sshd.alias, ssh_config=str(sshd.ssh_config),
                                                remote_state_dir=str(tmp / "remote-state"), **cfg))  # type: ignore[arg-type]


def spec(tmp: Path, task: str, script: str, **kw: object) -> LaunchSpec:
    (tmp / "logs").mkdir(exist_ok=True)
    return LaunchSpec(task_id=task, argv=["/bin/sh", "-c", script], cwd=str(tmp),
                      env={"PATH": "/nonexistent-local-path", "HOME": "/nonexistent-home", "AIWG_TASK_ID": task,
                           "API_TOKEN": "s3cret"},
                      log_path=str(tmp / "logs" / f"{task}.log"), **kw)  # type: ignore[arg-type]


def test_run_stream_exit_code_and_env(sshd: SshServer, tmp_path: Path) -> None:
    async def main() -> None:
        ex = make(sshd, tmp_path)
        s = spec(tmp_path, "t-run", 'echo "one $AIWG_TASK_ID $API_TOKEN"; echo "home=$HOME"; '
                 'echo "path=$PATH"; echo err >&2; sleep 1; echo two; exit 5')
        handle = await ex.start(s)
        assert handle["kind"] == "ssh" and handle["pid"] > 1
        assert ex.health()["state"] == "up" and ex.health()["systemd"] is False
        info = await asyncio.wait_for(ex.wait(handle), 30)
        assert info.exit_code == 5 and info.error is None and not info.timed_out
        text = Path(s.log_path).read_text()
        assert "one t-run s3cret\n" in text and "err\n" in text and text.endswith("two\n")
        assert "home=/root\n" in text or f"home={Path.home()}\n" in text  # the host's HOME, not ours
        assert "/nonexistent-local-path" not in text
        assert info.log_bytes == Path(s.log_path).stat().st_size
        # the secret travelled in the spec file, which the runner deleted
        assert not list((tmp_path / "remote-state").glob("*.spec"))
        await ex.forget(handle)
        assert not list((tmp_path / "remote-state").glob("t-run.*"))
        await ex.close()

    asyncio.run(main())


def test_cancel_and_timeout(sshd: SshServer, tmp_path: Path) -> None:
    async def main() -> None:
        ex = make(sshd, tmp_path)
        h = await ex.start(spec(tmp_path, "t-cancel", "echo started; sleep 60.4321", kill_grace_s=1.0))
        ht = await ex.start(spec(tmp_path, "t-to", "sleep 60.1234", timeout_s=1.0, kill_grace_s=1.0))
        w = asyncio.create_task(ex.wait(h))
        wt = asyncio.create_task(ex.wait(ht))
        log = tmp_path / "logs" / "t-cancel.log"
        for _ in range(100):
            if log.exists() and b"started" in log.read_bytes():
                break
            await asyncio.sleep(0.1)
        await ex.cancel(h)
        info = await asyncio.wait_for(w, 30)
        assert info.signal == 15 and not info.timed_out
        assert (await asyncio.wait_for(wt, 30)).timed_out
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert "sleep 60.4321" not in ps and "sleep 60.1234" not in ps  # the agents' groups are gone
        await ex.close()

    asyncio.run(main())


def test_unknown_host_key_refused_and_auth_failure(sshd: SshServer, tmp_path: Path) -> None:
    async def main() -> None:
        cfg = tmp_path / "ssh_config"
        empty = tmp_path / "known_hosts"
        empty.write_text("")
        cfg.write_text(sshd.ssh_config.read_text().replace(str(sshd.known_hosts), str(empty)))
        ex = SshExecutor("box", SshExecutorConfig(host=sshd.alias, ssh_config=str(cfg)))
        with pytest.raises(ExecutorUnavailable, match="not trusted"):
            await ex.start(spec(tmp_path, "t-unknown", "echo should-not-run > /tmp/aiwg-should-not-run"))
        assert ex.health()["state"] == "down" and "not trusted" in (ex.health()["last_error"] or "")
        # "UserKnownHostsFile none" does not switch checking off
        cfg.write_text(sshd.ssh_config.read_text().replace(str(sshd.known_hosts), "none"))
        with pytest.raises(ExecutorUnavailable):
            await SshExecutor("box", SshExecutorConfig(host=sshd.alias, ssh_config=str(cfg))).start(
                spec(tmp_path, "t-unknown2", "true"))

        # a key the host does not accept: an auth failure, said so
        from sshd_env import keygen

        keygen(tmp_path / "other_key", "not-authorized")
        cfg.write_text(sshd.ssh_config.read_text().replace(str(sshd.user_key), str(tmp_path / "other_key")))
        ex = SshExecutor("box", SshExecutorConfig(host=sshd.alias, ssh_config=str(cfg)))
        with pytest.raises(ExecutorUnavailable, match=f"ssh authentication to {sshd.alias} failed"):
            await ex.start(spec(tmp_path, "t-auth", "true"))
        assert "authentication" in (ex.health()["last_error"] or "")

    asyncio.run(main())


def test_host_goes_away_and_comes_back(sshd: SshServer, tmp_path: Path) -> None:
    async def main() -> None:
        ex = make(sshd, tmp_path, reconnect_max_seconds=1.0)
        s = spec(tmp_path, "t-away", "echo before; sleep 3; echo after; exit 4")
        handle = await ex.start(s)
        w = asyncio.create_task(ex.wait(handle))
        log = Path(s.log_path)
        for _ in range(100):
            if log.exists() and b"before" in log.read_bytes():
                break
            await asyncio.sleep(0.1)
        sshd.stop()  # the host vanishes, connections and all; the remote run goes on
        try:
            for _ in range(100):
                if ex.health()["state"] == "down":
                    break
                await asyncio.sleep(0.1)
            assert ex.health()["state"] == "down" and ex.health()["last_error"]
            assert not w.done()  # held, not failed
            # a restarted service adopts it while the host is still away: held as running
            other = make(sshd, tmp_path)
            probe = await other.adopt(RunRef(task_id="t-away", log_path=s.log_path, handle=handle))
            assert probe.state == "running"
            await asyncio.sleep(3.5)
        finally:
            sshd.start()
        info = await asyncio.wait_for(w, 30)
        assert info.exit_code == 4 and info.error is None
        assert log.read_text() == "before\nafter\n"  # every byte once
        assert ex.health()["state"] == "up"
        probe = await other.adopt(RunRef(task_id="t-away", log_path=s.log_path, handle=handle))
        assert probe.state == "finished" and probe.exit is not None and probe.exit.exit_code == 4
        await ex.close()
        await other.close()

    asyncio.run(main())


def test_remote_path_missing_or_at_another_commit(sshd: SshServer, tmp_path: Path) -> None:
    def git(cwd: Path, *args: str) -> str:
        return subprocess.run(["git", "-C", str(cwd), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              check=True, capture_output=True, text=True).stdout.strip()

    async def main() -> None:
        proj = tmp_path / "proj"
        proj.mkdir()
        git(proj, "init", "-q")
        (proj / "f").write_text("1")
        git(proj, "add", "f")
        git(proj, "commit", "-qm", "one")
        clone = tmp_path / "clone"
        git(tmp_path, "clone", "-q", str(proj), str(clone))
        (proj / "f").write_text("2")
        git(proj, "commit", "-qam", "two")
        ex = make(sshd, tmp_path, remote_path=str(tmp_path / "missing"))
        s = LaunchSpec(task_id="t-co", argv=["true"], cwd=str(proj), env={}, log_path=str(tmp_path / "co.log"))
        with pytest.raises(LaunchError, match=r"remote path .*/missing does not exist"):
            await ex.start(s)
        ex.cfg = SshExecutorConfig(host=sshd.alias, ssh_config=str(sshd.ssh_config), remote_path=str(clone),
                                   remote_state_dir=str(tmp_path / "remote-state"))
        with pytest.raises(LaunchError, match=r"is at commit .* the project here at"):
            await ex.start(s)
        ex.cfg = SshExecutorConfig(host=sshd.alias, ssh_config=str(sshd.ssh_config), remote_path=str(clone),
                                   remote_state_dir=str(tmp_path / "remote-state"), sync="git-push")
        h = await ex.start(LaunchSpec(task_id="t-co", argv=["cat", "f"], cwd=str(proj), env={},
                                      log_path=str(tmp_path / "co.log")))
        assert (await asyncio.wait_for(ex.wait(h), 30)).exit_code == 0
        assert (tmp_path / "co.log").read_text() == "2"
        assert git(clone, "rev-parse", "HEAD") == git(proj, "rev-parse", "HEAD")
        await ex.close()

    asyncio.run(main())


def test_remote_user_manager_runs_tasks_as_transient_units(user_manager: UserManager, tmp_path: Path) -> None:
    """A host with a user manager: the task is `systemd-run --user --unit=aiwg-task-<id> --collect`."""
    env = user_manager.env
    server = SshServer(alias="sdhost", prefix=user_manager._nsenter(), extra_config=(
        f"SetEnv XDG_RUNTIME_DIR={env['XDG_RUNTIME_DIR']} DBUS_SESSION_BUS_ADDRESS={env['DBUS_SESSION_BUS_ADDRESS']}"))

    async def main() -> None:
        ex = make(server, tmp_path)
        h = await ex.start(spec(tmp_path, "t-unit", "echo in-unit; sleep 60.777", kill_grace_s=1.0))
        assert ex.health()["systemd"] is True and h["unit"] == "aiwg-task-t-unit.service"
        assert user_manager.systemctl("is-active", "aiwg-task-t-unit.service").stdout.strip() == "active"
        w = asyncio.create_task(ex.wait(h))
        log = tmp_path / "logs" / "t-unit.log"
        for _ in range(100):
            if log.exists() and b"in-unit" in log.read_bytes():
                break
            await asyncio.sleep(0.1)
        await ex.cancel(h)
        info = await asyncio.wait_for(w, 30)
        assert info.signal == 15
        for _ in range(50):  # --collect: the unit is gone once it stopped
            if user_manager.systemctl("is-active", "aiwg-task-t-unit.service").stdout.strip() != "active":
                break
            await asyncio.sleep(0.1)
        assert user_manager.systemctl("is-active", "aiwg-task-t-unit.service").stdout.strip() != "active"
        await ex.close()

    with server:
        asyncio.run(main())
