"""The local executor with real processes: the detached runner (foreground) and transient units
under the real systemd user manager (tests/systemd_env.py).

Each test plays the service's part directly: ``start``, then a *new* executor instance (a restarted
service) adopts, waits and reads the durable results.
"""

from __future__ import annotations

import asyncio
import json
import marshal
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiwg_service.executors import ExitInfo, LaunchError, LaunchSpec, RunRef
from aiwg_service.executors.local import RUNNER, SHIM_FILE, LocalExecutor, unit_name
from aiwg_service.executors.runner import CLAIM_LOST

FAKE = str(Path(__file__).with_name("fake_claude.py"))


@pytest.fixture(params=["runner", "unit"])
def mode(request: pytest.FixtureRequest) -> Iterator[dict]:
    """Executor settings for each mode; ``unit`` boots (or reuses) the private user manager."""
    if request.param == "runner":
        yield {"use_systemd": False, "environ": dict(os.environ), "sd": None}
        return
    sd = request.getfixturevalue("sd")
    yield {"use_systemd": True, "environ": sd.env, "sd": sd}


def make(tmp: Path, mode: dict) -> LocalExecutor:
    return LocalExecutor(tmp / "state", use_systemd=mode["use_systemd"], environ=mode["environ"])


def spec(tmp: Path, task_id: str, prompt: str, **kw: object) -> LaunchSpec:
    return LaunchSpec(task_id=task_id, argv=[sys.executable, FAKE, "-p", prompt], cwd=str(tmp),
                      env={"PATH": os.environ["PATH"]}, log_path=str(tmp / f"{task_id}.log"), **kw)


def result_line(log: Path) -> dict:
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("type") == "result"][-1]


def test_run_and_record(tmp_path: Path, mode: dict) -> None:
    async def go() -> None:
        ex = make(tmp_path, mode)
        # it runs long enough for its unit to be looked at (the agent now starts at once: no runner first)
        h = await ex.start(spec(tmp_path, "t-a", "sleep=2 hello", memory_max="256M", cpu_quota="50%"))
        assert h["kind"] == ("local-unit" if mode["use_systemd"] else "local-runner")
        if mode["sd"] is not None:
            props = mode["sd"].show(unit_name("t-a"), "MemoryMax", "CPUQuotaPerSecUSec", "ControlGroup")
            assert props["MemoryMax"] == str(256 * 1024 * 1024)
            assert props["CPUQuotaPerSecUSec"] == "500ms"
            assert props["ControlGroup"].endswith("/" + unit_name("t-a"))  # its own cgroup
        info = await ex.wait(h)
        log = tmp_path / "t-a.log"
        assert info.exit_code == 0 and info.signal is None and not info.timed_out
        assert info.log_bytes == log.stat().st_size
        assert result_line(log)["result"] == "Done: sleep=2 hello"
        spec_file = Path(h["run"] + ".spec")
        assert not spec_file.exists()  # the env (secrets) does not stay on disk
        await ex.forget(h)
        assert [p.name for p in (tmp_path / "state" / "runs").iterdir()] == [SHIM_FILE]  # only the shim

    asyncio.run(go())


def test_adopt_running_then_finished_while_down(tmp_path: Path, mode: dict) -> None:
    async def go() -> None:
        first = make(tmp_path, mode)
        h1 = await first.start(spec(tmp_path, "t-b", "sleep=1.5 long"))
        h2 = await first.start(spec(tmp_path, "t-c", "fail quick"))
        await first.close()  # the service goes away; the runs do not
        await asyncio.sleep(0.5)
        second = make(tmp_path, mode)
        probes = await second.poll([RunRef(task_id="t-b", log_path="", handle=h1),
                                    RunRef(task_id="t-c", log_path="", handle=h2)])
        assert probes["t-b"].state == "running"
        assert probes["t-b"].log_start == 0
        assert probes["t-c"].state == "finished"  # finished while "down": its real result
        assert probes["t-c"].exit == ExitInfo(exit_code=1, log_bytes=(tmp_path / "t-c.log").stat().st_size,
                                              finished_at=probes["t-c"].exit.finished_at)
        handle = probes["t-b"].handle
        assert handle is not None
        info = await second.wait(handle)
        assert info.exit_code == 0
        assert result_line(tmp_path / "t-b.log")["result"] == "Done: sleep=1.5 long"

    asyncio.run(go())


def test_crash_window_claim_means_at_most_once(tmp_path: Path, mode: dict) -> None:
    """The service recorded 'running' and died before (or while) launching: recovery claims the
    attempt, so a launch still in flight finds the claim taken and never runs the agent."""
    async def go() -> None:
        ex = make(tmp_path, mode)
        mark = tmp_path / "mark"
        probe = await ex.adopt(RunRef(task_id="t-d", attempt=1, log_path="", handle=None))
        assert probe.state == "never_started"
        with pytest.raises(LaunchError, match="already claimed"):
            await ex.start(spec(tmp_path, "t-d", f"mark={mark}"))
        # A runner that was already on its way (spec written before the crash) gives up.
        s = ex.runs_dir / "t-d.1.spec"
        s.write_bytes(marshal.dumps({"argv": [sys.executable, FAKE, "-p", f"mark={mark}"], "cwd": str(tmp_path),
                                     "env": {}, "log_path": str(tmp_path / "t-d.log")}))
        proc = await asyncio.create_subprocess_exec(sys.executable, "-I", "-S", RUNNER, str(s))
        assert await proc.wait() == CLAIM_LOST
        assert not mark.exists()
        # the next attempt has its own claim
        h = await ex.start(spec(tmp_path, "t-d", f"mark={mark}", attempt=2))
        assert (await ex.wait(h)).exit_code == 0
        assert mark.read_text().count("start") == 1

    asyncio.run(go())


def test_timeout_and_cancel_are_enforced_by_the_runner(tmp_path: Path, mode: dict) -> None:
    async def go() -> None:
        ex = make(tmp_path, mode)
        pidfile = tmp_path / "gc.pid"
        ht = await ex.start(spec(tmp_path, "t-e", "sleep=60", timeout_s=0.5, kill_grace_s=1.0))
        hc = await ex.start(spec(tmp_path, "t-f", f"sleep=60 ignore-term spawn-grandchild pidfile={pidfile}",
                                 kill_grace_s=0.5))
        await first_line(tmp_path / "t-f.log")
        await ex.close()
        again = make(tmp_path, mode)  # cancel from a restarted service works on the stored handle
        await again.cancel(hc)
        t = await again.wait(ht)
        assert t.timed_out and t.signal == 15
        c = await again.wait(hc)
        assert c.signal == 9 and not c.timed_out  # ignored SIGTERM: killed after the grace
        gc = int(pidfile.read_text())
        assert not Path(f"/proc/{gc}").exists() or "Z" in Path(f"/proc/{gc}/stat").read_text().split(")")[1][:3]

    asyncio.run(go())


async def first_line(log: Path, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not (log.exists() and b"\n" in log.read_bytes()):
        assert time.monotonic() < end, f"no output in {log}"
        await asyncio.sleep(0.02)


def test_deleted_log_is_recreated_and_result_kept(tmp_path: Path, mode: dict) -> None:
    async def go() -> None:
        ex = make(tmp_path, mode)
        log = tmp_path / "t-g.log"
        h = await ex.start(spec(tmp_path, "t-g", "sleep=1 deleted"))
        await first_line(log)
        log.unlink()
        info = await ex.wait(h)
        assert info.exit_code == 0
        text = log.read_text()
        assert "log file was deleted" in text
        assert result_line(log)["result"] == "Done: sleep=1 deleted"
        assert info.log_bytes == log.stat().st_size

    asyncio.run(go())


def test_spawn_error_is_a_clear_result(tmp_path: Path) -> None:
    async def go() -> None:
        ex = LocalExecutor(tmp_path / "state", use_systemd=False)
        h = await ex.start(LaunchSpec(task_id="t-h", argv=["/nonexistent/agent"], cwd=str(tmp_path), env={},
                                      log_path=str(tmp_path / "t-h.log")))
        info = await ex.wait(h)
        assert info.exit_code == 127
        assert info.error == "cannot start agent '/nonexistent/agent': No such file or directory"

    asyncio.run(go())


def test_unit_name_in_use_is_a_clear_error(tmp_path: Path, sd) -> None:
    sd.run(["systemd-run", "--user", "--unit=aiwg-task-t-i", "--quiet", "sleep", "30"], check=True)
    try:
        async def go() -> None:
            ex = LocalExecutor(tmp_path / "state", use_systemd=True, environ=sd.env)
            with pytest.raises(LaunchError, match=r"unit aiwg-task-t-i\.service is already in use"):
                await ex.start(spec(tmp_path, "t-i", "hello"))
            assert not list(ex.runs_dir.glob("*.spec"))

        asyncio.run(go())
    finally:
        sd.systemctl("stop", "aiwg-task-t-i.service")


def test_agent_that_closes_its_stdio_is_still_timed_out_and_cancelled(tmp_path: Path, mode: dict) -> None:
    """Issue #30.1: after EOF on the agent's output the runner still watches the deadline and the stop."""
    quiet = [*("/bin/sh", "-c"), "echo started; exec >&- 2>&-; exec sleep 60"]

    async def go() -> None:
        ex = make(tmp_path, mode)
        base = {"cwd": str(tmp_path), "env": {"PATH": os.environ["PATH"]}, "kill_grace_s": 1.0}
        ht = await ex.start(LaunchSpec(task_id="t-q1", argv=quiet, log_path=str(tmp_path / "t-q1.log"),
                                       timeout_s=3.0, **base))
        hc = await ex.start(LaunchSpec(task_id="t-q2", argv=quiet, log_path=str(tmp_path / "t-q2.log"), **base))
        await first_line(tmp_path / "t-q2.log")
        t0 = time.monotonic()
        await ex.cancel(hc)
        c = await asyncio.wait_for(ex.wait(hc), 30)
        assert c.signal == 15 and not c.timed_out
        assert time.monotonic() - t0 < 20
        t = await asyncio.wait_for(ex.wait(ht), 30)
        assert t.timed_out and t.signal == 15

    asyncio.run(go())


def test_prompt_of_a_mebibyte_goes_on_stdin(tmp_path: Path, mode: dict) -> None:
    """Issue #26: a prompt far past argv's 128 KiB per word reaches the agent whole, on stdin."""
    prompt = ("0123456789abcdef" * 65536)[:1024 * 1024 - 1] + "!"

    async def go() -> None:
        ex = make(tmp_path, mode)
        h = await ex.start(LaunchSpec(task_id="t-big", argv=["/bin/sh", "-c", "wc -c; exec tail -c 1"],
                                      cwd=str(tmp_path), env={"PATH": os.environ["PATH"]},
                                      log_path=str(tmp_path / "t-big.log"), stdin=prompt))
        info = await ex.wait(h)
        assert info.exit_code == 0
        # wc read it all; tail found the stream at its end (stdin is not rewound for it): nothing
        assert (tmp_path / "t-big.log").read_text().split() == [str(len(prompt.encode()))]
        assert not list(ex.runs_dir.glob("*.spec"))

    asyncio.run(go())
