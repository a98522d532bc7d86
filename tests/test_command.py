"""Every external command has a deadline: a hung systemctl (a real script that never answers) ends as an
error naming the command, and the process and its children are gone."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest
from service_fixture import wait_for

from aiwg_service import command
from aiwg_service.executors.base import LaunchError
from aiwg_service.executors.local import LocalExecutor


def hang_script(bin_dir: Path, name: str, pidfile: Path) -> None:
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / name
    exe.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {pidfile}\nwait\n")
    exe.chmod(0o755)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_hung_command_is_killed_with_its_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    hang_script(tmp_path / "bin", "hang", pidfile)

    async def main() -> None:
        proc = await asyncio.create_subprocess_exec(str(tmp_path / "bin" / "hang"), stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, start_new_session=True)
        with pytest.raises(command.CommandTimeout, match=r"hang did not finish within 0\.3 s"):
            await command.finish(proc, 0.3, "hang")
        assert proc.returncode is not None  # reaped

    asyncio.run(main())
    child = int(pidfile.read_text())
    wait_for(lambda: not alive(child), 5, what="the hung command's child to be killed with its group")


def test_a_hung_systemctl_fails_the_call_instead_of_holding_it(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    hang_script(tmp_path / "bin", "systemctl", tmp_path / "systemctl.pid")
    monkeypatch.setattr(command, "SYSTEMD_TIMEOUT_S", 0.5)
    ex = LocalExecutor(tmp_path / "state", use_systemd=True,
                       environ={"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})

    async def main() -> None:
        with pytest.raises(LaunchError, match=r"systemctl did not finish within 0\.5 s"):
            await ex.unit_props(["aiwg-task-x.service"])

    asyncio.run(main())
    left = tmp_path / "systemctl.pid"
    if left.exists():  # systemctl's own child (not in a group we own) is ended by the test, by pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(left.read_text()), 9)
