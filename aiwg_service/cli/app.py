"""``aiwgctl``: talk to the running service (or, for a few commands, work without one).

Every command has ``--json`` for scripts. Errors are one clear line and a non-zero exit, never a
traceback. Heavy modules are imported inside the commands that need them, so start-up stays quick.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core

from .. import paths
from . import approvals as approvals_cli
from . import budget as budget_cmd
from . import chat as chat_cmd
from . import render, systemctl
from . import sessions as sessions_cmd
from .core import call, cmd_ping, cmd_status, fail, options, trust_cell, use_instance
from .cron import cron_app
from .events import events_app
from .messaging import messaging_app, notify
from .rules import rules_app
from .sandbox import doctor, sandbox_app
from .tasks import task_app
from .trust import trust, untrust
from .web import web as web_cmd
from .webhooks import webhook_app

#: ``--help`` lists commands in this order: the service, then talking to the agent, the work it does, why it
#: ran, and the configuration; anything not named here follows, in the order it was registered.
ORDER = ("status", "ping", "start", "stop", "restart", "reload", "logs", "doctor", "install", "uninstall",
         "chat", "attach", "top", "web", "session", "task", "approvals", "approve", "reject", "trace", "budget",
         "events", "rules", "cron", "notify", "messaging", "webhook", "executors", "sandbox",
         "project", "trust", "untrust", "config")


class OrderedGroup(typer.core.TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        names = list(self.commands)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER) + names.index(n))


def _plain_option_types() -> None:
    """Help shows ``--socket PATH`` and a bare ``--json``, not ``<path>`` and ``<bool>`` on every flag."""
    def display_type_rich(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) or getattr(self, "count", False):
            return None
        if self.metavar is not None:
            return str(self.metavar)
        shown = self.display_type(ctx).strip("<>").removesuffix(" range")
        return {"str": "TEXT", "int": "N", "float": "NUMBER", "bool": None}.get(shown, shown.upper())

    typer.core.TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
    typer.core.TyperArgument.display_type_rich = display_type_rich  # type: ignore[method-assign]


_plain_option_types()
app = typer.Typer(
    help="Control aiwg-service, the per-user service that supervises your projects.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    cls=OrderedGroup,
)
project_app = typer.Typer(help="Projects the service watches (like watchman's roots).", no_args_is_help=True)
config_app = typer.Typer(help="Configuration files.", no_args_is_help=True)
app.add_typer(project_app, name="project")
app.add_typer(config_app, name="config")
app.add_typer(events_app, name="events")
app.add_typer(cron_app, name="cron")
app.add_typer(rules_app, name="rules")
app.add_typer(task_app, name="task")
app.add_typer(messaging_app, name="messaging")
app.command()(notify)
app.add_typer(webhook_app, name="webhook")
app.add_typer(sandbox_app, name="sandbox")
app.command("doctor")(doctor)
app.command("budget")(budget_cmd.budget)
app.command("trace")(budget_cmd.trace)
app.command("web")(web_cmd)

JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]


@app.callback()
def _main(
    socket: Annotated[Path | None, typer.Option(
        "--socket", envvar=paths.SOCKET_ENV,
        help="service socket (default: $XDG_RUNTIME_DIR/aiwg/daemon.sock)")] = None,
    instance: Annotated[Path | None, typer.Option("--instance", help="talk to the per-project instance "
                                                  "aiwg@<escaped PATH> instead of the user service")] = None,
) -> None:
    if socket is not None:
        options.socket = str(socket)
    elif instance is not None:
        use_instance(instance)


@app.command()
def ping(json: JsonOpt = False) -> None:
    """Check that the service answers."""
    cmd_ping(json)


@app.command()
def status(json: JsonOpt = False) -> None:
    """Show the service's state: projects, subsystems, config, counts."""
    cmd_status(json)


@app.command()
def reload(json: JsonOpt = False) -> None:
    """Re-read every config file; invalid config is refused and the old one keeps running."""
    res = call("daemon.reload")
    if json:
        render.emit_json(res)
        return
    print("reloaded")
    for w in res.get("warnings", []):
        print(render.safe(f"warning: {w}"))


@project_app.command("add")
def project_add(path: Annotated[Path, typer.Argument(help="project root")] = Path("."), json: JsonOpt = False) -> None:
    """Register a project root: watched, scheduled, and remembered across restarts."""
    res = call("project.add", {"path": str(path.expanduser().resolve())})
    if json:
        render.emit_json(res)
        return
    pr = res["project"]
    print(f"{'added' if res['added'] else 'already registered'}: {pr['path']}")
    for w in pr.get("warnings", []):
        print(f"warning: {w}")


@project_app.command("remove")
def project_remove(path: Annotated[Path, typer.Argument(help="project root")] = Path("."),
                   json: JsonOpt = False) -> None:
    """Stop serving a project root (its files are left alone)."""
    res = call("project.remove", {"path": str(path.expanduser().resolve())})
    if json:
        render.emit_json(res)
    else:
        print(f"removed: {res['path']}")


@project_app.command("list")
def project_list(json: JsonOpt = False) -> None:
    """List the projects the service serves."""
    res = call("project.list")
    if json:
        render.emit_json(res)
        return
    render.table(["project", "state", "persistent", "trusted", "config"],
                 [(pr["path"], pr.get("state", "ok"), "yes" if pr["persistent"] else "no", trust_cell(pr),
                   pr.get("config", "")) for pr in res["projects"]],
                 empty="no projects (add one with `aiwgctl project add PATH`)")
    for pr in res["projects"]:
        if pr.get("reason"):
            print(f"{pr.get('state')}: {pr['path']}: {pr['reason']}")
        if pr.get("untrusted_reason"):
            print(f"untrusted: {pr['path']}: {pr['untrusted_reason']}")


@config_app.command("check")
def config_check(
    path: Annotated[Path | None, typer.Argument(help="a daemon.json (default: ./.aiwg/daemon.json)")] = None,
    json: JsonOpt = False,
) -> None:
    """Validate a config file without a running service (a running one is asked about webhook secrets)."""
    from .. import config
    from . import configfile

    # named as the user would (relative by default), so each line points at the file from where they stand
    target = path or paths.project_config_file(Path("."))
    if not target.exists():
        fail(f"{target}: no such file")
    try:
        loaded = configfile.load(target)
    except config.ConfigError as exc:  # every problem at once: the errors, then the warnings
        if json:
            render.emit_json({"valid": False, "errors": exc.errors, "warnings": exc.warnings})
        else:
            for e in exc.errors:
                print(e, file=sys.stderr)
            for w in exc.warnings:
                print(f"warning: {w}", file=sys.stderr)
        raise typer.Exit(1) from None
    from ..policy.trust import needs

    # only a project's file needs trust (the service-wide file is the user's own)
    what = needs(loaded.raw) if config.project_root_of(target) is not None else []
    secrets = configfile.check_secrets(loaded.config)
    bad = [s for s in secrets if s["status"] == "problem"]
    if json:
        render.emit_json({"valid": not bad, "warnings": loaded.warnings, "needs_trust": what, "secrets": secrets})
        if bad:
            raise typer.Exit(1)
        return
    for w in loaded.warnings:
        print(f"warning: {w}")
    for s in bad:
        print(f"{target}: {configfile.describe(s)}", file=sys.stderr)
    if bad:
        raise typer.Exit(1)
    print(f"{target}: valid")
    for s in secrets:
        print(configfile.describe(s))
    if what:
        print("needs trust before it runs anything (`aiwgctl trust`); what it sets that a repository may not "
              "set alone (it runs, sends, spends or listens as you):")
        for line in what:
            print(render.safe(f"  {line}"))


@app.command()
def executors(json: JsonOpt = False) -> None:
    """Where tasks run: each executor, its state, running and queued tasks, and its last error."""
    res = call("executors.list")
    if json:
        render.emit_json(res)
        return
    render.table(["executor", "kind", "state", "running", "queued", "max", "last error"],
                 [(e["name"], e["kind"], e["state"], e["running"], e["queued"], e["max_parallel"] or "-",
                   e["last_error"] or "-") for e in res["executors"]], empty="no executors")


for _fn in (trust, untrust):
    app.command()(_fn)
app.command()(chat_cmd.chat)
app.command()(sessions_cmd.attach)
app.add_typer(sessions_cmd.session_app, name="session")


@app.command()
def top(once: Annotated[bool, typer.Option("--once", help="print the screen once and exit")] = False) -> None:
    """Live status: running and queued tasks, rule runs, recent events, cost today (redrawn on events)."""
    import asyncio

    from . import top as top_mod
    from .core import START_HINT, resolve_socket

    try:
        code = asyncio.run(top_mod.run(once, resolve_socket()))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        fail(f"aiwg-service is not running ({exc.strerror}); {START_HINT}")
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)

for _fn in (approvals_cli.approvals, approvals_cli.approve, approvals_cli.reject):
    app.command()(_fn)

for _fn in (systemctl.install, systemctl.uninstall, systemctl.start, systemctl.stop, systemctl.restart,
            systemctl.logs):
    app.command()(_fn)
