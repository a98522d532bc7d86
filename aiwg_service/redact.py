"""Moved to ``aiwg_service.policy.redact`` (the policy package owns what counts as a secret)."""

from .policy.redact import MASK, escape_controls, find, redact, redact_obj

__all__ = ["MASK", "escape_controls", "find", "redact", "redact_obj"]
