"""The environment a child of the service gets: an allow-list, never the service's own environment.

Agents and rule shell commands alike: the service's environment holds tokens (``GITHUB_TOKEN``,
``AWS_SECRET_ACCESS_KEY``), systemd's plumbing (``NOTIFY_SOCKET``, ``LISTEN_FDS``, ``WATCHDOG_*``) and whatever
the user's login exported. A child sees the safe base set, ``LC_*``, and only the names its own config lists.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

#: Variables a child may inherit from the service; everything else is dropped.
SAFE_ENV: frozenset[str] = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "TERM", "TZ", "SHELL", "TMPDIR", "XDG_RUNTIME_DIR"}
)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def sanitized(names: Iterable[str] = (), parent: Mapping[str, str] | None = None) -> dict[str, str]:
    """The safe base set and ``LC_*`` from ``parent`` (default: ours), plus the variables in ``names``."""
    src = os.environ if parent is None else parent
    keep = SAFE_ENV.union(names)
    env = {k: v for k, v in src.items() if k in keep or k.startswith("LC_")}
    env.setdefault("PATH", DEFAULT_PATH)
    return env
