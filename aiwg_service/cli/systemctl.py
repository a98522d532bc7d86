"""``aiwgctl install|uninstall|start|stop|restart|logs``: the systemd side, for a pip-installed service.

These wrap ``systemctl --user`` and ``journalctl`` and say plainly what to do when no user manager runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from .. import paths
from . import render
from .core import fail

UNITS = ("aiwg.socket", "aiwg.service", "aiwg@.socket", "aiwg@.service", "aiwg-webhook.socket", "aiwg-web.socket")
NO_MANAGER = ("no systemd user manager is reachable ({why}). In a login session it runs by itself; over ssh "
              "or for a service that outlives logins run `loginctl enable-linger $USER`; in a container run "
              "the service in the foreground with `aiwg-service run`")


FOREGROUND_LOG = ("no log to show: the service runs in the foreground without --log-file, so it logs to its stderr "
                  "(the terminal or file it was started with); start it with `aiwg-service run --log-file FILE` "
                  "for `aiwgctl logs` to show it")

#: Where distribution packages and admins put user units, in systemd's search order (systemd.unit(5)).
#: aiwg units found here belong to a package: copies in ~/.config/systemd/user would shadow them.
SYSTEM_UNIT_DIRS = (Path("/etc/systemd/user"), Path("/usr/local/lib/systemd/user"), Path("/usr/lib/systemd/user"),
                    Path("/lib/systemd/user"))
PACKAGED = ("aiwg-service's units are already installed for every user in {dir} (by the distribution package, "
            "or an admin). Copies in {target} would shadow them and miss their updates, so nothing was written. "
            "Use them as they are: `systemctl --user enable --now aiwg.socket`. "
            "`aiwgctl install --force` writes the copies anyway.")


def packaged_unit_dir() -> Path | None:
    """The system-wide directory that already holds aiwg.service, if any."""
    return next((d for d in SYSTEM_UNIT_DIRS if (d / "aiwg.service").is_file()), None)


def unit_texts() -> dict[str, str]:
    """The shipped unit files: from the installed package, or from units/ in a source checkout."""
    try:
        from importlib.resources import files

        base = files("aiwg_service.units")
        return {name: (base / name).read_text() for name in UNITS}
    except (ModuleNotFoundError, FileNotFoundError):
        src = Path(__file__).resolve().parents[2] / "units"
        return {name: (src / name).read_text() for name in UNITS}


def service_bindir() -> Path:
    """Where the aiwg-service executable lives (systemd needs an absolute ExecStart=)."""
    found = shutil.which("aiwg-service")
    if found:
        return Path(found).resolve().parent
    return Path(sys.executable).parent


def systemctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemctl") is None:
        fail(NO_MANAGER.format(why="systemctl is not installed"))
    res = subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True)
    if res.returncode != 0 and check:
        err = (res.stderr or res.stdout).strip()
        if "Failed to connect to bus" in err or "No medium found" in err or "$DBUS_SESSION_BUS_ADDRESS" in err:
            fail(NO_MANAGER.format(why=err.splitlines()[0]))
        fail(f"systemctl --user {' '.join(args)} failed: {err}")
    return res


def webhook_port() -> int:
    """``webhook.port`` from the service-wide config (9471 when unset); a broken file is a clear error."""
    from .. import config
    from .configfile import load  # never requires a secret only the service's environment holds

    try:
        return load(paths.service_config_file()).config.webhook.port
    except config.ConfigError as exc:
        fail("cannot read the webhook port:\n" + "\n".join(exc.errors))


def web_port() -> int:
    """``web.port`` from the service-wide config (9472 when unset)."""
    from .. import config
    from .configfile import load

    try:
        return load(paths.service_config_file()).config.web.port
    except config.ConfigError as exc:
        fail("cannot read the web port:\n" + "\n".join(exc.errors))


def install(
    start: Annotated[bool, typer.Option(help="enable and start aiwg.socket now")] = True,
    force: Annotated[bool, typer.Option("--force", help="write the units even over a package's units")] = False,
    webhook: Annotated[bool, typer.Option("--webhook", help="also enable aiwg-webhook.socket (the webhook "
                                          "listener on 127.0.0.1:webhook.port)")] = False,
    webhook_port_: Annotated[int | None, typer.Option("--webhook-port", min=1, max=65535,
                                                      help="port for aiwg-webhook.socket (default: webhook.port "
                                                           "from the service-wide config, else 9471)")] = None,
    at_login: Annotated[bool, typer.Option("--at-login", help="also enable aiwg.service, so the service runs from "
                                           "login on, not only once something connects: the AIWG daemon's own CLI "
                                           "needs it (it looks for .aiwg/daemon.pid before it tries the socket)")]
    = False,
    web: Annotated[bool, typer.Option("--web", help="also enable aiwg-web.socket (the dashboard and /metrics on "
                                      "127.0.0.1:web.port, and a Unix socket for a reverse proxy)")] = False,
) -> None:
    """Install the user units (ExecStart pointing at this aiwg-service), daemon-reload, enable the socket.

    Refused, without --force, when a package already installed the units system-wide.
    """
    target = paths.user_unit_dir()
    packaged = packaged_unit_dir()
    if packaged is not None:
        if not force:
            fail(PACKAGED.format(dir=packaged, target=target))
        render.error(f"warning: writing copies that shadow the packaged units in {packaged} (--force)")
    target.mkdir(parents=True, exist_ok=True)
    bindir = service_bindir()
    port = webhook_port_ if webhook_port_ is not None else webhook_port()
    dash_port = web_port()
    for name, text in unit_texts().items():
        text = text.replace("@BINDIR@", str(bindir))
        if name == "aiwg-webhook.socket":
            text = re.sub(r"(?m)^ListenStream=127\.0\.0\.1:\d+$", f"ListenStream=127.0.0.1:{port}", text)
        if name == "aiwg-web.socket":
            text = re.sub(r"(?m)^ListenStream=127\.0\.0\.1:\d+$", f"ListenStream=127.0.0.1:{dash_port}", text)
        (target / name).write_text(text)
        print(f"wrote {target / name}")
    systemctl("daemon-reload")
    if start:
        systemctl("enable", "--now", "aiwg.socket")
        print("aiwg.socket enabled and listening; the service starts on first use (try `aiwgctl ping`)")
        if at_login:
            systemctl("enable", "--now", "aiwg.service")
            print("aiwg.service enabled: it runs from login on, so the AIWG CLI finds it in every project")
        else:
            print("tip: `aiwgctl install --at-login` runs the service from login on; the AIWG daemon's own CLI "
                  "needs that (an idle socket-activated service has no .aiwg/daemon.pid for it to find)")
        if webhook:
            systemctl("enable", "aiwg-webhook.socket")
            # restart, not start: a port rewritten by this install takes effect now
            restart_sockets("aiwg-webhook.socket")
            print(f"aiwg-webhook.socket enabled, listening on 127.0.0.1:{port}")
            _report_secrets()
        if web:
            systemctl("enable", "aiwg-web.socket")
            restart_sockets("aiwg-web.socket")
            print(f"aiwg-web.socket enabled, listening on 127.0.0.1:{dash_port}; open it with `aiwgctl web`")


def _report_secrets() -> None:
    """The service-wide file's hook secrets: never required here, asked of the service (which the socket starts)."""
    from .. import config
    from .configfile import check_secrets, describe, load

    with contextlib.suppress(config.ConfigError):
        for s in check_secrets(load(paths.service_config_file()).config):
            if s["status"] == "problem":
                render.error(f"warning: {describe(s)}")
            else:
                print(describe(s))


def restart_sockets(*sockets: str) -> None:
    """(Re)start socket units of aiwg.service, which systemd refuses while that service runs.

    A running service is stopped first and started again once the sockets listen, so it inherits them all
    (its agents run in their own units and are re-adopted by the new process).
    """
    running = systemctl("is-active", "--quiet", "aiwg.service", check=False).returncode == 0
    if running:
        print("stopping aiwg.service so that it inherits the new socket (systemd starts a socket only while its "
              "service is stopped); agents keep running")
        systemctl("stop", "aiwg.service")
    systemctl("restart", *sockets)
    if running:
        systemctl("start", "aiwg.service")


def uninstall() -> None:
    """Stop and disable the units and remove the files `install` wrote."""
    systemctl("disable", "--now", "aiwg.socket", "aiwg-webhook.socket", "aiwg-web.socket", "aiwg.service",
              check=False)
    target = paths.user_unit_dir()
    for name in UNITS:
        f = target / name
        if f.exists():
            f.unlink()
            print(f"removed {f}")
    systemctl("daemon-reload")


def start() -> None:
    """Start the service (systemctl --user start aiwg.socket aiwg.service)."""
    systemctl("start", "aiwg.socket", "aiwg.service")
    print("started")


def stop(
    agents: Annotated[bool, typer.Option("--agents", help="stop running agents too (after "
                                         "daemon.stop_timeout_seconds); by default they keep running")] = False,
) -> None:
    """Stop the service; the socket stays, so the next request starts it again.  Running agents
    keep running (the next start re-adopts them) unless --agents."""
    if not _manager_reachable():
        _stop_foreground(agents)
        return
    if agents and systemctl("is-active", "aiwg.service", check=False).stdout.strip() in ("active", "reloading"):
        _ask_to_stop_agents()  # (only when it runs: a request on the socket would start it)
    systemctl("stop", "aiwg.service")
    print("stopped (aiwg.socket still listens; use `systemctl --user stop aiwg.socket` to stop that too)")


def _manager_reachable() -> bool:
    if shutil.which("systemctl") is None:
        return False
    res = subprocess.run(["systemctl", "--user", "is-active", "aiwg.service"], capture_output=True, text=True)
    err = res.stderr or ""
    return not ("Failed to connect to bus" in err or "No medium found" in err or "$DBUS_SESSION_BUS_ADDRESS" in err)


def _stop_foreground(agents: bool) -> None:
    """No user manager: the service runs in the foreground; ask it to stop itself."""
    from .. import protocol as p
    from ..client import Client, NotRunning
    from .core import START_HINT, resolve_socket

    try:
        with Client(resolve_socket(), 30.0) as c:
            res = c.call("daemon.stop", {"agents": agents})
    except NotRunning as exc:
        fail(f"{exc}; {START_HINT}")
    except p.RpcError as exc:
        fail(f"the service refused to stop: {exc.message}")
    kept = "" if agents else f"; {res.get('running', 0)} running agent(s) keep running"
    print(f"stopping the foreground service{' and its agents' if agents else ''}{kept}")


def _ask_to_stop_agents() -> None:
    """Tell a running service that this stop is for its agents too (nothing to do if none runs)."""
    from .. import protocol as p
    from ..client import Client, NotRunning
    from .core import resolve_socket

    try:
        with Client(resolve_socket(), 30.0) as c:
            c.call("daemon.stop", {"agents": True})
    except NotRunning:
        return
    except p.RpcError as exc:
        fail(f"the service refused to stop its agents: {exc.message}")


def restart() -> None:
    """Restart the service; requests sent meanwhile wait on the socket and are answered."""
    systemctl("restart", "aiwg.service")
    print("restarted")


def logs(
    lines: Annotated[int, typer.Option("-n", "--lines", help="how many lines")] = 50,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="keep printing new lines")] = False,
) -> None:
    """Show the service's log: its journal under systemd, else its foreground --log-file."""
    state_file = paths.state_dir() / "state.json"
    log_file = log_to = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        state = json.loads(state_file.read_text())
        log_file, log_to = state.get("log_file"), state.get("log_to")
    if log_to == "stderr":  # the foreground without --log-file: the journal has nothing of it
        fail(FOREGROUND_LOG)
    if log_file:
        cmd = ["tail", "-n", str(lines), *(["-F"] if follow else []), log_file]
    elif shutil.which("journalctl"):
        cmd = ["journalctl", "-t", "aiwg", "-n", str(lines), "--no-pager", *(["-f"] if follow else [])]
    else:
        fail(FOREGROUND_LOG)
    try:
        os.execvp(cmd[0], cmd)
    except OSError as exc:
        fail(f"cannot run {cmd[0]}: {exc.strerror}")
