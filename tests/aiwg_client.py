#!/usr/bin/env python3
"""A stand-in for the AIWG daemon's own CLI (``tools/daemon/index.mjs`` + ``ipc-client.mjs``), written from
``shared/reference/aiwg-client-contract.md`` alone, field by field, JavaScript quirks included:

- every command first reads ``<project>/.aiwg/daemon.pid`` and checks it with ``kill(pid, 0)``; without it,
  "Daemon is not running", exit 1, and the socket is never tried;
- then one JSON value per line on ``<project>/.aiwg/daemon/daemon.sock``, replies matched by ``id``, a
  message without ``id`` goes to the notification handler, 30 s per request;
- ``status`` prints the fields it reads, a missing one as ``undefined`` (as JavaScript would), and falls
  back to ``.aiwg/daemon/state.json`` when the socket does not answer;
- ``task submit --priority`` sends ``parseInt`` of the flag (``null`` for a non-number), and params left
  ``undefined`` are absent from the JSON (``JSON.stringify``);
- ``task list`` iterates the result as an array; ``stop`` sends SIGTERM to the pid and waits;
- ``logs [--lines N]`` prints the last N lines (50) of ``.aiwg/daemon/daemon.log`` or "No log file found";
  ``logs --follow`` runs ``tail -f -n N`` on that path.

Usage: ``aiwg_client.py --project DIR COMMAND ...`` (commands: status, stop, logs [--lines N] [--follow],
task submit|list|get|cancel|stats, chat MESSAGE, repl LINE..., automation enable|disable [RULE]). Exit 1 on an
error, as the real CLI.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

UNDEFINED = object()
TIMEOUT = 30.0


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.error = error


def js(value: Any) -> str:
    """How a template literal prints ``value``."""
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def get(obj: Any, path: str) -> Any:
    """``obj.a.b`` in JavaScript: ``undefined`` for a missing field (and a TypeError past one)."""
    for key in path.split("."):
        if obj is UNDEFINED or obj is None:
            raise TypeError(f"Cannot read properties of {js(obj)} (reading '{key}')")
        obj = obj.get(key, UNDEFINED) if isinstance(obj, dict) else UNDEFINED
    return obj


def parse_int(text: str | None) -> int | None:
    """``parseInt(text, 10)``: leading digits, else NaN (which JSON.stringify sends as null)."""
    if text is None:
        return None
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else None


def defined(params: dict[str, Any]) -> dict[str, Any]:
    """``JSON.stringify`` leaves out ``undefined`` members (and keeps ``null`` ones)."""
    return {k: v for k, v in params.items() if v is not UNDEFINED}


class IpcClient:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(str(path))
        self.rfile = self.sock.makefile("rb")
        self.ids = itertools.count(1)
        self.notifications: list[dict[str, Any]] = []

    def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        rid = next(self.ids)
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            line = self.rfile.readline()
            if not line:
                raise ConnectionError("connection closed")
            reply = json.loads(line)
            if "id" not in reply:
                self.notifications.append(reply)
                continue
            if reply["id"] != rid:
                continue
            if "error" in reply:
                raise RpcError(reply["error"])
            return reply["result"]

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()


def daemon_pid(project: Path) -> int | None:
    try:
        pid = int((project / ".aiwg" / "daemon.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def alive(pid: int) -> bool:
    """``kill(pid, 0)``; a zombie counts as gone (here the service's parent is the test, not systemd)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def print_status(st: dict[str, Any], pid: int) -> None:
    subs = get(st, "subsystems")
    auto_enabled = get(subs, "automation.enabled")
    print("AIWG Daemon Status")
    print(f"  PID: {pid}")
    print(f"  Started: {js(get(st, 'started_at'))}")
    print(f"  Uptime: {js(get(st, 'uptime_seconds'))}s")
    print(f"  Health: {js(get(st, 'health'))}")
    print(f"  IPC clients: {js(get(subs, 'ipc.clients'))}")
    print(f"  Running: {js(get(subs, 'supervisor.running'))}, queued: {js(get(subs, 'supervisor.queued'))}")
    print(f"  Max concurrent: {js(get(subs, 'supervisor.maxConcurrency'))}")
    print(f"  Automation: {'enabled' if auto_enabled is True else 'disabled'} "
          f"({js(get(subs, 'automation.ruleCount'))} rules)")
    if get(subs, "file_watcher.enabled") is True:
        print(f"  File watcher: {js(get(subs, 'file_watcher.events_received'))} events received")
    if get(subs, "scheduler.enabled") is True:
        print(f"  Scheduler: {js(get(subs, 'scheduler.jobs'))} jobs")
    if get(subs, "messaging.enabled") is True:
        print(f"  Messaging: {js(get(subs, 'messaging.adapters'))} adapters")


def print_state_file(project: Path, pid: int) -> None:
    st = json.loads((project / ".aiwg" / "daemon" / "state.json").read_text())
    print("AIWG Daemon Status (from state file)")
    print(f"  PID: {pid}")
    print(f"  Started: {js(get(st, 'started_at'))}")
    print(f"  Uptime: {js(get(st, 'uptime_seconds'))}s")
    print(f"  Last heartbeat: {js(get(st, 'last_heartbeat'))}")
    print(f"  Health: {js(get(st, 'health.status'))}")
    for issue in get(st, "health.issues"):
        print(f"    - {issue}")
    print(f"  Agents running: {js(get(st, 'agents.running'))}, queued: {js(get(st, 'agents.queued'))}")
    print(f"  File watcher: {js(get(st, 'monitors.file_watcher.enabled'))} "
          f"({js(get(st, 'monitors.file_watcher.events_received'))} events)")
    print(f"  Scheduler: {js(get(st, 'monitors.scheduler.enabled'))} ({js(get(st, 'monitors.scheduler.jobs'))} jobs)")


def run(project: Path, args: list[str]) -> int:
    pid = daemon_pid(project)
    if pid is None:
        print("Daemon is not running")
        return 1
    cmd = args[0] if args else "status"
    if cmd == "logs":
        return logs(project, args[1:])
    if cmd == "stop":
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not alive(pid):
                print("Daemon stopped")
                return 0
            time.sleep(0.1)
        print("Daemon did not stop")
        return 1
    try:
        client = IpcClient(project / ".aiwg" / "daemon" / "daemon.sock")
    except OSError:
        if cmd == "status":
            print_state_file(project, pid)
            return 0
        print("Cannot connect to daemon")
        return 1
    try:
        return command(client, pid, cmd, args[1:])
    except RpcError as exc:
        print(f"Error: {exc.error.get('message')}")
        return 1
    finally:
        client.close()


def logs(project: Path, rest: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="logs", exit_on_error=False)
    ap.add_argument("--lines", default="50")
    ap.add_argument("--follow", action="store_true")
    o = ap.parse_args(rest)
    path = project / ".aiwg" / "daemon" / "daemon.log"
    if not path.exists():
        print("No log file found")
        return 1
    n = parse_int(o.lines) or 50
    if o.follow:
        os.execvp("tail", ["tail", "-f", "-n", str(n), str(path)])
    for line in path.read_text(errors="replace").splitlines()[-n:]:
        print(line)
    return 0


def command(client: IpcClient, pid: int, cmd: str, rest: list[str]) -> int:
    if cmd == "status":
        print_status(client.request("daemon.status"), pid)
        return 0
    if cmd == "chat":
        res = client.request("chat.send", {"message": " ".join(rest)})
        print(f"Task: {js(get(res, 'taskId'))}")
        return 0
    if cmd == "automation":
        params = defined({"ruleId": rest[1] if len(rest) > 1 else UNDEFINED})
        res = client.request(f"automation.{rest[0]}", params)
        print(json.dumps(res, indent=2))
        return 0
    if cmd == "repl":
        return repl(client, pid, rest)
    if cmd != "task":
        print(f"Unknown command: {cmd}")
        return 1
    ap = argparse.ArgumentParser(prog="task", exit_on_error=False)
    ap.add_argument("sub")
    ap.add_argument("arg", nargs="?")
    ap.add_argument("--agent")
    ap.add_argument("--priority")
    ap.add_argument("--state")
    ap.add_argument("--limit")
    o = ap.parse_args(rest)
    if o.sub == "submit":
        params = defined({"prompt": o.arg, "agent": o.agent if o.agent is not None else UNDEFINED,
                          "priority": parse_int(o.priority) if o.priority is not None else UNDEFINED})
        res = client.request("task.submit", params)
        print(f"Task submitted: {js(get(res, 'taskId'))} ({js(get(res, 'state'))})")
    elif o.sub == "list":
        params = defined({"state": o.state if o.state is not None else UNDEFINED,
                          "limit": parse_int(o.limit) if o.limit is not None else UNDEFINED})
        tasks = client.request("task.list", params)
        if not isinstance(tasks, list):
            raise TypeError("tasks is not iterable")
        if not tasks:
            print("No tasks found")
        for t in tasks:
            print(f"{js(get(t, 'id'))}  {js(get(t, 'state'))}  {js(get(t, 'prompt'))}")
    elif o.sub == "get":
        print(json.dumps(client.request("task.get", {"taskId": o.arg}), indent=2))
    elif o.sub == "cancel":
        res = client.request("task.cancel", {"taskId": o.arg})
        print(f"Cancelled: {js(get(res, 'cancelled'))}")
    elif o.sub == "stats":
        print(json.dumps(client.request("task.stats"), indent=2))
    else:
        print(f"Unknown task command: {o.sub}")
        return 1
    return 0


def repl(client: IpcClient, pid: int, lines: list[str]) -> int:
    """The chat REPL's commands (/help /status /history /tasks /run /cancel /quit), one per argument."""
    history: list[str] = []
    for line in lines:
        word, _, arg = line.partition(" ")
        if word == "/help":
            print("/help /status /history /tasks /run /cancel /quit")
        elif word == "/status":
            print_status(client.request("daemon.status"), pid)
        elif word == "/history":
            print("\n".join(history) or "(empty)")
        elif word == "/tasks":
            for t in client.request("task.list", {"limit": 10}):
                print(f"{t['id']}  {t['state']}  {t['prompt']}")
        elif word == "/run":
            print(f"Task: {client.request('task.submit', {'prompt': arg})['taskId']}")
        elif word == "/cancel":
            print(f"Cancelled: {js(client.request('task.cancel', {'taskId': arg})['cancelled'])}")
        elif word == "/quit":
            return 0
        else:
            res = client.request("chat.send", {"message": line})
            history.append(line)
            print(f"Task: {res['taskId']}")
    return 0


def main() -> int:
    argv = sys.argv[1:]
    if len(argv) < 2 or argv[0] != "--project":
        print(__doc__)
        return 2
    try:
        return run(Path(argv[1]), argv[2:])
    except TypeError as exc:  # what node prints for a shape it did not expect
        print(f"Error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
