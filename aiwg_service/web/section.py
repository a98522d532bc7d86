"""The ``web`` section, registered with ``config`` (only the service-wide file's counts)."""

from __future__ import annotations

from ..config import register_section, service_only
from .schema import WebSection

register_section("web", WebSection, WebSection)
service_only("web")
