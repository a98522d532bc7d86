"""A real, disposable systemd *user* manager for tests.

PID 1 on dev/CI machines is not systemd, so we boot ``systemd-journald`` and
``systemd --user`` ourselves inside a private mount namespace and a private
cgroup namespace.  Nothing leaks into the host:

* ``/run/systemd``, ``/run/log`` and ``/var/log/journal`` are fresh tmpfs
  mounts that exist only inside the namespace (mount propagation is made
  private *before* anything is mounted), so the host never sees a
  ``/run/systemd/system`` directory (which would make ``sd_booted()`` true for
  every other process on the machine).
* ``/sys/fs/cgroup`` is re-mounted inside a cgroup namespace rooted at a fresh
  per-fixture cgroup (``name=systemd`` and ``unified`` hierarchies only).  Two
  test managers running at the same time therefore never share a cgroup such
  as ``/app.slice/aiwg.service`` (stopping one would kill the other's
  processes), and the v1 resource controllers (memory, cpu, ...) are not
  visible, so the manager never moves processes out of the sandbox's memory
  cgroup.
* ``$HOME``/``$XDG_*`` point into a fresh temp dir: unit files, state and
  runtime dirs never touch ``/root``.

``$XDG_RUNTIME_DIR`` is an ordinary directory under ``/tmp`` that the host view
shares, so the test process can connect to sockets the manager creates
(``%t/aiwg/daemon.sock``) without entering the namespace.  Commands that need
the namespace's view (``systemctl``, ``journalctl``) go through ``nsenter``
into a small *holder* process (this file run as a script), which owns the
namespaces, starts journald and the manager, and tears everything down when
its stdin closes (i.e. also when pytest dies).

Public entry points: :func:`require_private_manager_support` (skip-or-fail
policy) and :class:`UserManager` (see its docstring for the API).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
UNITS_DIR = REPO_ROOT / "units"
BINDIR_PLACEHOLDER = "@BINDIR@"

JOURNALD = "/lib/systemd/systemd-journald"
SYSTEMD = "/lib/systemd/systemd"
HOST_CGROUP_SYSTEMD = Path("/sys/fs/cgroup/systemd")
HOST_CGROUP_UNIFIED = Path("/sys/fs/cgroup/unified")

REQUIRE_ENV = "AIWG_REQUIRE_SYSTEMD"

T = TypeVar("T")


# --------------------------------------------------------------------------- skip-or-fail policy


def missing_requirements() -> list[str]:
    """Return human-readable reasons why a private user manager cannot run here."""
    reasons = []
    if os.geteuid() != 0:
        reasons.append("not running as root")
    for tool in ("unshare", "nsenter", "systemctl", "journalctl"):
        if shutil.which(tool) is None:
            reasons.append(f"{tool} not found")
    for exe in (JOURNALD, SYSTEMD):
        if not os.access(exe, os.X_OK):
            reasons.append(f"{exe} not executable")
    if not (HOST_CGROUP_SYSTEMD.is_dir() or HOST_CGROUP_UNIFIED.is_dir()):
        reasons.append("no cgroup hierarchy at /sys/fs/cgroup/{systemd,unified}")
    return reasons


def skip_or_fail(reason: str) -> None:
    """Skip the test, unless CI demands systemd tests (AIWG_REQUIRE_SYSTEMD=1): then fail.

    Keeping this in one place means a CI machine that silently lost root or
    unshare cannot turn the whole systemd suite green by skipping it.
    """
    import pytest

    msg = f"needs root and unshare for a private systemd user manager: {reason}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{msg} ({REQUIRE_ENV}=1 forbids skipping)", pytrace=False)
    pytest.skip(msg)


def require_private_manager_support() -> None:
    """Skip (or fail under AIWG_REQUIRE_SYSTEMD=1) when the machine cannot host a manager."""
    reasons = missing_requirements()
    if reasons:
        skip_or_fail("; ".join(reasons))


# --------------------------------------------------------------------------- the manager handle


class ManagerError(RuntimeError):
    """The private user manager could not be started."""


class UserManager:
    """Handle on a private ``systemd --user`` instance (plus journald).

    Attributes:
        base: temp dir holding everything below.
        runtime_dir: ``$XDG_RUNTIME_DIR`` (``%t`` in units); host-visible.
        home, config_home, state_home: ``$HOME``, ``$XDG_CONFIG_HOME``,
            ``$XDG_STATE_HOME`` of the manager (StateDirectory= lands under the
            latter on newer systemd, under ``config_home`` on 252).
        unit_dir: ``$XDG_CONFIG_HOME/systemd/user`` where units get installed.
        env: environment for client commands (XDG_RUNTIME_DIR, DBUS address,
            HOME, XDG_*); merge it into anything you spawn yourself.

    Methods return :class:`subprocess.CompletedProcess` with text output and
    never raise on a non-zero exit unless ``check=True``.
    """

    def __init__(self, base: Path | None = None, uid: int = 0, root: Path | None = None) -> None:
        """*uid* != 0 runs the manager (and systemctl) as that unprivileged user.

        *root*: boot journald and the manager from another root file system (a clean Debian root made by
        mmdebstrap, say), pivoted into it; ``run``/``systemctl`` then run that root's commands. Its
        ``$XDG_RUNTIME_DIR`` is ``/run/user/UID`` inside the root, as logind would make it (the same directory
        as :attr:`runtime_dir` on the host), and :attr:`base` appears at the same path inside.

        Root is the default because tests can then read/write whatever the
        units produce; an unprivileged manager is what real users have and is
        what the sandboxing tests need (namespacing directives behave
        differently without privileges).
        """
        self.uid = uid
        self.root = root
        self.base = Path(base or tempfile.mkdtemp(prefix="aiwg-sd-"))
        self.runtime_dir = self.base / "rt"
        #: the runtime dir as the manager and its clients see it
        self.runtime_path = f"/run/user/{uid}" if root is not None else str(self.runtime_dir)
        self.home = self.base / "home"
        self.config_home = self.home / ".config"
        self.state_home = self.home / ".local" / "state"
        self.unit_dir = self.config_home / "systemd" / "user"
        self.cgroup_name = f"aiwg-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._holder: subprocess.Popen[str] | None = None
        self.holder_pid: int | None = None
        self.manager_pid: int | None = None
        self.journald_pid: int | None = None
        self._installed: list[str] = []

    # ----------------------------------------------------------------- lifecycle

    @property
    def env(self) -> dict[str, str]:
        """Client environment: what a user's login session would export."""
        return {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": self.runtime_path,
            "XDG_CONFIG_HOME": str(self.config_home),
            "XDG_STATE_HOME": str(self.state_home),
            "XDG_DATA_HOME": str(self.home / ".local" / "share"),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={self.runtime_path}/bus",
            "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0",
        }

    def start(self, timeout: float = 30.0) -> UserManager:
        """Boot the holder, journald and the manager; wait until it is ``running``."""
        sweep_stale_cgroups()
        for d in (self.runtime_dir, self.unit_dir, self.state_home):
            d.mkdir(parents=True, exist_ok=True)
        self.runtime_dir.chmod(0o700)
        log = open(self.base / "holder.log", "w")  # noqa: SIM115 - handed to the child
        self._holder = subprocess.Popen(
            [sys.executable, __file__, "--holder", str(self.base), self.cgroup_name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**self.env, "PYTHONDONTWRITEBYTECODE": "1", "AIWG_SD_UID": str(self.uid),
                 "AIWG_SD_ROOT": str(self.root or "")},
        )
        log.close()
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline().strip()
        if not line.startswith("ready "):
            self.stop()
            raise ManagerError(f"holder failed: {line!r}\n{self.diagnostics()}")
        _, holder, journald, manager = line.split()
        self.holder_pid, self.journald_pid, self.manager_pid = int(holder), int(journald), int(manager)
        try:
            self.wait_for(
                lambda: self.systemctl("is-system-running").stdout.strip() in ("running", "degraded"),
                timeout=timeout,
                message="user manager never reached 'running'",
            )
        except TimeoutError as exc:
            self.stop()
            raise ManagerError(f"{exc}\n{self.diagnostics()}") from exc
        return self

    def stop(self) -> None:
        """Stop the manager gracefully, then kill anything left in our cgroup and remove it."""
        holder, self._holder = self._holder, None
        if holder is not None:
            with contextlib.suppress(OSError):
                assert holder.stdin is not None
                holder.stdin.close()  # EOF = "shut down" for the holder
            try:
                holder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait(timeout=10)
            if holder.stdout is not None:
                holder.stdout.close()
        _kill_and_remove_cgroup(self.cgroup_name)

    def __enter__(self) -> UserManager:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def diagnostics(self) -> str:
        """Holder and manager logs, for assertion messages."""
        out = []
        for name in ("holder.log", "manager.log", "journald.log"):
            p = self.base / name
            if p.exists():
                out.append(f"--- {name}\n{p.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)

    # ----------------------------------------------------------------- running things

    def _nsenter(self) -> list[str]:
        if self.holder_pid is None:
            raise ManagerError("manager not started")
        enter = ["nsenter", f"--mount=/proc/{self.holder_pid}/ns/mnt"]
        if self.root is not None:  # the holder's chroot, and its cwd (that root's /)
            enter += [f"--root=/proc/{self.holder_pid}/root", f"--wd=/proc/{self.holder_pid}/cwd"]
        return [*enter, "--"]

    def _as_user(self) -> list[str]:
        """Drop to the manager's uid for clients that must talk to it as its owner."""
        if self.uid == 0:
            return []
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups", "--"]

    def run(
        self,
        cmd: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        check: bool = False,
        timeout: float = 60.0,
        input: str | None = None,
        as_user: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run *cmd* inside the namespace with the client env (plus *env*) and capture output.

        *as_user*: run as the manager's uid (matters only for ``uid != 0``;
        e.g. ``systemd-run --user``).
        """
        return subprocess.run(
            [*self._nsenter(), *(self._as_user() if as_user else []), *cmd],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            input=input,
        )

    def popen(
        self, cmd: Sequence[str], *, env: Mapping[str, str] | None = None, **kw: object
    ) -> subprocess.Popen:
        """Start *cmd* inside the namespace without waiting (e.g. ``journalctl -f``)."""
        return subprocess.Popen([*self._nsenter(), *cmd], env={**self.env, **(env or {})}, **kw)  # type: ignore[call-overload]

    def systemctl(
        self, *args: str, check: bool = False, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """``systemctl --user ARGS``."""
        return self.run(
            ["systemctl", "--user", "--no-pager", *args], check=check, timeout=timeout, as_user=True
        )

    def journalctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """``journalctl ARGS`` against the private journald (records land in /run/log/journal).

        The manager runs as root, so its units log into the *system* journal
        files; no ``--user`` flag.  journald does not add ``_SYSTEMD_USER_UNIT``
        in this arrangement: filter with ``-t IDENTIFIER`` or your own fields.
        """
        return self.run(["journalctl", "--no-pager", *args], check=check)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl --user show -p PROPS UNIT`` parsed into a dict."""
        args = ["show", unit]
        for p in props:
            args += ["-p", p]
        out = self.systemctl(*args, check=True).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def daemon_reload(self) -> None:
        self.systemctl("daemon-reload", check=True)

    # ----------------------------------------------------------------- units

    def install_units(
        self,
        bin_path: str | os.PathLike[str],
        names: Iterable[str] | None = None,
        *,
        reload: bool = True,
    ) -> list[Path]:
        """Copy ``units/*`` (or *names*) into :attr:`unit_dir`, substituting ``@BINDIR@``.

        *bin_path* is either the directory containing ``aiwg-service`` or the
        ``aiwg-service`` executable itself.
        """
        bin_path = Path(bin_path)
        bindir = bin_path.parent if bin_path.name == "aiwg-service" else bin_path
        paths = []
        for src in sorted(UNITS_DIR.iterdir()) if names is None else [UNITS_DIR / n for n in names]:
            if src.suffix not in (".service", ".socket"):
                continue
            paths.append(
                self.install_unit_text(src.name, src.read_text().replace(BINDIR_PLACEHOLDER, str(bindir)))
            )
        if reload:
            self.daemon_reload()
        return paths

    def install_unit_text(self, name: str, text: str, *, reload: bool = False) -> Path:
        """Write a unit file (or drop-in, e.g. ``aiwg.service.d/test.conf``) named *name*."""
        path = self.unit_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self._installed.append(name)
        if reload:
            self.daemon_reload()
        return path

    def cleanup_units(self) -> None:
        """Stop and remove every unit installed through this handle (between tests)."""
        names = list(dict.fromkeys(self._installed))
        self._installed.clear()
        # Templates: stop every running instance (systemctl accepts globs for loaded units).
        units = [n.replace("@.", "@*.") for n in names if "/" not in n]
        if units:
            self.systemctl("stop", *units, timeout=120)
        for n in names:
            (self.unit_dir / n).unlink(missing_ok=True)
        self.systemctl("reset-failed")
        self.systemctl("daemon-reload")

    def verify(self, *unit_paths: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
        """``systemd-analyze --user verify --man=no`` in the manager's environment."""
        return self.run(
            ["systemd-analyze", "--user", "verify", "--man=no", *map(str, unit_paths)], as_user=True
        )

    # ----------------------------------------------------------------- waiting

    @staticmethod
    def wait_for(
        predicate: Callable[[], T],
        timeout: float = 10.0,
        interval: float = 0.05,
        message: str = "condition not met",
    ) -> T:
        """Poll *predicate* until it returns something truthy; return it, or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{message} within {timeout}s (last: {result!r})")
            time.sleep(interval)

    def wait_for_state(
        self, unit: str, active: str, sub: str | None = None, timeout: float = 15.0
    ) -> dict[str, str]:
        """Wait until *unit* has ActiveState=*active* (and SubState=*sub*); return its properties."""

        def check() -> dict[str, str] | None:
            props = self.show(unit, "ActiveState", "SubState", "StatusText", "MainPID", "NRestarts", "Result")
            if props.get("ActiveState") == active and (sub is None or props.get("SubState") == sub):
                return props
            return None

        return self.wait_for(check, timeout, message=f"{unit} never reached {active}/{sub}")


# --------------------------------------------------------------------------- cgroup housekeeping


def _own_cgroup(controller_field: str) -> str:
    """Path of this process's cgroup for a hierarchy line ('name=systemd' or '' for v2)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrl, path = line.split(":", 2)
        if ctrl == controller_field:
            return path
    raise ManagerError(f"no cgroup line {controller_field!r}")


def _host_cgroup_dirs(name: str) -> list[Path]:
    """The per-fixture cgroup dirs (host view) in the name=systemd and unified hierarchies."""
    dirs = []
    if HOST_CGROUP_SYSTEMD.is_dir():
        dirs.append(HOST_CGROUP_SYSTEMD / _own_cgroup("name=systemd").lstrip("/") / name)
    if HOST_CGROUP_UNIFIED.is_dir():
        dirs.append(HOST_CGROUP_UNIFIED / _own_cgroup("").lstrip("/") / name)
    return dirs


def _cgroup_pids(root: Path) -> set[int]:
    pids: set[int] = set()
    for procs in root.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in procs.read_text().split())
    return pids


def _kill_and_remove_cgroup(name: str) -> None:
    """SIGKILL every process left in the fixture cgroup, then rmdir it bottom-up."""
    dirs = [d for d in _host_cgroup_dirs(name) if d.exists()]
    deadline = time.monotonic() + 10
    for d in dirs:
        while (pids := _cgroup_pids(d)) and time.monotonic() < deadline:
            kill_file = d / "cgroup.kill"
            if kill_file.exists():
                with contextlib.suppress(OSError):
                    kill_file.write_text("1")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
    for d in dirs:
        _kill_and_remove_cgroup_dir(d)


def _kill_and_remove_cgroup_dir(d: Path) -> None:
    """rmdir a (now empty) cgroup tree bottom-up."""
    for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        d.rmdir()


def sweep_stale_cgroups() -> None:
    """Remove empty fixture cgroups left behind by a test run that was SIGKILLed.

    Only dirs named ``aiwg-test-<pid>-*`` whose creating pytest process is gone
    are touched, so a concurrent run (another worktree) is never disturbed.
    """
    for parent in {d.parent for d in _host_cgroup_dirs("x")}:
        with contextlib.suppress(OSError):
            for d in parent.glob("aiwg-test-*-*"):
                pid = d.name.split("-")[2]
                if pid.isdigit() and not Path(f"/proc/{pid}").exists() and not _cgroup_pids(d):
                    _kill_and_remove_cgroup_dir(d)


# --------------------------------------------------------------------------- the holder process

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
MS_REC = 0x4000
MS_BIND = 0x1000
MNT_DETACH = 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
MS_PRIVATE = 1 << 18


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _mount(
    libc: ctypes.CDLL, source: str, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    rc = libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} on {target}: {os.strerror(err)}")


def _inaccessible_nodes(d: Path) -> None:
    """What PID 1 creates at boot and a root manager's sandboxing mounts over what it hides
    (``InaccessiblePaths=``, ``ProtectKernelTunables=``): one node of each type, mode 0000."""
    import stat

    d.mkdir(mode=0o755)
    (d / "dir").mkdir(mode=0)
    (d / "reg").touch(mode=0)
    os.mkfifo(d / "fifo", 0)
    for name, kind in (("chr", stat.S_IFCHR), ("blk", stat.S_IFBLK)):
        with contextlib.suppress(OSError):  # mknod may be refused in a container
            os.mknod(d / name, kind, os.makedev(0, 0))
    s = __import__("socket").socket(__import__("socket").AF_UNIX)
    s.bind(str(d / "sock"))
    s.close()
    for n in d.iterdir():
        os.chmod(n, 0)


def _holder_main(base: Path, cgroup_name: str) -> int:
    """Create namespaces, boot journald and ``systemd --user``, wait for stdin EOF, tear down.

    Runs as a fresh single-threaded process, which is what unshare(CLONE_NEWNS)
    requires; pytest itself may have threads and must stay in the host view.
    """
    libc = _libc()
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: die with pytest

    # 1. A fresh cgroup in the hierarchies systemd tracks processes with.
    for d in _host_cgroup_dirs(cgroup_name):
        d.mkdir()
        (d / "cgroup.procs").write_text(str(os.getpid()))

    # 2. New mount + cgroup namespace; nothing mounted below propagates to the host.
    if libc.unshare(CLONE_NEWNS | CLONE_NEWCGROUP) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")
    _mount(libc, "none", "/", None, MS_REC | MS_PRIVATE, None)

    newroot = os.environ.get("AIWG_SD_ROOT") or ""
    uid = int(os.environ.get("AIWG_SD_UID", "0"))
    if newroot:
        # pivot_root needs the new root to be a mount point of its own
        _mount(libc, newroot, newroot, None, MS_BIND | MS_REC, None)
        # another root file system: the host's devices and kernel views, a fresh /run with the user's runtime
        # dir where logind would put it, and the test's base dir at its own path; then everything below is
        # mounted inside the root, and the holder pivots into it before it starts journald
        _mount(libc, "/dev", f"{newroot}/dev", None, MS_BIND | MS_REC, None)
        _mount(libc, "proc", f"{newroot}/proc", "proc", 0, None)
        _mount(libc, "/sys", f"{newroot}/sys", None, MS_BIND | MS_REC, None)
        _mount(libc, "tmpfs", f"{newroot}/run", "tmpfs", 0, "mode=0755")
        Path(f"{newroot}/run/systemd").mkdir()
        Path(f"{newroot}/run/user/{uid}").mkdir(parents=True)
        _mount(libc, str(base / "rt"), f"{newroot}/run/user/{uid}", None, MS_BIND, None)
        Path(f"{newroot}{base}").mkdir(parents=True, exist_ok=True)
        _mount(libc, str(base), f"{newroot}{base}", None, MS_BIND, None)
    _mount(libc, "tmpfs", f"{newroot}/run/systemd", "tmpfs", 0, "mode=0755")
    Path(f"{newroot}/run/systemd/system").mkdir()  # makes sd_booted() true -- only in here
    _inaccessible_nodes(Path(f"{newroot}/run/systemd/inaccessible"))
    # journald: volatile only, and do not read the host's kernel ring buffer (it would
    # import other sessions' kmsg lines into our journal).
    Path(f"{newroot}/run/systemd/journald.conf.d").mkdir()
    Path(f"{newroot}/run/systemd/journald.conf.d/aiwg-test.conf").write_text(
        "[Journal]\nStorage=volatile\nReadKMsg=no\nForwardToSyslog=no\nForwardToWall=no\n"
        "RateLimitIntervalSec=0\n"
    )
    Path(f"{newroot}/run/log").mkdir(exist_ok=True)
    _mount(libc, "tmpfs", f"{newroot}/run/log", "tmpfs", 0, "mode=0755")
    Path(f"{newroot}/run/log/journal").mkdir()
    if Path(f"{newroot}/var/log/journal").is_dir():  # keep journald from writing the persistent journal
        _mount(libc, "tmpfs", f"{newroot}/var/log/journal", "tmpfs", 0, "mode=0755")
    _mount(libc, "tmpfs", f"{newroot}/sys/fs/cgroup", "tmpfs", 0, "mode=0755")
    if HOST_CGROUP_SYSTEMD.parent.exists():
        Path(f"{newroot}/sys/fs/cgroup/systemd").mkdir()
        _mount(libc, "cgroup", f"{newroot}/sys/fs/cgroup/systemd", "cgroup", 0, "none,name=systemd")
        Path(f"{newroot}/sys/fs/cgroup/unified").mkdir()
        _mount(libc, "cgroup2", f"{newroot}/sys/fs/cgroup/unified", "cgroup2", 0, None)
    if newroot:
        # pivot_root, not chroot: a chrooted process may not create user namespaces, which PrivateUsers= and
        # every sandboxed unit need; after pivot_root the namespace's own root is the new one
        os.chdir(newroot)
        if libc.syscall(SYS_PIVOT_ROOT[platform.machine()], b".", b".") != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pivot_root: {os.strerror(err)}")
        if libc.umount2(b".", MNT_DETACH) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"umount the old root: {os.strerror(err)}")
        os.chdir("/")

    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for var in (
        "NOTIFY_SOCKET",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "INVOCATION_ID",
        "JOURNAL_STREAM",
    ):
        env.pop(var, None)

    jlog = open(base / "journald.log", "w")  # noqa: SIM115
    journald = subprocess.Popen([JOURNALD], stdin=subprocess.DEVNULL, stdout=jlog, stderr=jlog, env=env)
    deadline = time.monotonic() + 10
    while not Path("/run/systemd/journal/socket").exists():
        if journald.poll() is not None or time.monotonic() > deadline:
            print(f"journald failed to start (rc={journald.returncode})", flush=True)
            return 1
        time.sleep(0.02)

    env.pop("AIWG_SD_UID", None)
    env.pop("AIWG_SD_ROOT", None)
    if uid:
        # Delegate our cgroups and hand the user its dirs, as logind/user@.service would.
        for d in (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified")):
            for f in (
                d,
                *(d / n for n in ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads", "tasks")),
            ):
                if f.exists():
                    os.chown(f, uid, uid)
        for root, dirs, files in os.walk(base):
            for n in (root, *(os.path.join(root, x) for x in dirs + files)):
                os.chown(n, uid, uid)
    mlog = open(base / "manager.log", "w")  # noqa: SIM115
    manager = subprocess.Popen(
        [SYSTEMD, "--user", "--log-target=journal", "--log-level=info"],
        stdin=subprocess.DEVNULL,
        stdout=mlog,
        stderr=mlog,
        env=env,
        user=uid or None,
        group=uid or None,
        extra_groups=[] if uid else None,
    )
    print(f"ready {os.getpid()} {journald.pid} {manager.pid}", flush=True)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        sys.stdin.read()  # until pytest closes our stdin (or dies)
    except KeyboardInterrupt:
        pass
    finally:
        for proc, grace in ((manager, 60), (journald, 5)):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return 0


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--holder":
    sys.exit(_holder_main(Path(sys.argv[2]), sys.argv[3]))
