"""Rule regexes with a time limit: a backtracking pattern must not hold the event loop.

A rule's regex runs against text an attacker may choose (a file name, a webhook payload). ``^in/(a+)+$``
against a crafted name takes longer than the watchdog allows with ``re``. The ``regex`` package evaluates
with a timeout; a match that runs out of time counts as no match, is reported in the run's trace, and is
counted in the engine's health.
"""

from __future__ import annotations

import logging
import time

import regex

log = logging.getLogger("aiwg.automation")

#: the longest one match may take before it is given up: well under the 10 ms a ping may wait behind it
TIMEOUT_S = 0.005
error = regex.error


class RegexTimeout(Exception):
    def __init__(self, pattern: str) -> None:
        super().__init__(f"the regular expression {pattern!r} ran out of time ({TIMEOUT_S * 1000:g} ms) on this "
                         f"input and counts as no match; simplify it (nested repetition such as (a+)+ backtracks)")


class UserRegex:
    """A compiled rule regex; ``search`` answers within ``TIMEOUT_S`` or raises ``RegexTimeout``.

    While the engine dispatches one event, every regex of every rule shares one budget of ``TIMEOUT_S``
    (``deadline``, set by the engine around each dispatch): a file.batch of a hundred crafted names, or
    twenty rules with the same bad pattern, cost the loop that much once, not once per match.
    """

    __slots__ = ("_rx", "pattern")
    timeouts = 0  # across all rule regexes: shown in automation health
    #: monotonic deadline of the event being dispatched (None outside a dispatch)
    deadline: float | None = None

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._rx = regex.compile(pattern)  # regex.error for a bad pattern

    def search(self, text: str) -> bool:
        limit = TIMEOUT_S
        if UserRegex.deadline is not None:
            limit = min(limit, UserRegex.deadline - time.monotonic())
        try:
            if limit <= 0:
                raise TimeoutError
            return self._rx.search(text, timeout=limit) is not None
        except TimeoutError:
            UserRegex.timeouts += 1
            log.warning("rule regex %r timed out on a %d-character input", self.pattern[:200], len(text))
            raise RegexTimeout(self.pattern) from None

