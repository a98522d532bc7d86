"""Cold socket activation, ``aiwgctl ping`` start-up, and idle cost of aiwg-service under a real systemd user manager.

Run as root from a checkout (it boots its own journald + ``systemd --user`` with tests/systemd_env.py):

    python bench/activation.py [--runs 7] [--idle-seconds 60]              # this checkout's venv
    python bench/activation.py --package dist/aiwg-service_0.1.0-1_amd64.deb  # the package, installed for the run
    python bench/activation.py --package installed                          # the package already installed

Without --package, the units in units/ run this checkout from the venv running the bench. With it, the packaged
units in /usr/lib/systemd/user run /usr/bin/aiwg-service and ``/usr/bin/aiwgctl`` is timed (a .deb given by
path is installed with dpkg for the run and purged afterwards; needs its dependencies already present).

Figures, each against a floor measured in the same run:
  * cold activation: aiwg.socket listening, aiwg.service stopped; time from connect+send of a ping to the first
    reply byte (systemd starts the service, which imports, loads config, starts every subsystem, sends READY=1
    and answers the request waiting in the backlog). Floor: the same through a socket-activated one-line Python
    service of the same interpreter (fork/exec by the manager + interpreter start-up, nothing of ours).
  * aiwgctl ping: the whole command as a new process against the running service. Floor: ``python -c pass``
    from the same venv.
  * idle (--idle-seconds > 0): CPU seconds of the running service with one registered project, as a percentage
    of one CPU, and its RSS. Targets: < 0.05 % CPU and < 40 MB.
Medians over --runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PACKAGE_PREFIX = Path("/usr/lib/aiwg-service")
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# A socket-activated service that answers one line per connection: the floor of cold activation.
FLOOR_SERVICE = (
    "import socket\n"
    "s = socket.socket(fileno=3)\n"
    "while True:\n"
    "    c, _ = s.accept()\n"
    "    c.recv(4096)\n"
    "    c.sendall(b'{\"jsonrpc\": \"2.0\", \"id\": 1, \"result\": {\"pong\": true}}\\n')\n"
    "    c.close()\n"
)


def load_systemd_env() -> ModuleType:
    """tests/systemd_env.py by path: the bench is standalone, not part of the test package."""
    spec = importlib.util.spec_from_file_location("systemd_env", REPO / "tests" / "systemd_env.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["systemd_env"] = mod
    spec.loader.exec_module(mod)
    return mod


def rpc(path: Path, method: str, params: dict | None = None, timeout: float = 30.0) -> tuple[dict, float]:
    """One request on a fresh connection; returns (reply, seconds from connect to the first reply byte)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        t0 = time.perf_counter()
        s.connect(str(path))
        msg = {"jsonrpc": "2.0", "id": 1, "method": method, **({"params": params} if params else {})}
        s.sendall(json.dumps(msg).encode() + b"\n")
        first = s.recv(1)
        elapsed = time.perf_counter() - t0
        rest = s.makefile("rb").readline()
        return json.loads(first + rest), elapsed


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed_process(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
    ms = (time.perf_counter() - t0) * 1000
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {res.stderr.decode(errors='replace')}")
    return ms


def cold_starts(sd: Any, unit: str, sock: Path, runs: int, check: Callable[[dict], bool]) -> list[float]:
    """Stop *unit*, then time the request that socket-activates it again; *runs* times."""
    times = []
    for _ in range(runs):
        sd.systemctl("stop", unit, check=True)
        assert sd.show(unit, "ActiveState")["ActiveState"] in ("inactive", "failed")
        reply, elapsed = rpc(sock, "ping")
        assert check(reply), reply
        times.append(elapsed * 1000)
    return times


def fmt(times: list[float]) -> str:
    return f"median {statistics.median(times):6.1f} ms (runs: {', '.join(f'{t:.0f}' for t in times)})"


class Package:
    """The .deb installed for the run (and purged after), or the install already on the machine."""

    def __init__(self, spec: str) -> None:
        self.deb = None if spec == "installed" else Path(spec).resolve()
        self.env = {**os.environ, "PATH": SBIN_PATH, "DEBIAN_FRONTEND": "noninteractive"}

    def __enter__(self) -> Package:
        if self.deb is not None:
            if not self.deb.is_file():
                sys.exit(f"--package: {self.deb} is not a file")
            res = subprocess.run(["dpkg", "-i", str(self.deb)], env=self.env, capture_output=True, text=True)
            if res.returncode != 0:
                subprocess.run(["dpkg", "--purge", "aiwg-service"], env=self.env, capture_output=True)
                sys.exit(f"dpkg -i {self.deb} failed:\n{res.stderr}")
        if not (PACKAGE_PREFIX / "bin/python").exists() or not Path("/usr/lib/systemd/user/aiwg.socket").exists():
            sys.exit("the aiwg-service package is not installed (give --package a .deb to install)")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.deb is not None:
            subprocess.run(["dpkg", "--purge", "aiwg-service"], env=self.env, capture_output=True, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--idle-seconds", type=float, default=60.0, help="0 skips the idle figure")
    ap.add_argument("--package", metavar="DEB|installed", help="measure the package install, not this checkout")
    args = ap.parse_args()

    sdenv = load_systemd_env()
    if missing := sdenv.missing_requirements():
        sys.exit("cannot boot a private user manager: " + "; ".join(missing))
    if args.package and os.geteuid() != 0:
        sys.exit("--package installs and runs the package: run as root")
    project = Path(tempfile.mkdtemp(prefix="aiwgbench", dir="/tmp"))
    (project / "src").mkdir()
    package = Package(args.package) if args.package else None
    bin_dir = Path("/usr/bin") if package else Path(sys.executable).parent
    python = PACKAGE_PREFIX / "bin/python" if package else Path(sys.executable)
    if package:
        package.__enter__()
    try:
        with sdenv.UserManager() as sd:
            config_home = sd.base / "cfg"
            config_home.mkdir()
            # StartLimitIntervalSec=0: --runs cold starts in a few seconds would otherwise hit the default start
            # limit (5 in 10 s), and the socket unit would fail and reset the waiting connection.
            env_line = f"Environment=XDG_CONFIG_HOME={config_home}" + ("" if package else f" PYTHONPATH={REPO}")
            sd.install_unit_text("aiwg.service.d/bench.conf",
                                 f"[Unit]\nStartLimitIntervalSec=0\n[Service]\n{env_line}\n")
            if not package:
                sd.install_units(bin_dir)
            sd.install_unit_text("floor.socket", f"[Socket]\nListenStream={sd.runtime_dir}/floor.sock\n")
            # the floor: the same interpreter, socket-activated, answering one line per connection
            floor_py = sd.base / "floor.py"
            floor_py.write_text(FLOOR_SERVICE)
            sd.install_unit_text("floor.service", "[Unit]\nStartLimitIntervalSec=0\n[Service]\n"
                                 f"ExecStart={python} {floor_py}\n")
            sd.daemon_reload()
            sd.systemctl("start", "aiwg.socket", "floor.socket", check=True)
            fragment = sd.show("aiwg.service", "FragmentPath")["FragmentPath"]
            sock = sd.runtime_dir / "aiwg" / "daemon.sock"
            reply, _ = rpc(sock, "project.add", {"path": str(project)})
            assert reply.get("result", {}).get("added"), reply

            floor = cold_starts(sd, "floor.service", sd.runtime_dir / "floor.sock", args.runs,
                                lambda r: r["result"]["pong"] is True)
            cold = cold_starts(sd, "aiwg.service", sock, args.runs, lambda r: r["result"]["pong"] is True)
            what = f"package {args.package}" if package else f"checkout {REPO} (venv {bin_dir.parent})"
            print(f"aiwg.service from {fragment}; {what}")
            print(f"floor: socket-activated python, 1 line  {fmt(floor)}")
            print(f"cold activation, first reply          {fmt(cold)}   "
                  f"ratio {statistics.median(cold) / statistics.median(floor):.2f}x")

            env = {**sd.env, "PATH": f"{bin_dir}:/usr/bin:/bin"}
            commands = [[str(python), "-c", "pass"], [str(bin_dir / "aiwgctl"), "ping"]]
            for argv in commands:  # warm the page cache
                timed_process(argv, env)
            py_floor, ping = [], []
            for _ in range(max(args.runs, 20)):  # interleaved, so a load spike hits both alike
                py_floor.append(timed_process(commands[0], env))
                ping.append(timed_process(commands[1], env))
            print(f"floor: {python} -c pass  median {statistics.median(py_floor):6.1f} ms")
            print(f"{bin_dir / 'aiwgctl'} ping (new process)  median {statistics.median(ping):6.1f} ms   "
                  f"ratio {statistics.median(ping) / statistics.median(py_floor):.2f}x")

            if args.idle_seconds > 0:
                pid = int(sd.show("aiwg.service", "MainPID")["MainPID"])
                time.sleep(2)  # let start-up work (default config write, first heartbeat) settle
                cpu0, t0 = proc_cpu_seconds(pid), time.monotonic()
                time.sleep(args.idle_seconds)
                cpu1, t1 = proc_cpu_seconds(pid), time.monotonic()
                used = cpu1 - cpu0
                pct = 100 * used / (t1 - t0)
                print(f"idle over {t1 - t0:.0f} s: {used:.2f} CPU s = {pct:.3f} % of one CPU (target < 0.05 %); "
                      f"RSS {proc_rss_mb(pid):.1f} MB (target < 40 MB)")
            sd.cleanup_units()
    finally:
        if package:
            package.__exit__()
        shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
