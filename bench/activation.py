"""Cold socket activation latency and idle cost of the real aiwg-service under a private systemd user manager.

Run as root from a checkout (it boots its own journald + ``systemd --user`` with tests/systemd_env.py):

    PYTHONPATH=. python bench/activation.py [--runs 5] [--idle-seconds 60]

Figures:
  * cold activation: aiwg.socket listening, aiwg.service stopped; time from connect+send of a ping to the
    first reply byte (systemd starts the service, which imports, loads config, starts every subsystem,
    sends READY=1 and answers the request waiting in the backlog). Median over --runs.
  * idle: the running service with one registered project; CPU seconds (utime+stime from /proc/PID/stat)
    over --idle-seconds, as a percentage of one CPU, and RSS (VmRSS) at the end.
Targets: first reply < 300 ms cold; idle < 0.05 % CPU and < 40 MB RSS.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    args = ap.parse_args()

    sdenv = load_systemd_env()
    if missing := sdenv.missing_requirements():
        sys.exit("cannot boot a private user manager: " + "; ".join(missing))
    project = Path(tempfile.mkdtemp(prefix="aiwgbench", dir="/tmp"))
    (project / "src").mkdir()
    with sdenv.UserManager() as sd:
        config_home = sd.base / "cfg"
        config_home.mkdir()
        # StartLimitIntervalSec=0: --runs cold starts in a few seconds would otherwise hit the default start
        # limit (5 in 10 s), and the socket unit would fail and reset the waiting connection.
        sd.install_unit_text("aiwg.service.d/bench.conf",
                             "[Unit]\nStartLimitIntervalSec=0\n"
                             f"[Service]\nEnvironment=PYTHONPATH={REPO} XDG_CONFIG_HOME={config_home}\n")
        sd.install_units(BIN)
        sd.systemctl("start", "aiwg.socket", check=True)
        sock = sd.runtime_dir / "aiwg" / "daemon.sock"

        # one registered project, as a real user would have; it is served on every cold start below
        reply, _ = rpc(sock, "project.add", {"path": str(project)})
        assert reply.get("result", {}).get("added"), reply

        times = []
        for _ in range(args.runs):
            sd.systemctl("stop", "aiwg.service", check=True)
            assert sd.show("aiwg.service", "ActiveState")["ActiveState"] == "inactive"
            reply, elapsed = rpc(sock, "ping")
            assert reply["result"]["pong"] is True, reply
            times.append(elapsed * 1000)
        print(f"cold activation, first reply: median {statistics.median(times):.0f} ms "
              f"(runs: {', '.join(f'{t:.0f}' for t in times)} ms; target < 300 ms)")
        warm = [rpc(sock, "ping")[1] * 1000 for _ in range(20)]
        print(f"warm ping on a new connection: median {statistics.median(warm):.2f} ms")

        pid = int(sd.show("aiwg.service", "MainPID")["MainPID"])
        st, _ = rpc(sock, "daemon.status")
        print(f"serving {len(st['result']['projects'])} project(s); status: {st['result']['status']}")
        time.sleep(2)  # let start-up work (default config write, first heartbeat) settle
        cpu0, t0 = proc_cpu_seconds(pid), time.monotonic()
        time.sleep(args.idle_seconds)
        cpu1, t1 = proc_cpu_seconds(pid), time.monotonic()
        used = cpu1 - cpu0
        pct = 100 * used / (t1 - t0)
        print(f"idle over {t1 - t0:.0f} s: {used:.2f} CPU s = {pct:.3f} % of one CPU (target < 0.05 %); "
              f"RSS {proc_rss_mb(pid):.1f} MB (target < 40 MB)")
        sd.cleanup_units()
    shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
