"""Outbound only, to anything Apprise reaches (ntfy, email, Matrix, Teams and 100 more).

The URLs carry credentials, so they come from one environment variable (``urls_env``), separated by
whitespace or commas; they are never logged.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from . import format as fmt
from .bridge import Bridge
from .model import OutMessage, SendError

log = logging.getLogger("aiwg.messaging")


class AppriseBridge(Bridge):
    name = "apprise"

    def __init__(self, cfg: Any, env: Any, host: Any) -> None:
        super().__init__(cfg, env, host)
        self.apprise: Any = None

    async def start(self) -> None:
        urls = [u for u in re.split(r"[\s,]+", self.secret(self.cfg.urls_env)) if u]
        if not urls:
            self.disable(f"${self.cfg.urls_env} is unset or empty")
            return
        self.state.enabled, self.state.state = True, "starting"
        await self.load("apprise")
        import apprise

        ap = apprise.Apprise()
        bad = sum(1 for u in urls if not ap.add(u))
        if not len(ap):
            self.state.enabled, self.state.state = False, "error"
            self.state.error(f"none of the {len(urls)} URL(s) in ${self.cfg.urls_env} is a valid Apprise URL")
            return
        self.apprise = ap
        self.state.enabled = True
        self.state.state = "sending-only"
        self.state.detail = f"{len(ap)} service(s)" + (f"; {bad} invalid URL(s) skipped" if bad else "")
        if bad:
            log.warning("messaging: %d of the URLs in $%s are not valid Apprise URLs; skipped", bad,
                        self.cfg.urls_env)

    async def send(self, msg: OutMessage, target: str | None = None) -> str | None:
        if self.apprise is None:
            raise SendError("the apprise bridge is not running")
        import apprise

        title, body = fmt.apprise(msg)
        kind = {"info": apprise.NotifyType.INFO, "warning": apprise.NotifyType.WARNING,
                "critical": apprise.NotifyType.FAILURE}[msg.severity]
        result = await self.apprise.async_notify(body=body, title=title, notify_type=kind,
                                                 body_format=apprise.NotifyFormat.TEXT)
        if not result:
            raise SendError("apprise: at least one service did not accept the message")
        self.state.messages_out += 1
        return None
