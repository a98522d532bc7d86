"""Turn one platform-neutral message into each platform's payload: escaped, badged, cut to its limits.

Every text from outside (task output, prompts, file names) is treated as plain text and escaped for the
platform, so ``<b>``, ``*bold*`` or ``@everyone`` in an agent's output render as written and ping nobody.
Each payload also carries a link-free plain-text fallback (what notifications and screen readers show).
"""

from __future__ import annotations

import html
import re
from typing import Any

from .model import OutMessage

BADGE = {"info": "ℹ️ info", "warning": "⚠️ warning", "critical": "🚨 critical"}
COLOR = {"info": 0x3B82F6, "warning": 0xF59E0B, "critical": 0xDC2626}
CUT_MARK = "… (cut)"

# platform limits (characters)
SLACK_TEXT = 3000  # a section block's text; the top-level fallback is cut to the same
DISCORD_CONTENT = 2000
DISCORD_EMBED_TITLE = 256
DISCORD_EMBED_DESC = 4096
TELEGRAM_TEXT = 4096
TELEGRAM_CALLBACK_BYTES = 64
APPRISE_BODY = 4000

_URL = re.compile(r"(?:https?|ftp)://\S+|www\.\S+", re.I)


def cut(text: str, limit: int) -> str:
    """At most ``limit`` characters; a cut is marked, never silent."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(CUT_MARK))] + CUT_MARK


def plain(msg: OutMessage, limit: int = 4000) -> str:
    """The link-free fallback: severity, title, text; URLs replaced by a placeholder."""
    head = [] if msg.reply else [f"[{msg.severity.upper()}]"]
    if msg.title:
        head.append(msg.title)
    body = " ".join(head) + ("\n" if head and msg.text else "") + msg.text
    return cut(_URL.sub("[link]", body), limit)


def callback_data(action: str, value: str) -> str:
    """Telegram callback data, kept within its 64 bytes: ``a:<id>`` / ``r:<id>``."""
    data = f"{action[0]}:{value}"
    if len(data.encode()) > TELEGRAM_CALLBACK_BYTES:
        raise ValueError(f"approval id too long for a Telegram button ({len(data.encode())} bytes > 64)")
    return data


# -- Slack: mrkdwn in blocks ----------------------------------------------------------------------


def slack_escape(text: str) -> str:
    """Slack's three control characters; ``<!channel>``-style mentions can then not be formed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(msg: OutMessage) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = []
    title = f"*{slack_escape(msg.title)}*\n" if msg.title else ""
    body = _cut_escaped(title + slack_escape(msg.text), SLACK_TEXT) or " "
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": body}})
    if not msg.reply:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": BADGE[msg.severity]}]})
    if msg.buttons:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": b.label}, "action_id": f"aiwg_{b.action}",
             "value": b.value, **({"style": "primary"} if b.action == "approve" else {"style": "danger"})}
            for b in msg.buttons]})
    return {"text": plain(msg, SLACK_TEXT), "blocks": blocks, "unfurl_links": False, "unfurl_media": False}


# -- Discord: markdown and embeds -----------------------------------------------------------------

_DISCORD_MD = re.compile(r"([\\*_~`|>#\[\]()-])")


def discord_escape(text: str) -> str:
    # markdown, and break mass mentions (allowed_mentions is also set to none)
    return _DISCORD_MD.sub(r"\\\1", text).replace("@everyone", "@\u200beveryone").replace("@here", "@\u200bhere")


def discord(msg: OutMessage) -> dict[str, Any]:
    """A REST message body: content (the fallback) plus an embed; buttons as components."""
    out: dict[str, Any] = {"allowed_mentions": {"parse": []}}
    if msg.reply and not msg.buttons:
        head = f"**{discord_escape(msg.title)}**\n" if msg.title else ""
        out["content"] = cut(head + discord_escape(msg.text), DISCORD_CONTENT)
        return out
    out["content"] = cut(discord_escape(plain(msg, 200).split("\n", 1)[0]), DISCORD_CONTENT)
    embed: dict[str, Any] = {"description": cut(discord_escape(msg.text), DISCORD_EMBED_DESC) or "\u200b",
                             "color": COLOR[msg.severity], "footer": {"text": BADGE[msg.severity]}}
    if msg.title:
        embed["title"] = cut(msg.title, DISCORD_EMBED_TITLE)
    out["embeds"] = [embed]
    if msg.buttons:
        out["components"] = [{"type": 1, "components": [
            {"type": 2, "style": 3 if b.action == "approve" else 4, "label": b.label,
             "custom_id": f"aiwg:{b.action}:{b.value}"[:100]} for b in msg.buttons]}]
    return out


# -- Telegram: HTML parse mode ----------------------------------------------------------------------


def telegram_escape(text: str) -> str:
    return html.escape(text, quote=False)


def _cut_escaped(escaped: str, limit: int) -> str:
    """Cut HTML-escaped text to ``limit`` without splitting an entity such as ``&amp;``."""
    if len(escaped) <= limit:
        return escaped
    keep = escaped[: max(0, limit - len(CUT_MARK))]
    amp = keep.rfind("&")
    if amp != -1 and ";" not in keep[amp:]:
        keep = keep[:amp]
    return keep + CUT_MARK


def telegram(msg: OutMessage) -> dict[str, Any]:
    """sendMessage fields (without chat_id). Cut on the *escaped* text: the limit counts entities' text."""
    parts = []
    if not msg.reply:
        parts.append(f"<i>{telegram_escape(BADGE[msg.severity])}</i>")
    if msg.title:
        parts.append(f"<b>{telegram_escape(msg.title)}</b>")
    head = "\n".join(parts)
    body = _cut_escaped(telegram_escape(msg.text), TELEGRAM_TEXT - len(head) - 1)
    text = (head + "\n" if head else "") + body
    out: dict[str, Any] = {"text": text or " ", "parse_mode": "HTML", "disable_web_page_preview": True}
    if msg.buttons:
        out["reply_markup"] = {"inline_keyboard": [[
            {"text": b.label, "callback_data": callback_data(b.action, b.value)} for b in msg.buttons]]}
    return out


def telegram_plain(msg: OutMessage) -> dict[str, Any]:
    """The fallback when Telegram refuses our HTML: no parse mode, no links."""
    return {"text": plain(msg, TELEGRAM_TEXT) or " ", "disable_web_page_preview": True}


def apprise(msg: OutMessage) -> tuple[str, str]:
    """(title, body) for Apprise, which formats per service itself; plain text, links kept out."""
    title = f"[{msg.severity}] {msg.title}" if msg.title else f"[{msg.severity}] aiwg"
    return title, cut(_URL.sub("[link]", msg.text), APPRISE_BODY)
