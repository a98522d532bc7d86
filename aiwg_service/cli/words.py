"""aiwgctl's command words, for Tab completion without importing typer (a bash completion answers in a few
milliseconds instead of a second). ``tests/test_cli.py`` checks this table against the app itself; after
adding a command, ``python -m aiwg_service.cli.words`` rewrites it."""

from __future__ import annotations

#: command -> its subcommands (empty for a plain command), in ``--help`` order
TREE: dict[str, tuple[str, ...]] = {
    "status": (),
    "ping": (),
    "start": (),
    "stop": (),
    "restart": (),
    "reload": (),
    "logs": (),
    "doctor": (),
    "install": (),
    "uninstall": (),
    "chat": (),
    "attach": (),
    "top": (),
    "web": (),
    "session": ("new", "list", "attach", "send", "show", "kill"),
    "task": ("submit", "list", "get", "cancel", "stats", "logs"),
    "approvals": (),
    "approve": (),
    "reject": (),
    "trace": (),
    "budget": (),
    "events": ("replay",),
    "rules": ("enable", "disable", "trace", "test"),
    "cron": ("next", "list"),
    "notify": (),
    "messaging": ("status",),
    "webhook": ("list", "test"),
    "executors": (),
    "sandbox": ("check",),
    "project": ("add", "remove", "list"),
    "trust": (),
    "untrust": (),
    "config": ("check",),
}


def from_app() -> dict[str, tuple[str, ...]]:
    """The table as the typer app has it (imports typer: for the test and the rewrite only)."""
    import typer._click as tc
    import typer.main

    from .app import app

    group = typer.main.get_command(app)
    ctx = tc.Context(group)
    out: dict[str, tuple[str, ...]] = {}
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        out[name] = tuple(cmd.list_commands(tc.Context(cmd))) if hasattr(cmd, "commands") else ()  # type: ignore
    return out


if __name__ == "__main__":
    from pathlib import Path

    here = Path(__file__)
    text = here.read_text()
    head, _, rest = text.partition("TREE: dict[str, tuple[str, ...]] = {")
    _, _, tail = rest.partition("\n}\n")
    body = "".join(f"    {k!r}: {v!r},\n".replace("'", '"') for k, v in from_app().items())
    here.write_text(f"{head}TREE: dict[str, tuple[str, ...]] = {{\n{body}}}\n{tail}")
