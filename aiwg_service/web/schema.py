"""The ``web`` config section (service-wide only): whether the dashboard listens, where, and the metrics token.

Imports only leaves (msgspec), so ``aiwgctl`` can read the port without loading aiohttp or Jinja2.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

DEFAULT_PORT = 9472
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class WebSection(Struct, forbid_unknown_fields=False):
    #: unset: on when aiwg-web.socket passed its sockets (`aiwgctl install --web` enables that unit), else off;
    #: true: on (in the foreground it binds ``bind:port`` itself); false: off even when the unit is enabled
    enabled: bool | None = None
    port: Annotated[int, Meta(ge=1, le=65535)] = DEFAULT_PORT
    #: loopback by default; put a reverse proxy in front (or use the Unix socket) to reach it from elsewhere
    bind: Annotated[str, Meta(min_length=1)] = "127.0.0.1"
    #: the environment variable or systemd credential holding /metrics' bearer token (unset: /metrics is off)
    metrics_token_env: Annotated[str, Meta(pattern=ENV_NAME)] = "AIWG_METRICS_TOKEN"
