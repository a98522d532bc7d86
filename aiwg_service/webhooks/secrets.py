"""Where a hook's secret comes from: an environment variable, else a systemd credential of the same name.

``LoadCredential=AIWG_WEBHOOK_SECRET:/path`` (or ``SetCredentialEncrypted=``) in a drop-in for aiwg.service puts
the secret in ``$CREDENTIALS_DIRECTORY/AIWG_WEBHOOK_SECRET``, readable by the service only and never in its
environment. The value is never logged or returned by any RPC.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

STANDARD_PREFIX = "whsec_"
ELSEWHERE = "provided by the service's environment or credentials"

#: False in aiwgctl: the service's secrets are in its own environment and credentials (environment.d,
#: LoadCredential=), which the CLI's process does not see; the running service checks them (``webhook.secrets``).
_seen_here = True


def secrets_are_elsewhere() -> None:
    """Called by aiwgctl before it validates a config: a secret is then not looked up in its own environment."""
    global _seen_here
    _seen_here = False

#: A hook's secret is at least this long (after ``whsec_``), with at least ``MIN_DISTINCT`` different characters:
#: a guessable value (a home directory, a user name, ``aaaa…``) is no secret.
MIN_SECRET = 32
MIN_DISTINCT = 8
#: Variables every process has, whose values anyone on the machine can guess: never a hook's secret.
WELL_KNOWN = frozenset({
    "HOME", "PATH", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "TERM", "LANG", "LANGUAGE", "TZ", "TMPDIR",
    "HOSTNAME", "MAIL", "EDITOR", "VISUAL", "PAGER", "DISPLAY", "WAYLAND_DISPLAY", "SSH_AUTH_SOCK", "SSH_CONNECTION",
    "SSH_CLIENT", "SSH_TTY", "DBUS_SESSION_BUS_ADDRESS", "INVOCATION_ID", "JOURNAL_STREAM", "NOTIFY_SOCKET",
    "MANAGERPID", "SYSTEMD_EXEC_PID", "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "RUNTIME_DIRECTORY",
    "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID", "PYTHONPATH", "VIRTUAL_ENV",
})


def well_known(name: str) -> bool:
    return name in WELL_KNOWN or name.startswith(("XDG_", "LC_"))


def credential_exists(name: str) -> bool:
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    return bool(creds) and (Path(creds) / name).is_file()


def read_secret(name: str) -> str | None:
    """The secret's text, or None when neither the variable nor the credential is set (or both are empty)."""
    value = os.environ.get(name)
    if value:
        return value
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        try:
            text = (Path(creds) / name).read_text().rstrip("\r\n")
        except (OSError, UnicodeDecodeError):
            return None
        return text or None
    return None


def secret_key(text: str, kind: str) -> bytes:
    """The bytes a kind signs with. Standard Webhooks secrets are ``whsec_`` + base64 of the key."""
    if kind == "standard" and text.startswith(STANDARD_PREFIX):
        return base64.b64decode(text[len(STANDARD_PREFIX):], validate=True)
    return text.encode()


def secret_problem(name: str, kind: str) -> str | None:
    """Why a hook cannot be served with this secret, or None. Never says anything about the value itself."""
    if well_known(name):
        return (f"{name} is a well-known variable whose value anyone can guess, not a secret: name a variable "
                f"that holds a random secret, or a systemd credential")
    if not _seen_here:
        return None
    text = read_secret(name)
    if text is None:
        return (f"the secret is not set: set the environment variable {name} for the service, or give it a systemd "
                f"credential named {name} (LoadCredential=)")
    if kind == "standard" and text.startswith(STANDARD_PREFIX):
        try:
            secret_key(text, kind)
        except (binascii.Error, ValueError):
            return f"the secret in {name} starts with {STANDARD_PREFIX} but the rest is not valid base64"
        text = text[len(STANDARD_PREFIX):]
    if len(text.encode()) < MIN_SECRET:
        return f"the secret in {name} is shorter than {MIN_SECRET} bytes (use e.g. `openssl rand -hex 32`)"
    if len(set(text)) < MIN_DISTINCT:
        return f"the secret in {name} is not random enough (fewer than {MIN_DISTINCT} different characters)"
    return None
