"""Reading a config file from aiwgctl (``config check``, ``install``), where the service's secrets are not.

A hook's secret lives in the service's environment (``environment.d``) or a systemd credential
(``LoadCredential=``): the CLI's own environment says nothing about either. So the CLI never requires one; it
names each as provided by the service's environment or credentials, and, when the service runs, asks it
(``webhook.secrets``) whether each is set there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import config, schemas  # noqa: F401  (schemas registers every section, so all of them are checked)
from ..webhooks.schema import needed_secrets
from ..webhooks.secrets import ELSEWHERE, secrets_are_elsewhere


def load(path: Path) -> config.Loaded:
    """``config.load_file`` without looking for the service's secrets in this process."""
    secrets_are_elsewhere()
    return config.load_file(path)


def check_secrets(cfg: Any) -> list[dict[str, Any]]:
    """Each secret the file's enabled hooks need: ``status`` is ``set`` or ``problem`` (asked of the running
    service) or ``unchecked`` (no service to ask)."""
    wanted = needed_secrets(cfg.webhook)
    if not wanted:
        return []
    answers = _ask_service([{"name": n, "kind": k} for n, k in wanted])
    out = []
    for name, kind in wanted:
        got = answers.get((name, kind)) if answers is not None else None
        if got is None:
            out.append({"name": name, "kind": kind, "status": "unchecked", "problem": None})
        else:
            out.append({"name": name, "kind": kind, "status": "problem" if got["problem"] else "set",
                        "problem": got["problem"]})
    return out


def describe(s: dict[str, Any]) -> str:
    if s["status"] == "set":
        return f"webhook secret {s['name']}: {ELSEWHERE}: set in the running service"
    if s["status"] == "problem":
        return f"webhook secret {s['name']}: {s['problem']}"
    return f"webhook secret {s['name']}: {ELSEWHERE} (not checked: the service is not running)"


def _ask_service(queries: list[dict[str, str]]) -> dict[tuple[str, str], dict[str, Any]] | None:
    """The running service's answer, or None when none runs (or it is too old to answer)."""
    from .. import protocol as p
    from ..client import Client, NotRunning
    from .core import resolve_socket

    try:
        with Client(resolve_socket(), 10.0) as c:
            res = c.call("webhook.secrets", {"secrets": queries})
    except (NotRunning, p.RpcError, OSError):
        return None
    return {(s["name"], s["kind"]): s for s in res.get("secrets", [])}
