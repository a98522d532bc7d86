"""``aiwg-service``: the daemon's entry point (argparse, not typer, to keep cold activation quick)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from . import __version__, config

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    """The command line, also read by packaging/manpages.py to write aiwg-service(1)."""
    ap = argparse.ArgumentParser(prog="aiwg-service", description="Per-user service supervising projects.")
    ap.add_argument("--version", action="version", version=f"aiwg-service {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the service in the foreground")
    run.add_argument("--project", action="append", default=[], metavar="DIR",
                     help="serve this project root (repeatable; default: the current directory)")
    run.add_argument("--registered", action="store_true",
                     help="serve only the projects registered with `aiwgctl project add` (the units use this)")
    run.add_argument("--socket", metavar="PATH", help="socket path (default $AIWG_SOCKET or "
                     "$XDG_RUNTIME_DIR/aiwg/daemon.sock); ignored when systemd passes a socket")
    run.add_argument("--log-file", metavar="PATH", help="write a size-rotated log file instead of stderr")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                     help="override daemon.log.level")
    return ap


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def setup_logging(args: argparse.Namespace, log_cfg: config.LogConfig) -> None:
    from . import systemd as sd

    root = logging.getLogger()
    root.handlers.clear()
    level = (args.log_level or log_cfg.level).upper()
    root.setLevel(level)
    handler: logging.Handler
    if args.log_file:
        from .logsafe import PrivateRotatingFileHandler

        handler = PrivateRotatingFileHandler(
            args.log_file, maxBytes=log_cfg.max_size_mb * 1024 * 1024, backupCount=log_cfg.max_files)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    elif sd.under_journal():
        handler = sd.make_journal_handler("aiwg")
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    from .logsafe import install

    handler.addFilter(Demote())
    root.addHandler(install(handler))
    logging.captureWarnings(True)  # Python warnings into the log (demoted below), not onto stderr


class Demote(logging.Filter):
    """Python ``warnings`` (asyncssh's and cryptography's deprecations are the libraries' business, not the
    operator's) and chatty libraries' INFO (asyncssh logs every command it runs: whole remote scripts) go
    out at DEBUG: they never reach the journal as warnings, and are there when debugging."""

    #: Logger name prefixes whose records below WARNING are demoted; ``py.warnings`` is demoted whole.
    CHATTY = ("asyncssh",)

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name == "py.warnings" or (record.levelno < logging.WARNING and name.startswith(self.CHATTY)):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def _init_as_pid1() -> None:
    """As PID 1 in a container: fork; the parent reaps every orphan and forwards signals to the service."""
    child = os.fork()
    if child == 0:
        return
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda s, _f: os.kill(child, s))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == child:
            os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from . import paths, schemas  # noqa: F401  (schemas registers every config section)

    # the service-wide log settings are needed before anything else can log
    try:
        service_cfg = config.load_file(paths.service_config_file()).config
    except config.ConfigError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        sys.exit(config.EX_CONFIG)
    setup_logging(args, service_cfg.daemon.log)
    if os.getpid() == 1 and not os.environ.get("AIWG_NO_INIT"):
        _init_as_pid1()

    _raise_fd_limit()
    import uvloop

    from .rpc import SocketInUse
    from .service import AlreadyRunning, RunOptions, Service

    opts = RunOptions(projects=args.project, registered_only=args.registered, socket=args.socket,
                      log_file=args.log_file)
    log = logging.getLogger("aiwg.service")
    try:
        uvloop.run(Service(opts).run())
    except config.ConfigError as exc:
        for line in exc.errors:
            log.error("%s", line)
        if args.log_file:  # the log went to a file: the operator still needs to see why
            print("\n".join(exc.errors), file=sys.stderr)
        sys.exit(config.EX_CONFIG)
    except (AlreadyRunning, SocketInUse, PermissionError) as exc:
        log.error("%s", exc)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
    sys.exit(0)


def _raise_fd_limit() -> None:
    """Soft fd limit up to the hard one (systemd's LimitNOFILE=, or the login's): connections, watches and
    agents' pipes all take fds, and the webhook listener sizes its cap from what is there."""
    import contextlib
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    main()
