"""Replace a small file so that a crash leaves either the old or the new content, never half of one."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write a temp file beside ``path`` (created ``mode``, 0600 by default: state is private whatever
    the umask), fsync it, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class LatestWriter:
    """Rewrites one file in a worker thread, newest content wins: a write in flight is never doubled, and a
    newer content waiting replaces an older one. For snapshots rewritten often (``state.json`` on every
    heartbeat and status change), so an fsync never runs on the event loop. ``drain()`` waits for it all."""

    def __init__(self, path: Path, on_error: Callable[[OSError], None]) -> None:
        self.path = path
        self.on_error = on_error
        self._next: bytes | None = None
        self._task: asyncio.Task[None] | None = None

    def submit(self, data: bytes) -> None:
        self._next = data
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"write {self.path.name}")

    async def _run(self) -> None:
        try:
            while self._next is not None:
                data, self._next = self._next, None
                try:
                    await asyncio.to_thread(write_atomic, self.path, data)
                except OSError as exc:
                    self.on_error(exc)
        finally:
            self._task = None

    async def drain(self) -> None:
        while self._task is not None:
            await asyncio.shield(self._task)
