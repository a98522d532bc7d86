"""Start the real service with a ``messaging`` section pointing at the local fakes."""

from __future__ import annotations

import json
from typing import Any

from service_fixture import ServiceEnv

TG_TOKEN = "123456:TEST-token"
WRITER, READER, STRANGER = 42, 43, 99


def write_service_config(svc_env: ServiceEnv, messaging: dict[str, Any], **extra: Any) -> None:
    path = svc_env.config_home / "aiwg" / "daemon.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"messaging": messaging, **extra}, indent=2))


def telegram_section(base: str, **over: Any) -> dict[str, Any]:
    sec: dict[str, Any] = {
        "users": {f"telegram:{WRITER}": "write", f"telegram:{READER}": "read"},
        "telegram": {"api_base_url": base, "poll_timeout_seconds": 2},
        "slack": {"enabled": False}, "discord": {"enabled": False}, "apprise": {"enabled": False},
    }
    sec.update(over)
    return sec


def start_with_telegram(svc_env: ServiceEnv, base: str, chat_id: int = 777, **over: Any) -> None:
    svc_env.env["AIWG_TELEGRAM_TOKEN"] = TG_TOKEN
    svc_env.env["AIWG_TELEGRAM_CHAT_ID"] = str(chat_id)
    write_service_config(svc_env, telegram_section(base, **over))
    svc_env.start()
