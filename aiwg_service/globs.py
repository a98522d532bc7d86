"""Path globs to regular expressions, in the two modes the service uses.

* gitignore mode (``gitignore_regex``): watch-path ``ignore`` lists, lenient like .gitignore.
* rule mode (``rule_regex``): rule triggers and conditions, with ``{a,b}`` and strict errors so that a typo in a
  rule is reported at config check instead of silently matching nothing.

Both modes keep ``*`` and ``?`` inside one path segment.
"""

from __future__ import annotations

import re

__all__ = ["gitignore_regex", "rule_regex"]


def gitignore_regex(pat: str) -> str:
    """gitignore mode: one glob (no leading/trailing slash) to a regex; ``*`` never crosses ``/``.

    ``**`` counts only as a whole segment, a backslash escapes, a stray ``[`` is taken literally: never an error,
    because ignore lists come from users' habits with .gitignore.
    """
    out: list[str] = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if c == "*":
            whole_segment = (i == 0 or pat[i - 1] == "/") and (i + 2 == n or pat[i + 2] == "/")
            if whole_segment and pat.startswith("**", i):
                if i + 2 == n:
                    out.append(".*")
                    i += 2
                else:
                    out.append("(?:.*/)?")
                    i += 3
                continue
            while i < n and pat[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pat[j] in "!^":
                j += 1
            if j < n and pat[j] == "]":
                j += 1
            while j < n and pat[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
            else:
                body = pat[i + 1 : j]
                neg = body[:1] in ("!", "^")
                if neg:
                    body = body[1:]
                body = body.replace("\\", "\\\\").replace("[", "\\[")
                out.append("[" + ("^" if neg else "") + body + "]")
                i = j
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pat[i + 1]))
            i += 1
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def rule_regex(pattern: str) -> str:
    """Rule mode: a trigger or condition path glob to a regex.

    ``**/`` any directories (or none), ``*`` and ``?`` within one segment, ``[..]``, ``{a,b}``.
    Raises ValueError with the reason for a malformed glob (unclosed ``[`` or ``{``).
    """
    if not pattern:
        raise ValueError("must not be empty")
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                if pattern.startswith("**/", i):
                    out.append("(?:.*/)?")
                    i += 3
                else:
                    out.append(".*")
                    i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            end = pattern.find("]", j)
            if end == -1:
                raise ValueError(f"unclosed '[' at position {i}")
            body = pattern[i + 1:end].replace("\\", "\\\\")
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append(f"[{body}]")
            i = end + 1
            continue
        elif c == "{":
            end = pattern.find("}", i)
            if end == -1:
                raise ValueError(f"unclosed '{{' at position {i}")
            alts = pattern[i + 1:end].split(",")
            out.append("(?:" + "|".join(rule_regex(a) if a else "" for a in alts) + ")")
            i = end + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)
