"""Following task logs as they grow: one inotify watch on the log directory for every run.

Why files and not pipes: the agent outlives the service, so its output cannot flow through a pipe
the service holds.  The executor's side appends to ``<logs>/<id>.log``; the service reads what was
appended whenever inotify says the file changed (no polling), from the offset it has reached, so
every byte is delivered once, in order, also after a restart (re-adoption starts from the run's
first byte and replays silently up to where the file ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from inotify_simple import INotify, flags

__all__ = ["LogTail", "LogWatch"]

log = logging.getLogger(__name__)

_MASK = flags.MODIFY | flags.CLOSE_WRITE | flags.CREATE | flags.MOVED_TO
_CHUNK = 1 << 16


class LogTail:
    """Reads one log from ``offset`` on; ``sink(data)`` gets each new piece in order."""

    def __init__(self, path: str | os.PathLike[str], offset: int, sink: Callable[[bytes], None]) -> None:
        self.path = Path(path)
        self.offset = offset
        self.sink = sink
        self._f = None
        self._ino: int | None = None

    def _open(self) -> bool:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - kept open while following
        except FileNotFoundError:
            return False
        ino = os.fstat(f.fileno()).st_ino
        if self._f is not None:
            if ino == self._ino:
                f.close()
                return True
            self._f.close()
            self.offset = 0  # a new file (the old one was deleted): read it from its start
        self._f, self._ino = f, ino
        return True

    def read(self, upto: int | None = None) -> int:
        """Deliver what was appended since the last read (at most up to offset ``upto``)."""
        if self._f is None and not self._open():
            return 0
        assert self._f is not None
        n = 0
        while upto is None or self.offset < upto:
            self._f.seek(self.offset)
            want = _CHUNK if upto is None else min(_CHUNK, upto - self.offset)
            data = self._f.read(want)
            if not data:
                if os.fstat(self._f.fileno()).st_nlink == 0 and self._open() and n == 0:
                    continue  # replaced: read the new file
                break
            self.offset += len(data)
            n += len(data)
            self.sink(data)
        return n

    def reopen(self) -> None:
        """The name was (re)created: switch to the new file if it is another inode."""
        self._open()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class LogWatch:
    """One inotify descriptor on the log directory; routes changes to the tails by file name.

    If inotify cannot be had (the user's watch or instance limit is full: ENOSPC, EMFILE) or fails
    while reading, the tails are read every ``poll_s`` instead, and inotify is tried again at each of
    those reads: a reconciliation that runs only while the event source is broken (logged once when it
    breaks, once when it is back), never while all is well.  Following output is never what says a run
    ended (the executor's ``wait`` does), so a broken watch delays output, it never loses a run."""

    def __init__(self, log_dir: str | os.PathLike[str], *, poll_s: float = 1.0) -> None:
        self.dir = Path(log_dir)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.poll_s = poll_s
        self._tails: dict[str, LogTail] = {}
        self._ino: INotify | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: Why the tails are being read on a timer (inotify failed), None while inotify works.
        self.failed: str | None = None

    def _ensure(self) -> bool:
        """inotify on the directory; False (and the timer armed) if it cannot be had now."""
        if self._ino is not None:
            return True
        self._loop = asyncio.get_running_loop()
        ino: INotify | None = None
        try:
            ino = INotify(nonblocking=True)
            ino.add_watch(str(self.dir), _MASK)
        except OSError as e:
            if ino is not None:
                ino.close()
            self._fall_back(f"cannot watch {self.dir}: {e}")
            return False
        self._ino = ino
        self._loop.add_reader(ino.fileno(), self._events)
        if self.failed is not None:
            log.warning("following task logs by inotify again (it had failed: %s)", self.failed)
            self.failed = None
        return True

    def _fall_back(self, why: str) -> None:
        if self.failed is None:
            log.warning("following task logs: %s; reading them every %gs until inotify works again", why,
                        self.poll_s)
        self.failed = why
        self._arm()

    def _arm(self) -> None:
        if self._timer is None and self._tails and self._loop is not None and self.failed is not None:
            self._timer = self._loop.call_later(self.poll_s, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._ensure()  # back to events if it works now; then one full read catches up either way
        self._read(list(self._tails))
        self._arm()

    def add(self, tail: LogTail) -> None:
        self._tails[tail.path.name] = tail
        self._ensure()
        self._arm()
        tail.read()

    def remove(self, tail: LogTail) -> None:
        if self._tails.get(tail.path.name) is tail:
            del self._tails[tail.path.name]
        tail.close()
        if not self._tails and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _drop_inotify(self) -> None:
        if self._ino is not None:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self._ino.fileno())
            with contextlib.suppress(OSError):
                self._ino.close()
            self._ino = None

    def _events(self) -> None:
        assert self._ino is not None
        try:
            events = self._ino.read(timeout=0)
        except OSError as e:
            self._drop_inotify()
            self._fall_back(f"reading the inotify queue failed: {e}")
            self._read(list(self._tails))
            return
        seen: set[str] = set()
        overflow = False
        for ev in events:
            if ev.mask & flags.Q_OVERFLOW:
                overflow = True
                continue
            tail = self._tails.get(ev.name)
            if tail is None:
                continue
            if ev.mask & (flags.CREATE | flags.MOVED_TO):
                tail.reopen()
            seen.add(ev.name)
        self._read(list(self._tails) if overflow else seen)

    def _read(self, names: list[str] | set[str]) -> None:
        for name in names:
            tail = self._tails.get(name)
            if tail is not None:
                try:
                    tail.read()
                except Exception:
                    log.exception("reading log %s failed", name)

    def close(self) -> None:
        for t in self._tails.values():
            t.close()
        self._tails.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._drop_inotify()
