"""Confined agents: one policy per task, rendered as systemd unit properties or a bubblewrap argv prefix.

``schema`` is the profile's ``sandbox`` section (and how a project file may only narrow it), ``policy``
resolves it for one task into a :class:`~.policy.Policy` (absolute paths, what is hidden, what is writable,
what it may reach), ``units`` and ``bwrap`` render that one object for the two mechanisms, ``mechanism``
picks which one applies, ``proxy`` is the name-filtering CONNECT proxy of ``network: allow``, and ``netfwd``
carries that proxy into a bubblewrap network namespace.
"""

from .bwrap import bwrap_argv
from .mechanism import Mechanism, choose
from .policy import Policy, resolve
from .schema import SandboxSection, narrow
from .units import unit_properties

__all__ = ["Mechanism", "Policy", "SandboxSection", "bwrap_argv", "choose", "narrow", "resolve", "unit_properties"]
