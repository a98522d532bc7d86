"""Stand-in for ``aiwg-service run`` that exercises aiwg_service.systemd under real systemd.

Installed as ``@BINDIR@/aiwg-service`` by the unit tests so the *real* unit
files are tested.  Behaviour:

* socket activation via ``listen_fds()``; each connection gets one line back:
  ``pong <project> <reloads>``;
* STATUS=starting, sleeps ``$FAKE_START_DELAY``, then READY=1 + STATUS=serving;
* pings the watchdog at ``watchdog_interval()``;
* SIGHUP: RELOADING=1 (+MONOTONIC_USEC), sleeps ``$FAKE_RELOAD_DELAY``, READY=1;
* SIGTERM: STOPPING=1, exit 0;
* writes facts about its environment (sandbox, fds, umask) to
  ``$STATE_DIRECTORY/info.json`` and logs structured records to the journal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from aiwg_service import systemd as sd

log = logging.getLogger("aiwg.fake")


def _status_fields() -> dict[str, str]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("NoNewPrivs", "Seccomp", "CapBnd"):
            fields[key] = value.strip()
    return fields


async def main(project: str | None) -> int:
    umask = os.umask(0o077)
    os.umask(umask)
    fds = sd.listen_fds()
    state_dir = Path(os.environ.get("STATE_DIRECTORY", "/nonexistent"))
    info = {
        "pid": os.getpid(),
        "project": project,
        "fds": fds,
        "umask": oct(umask),
        "listen_env_left": [k for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES") if k in os.environ],
        "watchdog_interval": sd.watchdog_interval(),
        "under_journal": sd.under_journal(),
        "state_directory": str(state_dir),
        **_status_fields(),
    }
    (state_dir / "info.json").write_text(json.dumps(info))

    sd.notify_status("starting")
    await asyncio.sleep(float(os.environ.get("FAKE_START_DELAY", "0")))

    reloads = 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(f"pong {project} {reloads}\n".encode())
        await writer.drain()
        writer.close()

    servers = []
    for fd, name in fds:
        if name == "rpc":
            sock = socket.socket(fileno=fd)
            servers.append(await asyncio.start_unix_server(on_client, sock=sock))

    async def reload() -> None:
        nonlocal reloads
        sd.notify_reloading()
        log.info("reloading", extra={"PROJECT": project or ""})
        await asyncio.sleep(float(os.environ.get("FAKE_RELOAD_DELAY", "0")))
        reloads += 1
        sd.notify_ready(f"reloaded {reloads}")

    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def watchdog(interval: float) -> None:
        while True:
            sd.notify_watchdog()
            await asyncio.sleep(interval)

    tasks = []
    if (interval := sd.watchdog_interval()) is not None:
        tasks.append(loop.create_task(watchdog(interval)))

    sd.notify_ready("serving")
    log.info("fake daemon ready", extra={"PROJECT": project or "", "TASK_ID": "t-ready"})
    await stop.wait()
    sd.notify_stopping("stopping")
    log.info("fake daemon stopping", extra={"PROJECT": project or ""})
    for server in servers:
        server.close()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--project")
    parser.add_argument("--registered", action="store_true")  # what aiwg.service passes
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, handlers=[sd.make_journal_handler("aiwg")])
    sys.exit(asyncio.run(main(args.project)))
