"""The slurm executor against a real single-node cluster (slurm_env.py): submit, output, exit codes,
timeout, cancel, re-adoption by a new executor instance, rejected jobs, a missing sbatch, a down controller."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from slurm_env import SlurmCluster

from aiwg_service.executors.base import LaunchError, LaunchSpec, RunRef
from aiwg_service.executors.remote_common import ExecutorUnavailable
from aiwg_service.executors.schema import SlurmExecutorConfig
from aiwg_service.executors.slurm import SlurmExecutor, job_name


def make(cluster: SlurmCluster, state: Path, **cfg: object) -> SlurmExecutor:
    env = {"PATH": f"{cluster.bin_dir}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    return SlurmExecutor("cluster", SlurmExecutorConfig(poll_min_seconds=0.3, poll_max_seconds=1.0, **cfg),  # type: ignore[arg-type]
                         state, environ=env)


def spec(tmp: Path, task: str, script: str, **kw: object) -> LaunchSpec:
    (tmp / "logs").mkdir(exist_ok=True)
    return LaunchSpec(task_id=task, argv=["/bin/sh", "-c", script], cwd=str(tmp), env={"PATH": "/usr/bin:/bin",
                      "AIWG_TASK_ID": task, "SECRET_TOKEN": "s3cret"}, log_path=str(tmp / "logs" / f"{task}.log"),
                      **kw)  # type: ignore[arg-type]


def test_submit_output_exit_code(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    async def main() -> None:
        ex = make(slurm_cluster, tmp_path)
        s = spec(tmp_path, "t-ok", 'echo "out $AIWG_TASK_ID in $(pwd)"; echo err >&2; exit 7')
        handle = await ex.start(s)
        assert handle["kind"] == "slurm" and handle["job"].isdigit()
        assert slurm_cluster.jobs()[handle["job"]] in ("PENDING", "RUNNING", "COMPLETING", "COMPLETED")
        info = await asyncio.wait_for(ex.wait(handle), 60)
        assert info.exit_code == 7 and info.signal is None and not info.timed_out and info.error is None
        text = Path(s.log_path).read_text()
        assert f"out t-ok in {tmp_path}\n" in text and "err\n" in text
        assert "s3cret" not in Path(handle["run"] + ".exit").read_text()
        assert not Path(handle["run"] + ".spec").exists()  # the runner deleted it (it held the env)
        assert ex.health()["state"] == "up"
        await ex.forget(handle)
        assert not Path(handle["run"] + ".exit").exists()
        await ex.close()

    asyncio.run(main())


def test_timeout_and_cancel(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    async def main() -> None:
        ex = make(slurm_cluster, tmp_path)
        h_to = await ex.start(spec(tmp_path, "t-slow", "echo start; sleep 60", timeout_s=1.5, kill_grace_s=1.0))
        h_c = await ex.start(spec(tmp_path, "t-cancel", "echo start; sleep 60", kill_grace_s=1.0))
        w_to = asyncio.create_task(ex.wait(h_to))
        w_c = asyncio.create_task(ex.wait(h_c))
        log_c = tmp_path / "logs" / "t-cancel.log"
        for _ in range(200):
            if log_c.exists() and b"start" in log_c.read_bytes():
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # let the poller see it RUNNING
        await ex.cancel(h_c, grace_s=1.0)
        info_c = await asyncio.wait_for(w_c, 60)
        assert info_c.signal == 15 and not info_c.timed_out
        info_to = await asyncio.wait_for(w_to, 60)
        assert info_to.timed_out
        for _ in range(100):  # the exit record comes first; Slurm lets the job go a moment later
            active = slurm_cluster.run("squeue", "-h", "-o", "%i").stdout.split()
            if h_c["job"] not in active and h_to["job"] not in active:
                break
            await asyncio.sleep(0.2)
        assert h_c["job"] not in active and h_to["job"] not in active
        await ex.close()

    asyncio.run(main())


def test_cancel_pending_job(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    async def main() -> None:
        ex = make(slurm_cluster, tmp_path, extra_args=["--begin=now+1hour"])
        h = await ex.start(spec(tmp_path, "t-pend", "echo never"))
        w = asyncio.create_task(ex.wait(h))
        await asyncio.sleep(0.5)
        await ex.cancel(h)
        info = await asyncio.wait_for(w, 60)
        assert info.signal == 15 and info.error is None
        assert not (tmp_path / "logs" / "t-pend.log").exists() or b"never" not in \
            (tmp_path / "logs" / "t-pend.log").read_bytes()
        await ex.close()

    asyncio.run(main())


def test_readopt_by_a_new_executor(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    async def main() -> None:
        first = make(slurm_cluster, tmp_path)
        s = spec(tmp_path, "t-adopt", "echo one; sleep 2; echo two; exit 3")
        handle = await first.start(s)
        await first.close()  # the service goes away; the job does not
        second = make(slurm_cluster, tmp_path)
        probe = await second.adopt(RunRef(task_id="t-adopt", log_path=s.log_path, handle=handle))
        assert probe.state == "running" and probe.handle is not None and probe.handle["job"] == handle["job"]
        info = await asyncio.wait_for(second.wait(probe.handle), 60)
        assert info.exit_code == 3
        assert Path(s.log_path).read_text().count("two") == 1
        again = await second.adopt(RunRef(task_id="t-adopt", log_path=s.log_path, handle=handle))
        assert again.state == "finished" and again.exit is not None and again.exit.exit_code == 3
        # died inside start, before the handle was stored: found by the job name, or never runs
        lost = await second.adopt(RunRef(task_id="t-nohandle", log_path=s.log_path, handle=None))
        assert lost.state == "never_started"
        await second.close()

    asyncio.run(main())


def test_rejected_job_missing_sbatch_and_down_controller(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    async def main() -> None:
        ex = make(slurm_cluster, tmp_path, partition="no-such-partition")
        with pytest.raises(LaunchError) as e:
            await ex.start(spec(tmp_path, "t-rej", "true"))
        assert "Slurm rejected the job: sbatch: error: invalid partition specified: no-such-partition" in str(e.value)
        assert not list((tmp_path / "runs").glob("t-rej.*.spec"))

        nosb = SlurmExecutor("cluster", SlurmExecutorConfig(), tmp_path, environ={"PATH": str(tmp_path)})
        with pytest.raises(LaunchError, match="sbatch not found on PATH"):
            await nosb.start(spec(tmp_path, "t-nosb", "true"))

        ok = make(slurm_cluster, tmp_path, command_timeout_seconds=15)
        slurm_cluster.stop_daemon("slurmctld")
        try:
            with pytest.raises(ExecutorUnavailable):
                await ok.start(spec(tmp_path, "t-down", "true"))
            assert ok.health()["state"] == "down" and ok.health()["last_error"]
        finally:
            slurm_cluster.start_slurmctld()
        h = await ok.start(spec(tmp_path, "t-back", "exit 0"))
        assert (await asyncio.wait_for(ok.wait(h), 60)).exit_code == 0
        assert ok.health()["state"] == "up"
        assert job_name("t-back") == "aiwg-t-back"
        await ok.close()

    asyncio.run(main())


def test_readopt_while_slurmctld_is_down(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """A restart that finds the controller down holds the job as running and follows it once it answers."""

    async def main() -> None:
        first = make(slurm_cluster, tmp_path)
        s = spec(tmp_path, "t-ctld", "echo one; sleep 3; echo two; exit 6")
        handle = await first.start(s)
        await first.close()
        slurm_cluster.stop_daemon("slurmctld")
        try:
            second = make(slurm_cluster, tmp_path)
            probe = await second.adopt(RunRef(task_id="t-ctld", log_path=s.log_path, handle=handle))
            assert probe.state == "running" and second.health()["state"] == "down"
            assert probe.handle is not None
            waiter = asyncio.create_task(second.wait(probe.handle))
            await asyncio.sleep(1)
            assert not waiter.done()
        finally:
            slurm_cluster.start_slurmctld()
        info = await asyncio.wait_for(waiter, 60)
        assert info.exit_code == 6 and Path(s.log_path).read_text().count("two") == 1
        await second.close()

    asyncio.run(main())


def test_remote_path_at_another_commit_or_missing(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    import subprocess

    def git(cwd: Path, *args: str) -> None:
        subprocess.run(["git", "-C", str(cwd), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       capture_output=True)

    async def main() -> None:
        proj, clone = tmp_path / "proj", tmp_path / "clone"
        proj.mkdir()
        git(proj, "init", "-q")
        (proj / "f").write_text("1")
        git(proj, "add", "f")
        git(proj, "commit", "-qm", "one")
        git(tmp_path, "clone", "-q", str(proj), str(clone))
        (proj / "f").write_text("2")
        git(proj, "commit", "-qam", "two")
        s = LaunchSpec(task_id="t-co", argv=["true"], cwd=str(proj), env={}, log_path=str(tmp_path / "co.log"))
        ex = make(slurm_cluster, tmp_path, remote_path=str(clone))
        with pytest.raises(LaunchError, match=r"the checkout .*/clone is at commit .* the project here at"):
            await ex.start(s)
        ex = make(slurm_cluster, tmp_path, remote_path=str(tmp_path / "missing"))
        with pytest.raises(LaunchError, match=r"/missing on the cluster: .*/missing does not exist"):
            await ex.start(s)
        assert not list((tmp_path / "runs").glob("t-co.*"))  # nothing was submitted

    asyncio.run(main())


def test_log_growth_is_announced_when_inotify_cannot_see_it(tmp_path: Path) -> None:
    """On NFS another node's writes raise no local event: the executor notices growth and makes one."""
    from inotify_simple import INotify, flags

    async def main() -> None:
        ex = SlurmExecutor("cluster", SlurmExecutorConfig(log_poll_seconds=0.1), tmp_path, environ={"PATH": ""})
        log = tmp_path / "job.log"
        writer = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # stays open: no CLOSE_WRITE
        ino = INotify()
        ino.add_watch(str(tmp_path), flags.CLOSE_WRITE)
        ex.poller.watch_log(str(log))
        try:
            os.write(writer, b"more output\n")
            got = []
            for _ in range(50):
                got = [e for e in ino.read(timeout=0) if e.name == "job.log"]
                if got:
                    break
                await asyncio.sleep(0.05)
            assert got, "no CLOSE_WRITE for the grown log"
        finally:
            ex.poller.unwatch_log(str(log))
            os.close(writer)
            ino.close()
            await ex.close()

    asyncio.run(main())
