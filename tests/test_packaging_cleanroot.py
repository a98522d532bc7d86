"""The packages in clean Debian 12 roots that never saw the build, as a user, a packager and a container get them.

One root file system is made per session with mmdebstrap from the machine's own apt sources (Debian's archive);
each test unpacks a fresh copy of it:

* the .deb installed with ``apt-get install ./…`` (its dependencies pulled from the archive), then used under
  a real, unprivileged systemd user manager booted *from that root* (tests/systemd_env.py, ``root=``): presets
  enable nothing, socket activation, the webhook socket enabled while the service runs (the README's steps),
  a delivery with no hook answered 404 at once, and removal stopping and disabling every unit for the user
  whose manager runs, then purge leaving nothing of the package;
* the .rpm installed with ``rpm --root`` into a root whose Python 3.11 and libsystemd are Debian's (a tiny
  rpm declares them to rpm's database), the service run from it, and erased leaving nothing;
* the Containerfile's last stage replayed step by step in a root (no container engine runs here): CA
  certificates (a TLS connection to a local server whose test CA is installed as the image installs one),
  tmux and git, the unprivileged user, and its HEALTHCHECK answering.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tarfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging_support import PREFIX, PYVER, REPO, USER, Built, built, nfpm_path, run
from systemd_env import UserManager, require_private_manager_support, skip_or_fail

__all__ = ["built"]

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]

#: what every root gets beyond Debian's minimal one: a user manager (nothing that pulls in Python: the .deb's
#: own dependencies must come from the archive when it is installed)
BASE_PACKAGES = ["systemd", "dbus-user-session"]
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")


def apt_sources() -> Path:
    """The machine's own Debian sources (a deb822 file, or the one-line list)."""
    for candidate in (SOURCES, Path("/etc/apt/sources.list")):
        if candidate.is_file() and candidate.read_text().strip():
            return candidate
    skip_or_fail("no apt sources on this machine to make a clean Debian root from")
    raise AssertionError  # unreachable


@pytest.fixture(scope="session")
def base_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A minimal Debian 12 root (plus BASE_PACKAGES) as a tarball, made once per session by mmdebstrap."""
    if os.geteuid() != 0 or shutil.which("mmdebstrap") is None:
        skip_or_fail("a clean root needs root and mmdebstrap (apt-get install mmdebstrap)")
    out = tmp_path_factory.mktemp("cleanroot") / "bookworm.tar"
    res = subprocess.run(["mmdebstrap", "--variant=minbase", "--mode=root", "--skip=cleanup/apt/lists",
                          f"--include={','.join(BASE_PACKAGES)}", "bookworm", str(out), str(apt_sources())],
                         capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, f"mmdebstrap failed:\n{res.stderr[-4000:]}"
    return out


@pytest.fixture
def root(base_tarball: Path, tmp_path: Path) -> Path:
    """A fresh copy of the clean root, with the machine's resolver so apt inside can reach the archive."""
    dest = tmp_path / "root"
    dest.mkdir()
    with tarfile.open(base_tarball) as tar:
        tar.extractall(dest, filter="fully_trusted")
    shutil.copy2("/etc/resolv.conf", dest / "etc/resolv.conf", follow_symlinks=True)
    return dest


def in_root(root: Path, script: str, *, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a shell script chrooted in *root*, with /dev, /proc and /sys mounted in a private mount namespace
    (gone when it ends)."""
    setup = (f'mount --rbind /dev "{root}/dev" && mount -t proc proc "{root}/proc" && '
             f'mount --rbind /sys "{root}/sys" && exec chroot "{root}" /bin/sh -ec "$0"')
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c", setup, script],
                         capture_output=True, text=True, timeout=timeout,
                         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                              "DEBIAN_FRONTEND": "noninteractive"})
    if check:
        assert res.returncode == 0, f"in {root}: {script}\nexit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def tree(root: Path) -> set[str]:
    """Every path in *root*, but what changes by merely running things (caches, logs, apt's and dpkg's state)."""
    skip = ("/var/cache/", "/var/log/", "/var/lib/apt/", "/var/lib/dpkg/", "/var/lib/rpm", "/tmp/", "/run/",
            "/usr/lib/sysimage/rpm", "/etc/ld.so.cache", "/root/", "/proc/", "/sys/", "/dev/")
    paths = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            rel = "/" + str(Path(dirpath, name).relative_to(root))
            if not (rel + "/").startswith(skip):
                paths.add(rel)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------ the .deb


@pytest.fixture
def deb_root(root: Path, built: Built) -> Iterator[tuple[Path, str]]:
    """The clean root with the .deb installed by apt (dependencies pulled from the archive), and apt's output."""
    shutil.copy2(built.deb, root / "tmp" / built.deb.name)
    res = in_root(root, f"apt-get install -y -q --no-install-recommends /tmp/{built.deb.name}")
    yield root, res.stdout + res.stderr


def test_deb_installs_with_its_dependencies_from_the_archive(deb_root: tuple[Path, str]) -> None:
    """apt pulls the interpreter the venv was built for; postinst compiles the bytecode; the venv imports."""
    root, out = deb_root
    assert re.search(rf"Setting up {PYVER}\b", out), out[-3000:]
    assert "installed; nothing is enabled" in out, out[-3000:]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT00:00:00[+-]\d\d:\d\d\n",
                        in_root(root, "aiwgctl cron next @daily -n 1").stdout)
    assert list((root / PREFIX.lstrip("/")).rglob("__pycache__/service.cpython-*.pyc"))
    assert in_root(root, "dpkg --verify aiwg-service").stdout == ""


def test_deb_under_a_user_manager_from_install_to_purge(deb_root: tuple[Path, str], tmp_path: Path) -> None:
    """Presets enable nothing; the socket activates the service; the webhook socket is enabled while the service
    runs as the README says and answers a delivery for no hook with 404 at once; removal stops and disables
    every unit for the user whose manager runs; purge leaves nothing of the package."""
    require_private_manager_support()
    root, _ = deb_root
    owned = set(in_root(root, "dpkg-query -L aiwg-service").stdout.split())
    with UserManager(uid=USER, root=root) as mgr:

        def user(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
            res = mgr.run(list(cmd), as_user=True, timeout=timeout, env={"PATH": "/usr/bin:/bin"})
            if check:
                assert res.returncode == 0, f"{cmd}: {res.returncode}\n{res.stdout}\n{res.stderr}"
            return res

        # presets: `systemctl --user preset` enables nothing (the package's preset file says disable)
        units = ["aiwg.socket", "aiwg.service", "aiwg-webhook.socket"]
        user("systemctl", "--user", "preset", *units)
        assert user("systemctl", "--user", "is-enabled", *units, check=False).stdout.split() == ["disabled"] * 3

        # opt in; the first ping starts the packaged service
        user("systemctl", "--user", "enable", "--now", "aiwg.socket")
        assert user("aiwgctl", "ping").stdout.startswith("pong from ")
        mgr.wait_for_state("aiwg.service", "active", "running")

        # the webhook listener, enabled while the service runs, exactly as the README says (on a free port)
        port = free_port()
        dropin = mgr.config_home / "systemd/user/aiwg-webhook.socket.d"
        dropin.mkdir(parents=True)
        (dropin / "port.conf").write_text(f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n")
        run("chown", "-R", f"{USER}:{USER}", mgr.config_home)
        user("systemctl", "--user", "daemon-reload")
        readme = "\n".join(p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
        step = ("systemctl --user enable aiwg-webhook.socket && systemctl --user stop aiwg.service && "
                "systemctl --user start aiwg-webhook.socket aiwg.service")
        assert step in readme, "the manual's step is the one tested here"
        user("sh", "-c", step)
        mgr.wait_for_state("aiwg.service", "active", "running")
        started = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/hooks/nothing", data=b"{}", timeout=30)
        assert err.value.code == 404 and time.monotonic() - started < 10

        # removal: prerm stops and disables every unit the package shipped for this running manager
        res = mgr.run(["apt-get", "remove", "-y", "-q", "aiwg-service"], timeout=300,
                      env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"})
        assert res.returncode == 0, res.stdout + res.stderr
        said = res.stdout + res.stderr  # apt passes the maintainer scripts' messages on either
        assert "stopped and disabled for nobody" in said, said
        for unit in units:
            assert mgr.show(unit, "ActiveState")["ActiveState"] in ("inactive", ""), unit
        assert not list((mgr.config_home / "systemd/user").rglob("aiwg*.socket")), "enable links removed"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        res = mgr.run(["apt-get", "purge", "-y", "-q", "aiwg-service"], timeout=300,
                      env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"})
        assert res.returncode == 0, res.stdout + res.stderr
    left = [p for p in owned if (root / p.lstrip("/")).exists() and not (root / p.lstrip("/")).is_dir()]
    assert not left, left
    assert not (root / PREFIX.lstrip("/")).exists()


# ------------------------------------------------------------------------------------------ the .rpm


#: directories a distribution's own packages own (the shells, its filesystem package), not ours
SHARED_DIRS = ["/usr/share/zsh", "/usr/share/zsh/site-functions", "/usr/share/fish",
               "/usr/share/fish/vendor_completions.d", "/usr/share/bash-completion",
               "/usr/share/bash-completion/completions"]


def provides_rpm(out: Path) -> Path:
    """An rpm declaring what Debian's packages give the root, and owning the shared directories the shells'
    packages own on an rpm system: rpm's database then knows them, as it would on Fedora."""
    cfg = out / "provides.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        name: debian-base-provides
        arch: all
        platform: linux
        version: 1.0
        maintainer: tests <tests@aiwg-service.org>
        description: what the Debian root provides, declared to rpm
        license: MIT
        provides:
          - /usr/bin/{PYVER}
          - libsystemd.so.0()(64bit)
          - /bin/sh
        contents:
        """) + "".join(f"  - dst: {d}\n    type: dir\n" for d in SHARED_DIRS))
    subprocess.run([nfpm_path(), "package", "--config", str(cfg), "--packager", "rpm", "--target", str(out)],
                   capture_output=True, text=True, check=True, cwd=out)
    (rpm,) = out.glob("debian-base-provides*.rpm")
    return rpm


def test_rpm_in_an_rpm_root_installs_runs_and_erases_cleanly(root: Path, built: Built, tmp_path: Path) -> None:
    """rpm --root, with its dependencies met (no --nodeps): the scriptlets run, the service serves a project
    in the foreground, and erasing it leaves no path it added, its directories included."""
    in_root(root, f"apt-get install -y -q --no-install-recommends {PYVER} libsystemd0")
    rpmroot = ["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm"]
    run(*rpmroot, "--initdb")
    run(*rpmroot, "-i", provides_rpm(tmp_path))
    before = tree(root)
    res = run(*rpmroot, "-i", built.rpm, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "installed; nothing is enabled" in res.stderr
    script = f"""
        mkdir -p /tmp/proj /tmp/state && chown {USER}:{USER} /tmp/proj /tmp/state
        export HOME=/tmp/state XDG_STATE_HOME=/tmp/state AIWG_SOCKET=/tmp/state/daemon.sock
        cd /tmp/proj
        setpriv --reuid={USER} --regid={USER} --clear-groups aiwg-service run --project /tmp/proj &
        pid=$!
        i=0; until [ -S /tmp/state/daemon.sock ] || [ $i -ge 600 ]; do sleep 0.1; i=$((i+1)); done
        setpriv --reuid={USER} --regid={USER} --clear-groups aiwgctl ping
        setpriv --reuid={USER} --regid={USER} --clear-groups aiwgctl status --json
        kill -TERM $pid; wait $pid
        rm -rf /tmp/proj /tmp/state
    """
    res = in_root(root, script, timeout=300)
    assert res.stdout.startswith("pong from "), res.stdout
    status = json.loads(res.stdout.split("\n", 1)[1])
    assert [p["path"] for p in status["projects"]] == ["/tmp/proj"]
    res = run(*rpmroot, "-e", "aiwg-service", check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(tree(root) - before) == [], "the rpm's erase left these"


# ------------------------------------------------------------------------------------------ the container


def final_stage_runs() -> tuple[list[str], dict[str, str]]:
    """The RUN commands and the HEALTHCHECK of the Containerfile's last stage."""
    text = (REPO / "packaging/container/Containerfile").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    last = max(i for i, ln in enumerate(lines) if ln.startswith("FROM "))
    final = lines[last:]
    runs = [ln.removeprefix("RUN ").strip() for ln in final if ln.startswith("RUN ")]
    health = next(ln for ln in final if ln.startswith("HEALTHCHECK"))
    return runs, {"healthcheck": health}


def test_container_steps_replayed_give_tls_tmux_git_and_a_user(root: Path, built: Built, tmp_path: Path) -> None:
    """The image's RUN steps in a clean root: CA certificates that verify a TLS server once its CA is added
    the way the image adds one, tmux and git, the unprivileged user, and `aiwgctl ping` as its HEALTHCHECK."""
    runs, meta = final_stage_runs()
    assert "aiwgctl" in meta["healthcheck"] and "ping" in meta["healthcheck"]
    (root / "tmp/pkg").mkdir()
    shutil.copy2(built.deb, root / "tmp/pkg" / built.deb.name)
    for step in runs:
        in_root(root, step, timeout=900)
    out = in_root(root, "dpkg-query -W -f='${Package} ${Status}\\n' ca-certificates tmux git aiwg-service; "
                        "id -u aiwg; tmux -V; git --version").stdout
    for pkg in ("ca-certificates", "tmux", "git", "aiwg-service"):
        assert re.search(rf"^{pkg} install ok installed$", out, re.M), out
    assert "\n1000\n" in out

    # a TLS server on loopback whose certificate is signed by a test CA, installed as the image would add one
    ca_key, ca_crt, srv_key, srv_crt = (tmp_path / n for n in ("ca.key", "ca.crt", "srv.key", "srv.crt"))
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=aiwg test CA", "-keyout", ca_key, "-out", ca_crt)
    csr = tmp_path / "srv.csr"
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost",
        "-keyout", srv_key, "-out", csr)
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
        "-extfile", ext, "-out", srv_crt)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(srv_crt, srv_key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    served = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1024)
                tls.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                served.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        probe = (f"{PREFIX}/bin/python -I -c \"import urllib.request; "
                 f"print(urllib.request.urlopen('https://127.0.0.1:{port}/', timeout=30).read().decode())\"")
        refused = in_root(root, probe, check=False)
        assert refused.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused
        thread.join(timeout=30)
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        shutil.copy2(ca_crt, root / "usr/local/share/ca-certificates/aiwg-test-ca.crt")
        in_root(root, "update-ca-certificates")
        assert in_root(root, probe).stdout.strip() == "ok"
        assert served.wait(30)
    finally:
        listener.close()

    # the HEALTHCHECK, as the image's user, against the entrypoint run as PID 1 of its own PID namespace
    script = """
        export AIWG_SOCKET=/run/aiwg/daemon.sock XDG_STATE_HOME=/var/lib HOME=/home/aiwg
        cd /project
        unshare --pid --fork --kill-child setpriv --reuid=aiwg --regid=aiwg --init-groups aiwg-service run \
          --project /project &
        i=0; until [ -S /run/aiwg/daemon.sock ] || [ $i -ge 600 ]; do sleep 0.1; i=$((i+1)); done
        setpriv --reuid=aiwg --regid=aiwg --init-groups aiwgctl ping
        # SIGTERM to the namespace's PID 1 (the service's own init), as an engine's stop does: unshare itself
        # blocks SIGTERM while it waits
        kill -TERM "$(cat /proc/$!/task/$!/children)"; wait $!
    """
    res = in_root(root, script, timeout=300)  # /run/aiwg and /project: made by the image's own RUN step
    assert "pong from" in res.stdout, res
