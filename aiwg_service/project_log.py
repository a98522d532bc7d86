"""``<project>/.aiwg/daemon/daemon.log``: each served project's own log lines, where the AIWG CLI's ``logs`` reads.

A logging handler beside the service's own (the journal, or stderr, stays the whole log): a record that names
a project (``extra={"PROJECT": root}``) is appended to that project's file while the project is served.
The file is 0600, made through a directory fd that never follows a symlink, and bounded as the project's
``daemon.log`` says (``max_size_mb``, ``max_files``). It rotates by copy-truncate: the lines are copied to
``daemon.log.1`` (older copies shift up) and the file is truncated in place, so a ``tail -f`` started on it
(the AIWG CLI's ``logs --follow``, which follows the open file, not the name) keeps seeing new lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable

from . import safefs

NAME = "daemon.log"
_WRITE = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

#: ``(max_bytes, max_files, level)`` for a served project, None for one not served (its lines are not kept)
Limits = Callable[[str], "tuple[int, int, int] | None"]
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ProjectLogs(logging.Handler):
    def __init__(self, limits: Limits, fmt: str = FORMAT) -> None:
        super().__init__()
        self.limits = limits
        self.setFormatter(logging.Formatter(fmt))
        self._files: dict[str, tuple[int, int]] = {}  # root -> (dir fd of .aiwg/daemon, file fd)
        self._failed: set[str] = set()  # roots whose file could not be opened: said once, not per line

    def emit(self, record: logging.LogRecord) -> None:
        root = getattr(record, "PROJECT", None)
        if not isinstance(root, str) or not root:
            return
        limits = self.limits(root)
        if limits is None or record.levelno < limits[2]:
            return
        try:
            line = (self.format(record) + "\n").encode("utf-8", "replace")
            fds = self._open(root)
            if fds is None:
                return
            dfd, fd = fds
            max_bytes, max_files, _level = limits
            if os.fstat(fd).st_size + len(line) > max_bytes:
                self._rotate(dfd, fd, max_files)
            os.write(fd, line)
        except OSError:
            self._close(root)  # the next line tries again (the directory may be back)

    def retain(self, roots: set[str] | dict[str, object]) -> None:
        """The served projects' files exist (the AIWG CLI's ``logs`` finds one at once); the others close."""
        for root in [r for r in self._files if r not in roots]:
            self._close(root)
        self._failed &= set(roots)
        for root in roots:
            with self.lock or contextlib.nullcontext():
                self._open(root)

    def close(self) -> None:
        for root in list(self._files):
            self._close(root)
        super().close()

    # -- parts -----------------------------------------------------------------------------------------
    def _open(self, root: str) -> tuple[int, int] | None:
        fds = self._files.get(root)
        if fds is not None:
            return fds
        try:
            with safefs.project_subdir(root, ".aiwg", "daemon") as tmp_fd:
                dfd = os.dup(tmp_fd)
        except OSError:
            self._failed.add(root)
            return None
        try:
            fd = os.open(NAME, _WRITE, 0o600, dir_fd=dfd)
            os.fchmod(fd, 0o600)
        except OSError:
            os.close(dfd)
            self._failed.add(root)
            return None
        self._failed.discard(root)
        self._files[root] = (dfd, fd)
        return dfd, fd

    def _close(self, root: str) -> None:
        fds = self._files.pop(root, None)
        if fds is not None:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    @staticmethod
    def _rotate(dfd: int, fd: int, max_files: int) -> None:
        """Copy, then truncate in place: the open file (and a ``tail -f`` on it) lives on."""
        if max_files > 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{NAME}.{max_files}", dir_fd=dfd)
            for i in range(max_files - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(f"{NAME}.{i}", f"{NAME}.{i + 1}", src_dir_fd=dfd, dst_dir_fd=dfd)
            tmp = f".{NAME}.{secrets.token_hex(6)}.tmp"
            src = os.open(NAME, _READ, dir_fd=dfd)
            try:
                dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                              dir_fd=dfd)
                try:
                    while chunk := os.read(src, 1 << 20):
                        os.write(dst, chunk)
                finally:
                    os.close(dst)
                os.rename(tmp, f"{NAME}.1", src_dir_fd=dfd, dst_dir_fd=dfd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
                raise
            finally:
                os.close(src)
        os.ftruncate(fd, 0)
