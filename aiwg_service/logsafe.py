"""Log records made safe before any handler writes them: secrets redacted, control characters escaped.

A logged value can come from anyone who can name a file or send a webhook: a newline in a file name must
not forge a second ``ERROR`` line, and a token a command printed must not land in the journal. The filter
renders the message once, cleans it, and cleans the extra journald fields (``PROJECT=`` ...) as well.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from typing import Any

from .policy.redact import escape_controls, redact


class SafeRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a bad format string: keep what there is rather than lose the record
            msg = f"{record.msg!r} {record.args!r}"
        record.msg = escape_controls(redact(msg))
        record.args = None
        for key, value in list(record.__dict__.items()):  # upper-case extras become journald fields
            if key.isupper() and isinstance(value, str):
                setattr(record, key, escape_controls(redact(value)))
        return True


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """``--log-file``: created 0600 whatever the umask (and each rotated file too), never through a symlink."""

    def _open(self) -> Any:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.baseFilename, flags, 0o600)
        os.fchmod(fd, 0o600)  # an older file the user made with another mode: ours now
        return os.fdopen(fd, "a", encoding=self.encoding or "utf-8", errors=self.errors)


def install(handler: logging.Handler) -> logging.Handler:
    handler.addFilter(SafeRecords())
    return handler
