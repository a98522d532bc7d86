"""Benchmark for the inotify engine (prints figures, asserts nothing).

    PYTHONPATH=. python bench/watch.py [--dirs 20000] [--writes 500] [--no-raise-limit] [--no-peer]

Figures:
* setup: time for ``set_root`` to watch a tree of N directories (targets: < 0.5 s for 20,000);
* latency: write -> emitted ``file.*`` event with ``debounce_ms=0`` (target: p50 < 5 ms);
* bus throughput: events per second from publish to one subscriber's handler;
* service RSS: the real ``aiwg-service`` process (VmRSS) on a project with an empty ``src/`` (its base) and
  after watching N directories (target: under 50 MB for 20,000);
* peer: watchman (Debian's, if installed) on the same tree in the same run: time to watch and crawl, RSS
  after it, and write -> subscription latency with ``settle: 1`` ms; ratios are printed beside ours;
* storm: 100,000 files created in ``src/`` of the real service, with a prompt follower on the socket: its lag
  (last file written -> the last path of the flush received), paths received against paths created, gaps,
  and the service's peak RSS meanwhile (issue 23: a flush of any size reaches a prompt follower whole).
Last turn's figures are printed beside this run's (``LAST_TURN``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiwg_service.events.watcher import FileWatcher, WatchSpec

LIMIT_PATH = "/proc/sys/fs/inotify/max_user_watches"
#: the figures of the turn before issue 23, printed beside this run's
LAST_TURN = {"setup 20k dirs": "434 ms", "write->event p50": "0.885 ms"}
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: Figures of this run, for the ratios against the peer.
FIG: dict[str, float] = {}


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rpc(path: Path, method: str, params: dict | None = None) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(path))
        msg = {"jsonrpc": "2.0", "id": 1, "method": method, **({"params": params} if params else {})}
        s.sendall(json.dumps(msg).encode() + b"\n")
        return json.loads(s.makefile("rb").readline())


@contextlib.contextmanager
def running_service(base: Path, debounce_ms: int = 200) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The real service on project ``base`` (watching ``src/``), with private XDG dirs; yields (process, socket)."""
    run = base / "xdg"
    for sub in ("run", "state", "config"):
        (run / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(run / "run", 0o700)
    cfg = {"watch": {"debounce_ms": debounce_ms,
                     "paths": [{"path": "src/", "events": ["create", "modify", "delete"]}]},
           "schedule": {"jobs": []}}
    (base / ".aiwg").mkdir(exist_ok=True)
    (base / ".aiwg" / "daemon.json").write_text(json.dumps(cfg))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "LISTEN_", "AIWG_"))},
           "XDG_RUNTIME_DIR": str(run / "run"), "XDG_STATE_HOME": str(run / "state"),
           "XDG_CONFIG_HOME": str(run / "config"), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([str(BIN / "aiwg-service"), "run", "--project", str(base)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc, run / "run" / "aiwg" / "daemon.sock"
    finally:
        proc.terminate()
        proc.wait(20)


def service_rss(base: Path, expect_dirs: int) -> tuple[float, float]:
    """Start the real service on ``base``; (seconds until every dir is watched, RSS MB once settled). Pings
    meanwhile: the longest round trip while the tree is walked goes to ``FIG["walk_ping_max"]``."""
    t0 = time.perf_counter()
    pings: list[float] = []
    with running_service(base) as (proc, sock):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"aiwg-service exited with {proc.returncode}")
            try:
                tp = time.perf_counter()
                rpc(sock, "ping")
                pings.append((time.perf_counter() - tp) * 1000)
                st = rpc(sock, "daemon.status")["result"]["subsystems"]["watcher"]
                if st.get("watched_dirs", 0) >= expect_dirs:
                    break
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(0.05)
        dt = time.perf_counter() - t0
        FIG["walk_ping_max"] = max(pings[1:], default=0.0)  # (the first one waits for the service to start)
        FIG["walk_pings"] = len(pings) - 1
        time.sleep(1.0)  # start-up garbage collected, first heartbeat done
        return dt, proc_rss_mb(proc.pid)


def bench_service_latency(n_writes: int) -> None:
    """Write -> ``events.event`` notification on an ``events.subscribe`` connection to the real service."""
    with tempfile.TemporaryDirectory(prefix="aiwg-bench-") as tmp:
        base = Path(tmp)
        (base / "src").mkdir()
        with running_service(base, debounce_ms=0) as (proc, sock):
            deadline = time.monotonic() + 30
            while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            time.sleep(0.5)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(str(sock))
                s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "events.subscribe",
                                      "params": {"type": "file.*"}}).encode() + b"\n")
                rf = s.makefile("rb")
                rf.readline()
                lat: list[float] = []
                for i in range(-1, n_writes):
                    f = base / "src" / f"f{i % 50}.txt"
                    time.sleep(0.005)
                    s.setblocking(False)
                    try:  # drop notifications of the previous write (its close-write may follow as a modify)
                        while s.recv(65536):
                            pass
                    except BlockingIOError:
                        pass
                    s.settimeout(10)
                    rf = s.makefile("rb")
                    t0 = time.perf_counter()
                    with open(f, "w") as fh:
                        fh.write("x")
                    rf.readline()
                    if i >= 0:
                        lat.append((time.perf_counter() - t0) * 1000)
        lat.sort()
        p50 = statistics.median(lat)
        FIG["svc_p50"] = p50
        print(f"service latency (write -> events.event on a subscriber socket, debounce_ms=0, {n_writes} writes): "
              f"p50 {p50:.3f} ms, p99 {lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.3f} ms")


class Watchman:
    """A private watchman server (own socket and state) as the peer."""

    def __init__(self, tmp: Path) -> None:
        self.exe = shutil.which("watchman")
        self.sock = str(tmp / "wm.sock")
        self.args = ["--sockname", self.sock, "--statefile", str(tmp / "wm.state"),
                     "--logfile", str(tmp / "wm.log"), "--pidfile", str(tmp / "wm.pid")]

    def cmd(self, *argv: str, stdin: str | None = None) -> dict:
        assert self.exe
        out = subprocess.run([self.exe, *self.args, "--no-pretty", *argv], input=stdin, capture_output=True,
                             text=True, timeout=300, check=True).stdout
        return json.loads(out)

    def watch(self, root: Path) -> float:
        """Seconds to watch ``root`` and finish the crawl (a synced query returns once it is done)."""
        t0 = time.perf_counter()
        self.cmd("watch", str(root))
        self.cmd("-j", stdin=json.dumps(["query", str(root), {"expression": ["false"], "sync_timeout": 300000}]))
        return time.perf_counter() - t0

    def pid(self) -> int:
        return int(self.cmd("get-pid")["pid"])

    def stop(self) -> None:
        if self.exe:
            subprocess.run([self.exe, *self.args, "shutdown-server"], capture_output=True, timeout=30)


def check_watch_limit(needed: int, may_raise: bool) -> int | None:
    """Print the per-user watch limit; raise it (root only) if the tree would not fit.

    Returns the previous value when it was raised, so the caller can restore it.
    """
    try:
        limit = int(Path(LIMIT_PATH).read_text())
    except OSError:
        print("max_user_watches: unknown (no /proc)")
        return None
    print(f"fs.inotify.max_user_watches = {limit} (tree needs {needed} watches)")
    if limit >= needed + 1000:
        print("  limit is sufficient, left unchanged")
        return None
    if may_raise and os.geteuid() == 0:
        new = max(needed * 2, 65536)
        Path(LIMIT_PATH).write_text(str(new))
        print(f"  RAISED to {new} as root for this benchmark (restored afterwards)")
        return limit
    print("  WARNING: limit too low, part of the tree will be unwatched (see health())")
    return None


def make_tree(base: Path, n_dirs: int, fanout: int = 20) -> int:
    """A balanced tree of exactly ``n_dirs`` directories under ``base/src``."""
    made = 0
    level = [base / "src"]
    level[0].mkdir(parents=True)
    made = 1
    while made < n_dirs:
        nxt = []
        for parent in level:
            for i in range(fanout):
                if made >= n_dirs:
                    break
                d = parent / f"d{i}"
                d.mkdir()
                nxt.append(d)
                made += 1
        level = nxt
    return made


async def bench_setup(n_dirs: int, may_raise: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="aiwg-bench-") as tmp:
        base = Path(tmp)
        t0 = time.perf_counter()
        made = make_tree(base, n_dirs)
        print(f"created {made} directories in {time.perf_counter() - t0:.2f} s")
        previous = check_watch_limit(made, may_raise)
        try:
            await _time_set_root(base)
        finally:
            if previous is not None:
                Path(LIMIT_PATH).write_text(str(previous))
                print(f"  restored fs.inotify.max_user_watches = {previous}")


async def _time_set_root(base: Path) -> None:
    w = FileWatcher(lambda *_: None, debounce_ms=0)
    await w.start()
    t0 = time.perf_counter()
    w.set_root(str(base), [WatchSpec("src/")])
    dt = time.perf_counter() - t0
    FIG["setup"] = dt
    h = w.health()["roots"][str(base)]
    print(
        f"setup: set_root watched {h['watched_dirs']} dirs in {dt * 1000:.0f} ms "
        f"({h['unwatched_dirs']} unwatched) -- target < 500 ms"
    )
    t0 = time.perf_counter()
    w.remove_root(str(base))
    print(f"teardown: remove_root in {(time.perf_counter() - t0) * 1000:.0f} ms")
    await w.stop()


def bench_service_rss(n_dirs: int, peer: bool) -> None:
    """RSS of the real service: its base on an empty tree, then after watching ``n_dirs``; watchman beside it."""
    with tempfile.TemporaryDirectory(prefix="aiwg-bench-") as tmp:
        base = Path(tmp) / "empty"
        (base / "src").mkdir(parents=True)
        _, rss0 = service_rss(base, 1)
        big = Path(tmp) / "big"
        big.mkdir()
        made = make_tree(big, n_dirs)
        dt, rss1 = service_rss(big, made)
        FIG["rss"] = rss1
        print(f"service RSS: base {rss0:.1f} MB (empty src/); after watching {made} dirs {rss1:.1f} MB "
              f"(+{rss1 - rss0:.1f} MB; target < 50 MB); start to all watched {dt:.2f} s; longest ping while "
              f"the tree was walked {FIG.get('walk_ping_max', 0):.1f} ms ({FIG.get('walk_pings', 0):.0f} pings; "
              f"last turn the walk held the loop 650 ms)")
        if not peer:
            return
        wm = Watchman(Path(tmp))
        if not wm.exe:
            print("peer: watchman not installed (apt-get install watchman); no peer figures")
            return
        try:
            t = wm.watch(big / "src")
            rss = proc_rss_mb(wm.pid())
            print(f"peer watchman {wm.cmd('version')['version']}: watch + crawl {made} dirs {t:.2f} s, "
                  f"RSS {rss:.1f} MB; ours/watchman RSS = {rss1 / rss:.2f}x, setup = {FIG.get('setup', 0) / t:.2f}x")
        finally:
            wm.stop()


def bench_peer_latency(n_writes: int) -> None:
    """watchman's write -> subscription PDU latency on a root with ``settle: 1`` ms, for comparison."""
    with tempfile.TemporaryDirectory(prefix="aiwg-bench-") as tmp:
        wm = Watchman(Path(tmp))
        if not wm.exe:
            return
        root = Path(tmp) / "root"
        (root / "src").mkdir(parents=True)
        (root / ".watchmanconfig").write_text(json.dumps({"settle": 1}))
        try:
            wm.watch(root)
            client = subprocess.Popen([wm.exe, *wm.args, "--no-pretty", "-j", "-p"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
            assert client.stdin and client.stdout
            # the CLI sends its command once stdin is closed, then prints the subscription's PDUs as they come
            client.stdin.write(json.dumps(["subscribe", str(root), "bench",
                                           {"expression": ["type", "f"], "fields": ["name"]}]) + "\n")
            client.stdin.close()
            client.stdout.readline()  # subscribe reply
            import queue
            import threading

            lines: queue.Queue[tuple[float, str]] = queue.Queue()
            out = client.stdout

            def reader() -> None:  # timestamps each PDU as it arrives, so a late extra PDU cannot be miscounted
                for line in out:
                    lines.put((time.perf_counter(), line))

            threading.Thread(target=reader, daemon=True).start()
            lat: list[float] = []
            for i in range(-1, n_writes):  # -1: a warm-up write, not counted
                f = root / "src" / f"f{i % 50}.txt"
                time.sleep(0.005)
                while not lines.empty():
                    lines.get_nowait()  # PDUs of the previous write (create, then close) are not this one's
                t0 = time.perf_counter()
                with open(f, "w") as fh:
                    fh.write("x")
                while True:
                    t1, line = lines.get(timeout=10)
                    if t1 >= t0 and '"subscription"' in line and "src/f" in line:
                        break
                if i >= 0:
                    lat.append((t1 - t0) * 1000)
            client.kill()
            client.wait()
            lat.sort()
            p50 = statistics.median(lat)
            print(f"peer watchman latency (settle 1 ms, {n_writes} writes): p50 {p50:.3f} ms, "
                  f"p99 {lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.3f} ms; "
                  f"ours (service, subscriber socket)/watchman p50 = {FIG.get('svc_p50', 0) / p50:.2f}x")
        finally:
            wm.stop()


async def bench_latency(n_writes: int) -> None:
    with tempfile.TemporaryDirectory(prefix="aiwg-bench-") as tmp:
        base = Path(tmp)
        (base / "src").mkdir()
        loop = asyncio.get_running_loop()
        got: asyncio.Future[float] | None = None

        def emit(etype: str, root: str, data: dict) -> None:
            if got is not None and not got.done():
                got.set_result(time.perf_counter())

        w = FileWatcher(emit, debounce_ms=0)
        await w.start()
        w.set_root(str(base), [WatchSpec("src/")])
        lat: list[float] = []
        for i in range(n_writes):
            f = base / "src" / f"f{i % 50}.txt"
            got = loop.create_future()
            t0 = time.perf_counter()
            with open(f, "w") as fh:
                fh.write("x")
            t1 = await asyncio.wait_for(got, 5)
            lat.append((t1 - t0) * 1000)
            got = None
            await asyncio.sleep(0.002)  # let trailing IN_CLOSE_WRITE flush before the next write
        await w.stop()
        lat.sort()
        p50 = statistics.median(lat)
        FIG["p50"] = p50
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(
            f"latency (debounce_ms=0, {n_writes} writes): p50 {p50:.3f} ms, p99 {p99:.3f} ms, "
            f"max {lat[-1]:.3f} ms -- target p50 < 5 ms"
        )


async def bench_bus_throughput(n: int = 200_000) -> None:
    """Events per second through the event bus to one subscriber: publish n events, wait for all to arrive."""
    from aiwg_service.events.bus import EventBus

    bus = EventBus(None)
    done = asyncio.get_running_loop().create_future()
    seen = 0

    def handler(_ev: object) -> None:
        nonlocal seen
        seen += 1
        if seen == n and not done.done():
            done.set_result(None)

    bus.subscribe("file.*", handler, name="bench", max_queue=n)
    await bus.start()
    t0 = time.perf_counter()
    for i in range(n):
        bus.publish("file.modify", "/proj", {"path": f"src/f{i % 1000}.py", "event_type": "modify"}, "watch")
    t_pub = time.perf_counter() - t0
    await done
    total = time.perf_counter() - t0
    await bus.stop()
    print(f"bus: {n:,} events to one subscriber in {total:.3f} s = {n / total:,.0f} events/s "
          f"(publish alone {n / t_pub:,.0f}/s)")


def bench_storm(n_files: int) -> None:
    """A prompt follower of the real service during a storm of ``n_files`` creates in one window."""
    import threading

    with tempfile.TemporaryDirectory(prefix="aiwg-bench-") as tmp:
        base = Path(tmp)
        (base / "src").mkdir()
        with running_service(base, debounce_ms=200) as (proc, sock):
            deadline = time.monotonic() + 30
            while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            time.sleep(1.0)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(120)
            s.connect(str(sock))
            s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "events.subscribe",
                                  "params": {"type": "file.*"}}).encode() + b"\n")
            rf = s.makefile("rb")
            rf.readline()
            got = {"paths": 0, "gaps": 0, "last": 0.0}
            peak = [0.0]
            stop = threading.Event()

            def follow() -> None:
                while not stop.is_set():
                    try:
                        line = rf.readline()
                    except OSError:
                        return
                    if not line:
                        return
                    msg = json.loads(line)
                    if msg.get("method") == "events.gap":
                        got["gaps"] += msg["params"]["lost"]
                    elif msg.get("method") == "events.event":
                        d = msg["params"]["data"]
                        got["paths"] += len(d["paths"]) if "paths" in d else 1
                        got["last"] = time.perf_counter()

            def sample() -> None:
                while not stop.is_set():
                    with contextlib.suppress(OSError):
                        peak[0] = max(peak[0], proc_rss_mb(proc.pid))
                    time.sleep(0.05)

            threads = [threading.Thread(target=follow, daemon=True), threading.Thread(target=sample, daemon=True)]
            for t in threads:
                t.start()
            t0 = time.perf_counter()
            for i in range(n_files):
                os.close(os.open(base / "src" / f"f{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644))
            t_written = time.perf_counter()
            deadline = time.monotonic() + 120
            while got["paths"] < n_files and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            s.close()
            lag = (got["last"] - t_written) * 1000
            print(f"storm: {n_files:,} files created in {t_written - t0:.2f} s; a prompt follower received "
                  f"{got['paths']:,} paths ({'whole' if got['paths'] == n_files else 'MISSING some'}), gaps "
                  f"{got['gaps']}, lag (last write -> last path received) {lag:.0f} ms incl. the 200 ms window; "
                  f"service peak RSS {peak[0]:.0f} MB")


async def main(args: argparse.Namespace) -> None:
    await bench_setup(args.dirs, not args.no_raise_limit)
    await bench_latency(args.writes)
    bench_service_latency(min(args.writes, 200))
    if not args.no_peer:
        bench_peer_latency(min(args.writes, 200))
    await bench_bus_throughput()
    bench_service_rss(args.dirs, not args.no_peer)
    bench_storm(args.storm)
    print(f"last turn: setup of 20,000 dirs {LAST_TURN['setup 20k dirs']}, write->event p50 "
          f"{LAST_TURN['write->event p50']}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dirs", type=int, default=20_000)
    ap.add_argument("--writes", type=int, default=500)
    ap.add_argument("--storm", type=int, default=100_000, help="files created in the storm")
    ap.add_argument("--no-raise-limit", action="store_true", help="never raise max_user_watches")
    ap.add_argument("--no-peer", action="store_true", help="skip the watchman figures")
    uvloop.run(main(ap.parse_args()))
