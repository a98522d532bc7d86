"""The single place that talks to systemd (sd_notify, socket activation, journal).

Everything else in aiwg-service imports *this* module, never ``systemd.*``
(systemd-python) directly: the C extension is imported lazily inside the
functions that need it, so ``aiwgctl`` and tests that never touch systemd pay
nothing for it, and a missing/broken systemd-python only hurts the daemon paths
that actually use it.

All notify helpers are safe to call when not running under systemd: without
``$NOTIFY_SOCKET`` they do nothing and return False.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import time
from collections.abc import Mapping

__all__ = [
    "listen_fds",
    "make_journal_handler",
    "named_fd",
    "notify",
    "notify_extend_timeout",
    "notify_ready",
    "notify_reloading",
    "notify_status",
    "notify_stopping",
    "notify_watchdog",
    "systemd_escape_path",
    "under_journal",
    "watchdog_interval",
]

_log = logging.getLogger(__name__)

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SD_LISTEN_FDS_START = 3

# ---------------------------------------------------------------------------- sd_notify


def notify(state: str) -> bool:
    """Send *state* (``KEY=VALUE`` lines) to the service manager.

    Returns True if the message was sent.  Without ``$NOTIFY_SOCKET`` (not a
    Type=notify service, or run by hand) this is a cheap no-op returning False.
    The environment is left in place: we notify many times (watchdog, status).
    """
    if not os.environ.get("NOTIFY_SOCKET"):
        return False
    from systemd import daemon

    try:
        return bool(daemon.notify(state))
    except OSError as exc:  # manager went away, socket unreachable: never fatal for the daemon
        _log.debug("sd_notify(%r) failed: %s", state, exc)
        return False


def notify_ready(status: str | None = None) -> bool:
    """Tell systemd start-up (or a reload) is complete; optionally set STATUS= too."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def notify_reloading() -> bool:
    """Announce a reload in progress; must be followed by :func:`notify_ready`.

    MONOTONIC_USEC is what ``Type=notify-reload`` (systemd >= 253) requires to
    match the reload with its READY=1; older managers (252 here) ignore it but
    still show the unit as ``reloading`` until READY=1 arrives.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def notify_stopping(status: str | None = None) -> bool:
    """Announce an orderly shutdown (the unit shows ``deactivating``)."""
    return notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))


def notify_status(text: str) -> bool:
    """Set the one-line status shown by ``systemctl --user status aiwg``."""
    # STATUS= is a single line; a newline would start a new (bogus) assignment.
    return notify("STATUS=" + " ".join(text.splitlines()))


def notify_watchdog() -> bool:
    """Pet the watchdog (WatchdogSec=)."""
    return notify("WATCHDOG=1")


def notify_extend_timeout(usec: int) -> bool:
    """Ask for *usec* more microseconds before the start/stop/reload timeout fires."""
    return notify(f"EXTEND_TIMEOUT_USEC={int(usec)}")


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of WATCHDOG_USEC), or None if no watchdog.

    WATCHDOG_PID, when present, must be our PID: a child that inherited the
    variables must not think it owns the watchdog.
    """
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


# ---------------------------------------------------------------------------- socket activation


#: what systemd passed, kept: the environment is cleared on the first call, and the IPC server and the webhook
#: listener each pick their own fd by name
_passed: list[tuple[int, str]] | None = None


def listen_fds() -> list[tuple[int, str]]:
    """Return socket-activated fds as ``[(fd, name), ...]`` (name from FileDescriptorName=).

    LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES are unset afterwards so that agent
    processes we spawn don't believe the fds were passed to them.  Returns []
    when not socket-activated.  Fds are made close-on-exec for the same reason.
    """
    global _passed
    if _passed is not None:
        return list(_passed)
    if "LISTEN_FDS" not in os.environ:
        return []
    from systemd import daemon

    try:
        named = daemon.listen_fds_with_names(True)
        fds = sorted(named.items())
    except (AttributeError, NotImplementedError):  # very old systemd-python
        names = os.environ.get("LISTEN_FDNAMES", "").split(":")
        nums = daemon.listen_fds(True)
        fds = [(fd, names[i] if i < len(names) else "unknown") for i, fd in enumerate(nums)]
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    for fd, _ in fds:
        os.set_inheritable(fd, False)
    _passed = [(fd, name or "unknown") for fd, name in fds]
    return list(_passed)


def named_fd(*names: str) -> int | None:
    """The first passed fd whose FileDescriptorName= is one of ``names``."""
    for fd, name in listen_fds():
        if name in names:
            return fd
    return None


# ---------------------------------------------------------------------------- journal


def user_manager_reachable(environ: Mapping[str, str] | None = None) -> bool:
    """We run as a unit (``INVOCATION_ID``) of a user manager we can reach (its private socket, or a user
    bus) and ``systemd-run`` is on PATH: so agents, tmux servers and the like can get units of their own."""
    import shutil

    env = os.environ if environ is None else environ
    if not env.get("INVOCATION_ID") or shutil.which("systemd-run", path=env.get("PATH")) is None:
        return False
    if env.get("DBUS_SESSION_BUS_ADDRESS"):
        return True
    rt = env.get("XDG_RUNTIME_DIR")
    if not rt:
        return False
    for sock in ("systemd/private", "bus"):
        try:
            if stat.S_ISSOCK(os.stat(os.path.join(rt, sock)).st_mode):
                return True
        except OSError:
            pass
    return False


def under_journal() -> bool:
    """True when our stderr already goes to the journal (so log there natively, no timestamps).

    Primary signal is JOURNAL_STREAM (``dev:inode`` of the stream systemd gave
    us) matching stderr; that survives no redirection, so a
    ``aiwg-service run 2>file`` started from a unit shell is correctly "not
    under journal".  Fallback: INVOCATION_ID (we are a unit) and a live
    journald socket.
    """
    stream = os.environ.get("JOURNAL_STREAM")
    if stream:
        try:
            dev, ino = (int(x) for x in stream.split(":", 1))
            st = os.fstat(sys.stderr.fileno())
            return (st.st_dev, st.st_ino) == (dev, ino)
        except (ValueError, OSError, AttributeError):
            return False
    if os.environ.get("INVOCATION_ID"):
        try:
            return stat.S_ISSOCK(os.stat(JOURNAL_SOCKET).st_mode)
        except OSError:
            return False
    return False


_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# Fields JournalHandler.emit passes explicitly; an extra with the same name would make
# it raise TypeError (duplicate keyword) and lose the record.
_HANDLER_FIELDS = frozenset(
    {"MESSAGE", "PRIORITY", "LOGGER", "THREAD_NAME", "PROCESS_NAME", "CODE_FILE", "CODE_LINE", "CODE_FUNC"}
)


def _is_journal_field(name: str) -> bool:
    """journald's field-name rule: [A-Z0-9_], not starting with '_' or a digit, <= 64 chars."""
    return (
        0 < len(name) <= 64
        and not name[0].isdigit()
        and name[0] != "_"
        and all(c == "_" or c.isdigit() or ("A" <= c <= "Z") for c in name)
    )


def _journal_send(message: str, /, **fields: object) -> None:
    """Sender for JournalHandler: forward only real journal fields, stringified."""
    from systemd import journal

    clean: dict[str, object] = {}
    for key, value in fields.items():
        if key in _RECORD_ATTRS or key == "EXCEPTION_INFO" or value is None or not _is_journal_field(key):
            continue  # EXCEPTION_INFO is a tuple repr; EXCEPTION_TEXT carries the traceback
        if key == "CODE_LINE" or key == "MESSAGE_ID" or isinstance(value, str | bytes):
            clean[key] = value  # journal.send wants an int line and accepts UUID ids
        else:
            clean[key] = str(value)
    journal.send(message, **clean)  # type: ignore[arg-type]


def make_journal_handler(identifier: str = "aiwg", level: int = logging.NOTSET) -> logging.Handler:
    """A logging handler writing native, structured journal entries.

    Mapping (done by ``systemd.journal.JournalHandler``):
      * message -> MESSAGE, level -> PRIORITY (<=DEBUG 7, <=INFO 6,
        <=WARNING 4, <=ERROR 3, <=CRITICAL 2), logger name -> LOGGER, plus
        CODE_FILE/CODE_LINE/CODE_FUNC, THREAD_NAME, PROCESS_NAME;
        SYSLOG_IDENTIFIER=*identifier*.
      * every ``extra={...}`` key becomes a field of the same name.  Only
        names journald accepts survive (upper case, digits, '_', not leading
        '_'): ``extra={"PROJECT": "/p", "TASK_ID": "t1"}`` gives
        ``PROJECT=/p TASK_ID=t1``; ``extra={"project": ...}`` is dropped.
        Values are stringified.  We filter here because JournalHandler ships
        every LogRecord attribute (msg, args, levelname, ...) for journald to
        discard.  Extras named like the fields above are ignored rather than
        losing the record.
      * exceptions (``logger.exception``): EXCEPTION_TEXT carries the
        traceback; with the default formatter MESSAGE has it appended too.
      * ``logger.info("x %s", arg)`` adds CODE_ARGS=str(args).
    """
    from systemd import journal

    class _Handler(journal.JournalHandler):
        def emit(self, record: logging.LogRecord) -> None:
            if _HANDLER_FIELDS.intersection(record.__dict__):
                record = logging.makeLogRecord(
                    {k: v for k, v in record.__dict__.items() if k not in _HANDLER_FIELDS}
                )
            super().emit(record)

    return _Handler(level=level, sender_function=_journal_send, SYSLOG_IDENTIFIER=identifier)


# ---------------------------------------------------------------------------- unit names

_ESCAPE_KEEP = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.")


def systemd_escape_path(path: str) -> str:
    """Escape *path* exactly like ``systemd-escape --path`` (for ``aiwg@<instance>`` names).

    Steps mirror systemd's unit_name_path_escape(): collapse duplicate
    slashes and ``.`` components, strip leading/trailing ``/``, root becomes
    ``-``; then ``/`` -> ``-``, a leading ``.`` and every byte outside
    ``[A-Za-z0-9:_.]`` -> ``\\xNN`` (UTF-8 bytes, lower-case hex).  Paths with
    ``..`` components are rejected like systemd does (not normalized).
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"{path!r} is not a normalized path")
    if not parts:
        return "-"
    out = []
    for i, byte in enumerate("/".join(parts).encode("utf-8")):
        if byte == ord("/"):
            out.append("-")
        elif byte in _ESCAPE_KEEP and not (i == 0 and byte == ord(".")):
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)
