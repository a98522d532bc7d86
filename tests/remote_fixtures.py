"""Session fixtures for the remote executors: a real Slurm cluster and a real sshd (see slurm_env.py, sshd_env.py).

Both are skipped when the machine lacks what they need, which ``AIWG_NO_SKIP=1`` (CI) turns into failures.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import slurm_env
import sshd_env


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[slurm_env.SlurmCluster]:
    missing = slurm_env.missing_requirements()
    if missing:
        pytest.skip("no private Slurm cluster: " + "; ".join(missing))
    with slurm_env.SlurmCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def sshd() -> Iterator[sshd_env.SshServer]:
    missing = sshd_env.missing_requirements()
    if missing:
        pytest.skip("no private sshd: " + "; ".join(missing))
    with sshd_env.SshServer() as server:
        yield server
