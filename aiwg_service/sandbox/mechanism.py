"""Which mechanism confines a task: a systemd unit's sandbox, bubblewrap, none (``sandbox: off``), or
none available (the task is refused: an agent never runs unconfined by accident)."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

from .bwrap import bwrap_path
from .policy import Policy

__all__ = ["Mechanism", "choose"]

MechanismName = Literal["systemd", "bubblewrap", "off", "refused"]


class Mechanism(Struct, kw_only=True):
    name: MechanismName
    #: for ``bubblewrap``: the binary; for ``refused``: why, for the user
    detail: str = ""


def choose(policy: Policy | None, *, systemd: bool, path: str | None = None) -> Mechanism:
    """``systemd`` when the task runs as a transient unit, else bubblewrap when installed."""
    if policy is None or not policy.enabled:
        return Mechanism(name="off", detail="sandbox: off")
    if systemd:
        return Mechanism(name="systemd", detail="transient unit properties")
    bw = bwrap_path(path)
    if bw is not None:
        return Mechanism(name="bubblewrap", detail=bw)
    return Mechanism(name="refused", detail=(
        f"profile {policy.profile or '?'!s}: no sandbox is possible here (no systemd user manager, and bubblewrap "
        "is not installed): install bubblewrap (`apt install bubblewrap`), run the service under systemd, or "
        f"set agents.{policy.profile or 'NAME'}.sandbox to \"off\" in the service's config to run it unconfined"))
