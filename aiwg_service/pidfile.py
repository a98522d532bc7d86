"""``<project>/.aiwg/daemon.pid``: how the AIWG daemon's CLI finds a running daemon.

Its every command reads this file and checks the pid with ``kill(pid, 0)`` before it tries the socket,
so each project we serve carries our pid while we run. Written atomically (a random ``O_EXCL`` temp name,
renamed over), and only through a descriptor of ``.aiwg`` opened with ``O_NOFOLLOW``: a symlink planted
in a project tree can never make us write elsewhere. A stale file (a dead pid, or a pid not ours) is
simply replaced; on stop we remove it only if it still holds our pid.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

NAME = "daemon.pid"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(root: str | os.PathLike[str]) -> int:
    return os.open(Path(root) / ".aiwg", _DIR_FLAGS)


def write(root: str | os.PathLike[str], pid: int | None = None) -> None:
    """Put ``pid`` (default: ours) in ``<root>/.aiwg/daemon.pid``; raises OSError if it cannot."""
    data = f"{os.getpid() if pid is None else pid}\n".encode()
    dfd = _open_dir(root)
    try:
        tmp = f".{NAME}.{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, NAME, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
    finally:
        os.close(dfd)


def read(root: str | os.PathLike[str]) -> int | None:
    """The pid in the file, or None (no file, not a regular file, or not a number)."""
    try:
        dfd = _open_dir(root)
    except OSError:
        return None
    try:
        fd = os.open(NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
    except OSError:
        return None
    finally:
        os.close(dfd)
    try:
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:  # a FIFO or a directory planted under the name
        return None
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


def remove(root: str | os.PathLike[str], pid: int | None = None) -> bool:
    """Remove the file if it holds ``pid`` (default: ours); leave another process's alone."""
    mine = os.getpid() if pid is None else pid
    if read(root) != mine:
        return False
    try:
        dfd = _open_dir(root)
    except OSError:
        return False
    try:
        os.unlink(NAME, dir_fd=dfd)
    except OSError:
        return False
    finally:
        os.close(dfd)
    return True
