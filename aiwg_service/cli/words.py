"""aiwgctl"s command words, for Tab completion without importing typer (a bash completion answers in a few
milliseconds instead of a second). ``tests/test_cli.py`` checks this table against the app itself."""

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
    "install": (),
    "uninstall": (),
    "chat": (),
    "attach": (),
    "top": (),
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
    "project": ("add", "remove", "list"),
    "trust": (),
    "untrust": (),
    "config": ("check",),
}
