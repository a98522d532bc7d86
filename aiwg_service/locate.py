"""Where the service's socket is, as plain strings and with ``os`` only.

``paths`` wraps these in ``pathlib`` for the service; the client uses them directly, because importing
``pathlib`` (and the ``re`` it pulls in) would cost ``aiwgctl ping`` more than the whole round trip.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

SOCKET_ENV = "AIWG_SOCKET"
PROJECT_SOCKET_LINK = ".aiwg/daemon/daemon.sock"


def runtime_base() -> str:
    """The per-user runtime directory ($XDG_RUNTIME_DIR/aiwg, or /tmp/aiwg-$UID without one)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "aiwg")
    return f"/tmp/aiwg-{os.getuid()}"


def default_socket() -> str:
    return os.path.join(runtime_base(), "daemon.sock")


def instance_socket(escaped_name: str) -> str:
    """Socket of a per-project instance (``aiwg@<escaped>.socket`` listens here)."""
    return os.path.join(runtime_base(), "instances", f"{escaped_name}.sock")


def configured_socket(explicit: str | os.PathLike[str] | None = None) -> str:
    """--socket beats $AIWG_SOCKET beats the default."""
    if explicit:
        return os.fspath(explicit)
    return os.environ.get(SOCKET_ENV) or default_socket()


def project_socket_link(root: str | os.PathLike[str]) -> str:
    return os.path.join(os.fspath(root), PROJECT_SOCKET_LINK)


def _served_link(cwd: str, warn: Callable[[str], object] | None) -> tuple[str, str] | None:
    """(root, socket) of the innermost project above ``realpath(cwd)`` whose link leads to a live socket of
    ours (a served project: the service removes a project's socket when it stops serving it). A link that
    leads nowhere is passed over; a link to another user's socket ends the search, with a warning: it may be
    committed in a repository or planted in a shared directory."""
    d = os.path.realpath(cwd)
    while True:
        link = project_socket_link(d)
        if os.path.islink(link) or os.path.exists(link):
            target = os.path.realpath(link)
            try:
                owner = os.stat(target).st_uid
            except OSError:
                owner = None  # dangling: a project no longer served; an outer one may be
            if owner == os.getuid():
                return d, target
            if owner is not None:
                if warn is not None:
                    warn(f"ignoring {link}: it leads to {target}, which belongs to uid {owner}, not to you")
                return None
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def find_project(cwd: str) -> str | None:
    """The served project that contains ``cwd``, innermost first (as git finds its repository), or None."""
    found = _served_link(cwd, None)
    return found[0] if found else None


def find_socket(cwd: str, warn: Callable[[str], object] | None = None) -> str:
    """What a client talks to: $AIWG_SOCKET, else the project link above ``cwd`` (if it leads to a live
    socket of ours: that project's own), else the default."""
    env = os.environ.get(SOCKET_ENV)
    if env:
        return env
    found = _served_link(cwd, warn)
    return found[1] if found else default_socket()
