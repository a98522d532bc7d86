"""Registers the ``executors`` section (see ``schema.py``) with the config document; read from the
service-wide file (a project file's ``executors`` is checked but not used: executors are per user)."""

from __future__ import annotations

from typing import Any

from ..config import register_section, service_only
from .schema import ExecutorConfig, check_executors

# Loosely typed in the document: ``schema.parse_executors`` converts each entry itself (a tagged union by
# ``kind``), so errors name the entry and its key: ``executors.cluster.mem: expected `str` matching ...``.
register_section("executors", dict[str, dict[str, Any]], dict, check=check_executors, scan_secrets=True,
                 doc_type=dict[str, ExecutorConfig])
service_only("executors")
