"""How fast ``aiwgctl ping`` and ``aiwgctl status`` start, against the floor of the same interpreter.

    python bench/cli.py [--runs 40] [--venv DIR]

Builds a regular (non-editable) install of this checkout in a fresh venv (or uses --venv), starts the service
from it in the foreground with private XDG directories, then times whole commands, each run a new process:

  * floor:  ``python -c pass`` from the same venv (interpreter start-up and site, nothing of ours);
  * ping:   ``aiwgctl ping`` (connect, one request, print);
  * status: ``aiwgctl status`` (the same, plus rendering daemon.status);
  * completion: bash's Tab after ``aiwgctl ta`` (through ``env``, which adds an exec).

Prints the medians and the ratios to the floor. Targets: ping <= 1.3x, status <= 1.6x, completion < 100 ms.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def build_venv(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    pip = [str(where / "bin/pip"), "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, str(REPO)], check=True)
    return where


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ms = (time.perf_counter() - t0) * 1000
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {res.stderr.decode(errors='replace')}")
    return ms


def interleaved(commands: list[list[str]], env: dict[str, str], runs: int) -> list[list[float]]:
    """Each round runs every command once, so a load spike on the machine hits all of them alike."""
    out: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for i, argv in enumerate(commands):
            out[i].append(timed(argv, env))
    return out


def wait_for_socket(path: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the service did not listen on {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--venv", type=Path, help="an existing non-editable install to measure")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="aiwg-bench-cli-") as tmp_s:
        tmp = Path(tmp_s)
        venv = args.venv or build_venv(tmp / "venv")
        py, ctl, svc = venv / "bin/python", venv / "bin/aiwgctl", venv / "bin/aiwg-service"
        finder = list((venv / "lib").glob("python3*/site-packages/__editable__*"))
        if finder:
            raise SystemExit(f"{venv} is an editable install; the figure is for a regular one")
        runtime = tmp / "run"
        runtime.mkdir(mode=0o700)
        project = tmp / "project"
        project.mkdir()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "XDG_RUNTIME_DIR": str(runtime),
               "XDG_STATE_HOME": str(tmp / "state"), "XDG_CONFIG_HOME": str(tmp / "config"), "LANG": "C.UTF-8"}
        svc_proc = subprocess.Popen([str(svc), "run", "--project", str(project)], env=env, cwd=project,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_socket(runtime / "aiwg/daemon.sock", time.monotonic() + 20)
            complete = ["env", "_AIWGCTL_COMPLETE=complete_bash", "COMP_WORDS=aiwgctl ta", "COMP_CWORD=1", str(ctl)]
            commands = [[str(py), "-c", "pass"], [str(ctl), "ping"], [str(ctl), "status"], complete]
            interleaved(commands, env, 3)  # warm the page cache and the pyc files
            floor, ping, status, completion = interleaved(commands, env, args.runs)
        finally:
            svc_proc.send_signal(signal.SIGTERM)
            svc_proc.wait(timeout=30)
    f, pg, st, co = (statistics.median(x) for x in (floor, ping, status, completion))
    print(f"runs: {args.runs} each, regular install in {venv}")
    print(f"floor  python -c pass   median {f:6.1f} ms")
    print(f"aiwgctl ping            median {pg:6.1f} ms   ratio {pg / f:.2f}x   (target <= 1.30x)")
    print(f"aiwgctl status          median {st:6.1f} ms   ratio {st / f:.2f}x   (target <= 1.60x)")
    print(f"Tab completion (bash)   median {co:6.1f} ms   ratio {co / f:.2f}x   (target < 100 ms)")


if __name__ == "__main__":
    main()
