"""Extra behaviours of tests/fake_claude.py for re-adoption and budget tests (kept apart so the
fake's other users can extend it without conflicts).  Steered by words in the prompt:

  ticks=N     N assistant messages "tick I", each a distinct message with usage (output_tokens=tok),
              so the cost estimated from usage rises as they come; tick=S seconds apart (default 0.1)
  tok=N       output tokens per tick (default 1000)
  cost=X      the result's total_cost_usd (default 0.0123)
  no-cost     the result line has no total_cost_usd
  bad-cost    the result line's total_cost_usd is not a number
  long=N      the result text is N characters long (lines of "word")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def _opt(words: list[str], key: str) -> str | None:
    for w in words:
        if w.startswith(key + "="):
            return w.split("=", 1)[1]
    return None


def ticks(words: list[str], sid: str, model: str, out: Callable[[dict[str, Any]], None]) -> None:
    n = int(_opt(words, "ticks") or 0)
    gap = float(_opt(words, "tick") or 0.1)
    tok = int(_opt(words, "tok") or 1000)
    for i in range(n):
        msg = {"id": f"msg_tick_{i}", "role": "assistant", "model": model,
               "content": [{"type": "text", "text": f"tick {i}"}],
               "usage": {"input_tokens": 0, "output_tokens": tok, "cache_creation_input_tokens": 0,
                         "cache_read_input_tokens": 0}}
        out({"type": "assistant", "message": msg, "session_id": sid})
        if i + 1 < n:
            time.sleep(gap)


def adjust_result(words: list[str], result: dict[str, Any]) -> None:
    cost = _opt(words, "cost")
    if cost is not None:
        result["total_cost_usd"] = float(cost)
    if "no-cost" in words:
        result.pop("total_cost_usd", None)
    if "bad-cost" in words:
        result["total_cost_usd"] = "lots"
    long = _opt(words, "long")
    if long is not None:
        n = int(long)
        result["result"] = ("word " * (n // 5 + 1))[:n]
