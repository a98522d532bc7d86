"""Where the socket, state, config and logs live.

One place for every path, so the client and the service always agree. systemd's ``*_DIRECTORY``
variables win over the XDG defaults because the unit files are the source of truth under systemd.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import locate, safefs
from .locate import SOCKET_ENV  # noqa: F401  (re-exported)

PROJECT_CONFIG = Path(".aiwg") / "daemon.json"
PROJECT_SOCKET_LINK = Path(locate.PROJECT_SOCKET_LINK)
PROJECT_STATE_LINK = Path(".aiwg") / "daemon" / "state.json"


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def runtime_base() -> Path:
    """The per-user runtime directory ($XDG_RUNTIME_DIR/aiwg, or /tmp/aiwg-$UID without one)."""
    return Path(locate.runtime_base())


def default_socket_path() -> Path:
    return Path(locate.default_socket())


def instance_socket_path(escaped_name: str) -> Path:
    """Socket of a per-project instance (``aiwg@<escaped>.socket`` listens here)."""
    return Path(locate.instance_socket(escaped_name))


def socket_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """--socket beats $AIWG_SOCKET beats the default."""
    return Path(locate.configured_socket(explicit))


def state_dir() -> Path:
    """$STATE_DIRECTORY (systemd's StateDirectory=) or $XDG_STATE_HOME/aiwg."""
    sd = os.environ.get("STATE_DIRECTORY")
    if sd:
        return Path(sd.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else _home() / ".local" / "state") / "aiwg"


def config_dir() -> Path:
    """$CONFIGURATION_DIRECTORY or $XDG_CONFIG_HOME/aiwg."""
    cd = os.environ.get("CONFIGURATION_DIRECTORY")
    if cd:
        return Path(cd.split(":")[0])
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else _home() / ".config") / "aiwg"


def service_config_file() -> Path:
    return config_dir() / "daemon.json"


def user_unit_dir() -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else _home() / ".config") / "systemd" / "user"


def project_config_file(root: str | os.PathLike[str]) -> Path:
    return Path(root) / PROJECT_CONFIG


def project_socket_link(root: str | os.PathLike[str]) -> Path:
    return Path(locate.project_socket_link(root))


def project_state_link(root: str | os.PathLike[str]) -> Path:
    """Where the AIWG CLI reads the daemon's state when the socket does not answer."""
    return Path(root) / PROJECT_STATE_LINK


def ensure_private_dir(path: Path, *, allow_link: bool = False) -> None:
    """Create ``path`` as a 0700 directory owned by us; refuse one that another user owns, and a symlink
    unless ``allow_link`` (then the link must be ours and lead to a directory of ours)."""
    safefs.private_dir(path, allow_link=allow_link)


def private_file(path: Path) -> None:
    """Make sure ``path`` exists as a 0600 file before a library (SQLite) opens it with the umask's
    mode; SQLite gives its -wal and -shm files the database file's mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def tighten_tree(root: Path) -> int:
    """Every file under ``root`` 0600 and every directory 0700 (state written by older versions, or
    under a loose umask); symlinks are left alone. Returns how many modes it changed."""
    changed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name, want in [*((d, 0o700) for d in dirnames), *((f, 0o600) for f in filenames)]:
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
                if not os.path.islink(full) and st.st_uid == os.getuid() and st.st_mode & 0o7777 != want:
                    os.chmod(full, want)
                    changed += 1
            except OSError:
                continue
    return changed
