"""``aiwgctl trust`` / ``aiwgctl untrust``: allow a project's config to run things, or take that back.

The running service records the decision in its own state directory (so a systemd unit's
``$STATE_DIRECTORY`` is the one used); when no service answers, the record goes to the state directory
this shell would give the service.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import paths
from .. import wire as p
from ..policy import trust as tr
from . import render
from .core import fail, no_service, resolve_socket

JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]
DirArg = Annotated[Path, typer.Argument(help="project root (default: the current directory)")]


def _service(method: str, params: dict[str, Any]) -> Any | None:
    """The service's answer, or None when no service runs (an impostor or an error ends aiwgctl)."""
    from ..client import Client, Impostor, NotRunning

    try:
        with Client(resolve_socket(), 60.0) as c:
            return c.call(method, params)
    except Impostor as exc:
        fail(no_service(exc))
    except NotRunning:
        return None
    except p.RpcError as exc:
        fail(exc.message)


def _offline_store() -> tr.TrustStore:
    return tr.TrustStore(paths.state_dir())


def _show(d: dict[str, Any]) -> None:
    sha = (d.get("sha256") or "")[:12]
    print(render.safe(f"{d['path']}: its config ({d['config']}, sha256 {sha}…) sets what a repository may not "
                      f"set alone; it can make aiwg-service run, send or spend, as you:"))
    for line in d["needs"]:
        print(f"  {line}")
    prev = d.get("previous")
    if prev is not None:
        changes = tr.diff(list(prev.get("needs", [])), d["needs"])
        print(f"\nChanges since you trusted it ({prev.get('trusted_at', '?')}):")
        for line in changes or ["  (none in what it runs; other settings changed)"]:
            print(f"  {line}" if not line.startswith("  ") else line)
    if d.get("store_error"):
        print(f"\nnote: {d['store_error']}")


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        fail("not confirmed: stdin is not a terminal (review the list above, then run again with --yes)")
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def trust(path: DirArg = Path("."),
          yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask; trust what is shown")] = False,
          json: JsonOpt = False) -> None:
    """Allow a project's config to run what it lists (rules, jobs, agent commands); asks first."""
    root = str(path.expanduser().resolve())
    if not os.path.isdir(root):
        fail(f"{root}: not a directory")
    d = _service("trust.show", {"path": root})
    offline = d is None
    if offline:
        try:
            d = tr.describe(root, _offline_store())
        except tr.Unreadable as exc:
            fail(str(exc))
    assert d is not None
    if not d["exists"] or not d["needs"]:
        if json:
            render.emit_json({"trusted": True, "path": root, "needs": [], "needed": False})
        else:
            print(f"{root}: nothing to trust: its config runs nothing of its own")
        return
    if d["problem"]:
        fail(f"{root} cannot be trusted: {d['problem']}")
    if d["trusted"] and not d.get("untrusted_reason"):
        if json:
            render.emit_json({"trusted": True, "path": root, "sha256": d["sha256"], "needs": d["needs"]})
        else:
            print(f"{root}: already trusted (this exact config)")
        return
    if not json:
        _show(d)
    if not yes and not _confirm("\nTrust it?"):
        fail("not trusted")
    if offline:
        try:
            _offline_store().allow(root, d["sha256"], d["needs"])
        except OSError as exc:
            fail(f"cannot write {_offline_store().path}: {exc.strerror}")
        res = {"trusted": True, "path": root, "sha256": d["sha256"], "needs": d["needs"], "service": False}
    else:
        res = _service("trust.allow", {"path": root, "sha256": d["sha256"]})
        if res is None:
            fail("the service stopped before the trust was recorded; run `aiwgctl trust` again")
    if json:
        render.emit_json(res)
    else:
        where = "" if not offline else f" (no service running; recorded in {_offline_store().path})"
        print(f"trusted: {root}{where}")


def untrust(path: DirArg = Path("."), json: JsonOpt = False) -> None:
    """Take back trust: the project's rules and jobs run nothing until it is trusted again."""
    root = str(path.expanduser().resolve())
    res = _service("trust.revoke", {"path": root})
    if res is None:
        try:
            had = _offline_store().revoke(root)
        except OSError as exc:
            fail(f"cannot write {_offline_store().path}: {exc.strerror}")
        res = {"revoked": had, "path": root, "service": False}
    if json:
        render.emit_json(res)
    else:
        print(f"untrusted: {root}" if res["revoked"] else f"{root} was not trusted")
