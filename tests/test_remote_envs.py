"""The test infrastructure itself: the private Slurm cluster and sshd come up and do real work."""

from __future__ import annotations

import time

from slurm_env import SlurmCluster
from sshd_env import SshServer


def test_slurm_cluster_runs_a_batch_job(slurm_cluster: SlurmCluster) -> None:
    out = slurm_cluster.root / "probe.out"
    job = slurm_cluster.run("sbatch", "--parsable", f"--output={out}", "--wrap", "echo probe; exit 3").stdout.strip()
    assert job.isdigit()
    deadline = time.monotonic() + 60
    while slurm_cluster.jobs().get(job) not in ("FAILED", "COMPLETED"):
        assert time.monotonic() < deadline, slurm_cluster.jobs()
        time.sleep(0.2)
    assert slurm_cluster.jobs()[job] == "FAILED"
    assert out.read_text() == "probe\n"


def test_sshd_runs_commands_and_comes_back(sshd: SshServer) -> None:
    assert sshd.ssh("echo $((6 * 7))").stdout == "42\n"
    sshd.stop()
    assert sshd.ssh("true", check=False).returncode == 255
    sshd.start()
    assert sshd.ssh("echo back").stdout == "back\n"
