"""The Debian package: build it for real with ``packaging/deb/build.sh`` and check the .deb without installing it.

One build per module (about 20 s with a warm pip cache). The checks read the package (the checkout only as the
reference for the units): the control fields and maintainer scripts (``dpkg-deb -I``/``-f``), the file list
(``dpkg-deb -c``), and a tree extracted with ``dpkg-deb -x`` whose bundled interpreter must run from where it
was extracted (the packaged daemon answers the packaged ``aiwgctl ping``). Finally the package is installed and
purged with ``dpkg --root`` in a throwaway root, which runs its maintainer scripts.

Needs Debian: dpkg-deb, and the build dependencies (``build.sh`` installs missing ones when run as root).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_SH = REPO / "packaging" / "deb" / "build.sh"
PREFIX = "/usr/lib/aiwg-service"
UNITS = ("aiwg.socket", "aiwg.service", "aiwg@.socket", "aiwg@.service")

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(300)]


@dataclass(frozen=True)
class Built:
    """A built package and the directory it was staged in (whose path must not leak into it)."""

    deb: Path
    workdir: Path


def clean_env() -> dict[str, str]:
    """The environment without anything that would point an interpreter at the test's own venv."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a command from / (so `python -c` cannot import the checkout), failing the test if it fails."""
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=clean_env(), cwd="/")
    assert res.returncode == 0, f"{cmd} exited {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    return res


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Build the .deb once (installing missing build dependencies when root); skip where that is impossible."""
    if shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None:
        pytest.skip("dpkg-deb is not installed: the package builds on Debian only")
    out = tmp_path_factory.mktemp("debout")
    workdir = tmp_path_factory.mktemp("debwork")
    cmd = ["bash", str(BUILD_SH), "--workdir", str(workdir), str(out)]
    if os.geteuid() == 0:
        cmd.insert(2, "--install-build-deps")
    res = subprocess.run(cmd, capture_output=True, text=True, env=clean_env())
    if res.returncode != 0 and "missing build dependencies" in res.stderr and os.geteuid() != 0:
        pytest.skip(f"build dependencies missing and not root to install them: {res.stderr.strip()}")
    assert res.returncode == 0, f"build.sh failed ({res.returncode}):\n{res.stdout}\n{res.stderr[-6000:]}"
    debs = list(out.glob("aiwg-service_*.deb"))
    assert len(debs) == 1, debs
    assert res.stdout.strip().splitlines()[-1] == str(debs[0]), "build.sh prints the .deb's path last"
    return Built(debs[0], workdir)


@pytest.fixture(scope="module")
def root(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's files extracted with ``dpkg-deb -x``, with its control files in ``DEBIAN/``."""
    dest = tmp_path_factory.mktemp("extracted")
    run("dpkg-deb", "-x", built.deb, dest)
    run("dpkg-deb", "-e", built.deb, dest / "DEBIAN")
    return dest


def pyproject_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def test_control_fields(built: Built) -> None:
    """Package, Version, Architecture and the relations a bundled-venv package needs."""
    fields = {}
    for name in ("Package", "Version", "Architecture", "Depends", "Recommends", "Section", "Priority",
                 "Maintainer", "Description", "Installed-Size"):
        fields[name] = run("dpkg-deb", "-f", built.deb, name).stdout.strip()
    arch = run("dpkg", "--print-architecture").stdout.strip()
    assert fields["Package"] == "aiwg-service"
    assert fields["Version"] == pyproject_version()
    assert fields["Architecture"] == arch
    assert built.deb.name == f"aiwg-service_{fields['Version']}_{arch}.deb"
    depends = [d.strip() for d in fields["Depends"].split(",")]
    for dep in ("python3 (>= 3.11)", "python3 (<< 3.12)", "libsystemd0", "systemd"):
        assert dep in depends, (dep, depends)
    assert "tmux" in [r.strip() for r in fields["Recommends"].split(",")]
    assert fields["Section"] == "devel"
    assert fields["Priority"] == "optional"
    assert re.fullmatch(r".+ <[^@\s]+@[^>\s]+>", fields["Maintainer"]), fields["Maintainer"]
    assert fields["Description"].startswith("per-user service")
    assert int(fields["Installed-Size"]) > 1000

    info = run("dpkg-deb", "-I", built.deb).stdout
    for script in ("postinst", "prerm", "postrm", "md5sums"):
        assert re.search(rf"\s{script}\s", info), f"{script} missing from dpkg-deb -I:\n{info}"


def test_file_list(built: Built) -> None:
    """Units in /usr/lib/systemd/user, /usr/bin symlinks into the venv, root-owned, no bytecode or pip."""
    listing = run("dpkg-deb", "-c", built.deb).stdout.splitlines()
    entries: dict[str, tuple[str, str, str | None]] = {}  # path -> (mode, owner, link target)
    for line in listing:
        parts = line.split(None, 5)
        name, _, target = parts[5].partition(" -> ")
        entries[name.removeprefix(".")] = (parts[0], parts[1], target or None)

    for unit in UNITS:
        mode, _, _ = entries[f"/usr/lib/systemd/user/{unit}"]
        assert mode == "-rw-r--r--", (unit, mode)
    for exe in ("aiwg-service", "aiwgctl"):
        mode, _, target = entries[f"/usr/bin/{exe}"]
        assert mode.startswith("l"), (exe, mode)
        assert target is not None
        assert os.path.normpath(os.path.join("/usr/bin", target)) == f"{PREFIX}/bin/{exe}"
        assert entries[f"{PREFIX}/bin/{exe}"][0] == "-rwxr-xr-x"
    assert {owner for _, owner, _ in entries.values()} == {"root/root"}
    assert not [p for p in entries if "__pycache__" in p or p.endswith((".pyc", ".pyo"))]
    assert not [p for p in entries if re.search(r"/site-packages/(pip|setuptools)[-/]", p)]
    assert f"{PREFIX}/bin/pip" not in entries


def test_units_are_the_repositorys_with_bindir(root: Path) -> None:
    """Each unit in the package is units/<name> with @BINDIR@ -> /usr/bin; aiwg.service runs /usr/bin/aiwg-service."""
    for unit in UNITS:
        shipped = (root / "usr/lib/systemd/user" / unit).read_text()
        assert "@BINDIR@" not in shipped
        assert shipped == (REPO / "units" / unit).read_text().replace("@BINDIR@", "/usr/bin")
    exec_start = [ln for ln in (root / "usr/lib/systemd/user/aiwg.service").read_text().splitlines()
                  if ln.startswith("ExecStart=")]
    want = [ln.replace("@BINDIR@", "/usr/bin") for ln in (REPO / "units/aiwg.service").read_text().splitlines()
            if ln.startswith("ExecStart=")]
    assert exec_start == want
    assert len(exec_start) == 1
    assert exec_start[0].startswith("ExecStart=/usr/bin/aiwg-service run")


def test_no_staging_path_anywhere(built: Built, root: Path) -> None:
    """No file, control file or symlink of the package names the directory it was built in."""
    needle = str(built.workdir).encode()
    assert needle.startswith(b"/") and len(needle) > 8
    checked = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            path = Path(dirpath, name)
            if path.is_symlink():
                assert needle not in os.readlink(path).encode(), path
            elif path.is_file():
                assert needle not in path.read_bytes(), f"{path} contains {needle.decode()}"
                checked += 1
    assert checked > 100


def test_venv_is_at_its_final_path(root: Path) -> None:
    """Scripts' shebangs and pyvenv.cfg name /usr/lib/aiwg-service; the interpreter is Debian's python3.X."""
    venv = root / PREFIX.lstrip("/")
    scripts = [p for p in (venv / "bin").iterdir() if p.is_file() and not p.is_symlink()]
    assert {"aiwg-service", "aiwgctl"} <= {p.name for p in scripts}
    for script in scripts:
        first = script.read_bytes().split(b"\n", 1)[0]
        if first.startswith(b"#!"):
            assert first == f"#!{PREFIX}/bin/python".encode(), (script.name, first)
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "home = /usr/bin" in cfg
    assert "include-system-site-packages = false" in cfg
    target = os.readlink(venv / "bin" / "python3")
    link = target if target.startswith("/") else os.readlink(venv / "bin" / target)
    assert re.fullmatch(r"/usr/bin/python3\.\d+", link), link


def bundled_python(root: Path) -> str:
    return str(root / PREFIX.lstrip("/") / "bin" / "python")


def test_bundled_interpreter_imports_everything(root: Path) -> None:
    """The extracted venv finds its own site-packages: every runtime dependency imports from there."""
    res = run(bundled_python(root), "-c",
              "import aiwg_service, msgspec, cronsim, inotify_simple, systemd.daemon, systemd.journal, uvloop, typer;"
              "print(aiwg_service.__file__)")
    assert res.stdout.strip().startswith(str(root / PREFIX.lstrip("/") / "lib"))


def test_aiwgctl_runs_from_the_extracted_tree(root: Path) -> None:
    """`aiwgctl cron next` through the CLI entry point and through the /usr/bin symlink's script."""
    code = ("from aiwg_service.cli.entry import main; import sys;"
            "sys.argv=['aiwgctl','cron','next','@daily','-n','1']; main()")
    res = run(bundled_python(root), "-c", code)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT00:00:00[+-]\d\d:\d\d\n", res.stdout), res.stdout
    # the console script itself (its shebang names the installed path, so start it with the bundled python)
    res = run(bundled_python(root), root / "usr/bin/aiwgctl", "cron", "next", "0 12 * * *", "-n", "2")
    assert len(res.stdout.splitlines()) == 2


def test_packaged_daemon_answers_ping(root: Path, tmp_path: Path) -> None:
    """The packaged aiwg-service runs from the extracted tree and the packaged aiwgctl gets its pong."""
    home = tmp_path / "home"
    (home / "run").mkdir(parents=True, mode=0o700)
    project = tmp_path / "project"
    project.mkdir()
    sock = tmp_path / "s.sock"
    env = clean_env() | {"XDG_STATE_HOME": str(home / "state"), "XDG_CONFIG_HOME": str(home / "config"),
                         "XDG_RUNTIME_DIR": str(home / "run"), "HOME": str(home)}
    env.pop("NOTIFY_SOCKET", None)
    daemon = subprocess.Popen([bundled_python(root), str(root / "usr/bin/aiwg-service"), "run", "--project",
                               str(project), "--socket", str(sock)], cwd="/", env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and daemon.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sock.exists(), "the packaged daemon never created its socket"
        res = subprocess.run([bundled_python(root), str(root / "usr/bin/aiwgctl"), "--socket", str(sock), "ping"],
                             capture_output=True, text=True, env=env, cwd="/", timeout=30)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("pong"), res.stdout
    finally:
        daemon.terminate()
        out, _ = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, out


def test_dpkg_root_install_and_purge(built: Built, tmp_path: Path) -> None:
    """Install into a throwaway root with dpkg --root (scripts run chrootless with $DPKG_ROOT), then purge."""
    droot = tmp_path / "root"
    (droot / "var/lib/dpkg/info").mkdir(parents=True)
    (droot / "var/lib/dpkg/updates").mkdir()
    (droot / "var/lib/dpkg/status").touch()
    dpkg = ["dpkg", f"--root={droot}", "--force-depends", "--force-script-chrootless", "--force-not-root",
            "--log=/dev/null"]
    run(*dpkg, "-i", built.deb)
    status = run("dpkg-query", f"--admindir={droot}/var/lib/dpkg", "-W", "-f=${Status}", "aiwg-service").stdout
    assert status == "install ok installed"
    venv = droot / PREFIX.lstrip("/")
    compiled = list(venv.rglob("__pycache__"))
    assert compiled, "postinst byte-compiles the venv"
    pyc = next(venv.rglob("cronsim*.pyc")).read_bytes()
    assert str(droot).encode() not in pyc, "bytecode records installed paths, not the dpkg --root"
    res = run(str(venv / "bin/python"), "-c", "import aiwg_service.events.cron")
    assert res.returncode == 0
    run(*dpkg, "--purge", "aiwg-service")
    assert not venv.exists(), "purge leaves nothing (prerm removed the bytecode postinst wrote)"
    assert not (droot / "usr").exists()
