"""A real single-node Slurm cluster for tests, in a network namespace of its own.

``munged``, ``slurmctld -D`` and ``slurmd -D`` run in the foreground from a generated ``slurm.conf``
(node ``localhost``, one partition, private state/spool directories, free ports).  slurmctld always
binds every address (``NoInAddrAny`` does not apply to it), so the daemons live in a fresh network
namespace that has only ``lo``: nothing is reachable from outside, and two test sessions never meet.

Clients reach it through shims in ``bin_dir`` (``sbatch``, ``squeue``, ``sacct``, ``scancel``,
``scontrol``, ``sinfo``): each one sets ``SLURM_CONF`` and enters the namespace with ``nsenter``, then
execs the real Debian binary with the same argv.  Put ``bin_dir`` first on a service's PATH and it
talks to this cluster with its ordinary Slurm commands.  Needs root (namespaces, slurmd).

Jobs run as the submitting user inside the namespace; their output files are ordinary files on the
shared filesystem.  Accounting (``sacct``) is not configured here: state and exit codes come from
``squeue --states=all``, which keeps finished jobs for ``MinJobAge`` seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

CLIENTS = ("sbatch", "squeue", "sacct", "scancel", "scontrol", "sinfo")
DAEMONS = ("munged", "slurmctld", "slurmd")
_PR_SET_PDEATHSIG = 1


def missing_requirements() -> list[str]:
    """Why a private Slurm cluster cannot run here (empty: it can)."""
    reasons = []
    if os.geteuid() != 0:
        reasons.append("not running as root")
    for tool in (*DAEMONS, *CLIENTS, "munge", "unshare", "nsenter", "ip"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            reasons.append(f"{tool} not found")
    return reasons


def _die_with_parent() -> None:
    """In the child between fork and exec: if pytest dies, so does the daemon."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_ports(n: int) -> list[int]:
    """Ports free on loopback (the namespace's own lo is empty anyway; these only avoid clashes)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SlurmCluster:
    """``with SlurmCluster() as c:`` -> ``c.bin_dir`` (client shims), ``c.run("squeue", ...)``."""

    def __init__(self, cpus: int = 8, min_job_age: int = 300) -> None:
        self.cpus = cpus
        self.min_job_age = min_job_age
        # munged insists that every directory above its socket is world-executable: not under tmp_path (0700).
        self.root = Path(tempfile.mkdtemp(prefix="aiwg-slurm-"))
        self.root.chmod(0o755)
        self.bin_dir = self.root / "bin"
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self._holder: subprocess.Popen[bytes] | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> SlurmCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def netns(self) -> str:
        assert self._holder is not None
        return f"/proc/{self._holder.pid}/ns/net"

    def start(self, timeout: float = 30.0) -> None:
        self._holder = subprocess.Popen(
            # glibc's getaddrinfo(AI_ADDRCONFIG) wants one non-loopback IPv4 address, so lo gets a private one.
            ["unshare", "--net", "--", "sh", "-c",
             "ip link set lo up && ip addr add 10.254.254.1/32 dev lo && echo up && exec cat >/dev/null"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=_die_with_parent)
        assert self._holder.stdout is not None
        if self._holder.stdout.readline().strip() != b"up":
            raise RuntimeError("could not create a network namespace for Slurm")
        self._write_files()
        self._spawn("munged", ["munged", "-F", f"--key-file={self.root / 'munge.key'}",
                               f"--socket={self.munge_socket}", f"--pid-file={self.root / 'munge' / 'pid'}",
                               f"--log-file={self.root / 'log' / 'munged.log'}",
                               f"--seed-file={self.root / 'munge' / 'seed'}"])
        self._wait(lambda: self.munge_socket.exists(), timeout, "munged")
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost", "-f", str(self.conf)])
        self._wait(self._node_idle, timeout, "slurmd to register with slurmctld")

    def close(self) -> None:
        for name in reversed(list(self._procs)):
            self.stop_daemon(name)
        if self._holder is not None:
            with contextlib.suppress(OSError):
                assert self._holder.stdin is not None
                self._holder.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._holder.wait(5)
            if self._holder.poll() is None:
                self._holder.kill()
                self._holder.wait()
            self._holder = None
        shutil.rmtree(self.root, ignore_errors=True)

    def stop_daemon(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop one daemon (``slurmctld`` to make the cluster 'down' for clients)."""
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def start_slurmctld(self, timeout: float = 30.0) -> None:
        """Start slurmctld again after :meth:`stop_daemon` (state comes back from StateSaveLocation)."""
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._wait(lambda: self.run("sinfo", "-h", check=False).returncode == 0, timeout, "slurmctld")

    # -- clients ----------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """A Slurm client command through the shims."""
        return subprocess.run([str(self.bin_dir / argv[0]), *argv[1:]], capture_output=True, text=True,
                              check=check, timeout=timeout)

    def jobs(self) -> dict[str, str]:
        """Job id -> state of every job slurmctld knows (finished ones too)."""
        out = self.run("squeue", "-h", "--states=all", "-o", "%i %T").stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def log(self, name: str) -> str:
        p = self.root / "log" / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    # -- internals --------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self._procs[name] = subprocess.Popen(
                ["nsenter", f"--net={self.netns}", "--", *argv], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=self.env(), preexec_fn=_die_with_parent)
        finally:
            log.close()

    def _wait(self, pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not pred():
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self._tail(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}:\n" + "\n".join(
                    self._tail(n) for n in self._procs))
            time.sleep(0.1)

    def _tail(self, name: str) -> str:
        text = ""
        for suffix in (".out", ".log"):
            p = self.root / "log" / f"{name}{suffix}"
            if p.exists():
                text += p.read_text(errors="replace")[-2000:]
        return f"--- {name}\n{text}"

    def _node_idle(self) -> bool:
        r = self.run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=10)
        return r.returncode == 0 and r.stdout.strip() == "idle"

    def _write_files(self) -> None:
        for d in ("munge", "log", "state", "spool", "bin"):
            (self.root / d).mkdir(mode=0o755)
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        ctld_port, slurmd_port = _free_ports(2)
        self.conf.write_text(f"""\
ClusterName=aiwgtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={self.root / 'state'}
SlurmdSpoolDir={self.root / 'spool'}
SlurmctldPidFile={self.root / 'slurmctld.pid'}
SlurmdPidFile={self.root / 'slurmd.pid'}
SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}
SlurmdLogFile={self.root / 'log' / 'slurmd.log'}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
MailProg=/bin/true
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge={self.min_job_age}
KillWait=2
InactiveLimit=0
SlurmctldTimeout=10
SlurmdTimeout=30
MessageTimeout=3
NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
        for name in CLIENTS:
            real = shutil.which(name) or f"/usr/bin/{name}"
            shim = self.bin_dir / name
            shim.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec nsenter --net={self.netns} -- {real} "$@"\n')
            shim.chmod(0o755)
