"""The executors subsystem: keeps the registry in step with the ``executors`` section, reports each
executor's state, and answers ``executors.list`` (``aiwgctl executors``).

Built from narrow ports: a view of the current configs, the state directory, the shared
:class:`~.registry.Executors` (the supervisor routes through the same object), and a ``counts()``
callable giving running/queued tasks per executor name (from the task store).  It never imports the
supervisor.  A reload that changes an executor's settings builds a new one in its place; runs already
waiting on the old object keep it until they end (closing it never stops a run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import Executor
from .registry import DEFAULT_EXECUTOR, Executors
from .schema import ExecutorConfig, LocalExecutorConfig, SlurmExecutorConfig, parse_executors

__all__ = ["ExecutorsSubsystem", "make_executor"]

log = logging.getLogger(__name__)

Counts = Callable[[], dict[str, dict[str, int]]]


def make_executor(name: str, cfg: ExecutorConfig, state_dir: Path) -> Executor:
    """A remote executor from its config (imported lazily: asyncssh only loads when an ssh one is configured)."""
    if isinstance(cfg, SlurmExecutorConfig):
        from .slurm import SlurmExecutor

        return SlurmExecutor(name, cfg, state_dir)
    from .ssh import SshExecutor

    assert not isinstance(cfg, LocalExecutorConfig)
    return SshExecutor(name, cfg)


class ExecutorsSubsystem:
    name = "executors"

    def __init__(self, configs: Callable[[], Any], state_dir: Path, registry: Executors,
                 counts: Counts | None = None, on_available: Callable[[], None] | None = None) -> None:
        """``on_available()`` is called when an executor that was down answers again (the supervisor's
        ``wake``, so the tasks it held start)."""
        self.configs = configs
        self.state_dir = state_dir
        self.registry = registry
        self.counts = counts or (lambda: {})
        self.on_available = on_available
        self._recheck: dict[str, asyncio.TimerHandle] = {}
        self._backoff: dict[str, float] = {}
        self._configs: dict[str, ExecutorConfig] = {}
        self._closing: set[asyncio.Task[None]] = set()

    # -- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.apply(self.configs())

    async def stop(self) -> None:
        for timer in self._recheck.values():
            timer.cancel()
        self._recheck.clear()
        for task in list(self._closing):
            task.cancel()
        for name in list(self._configs):
            ex = self.registry.get(name) if name in self.registry else None
            if ex is not None and name != DEFAULT_EXECUTOR:
                with contextlib.suppress(Exception):
                    await ex.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def apply(self, configs: Any) -> None:
        raw = getattr(configs.service, "executors", None) or {}
        wanted, problems = parse_executors(raw)
        for path, msg in problems:  # the loader refused these already; this only guards a hand-built config
            log.error("%s: %s", path, msg)
        for name in [n for n in self._configs if n not in wanted]:
            old = self.registry.unregister(name) if name != DEFAULT_EXECUTOR else None
            self._close_later(old)
            log.info("executor %s removed", name)
        for name, cfg in wanted.items():
            if name == DEFAULT_EXECUTOR or isinstance(cfg, LocalExecutorConfig):
                continue
            if self._configs.get(name) == cfg and name in self.registry:
                continue
            ex = make_executor(name, cfg, self.state_dir)
            self._close_later(self.registry.replace(ex))
            self._background(ex.probe())  # type: ignore[attr-defined]
            log.info("executor %s (%s) ready", name, type(cfg).__name__.removesuffix("ExecutorConfig").lower())
        self._configs = wanted

    def _close_later(self, ex: Executor | None) -> None:
        if ex is not None:
            self._background(ex.close())

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- limits and reports ---------------------------------------------------------------------------------
    def limit(self, name: str | None) -> int | None:
        """``max_parallel`` of an executor (None: only the service-wide limit applies)."""
        cfg = self._configs.get(name or DEFAULT_EXECUTOR)
        return getattr(cfg, "max_parallel", None) if cfg is not None else None

    def available(self, name: str | None) -> tuple[bool, str | None]:
        """(usable now, why not): a remote executor known to be down holds its tasks."""
        try:
            ex = self.registry.get(name)
        except Exception as e:
            return False, str(e)
        h = _health_of(ex)
        if h.get("state") == "down":
            return False, f"executor {ex.name} is down: {h.get('last_error') or 'unreachable'}"
        return True, None

    # -- the supervisor's gate ------------------------------------------------------------------------------
    def gate(self, name: str, running: int) -> str | None:
        """May another task start on ``name``?  None, or why its tasks wait (they stay queued).

        A full executor frees up when one of its runs ends (the supervisor wakes then anyway); a down
        one is probed again after a doubling backoff (2 s .. 60 s) while tasks wait for it, and
        ``on_available`` wakes the supervisor once it answers."""
        lim = self.limit(name)
        if lim is not None and running >= lim:
            return f"executor {name} is at its max_parallel ({lim})"
        ok, why = self.available(name)
        if ok:
            self._backoff.pop(name, None)
            return None
        self._recheck_later(name)
        return why

    def _recheck_later(self, name: str) -> None:
        if name in self._recheck:
            return
        delay = self._backoff.get(name, 2.0)
        self._backoff[name] = min(delay * 2, 60.0)
        loop = asyncio.get_running_loop()
        self._recheck[name] = loop.call_later(delay, lambda: self._background(self._probe(name)))

    async def _probe(self, name: str) -> None:
        self._recheck.pop(name, None)
        try:
            ex = self.registry.get(name)
        except Exception:
            return
        probe = getattr(ex, "probe", None)
        if probe is not None:
            with contextlib.suppress(Exception):
                await probe()
        # Either way the supervisor looks again: if it is still down, the gate re-arms the next probe.
        if self.on_available is not None:
            self.on_available()

    def rows(self) -> list[dict[str, Any]]:
        counts = self.counts()
        rows = []
        for ex in sorted(self.registry, key=lambda e: e.name):
            h = _health_of(ex)
            c = counts.get(ex.name, {})
            rows.append({"name": ex.name, "kind": h.get("kind", ex.name), "state": h.get("state", "up"),
                         "running": c.get("running", 0), "queued": c.get("queued", 0),
                         "max_parallel": self.limit(ex.name), "last_error": h.get("last_error"),
                         "detail": {k: v for k, v in h.items() if k not in ("kind", "state", "last_error")}})
        return rows

    def health(self) -> dict[str, Any]:
        return {r["name"]: {k: r[k] for k in ("kind", "state", "running", "queued", "last_error")}
                for r in self.rows()}

    def register_rpc(self, rpc: Any) -> None:
        rpc.register("executors.list", lambda _p, _c: {"executors": self.rows()})


def _health_of(ex: Executor) -> dict[str, Any]:
    fn = getattr(ex, "health", None)
    if fn is None:
        return {"kind": ex.name, "state": "up"}
    try:
        return dict(fn())
    except Exception as e:  # a report must never take the status call down
        return {"state": "unknown", "last_error": f"health failed: {e}"}
