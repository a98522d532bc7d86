"""What every aiwgctl command needs: find the socket, call the service, fail with one clear line.

Free of typer and msgspec on purpose: ``ping`` and ``status`` run from here before typer is imported
(typer pulls in pydantic at run time, ~90 ms), which keeps the commands scripts poll in a loop fast.
"""

from __future__ import annotations

import os

from .. import locate
from .. import wire as p
from . import render

# typing and collections.abc cost milliseconds at import: this module is on aiwgctl's fast path
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, NoReturn

START_HINT = ("start it with `systemctl --user start aiwg.socket` (or `aiwgctl install` once), "
              "or in the foreground with `aiwg-service run`")


class CliExit(Exception):
    """Leave aiwgctl with this status (the message, if any, was already printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Options:
    socket: str | None = None


options = Options()


def fail(msg: str, code: int = 1) -> NoReturn:
    render.error(msg)
    raise CliExit(code)


def resolve_socket() -> str:
    """--socket / $AIWG_SOCKET, --instance, the project link above the cwd, then the default."""
    if options.socket is None:
        options.socket = locate.find_socket(os.getcwd(), warn=lambda msg: render.error(f"warning: {msg}"))
    return options.socket


def no_service(exc: Exception) -> str:
    """The line for a failed connect: an impostor is named as such, a missing service gets the start hint."""
    from ..client import Impostor

    return str(exc) if isinstance(exc, Impostor) else f"{exc}; {START_HINT}"


def project_param(path: Path | None) -> str | None:
    """``--project``, else the served project that contains the working directory (innermost first, as git
    finds its repository), else None: the service then picks its only project, or names them all."""
    if path is not None:
        return str(path.expanduser().resolve())
    return locate.find_project(os.getcwd())


def use_instance(project: Path) -> None:
    from ..systemd import systemd_escape_path

    options.socket = locate.instance_socket(systemd_escape_path(str(project.expanduser().resolve())))


#: Requests that change nothing. One lost because the service died under it (kill -9, watchdog) is sent
#: once more: the listening socket belongs to systemd, so the new connection waits for the restarted service.
RETRY_SAFE = frozenset({"ping", "daemon.status", "project.list", "cron.list", "events.list", "events.dlq",
                        "task.list", "task.get", "task.stats", "automation.status"})


def call(method: str, params: dict[str, Any] | None = None, timeout: float | None = 30.0) -> Any:
    from ..client import Client, Dropped, NotRunning

    path = resolve_socket()
    try:
        try:
            with Client(path, timeout) as c:
                return c.call(method, params)
        except Dropped:
            if method not in RETRY_SAFE:
                raise
        with Client(path, timeout) as c:
            return c.call(method, params)
    except NotRunning as exc:
        fail(no_service(exc))
    except p.RpcError as exc:
        lines = [exc.message]
        if isinstance(exc.data, dict):
            lines += [f"  {e}" for e in exc.data.get("errors", []) if e not in exc.message]
        fail("\n".join(lines))
    except TimeoutError:
        fail(f"the service on {path} did not answer within {timeout:.0f}s")
    except OSError as exc:
        fail(f"lost the connection to the service on {path}: {exc.strerror or exc}")


# -- the two commands that also run without typer -------------------------------------------------------


def trust_cell(project: dict[str, Any]) -> str:
    if project.get("served") is False:
        return "-"  # not served: its config runs nothing either way
    if project.get("untrusted_reason"):
        return "NO (runs nothing)"
    return "yes" if project.get("needs_trust") else "yes (nothing to trust)"


def cmd_ping(json: bool) -> None:
    import time

    t0 = time.perf_counter()
    res = call("ping")
    ms = (time.perf_counter() - t0) * 1000
    if json:
        render.emit_json(res)
    else:
        print(f"pong from {resolve_socket()} in {ms:.1f} ms")


def cmd_status(json: bool) -> None:
    st = call("daemon.status")
    if json:
        render.emit_json(st)
        return
    cfg = st.get("config", {})
    render.kv([
        ("service", f"running, pid {st['pid']}, up {render.duration(st['uptime_seconds'])}, v{st['version']}"),
        ("status", st.get("status", "")),
        ("socket", st["socket"] + (" (from systemd)" if st.get("socket_activated") else "")),
        ("state", st["state_dir"]),
        ("config", "ok" if cfg.get("ok", True) else f"last reload refused at {cfg.get('time')}"),
        ("health", st.get("health", "?")),
    ])
    for e in cfg.get("errors", []):
        print(render.safe(f"  {e}"))
    for issue in st.get("issues", []):
        print(render.safe(f"  {issue}"))
    print()
    render.table(["project", "state", "persistent", "trusted"],
                 [(pr["path"], pr.get("state", "ok"), "yes" if pr["persistent"] else "no (this run)", trust_cell(pr))
                  for pr in st["projects"]], empty="no projects")
    for pr in st["projects"]:
        if pr.get("untrusted_reason"):
            print(render.safe(f"untrusted: {pr['path']}: {pr['untrusted_reason']}"))
    print()
    rows = []
    for name, h in st["subsystems"].items():
        rows.append((name, ", ".join(f"{k}={v}" for k, v in h.items() if not isinstance(v, dict | list))))
    render.table(["subsystem", "health"], rows)
