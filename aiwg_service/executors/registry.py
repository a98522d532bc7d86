"""Routing by executor name: the supervisor's only view of executors.

A task row records the executor's name (``agents.<profile>.executor``, default ``local``) next to its
handle, so after a restart the same executor is asked to adopt it.  New executors (Slurm, SSH) are
registered here by ``wiring.py``; the supervisor never imports them.
"""

from __future__ import annotations

from collections.abc import Iterator

from .base import Executor, ExecutorError

__all__ = ["DEFAULT_EXECUTOR", "Executors"]

DEFAULT_EXECUTOR = "local"


class Executors:
    """Name -> executor.  ``get`` raises :class:`ExecutorError` naming the unknown executor."""

    def __init__(self, *executors: Executor) -> None:
        self._by_name: dict[str, Executor] = {}
        for ex in executors:
            self.register(ex)

    def register(self, executor: Executor) -> None:
        if executor.name in self._by_name:
            raise ValueError(f"executor {executor.name!r} registered twice")
        self._by_name[executor.name] = executor

    def get(self, name: str | None) -> Executor:
        ex = self._by_name.get(name or DEFAULT_EXECUTOR)
        if ex is None:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise ExecutorError(f"unknown executor {name!r} (known: {known})")
        return ex

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Executor]:
        return iter(self._by_name.values())

    def names(self) -> list[str]:
        return sorted(self._by_name)

    async def close(self) -> None:
        for ex in self._by_name.values():
            await ex.close()

    # -- reloads (the executors subsystem keeps the registry in step with the ``executors`` section) --------
    def replace(self, executor: Executor) -> Executor | None:
        """Register ``executor`` in place of the one of the same name; returns the old one (to close)."""
        old = self._by_name.get(executor.name)
        self._by_name[executor.name] = executor
        return old

    def unregister(self, name: str) -> Executor | None:
        """Drop an executor a reload removed (runs it started keep their own reference until they end)."""
        return self._by_name.pop(name, None)
