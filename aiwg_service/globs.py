"""Path globs, in the two modes the service uses, matched in time linear in the path.

* gitignore mode (``gitignore_regex``, ``compile_gitignore``): watch-path ``ignore`` lists, lenient like
  .gitignore (``**`` counts only as a whole segment, a stray ``[`` is literal, never an error).
* rule mode (``rule_regex``, ``compile_rule``): rule triggers and conditions, with ``{a,b}`` and strict errors,
  so that a typo in a rule is reported at config check instead of silently matching nothing.

Each mode's translator turns a glob into tokens. Most globs have at most one wildcard that crosses ``/`` and at
most one ``*`` per segment; those become one Python regex, which cannot backtrack badly and is fast. The rest
(``a/**/b/**/c/**/d``, ``*a*a*a*b``) would make a backtracking regex exponential in the path, so they are
matched by simulating the glob as an automaton over the path: O(len(path) x len(glob)), whatever the input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Matcher", "compile_gitignore", "compile_rule", "gitignore_regex", "rule_regex"]

#: ``{a,b}{c,d}...`` expands to at most this many alternatives; more is a config error, not a slow match.
MAX_ALTERNATIVES = 256

# token kinds
_LIT, _ONE, _CLASS, _SEG, _ANY, _DIRS = range(6)
#: what each kind is as a regex (literals and classes carry their own text)
_RX = {_ONE: "[^/]", _SEG: "[^/]*", _ANY: ".*", _DIRS: "(?:.*/)?"}


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: int
    text: str = ""  # the literal character, or the class as a regex ("[^a-z]")


Tokens = tuple[_Tok, ...]


def _class_body(body: str) -> str:
    """A glob class body as a regex class body: backslashes and ``[`` are literal."""
    return body.replace("\\", "\\\\").replace("[", "\\[")


# -- gitignore mode -------------------------------------------------------------------------------------------


def _gitignore_tokens(pat: str) -> Tokens:
    out: list[_Tok] = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if c == "*":
            whole_segment = (i == 0 or pat[i - 1] == "/") and (i + 2 >= n or pat[i + 2] == "/")
            if whole_segment and pat.startswith("**", i):
                if i + 2 == n:
                    out.append(_Tok(_ANY))
                    i += 2
                else:
                    out.append(_Tok(_DIRS))
                    i += 3
                continue
            while i < n and pat[i] == "*":
                i += 1
            out.append(_Tok(_SEG))
            continue
        if c == "?":
            out.append(_Tok(_ONE))
        elif c == "[":
            j = i + 1
            if j < n and pat[j] in "!^":
                j += 1
            if j < n and pat[j] == "]":
                j += 1
            while j < n and pat[j] != "]":
                j += 1
            if j >= n:
                out.append(_Tok(_LIT, c))
            else:
                body = pat[i + 1 : j]
                neg = body[:1] in ("!", "^")
                if neg:
                    body = body[1:]
                out.append(_Tok(_CLASS, "[" + ("^" if neg else "") + _class_body(body) + "]"))
                i = j
        elif c == "\\" and i + 1 < n:
            out.append(_Tok(_LIT, pat[i + 1]))
            i += 1
        else:
            out.append(_Tok(_LIT, c))
        i += 1
    return tuple(out)


# -- rule mode ------------------------------------------------------------------------------------------------


def _rule_tokens(pattern: str) -> list[Tokens]:
    """Every alternative the pattern stands for (``{a,b}`` expanded); ValueError for a malformed glob."""
    if not pattern:
        raise ValueError("must not be empty")
    alts: list[list[_Tok]] = [[]]
    i, n = 0, len(pattern)

    def add(*toks: _Tok) -> None:
        for a in alts:
            a.extend(toks)

    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                if pattern.startswith("**/", i):
                    add(_Tok(_DIRS))
                    i += 3
                else:
                    add(_Tok(_ANY))
                    i += 2
                continue
            add(_Tok(_SEG))
        elif c == "?":
            add(_Tok(_ONE))
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            end = pattern.find("]", j)
            if end == -1:
                raise ValueError(f"unclosed '[' at position {i}")
            body = _class_body(pattern[i + 1 : end])
            if body.startswith("!"):
                body = "^" + body[1:]
            add(_Tok(_CLASS, f"[{body}]"))
            i = end + 1
            continue
        elif c == "{":
            end = pattern.find("}", i)
            if end == -1:
                raise ValueError(f"unclosed '{{' at position {i}")
            choices: list[Tokens] = []
            for a in pattern[i + 1 : end].split(","):
                choices.extend(_rule_tokens(a) if a else [()])
            if len(alts) * len(choices) > MAX_ALTERNATIVES:
                raise ValueError(f"expands to more than {MAX_ALTERNATIVES} alternatives")
            alts = [[*a, *ch] for a in alts for ch in choices]
            i = end + 1
            continue
        else:
            add(_Tok(_LIT, c))
        i += 1
    return [tuple(a) for a in alts]


# -- regexes and matchers -------------------------------------------------------------------------------------


def _regex(tokens: Tokens) -> str:
    return "".join(re.escape(t.text) if t.kind == _LIT else t.text if t.kind == _CLASS else _RX[t.kind]
                   for t in tokens)


def _backtracks_badly(tokens: Tokens) -> bool:
    """More than one wildcard that crosses ``/``, or more than one ``*`` in a segment: a backtracking regex can
    then take time exponential (or of high degree) in the path; such globs go to the automaton."""
    if sum(1 for t in tokens if t.kind in (_ANY, _DIRS)) > 1:
        return True
    stars = 0
    for t in tokens:
        if t.kind == _SEG:
            stars += 1
            if stars > 1:
                return True
        elif t.kind == _DIRS or (t.kind == _LIT and t.text == "/"):
            stars = 0
    return False


def gitignore_regex(pat: str) -> str:
    """gitignore mode: one glob (no leading/trailing slash) to a regex; ``*`` never crosses ``/``."""
    return _regex(_gitignore_tokens(pat))


def rule_regex(pattern: str) -> str:
    """Rule mode: a trigger or condition path glob to a regex.

    ``**/`` any directories (or none), ``*`` and ``?`` within one segment, ``[..]``, ``{a,b}``.
    Raises ValueError with the reason for a malformed glob (unclosed ``[`` or ``{``, too many alternatives).
    """
    alts = _rule_tokens(pattern)
    return _regex(alts[0]) if len(alts) == 1 else "(?:" + "|".join(_regex(a) for a in alts) + ")"


class Matcher:
    """One glob (or several, as alternatives), ready to match whole strings."""

    __slots__ = ("_automata", "_rx")

    def __init__(self, alternatives: list[Tokens], dotall: bool) -> None:
        fast = [a for a in alternatives if not _backtracks_badly(a)]
        slow = [a for a in alternatives if _backtracks_badly(a)]
        rx = "|".join(f"(?:{_regex(a)})" for a in fast)
        self._rx = re.compile(rx, re.S if dotall else 0).fullmatch if fast else None
        self._automata = [_Automaton(a, dotall) for a in slow]

    def fullmatch(self, s: str) -> bool:
        if self._rx is not None and self._rx(s) is not None:
            return True
        return any(a.fullmatch(s) for a in self._automata)

    @property
    def linear(self) -> bool:
        """True if this glob needed the automaton (for tests and diagnostics)."""
        return bool(self._automata)


def compile_gitignore(*patterns: str) -> Matcher:
    """Any of the gitignore-mode ``patterns``, as one matcher."""
    return Matcher([_gitignore_tokens(p) for p in patterns], dotall=False)


def compile_rule(pattern: str) -> Matcher:
    return Matcher(_rule_tokens(pattern), dotall=True)


class _Automaton:
    """The glob as a nondeterministic automaton, simulated over the string with a set of states, so each
    character costs at most 2 x len(tokens) steps and nothing ever backtracks.

    State ``i`` means "tokens[:i] matched"; state ``-1 - i`` means "inside the ``**/`` at i": some characters
    were read and only a ``/`` can end it.
    """

    __slots__ = ("classes", "dotall", "n", "tokens")

    def __init__(self, tokens: Tokens, dotall: bool) -> None:
        self.tokens = tokens
        self.dotall = dotall
        self.n = len(tokens)
        self.classes = {i: re.compile(t.text).fullmatch for i, t in enumerate(tokens) if t.kind == _CLASS}

    def _close(self, states: set[int]) -> set[int]:
        """Add the states reachable without reading: a ``*``, ``**`` or ``**/`` may match nothing."""
        todo = [i for i in states if i >= 0]
        while todo:
            i = todo.pop()
            if i < self.n and self.tokens[i].kind in (_SEG, _ANY, _DIRS) and i + 1 not in states:
                states.add(i + 1)
                todo.append(i + 1)
        return states

    def fullmatch(self, s: str) -> bool:
        toks, n = self.tokens, self.n
        states = self._close({0})
        for c in s:
            any_char = c != "\n" or self.dotall
            nxt: set[int] = set()
            for i in states:
                if i < 0:  # inside a **/
                    if any_char:
                        nxt.add(i)
                    if c == "/":
                        nxt.add(-i)  # -1 - i is the token's index, so -i is the state after it
                    continue
                if i == n:
                    continue
                t = toks[i]
                k = t.kind
                if k == _LIT:
                    if c == t.text:
                        nxt.add(i + 1)
                elif k == _ONE:
                    if c != "/":
                        nxt.add(i + 1)
                elif k == _CLASS:
                    if self.classes[i](c):
                        nxt.add(i + 1)
                elif k == _SEG:
                    if c != "/":
                        nxt.add(i)
                elif k == _ANY:
                    if any_char:
                        nxt.add(i)
                else:  # _DIRS read its first character
                    if any_char:
                        nxt.add(-1 - i)
                    if c == "/":
                        nxt.add(i + 1)
            if not nxt:
                return False
            states = self._close(nxt)
        return n in states
