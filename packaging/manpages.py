"""Write aiwgctl(1) and aiwg-service(1) from the command lines themselves, so the man pages never drift.

Run by packaging/build.sh with the staged venv's interpreter (which imports the packaged aiwg_service):

    python packaging/manpages.py OUTDIR [DATE]

aiwgctl is a typer app, i.e. a tree of click commands: every command, its usage, arguments and options come
from that tree. aiwg-service is an argparse parser (kept off typer for start-up time): its sub-commands and
options come from the parser. The prose sections (files, environment, exit status) are the few facts the
parsers do not hold.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SEE_ALSO = (r"\fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBsystemd.socket\fR(5), "
            "/usr/share/doc/aiwg-service/README.md and the manual in /usr/share/doc/aiwg-service/docs/")

FILES = [
    ("$XDG_RUNTIME_DIR/aiwg/daemon.sock", "the service's socket (0600 in a 0700 directory)"),
    ("$XDG_CONFIG_HOME/aiwg/daemon.json", "service-wide configuration (optional)"),
    ("PROJECT/.aiwg/daemon.json", "a project's configuration"),
    ("$STATE_DIRECTORY, else $XDG_STATE_HOME/aiwg",
     "state: projects.json, tasks.db, automation.db, task logs (systemd 252 puts it in ~/.config/aiwg)"),
    ("/usr/lib/systemd/user/aiwg.socket, aiwg.service, aiwg@.socket, aiwg@.service",
     "the user units; enable with systemctl --user enable --now aiwg.socket"),
]


def esc(text: str) -> str:
    """Escape text for roff: backslashes, and a leading dot or quote that would start a request."""
    out = []
    for line in text.replace("\\", "\\e").splitlines():
        line = line.strip()
        if line.startswith((".", "'")):
            line = "\\&" + line
        out.append(line.replace("-", "\\-"))
    return "\n".join(out)


def para(text: str | None) -> str:
    """Help text as roff paragraphs (blank lines separate them)."""
    if not text:
        return ""
    chunks = [c for c in text.strip().split("\n\n") if c.strip()]
    return "\n.PP\n".join(esc(" ".join(c.split())) for c in chunks)


def header(name: str, version: str, date: str, summary: str) -> list[str]:
    title = esc(name.upper())
    return [
        f'.TH {title} 1 "{date}" "aiwg-service {version}" "User Commands"',
        ".SH NAME",
        f"{esc(name)} \\- {esc(summary)}",
    ]


def files_section() -> list[str]:
    lines = [".SH FILES"]
    for path, what in FILES:
        lines += [".TP", f"\\fI{esc(path)}\\fR", esc(what)]
    return lines


# ---------------------------------------------------------------------------------------------- aiwgctl


def click_params(cmd: Any) -> tuple[list[Any], list[Any]]:
    """(arguments, options) of a click command, without hidden ones."""
    args = [p for p in cmd.params if getattr(p, "param_type_name", "") == "argument"]
    opts = [p for p in cmd.params if getattr(p, "param_type_name", "") == "option" and not p.hidden]
    return args, opts


def metavar(opt: Any, ctx: Any) -> str:
    """What the option's value is called: its metavar, else its type (typer's own or click's)."""
    if opt.metavar:
        return str(opt.metavar)
    if hasattr(opt, "display_type"):  # typer >= 0.20 carries its own parameter types
        return str(opt.display_type(ctx)).strip("<>").upper()
    return str(opt.type.name).upper()


def option_term(opt: Any, ctx: Any) -> str:
    names = ", ".join(f"\\fB{esc(n)}\\fR" for n in [*opt.opts, *opt.secondary_opts])
    if opt.is_flag or getattr(opt, "count", False):
        return names
    return f"{names} \\fI{esc(metavar(opt, ctx))}\\fR"


def walk(cmd: Any, ctx: Any, path: list[str]) -> Iterator[tuple[list[str], Any, Any]]:
    """Every command below *cmd*, depth first in the order the CLI lists them, with its context."""
    if not hasattr(cmd, "commands"):
        yield path, cmd, ctx
        return
    if path:
        yield path, cmd, ctx
    for name in cmd.list_commands(ctx):
        sub = cmd.get_command(ctx, name)
        if sub is None or getattr(sub, "hidden", False):
            continue
        sub_ctx = sub.context_class(sub, info_name=name, parent=ctx)
        yield from walk(sub, sub_ctx, [*path, name])


def aiwgctl_page(version: str, date: str) -> str:
    import typer

    from aiwg_service.cli.app import app

    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="aiwgctl")
    lines = header("aiwgctl", version, date, "control aiwg-service, the per-user project supervisor")
    lines += [".SH SYNOPSIS", "\\fBaiwgctl\\fR [\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
              ".SH DESCRIPTION", para(root.help),
              ".PP",
              esc("Every command takes --help; commands that print data take --json for scripts. "
                  "When no service answers, aiwgctl prints one line saying how to start it and exits 1.")]
    _, opts = click_params(root)
    lines.append(".SH GLOBAL OPTIONS")
    for opt in opts:
        lines += [".TP", option_term(opt, ctx), para(opt.help)]
    lines.append(".SH COMMANDS")
    for path, cmd, sub_ctx in walk(root, ctx, []):
        pieces = " ".join(cmd.collect_usage_pieces(sub_ctx))
        lines += [".SS " + esc(" ".join(path)),
                  f"\\fBaiwgctl {esc(' '.join(path))}\\fR {esc(pieces)}".rstrip(),
                  ".PP", para(cmd.help or cmd.short_help or "")]
        args, opts = click_params(cmd)
        for arg in args:
            help_text = getattr(arg, "help", None) or ("required" if arg.required else "optional")
            lines += [".TP", f"\\fI{esc((arg.metavar or arg.name).upper())}\\fR", para(help_text)]
        for opt in opts:
            lines += [".TP", option_term(opt, sub_ctx), para(opt.help)]
    lines += [
        ".SH ENVIRONMENT",
        ".TP", "\\fBAIWG_SOCKET\\fR", esc("the socket to talk to, as --socket; overrides the default."),
        ".TP", "\\fBXDG_RUNTIME_DIR\\fR", esc("where the default socket lives ($XDG_RUNTIME_DIR/aiwg/daemon.sock)."),
        ".SH EXIT STATUS",
        esc("0 on success, 1 when the service is not reachable or refused the request, 2 on a usage error. "
            "task submit --wait: 0 completed, 1 failed, 124 timeout, 130 cancelled."),
        *files_section(),
        ".SH SEE ALSO", "\\fBaiwg-service\\fR(1), " + SEE_ALSO,
    ]
    return "\n".join(line for line in lines if line) + "\n"


# ---------------------------------------------------------------------------------------------- aiwg-service


def argparse_option_term(action: argparse.Action) -> str:
    names = ", ".join(f"\\fB{esc(n)}\\fR" for n in action.option_strings)
    if action.nargs == 0:
        return names
    metavar = action.metavar or ("{" + ",".join(action.choices) + "}" if action.choices else action.dest.upper())
    return f"{names} \\fI{esc(str(metavar))}\\fR"


def aiwg_service_page(version: str, date: str) -> str:
    from aiwg_service.main import build_parser

    parser = build_parser()
    lines = header("aiwg-service", version, date, "per-user service supervising projects for AI-augmented development")
    lines += [".SH SYNOPSIS", "\\fBaiwg-service\\fR \\fBrun\\fR [\\fIOPTIONS\\fR]",
              "\n.br\n\\fBaiwg-service\\fR \\fB\\-\\-version\\fR",
              ".SH DESCRIPTION", para(parser.description),
              ".PP",
              esc("It watches project files, runs cron schedules, routes events over one bus, fires automation "
                  "rules and runs AI coding-agent tasks under limits. Clients such as aiwgctl(1) talk to it in "
                  "JSON-RPC 2.0 over a Unix socket. Under systemd it is socket-activated by aiwg.socket "
                  "(systemctl --user enable --now aiwg.socket); it also runs in the foreground, e.g. in a container.")]
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    lines.append(".SH COMMANDS")
    for sub in subparsers:
        helps = {choice.dest: choice.help for choice in sub._choices_actions}
        for name, subparser in sub.choices.items():
            lines += [".SS " + esc(name), para(helps.get(name) or subparser.description or "")]
            for action in subparser._actions:
                if isinstance(action, argparse._HelpAction) or not action.option_strings:
                    continue
                lines += [".TP", argparse_option_term(action), para(action.help)]
    lines += [
        ".SH SIGNALS",
        ".TP", "\\fBSIGTERM\\fR, \\fBSIGINT\\fR",
        esc("stop: finish or interrupt running agents, persist state, exit 0."),
        ".TP", "\\fBSIGHUP\\fR", esc("reload the configuration; an invalid one is refused as a whole."),
        ".SH EXIT STATUS",
        esc("0 after a clean stop; 1 when another instance holds the lock or the socket is in use; "
            "78 (EX_CONFIG) when the configuration is invalid (the unit does not restart on it)."),
        *files_section(),
        ".SH SEE ALSO", "\\fBaiwgctl\\fR(1), " + SEE_ALSO,
    ]
    return "\n".join(line for line in lines if line) + "\n"


def main() -> None:
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: manpages.py OUTDIR [DATE]")
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    import aiwg_service

    date = sys.argv[2] if len(sys.argv) == 3 else "1970-01-01"
    (out / "aiwgctl.1").write_text(aiwgctl_page(aiwg_service.__version__, date))
    (out / "aiwg-service.1").write_text(aiwg_service_page(aiwg_service.__version__, date))


if __name__ == "__main__":
    main()
