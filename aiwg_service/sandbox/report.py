"""``aiwgctl sandbox check``: what an agent of a profile can read, write and reach, and how exposed its unit is.

The score is systemd's own (``systemd-analyze security --offline``) for a unit file holding exactly the
properties the task's unit gets, so it can be read without starting an agent.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile

from .. import command
from .bwrap import bwrap_argv
from .mechanism import Mechanism
from .policy import Policy, split_hidden
from .units import unit_properties

__all__ = ["describe", "exposure"]

_SCORE = re.compile(r"Overall exposure level for \S+: ([0-9.]+) (\S+)")


async def exposure(properties: list[str], timeout: float = 20.0) -> tuple[float | None, str]:
    """``(score, verdict)`` from ``systemd-analyze security --offline``; ``(None, why)`` when it cannot say."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        return None, "systemd-analyze is not installed"
    with tempfile.TemporaryDirectory(prefix="aiwg-sandbox-") as d:
        unit = os.path.join(d, "aiwg-task-check.service")
        with open(unit, "w") as f:
            f.write("[Service]\nType=exec\nExecStart=/bin/true\n" + "".join(f"{p}\n" for p in properties))
        try:
            proc = await asyncio.create_subprocess_exec(
                exe, "security", "--offline=yes", "--no-pager", unit, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await command.finish(proc, timeout, "systemd-analyze security")  # killed if it hangs
        except (OSError, TimeoutError) as e:
            return None, f"systemd-analyze failed: {e}"
    m = _SCORE.search(out.decode(errors="replace"))
    if m is None:
        return None, (err.decode(errors="replace").strip().splitlines() or ["no score"])[-1][:200]
    return float(m.group(1)), m.group(2)


async def describe(policy: Policy, mechanism: Mechanism) -> dict[str, object]:
    """One profile's answer: mechanism, read/write/hidden/network, unit properties, bubblewrap argv, score."""
    out: dict[str, object] = {"profile": policy.profile, "mechanism": mechanism.name, "detail": mechanism.detail,
                              "enabled": policy.enabled}
    if not policy.enabled:
        out["read"] = "everything the owner can read"
        out["write"] = "everything the owner can write"
        out["network"] = "full"
        return out
    gone, masked = split_hidden(policy.hide, [*policy.write, *policy.read_only])
    props = unit_properties(policy)
    score, verdict = await exposure(props)
    out.update({
        "read": "the whole file system read-only, except what is hidden",
        "write": [*policy.write, "a private /tmp"],
        "read_only_inside": policy.read_only,
        "hidden": sorted(set(gone) | set(masked)),
        "network": policy.network,
        "allow_hosts": policy.allow_hosts,
        "socket": policy.socket or "hidden",
        "memory_deny_write_execute": policy.memory_deny_write_execute,
        "properties": props,
        "bwrap": bwrap_argv(policy),
        "score": score,
        "verdict": verdict,
    })
    return out
