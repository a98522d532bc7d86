"""The ``agents`` section: agent profiles by name (the service file's apply everywhere; a project's file adds
or overrides profiles for that project only)."""

from __future__ import annotations

import re
from typing import Any

from ..config import register_literal, register_pattern, register_section
from .model import PERCENT_PATTERN, SIZE_PATTERN, AgentKind, AgentProfile, profile_problems

PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_agents(cfg: Any) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    for name, profile in cfg.agents.items():
        where = f"agents.{name}"
        if not PROFILE_NAME.match(name):
            errors.append((where, "a profile name may use only letters, digits and _ . - "
                                  "(at most 64, starting with a letter or digit)"))
        errors.extend((f"{where}.{f}", m) for f, m in profile_problems(profile))
    return errors


register_literal(AgentKind)
register_pattern(SIZE_PATTERN, '{v} must be a size like "512M", "2G", "50%" or "infinity"')
register_pattern(PERCENT_PATTERN, '{v} must be a percentage like "50%" or "200%"')
register_section("agents", dict[str, AgentProfile], dict, check=check_agents)
