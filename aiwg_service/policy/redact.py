"""Secret shapes, found in text and replaced before anything is stored or logged.

Modelled on gitleaks' rules (written here, not copied): provider token formats (GitHub, GitLab, Slack, Discord,
Telegram, AWS key ids and secret keys, Google, OpenAI, Anthropic, Stripe, npm and PyPI tokens, JWTs),
credentials in URLs, bearer tokens, private key blocks, and ``name=value`` pairs whose name says secret. Every
pattern is linear-time, and one combined search rejects clean text with a few substring tests (the two shapes
without a prefix run only on text long enough to hold one), so redacting traces and log lines costs little
when there is nothing to hide.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "[REDACTED]"

# (name, needles, pattern, group to keep before the secret: 0 = mask the whole match). A secret part written as
# ``$NAME`` refers to a variable: it names a secret, it does not hold one. A rule runs only when
# one of its needles (lower case) is in the lower-cased text: most text has none, and a substring test is cheap.
_RULES: list[tuple[str, tuple[str, ...], str, int]] = [
    ("private key", ("private key",), r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY( BLOCK)?-----[\s\S]{0,20000}?"
                                      r"(?:-----END[A-Z0-9 ]{0,40}PRIVATE KEY( BLOCK)?-----|\Z)", 0),
    ("GitHub token", ("gh", "github_pat_"),
     r"\b(?:gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{40,255})\b", 0),
    ("Slack token", ("xox", "xapp-"), r"\b(?:xox[abposr]-[A-Za-z0-9-]{10,250}|xapp-\d-[A-Za-z0-9-]{10,250})\b", 0),
    ("Slack webhook", ("hooks.slack.com",),
     r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{10,300}", 0),
    ("Discord webhook", ("/api/webhooks/",),
     r"https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/\d{5,30}/[\w-]{10,200}", 0),
    ("AWS access key id", ("akia", "asia", "abia", "acca"), r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b", 0),
    ("GitLab token", ("glpat-", "gldt-", "glrt-", "glptt-", "glsoat-", "glft-"),
     r"\bgl(?:pat|dt|rt|ptt|soat|ft)-[A-Za-z0-9_-]{20,100}\b", 0),
    ("Google API key", ("aiza",), r"\bAIza[0-9A-Za-z_-]{35}\b", 0),
    ("npm token", ("npm_",), r"\bnpm_[A-Za-z0-9]{36}\b", 0),
    ("PyPI token", ("pypi-",), r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,300}", 0),
    ("Stripe key", ("k_live_", "k_test_"), r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{20,250}\b", 0),
    ("API key", ("sk-",), r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,300}\b", 0),
    ("Telegram bot token", (":aa",), r"\b\d{6,12}:AA[A-Za-z0-9_-]{30,40}\b", 0),
    ("JWT", ("eyj",), r"\beyJ[A-Za-z0-9_-]{8,2000}\.eyJ[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{8,2000}", 0),
    ("URL credentials", ("://",),
     r"(\b[A-Za-z][A-Za-z0-9+.-]{0,20}://[^/\s:@\"'<>]{1,200}:)(?!\$)[^/\s@\"'<>]{1,300}(?=@)", 1),
    ("bearer token", ("bearer",), r"(\b[Bb]earer\s+)(?!\$)[A-Za-z0-9._~+/=-]{12,2000}", 1),
    ("authorization header", ("authorization",),
     r"(\b[Aa]uthorization[\"']?\s*[:=]\s*[\"']?(?:[A-Za-z]{1,20}\s+)?)(?!\$)[^\s\"',;]{8,2000}", 1),
    # name=value or name: value, where the name says secret; the value must not be an environment variable's
    # name (``token=GITHUB_TOKEN`` names a secret, it does not hold one)
    ("secret assignment", _KEYWORDS := ("key", "secret", "token", "passw", "credential"),
     r"(\b[A-Za-z0-9_.-]{0,40}(?i:api[_-]?key|secret|token|passw(?:or)?d|passwd|access[_-]?key|private[_-]?key|"
     r"credential)s?[\"']?\s*[=:]\s*[\"']?)(?![A-Z][A-Z0-9_]*\b[\"']?(?:\s|$|,))(?!\$)[^\s\"',;]{8,2000}", 1),
    # command-line flags: --api-key VALUE, --token=VALUE
    ("secret option", _KEYWORDS,
     r"(?<![\w-])(--?[A-Za-z0-9-]{0,40}(?i:key|secret|token|passw(?:or)?d|credential)s?(?:=|\s+))"
     r"(?![A-Z][A-Z0-9_]*\b)(?![-$])[^\s\"',;]{6,2000}", 1),
]

# Shapes with no fixed prefix to look for first. A regex over the whole text would cost every log line ten
# times what the prefixed rules do, so the text is cut into words of the token's alphabet (``str.translate`` and
# ``split``, in C) and only words of the right length are matched.
def _words_table(keep: str) -> dict[int, str]:
    return {c: " " for c in range(128) if chr(c) not in keep}


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_NOPREFIX: list[tuple[str, dict[int, str], tuple[int, int], re.Pattern[str]]] = [
    # 40 characters of base64 with upper, lower and a digit, standing alone (a git sha is lower-case hex);
    # "=" stays in the word so that a longer base64 blob is not taken for one
    ("AWS secret access key", _words_table(_B64 + "/+="), (40, 40),
     re.compile(r"(?=[^a-z]*[a-z])(?=[^A-Z]*[A-Z])(?=[^0-9]*[0-9])[A-Za-z0-9/+]{40}")),
    ("Discord bot token", _words_table(_B64 + "_-."), (58, 76),
     re.compile(r"[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,40}")),
]
_NOPREFIX_MIN = 40
_ANY_TOKEN = _words_table(_B64 + "/+=_-.")


def _unprefixed(text: str) -> list[tuple[str, str]]:
    """``(name, token)`` for each secret of a shape without a prefix in ``text``."""
    if len(text) < _NOPREFIX_MIN:
        return []
    long = [w for w in text.translate(_ANY_TOKEN).split() if len(w) >= _NOPREFIX_MIN]
    if not long:  # most text: one pass in C and nothing to look at
        return []
    out = []
    for name, table, (lo, hi), rx in _NOPREFIX:
        for word in " ".join(long).translate(table).split():
            if lo <= len(word) <= hi and rx.fullmatch(word):
                out.append((name, word))
    return out

_COMPILED = [(name, re.compile(rx), keep) for name, _needles, rx, keep in _RULES]
_BY_NEEDLE: dict[str, list[int]] = {}
for _i, (_name, _needles, _rx, _keep) in enumerate(_RULES):
    for _n in _needles:
        _BY_NEEDLE.setdefault(_n, []).append(_i)
_NEEDLES = tuple(_BY_NEEDLE)


def _candidates(text: str) -> list[tuple[str, re.Pattern[str], int]]:
    low = text.lower()
    hits = [n for n in _NEEDLES if n in low]  # substring tests beat a regex alternation several times over
    if not hits:
        return []
    wanted = sorted({i for n in hits for i in _BY_NEEDLE[n]})
    return [_COMPILED[i] for i in wanted]


def find(text: str) -> str | None:
    """The name of the first secret shape in ``text``, or None."""
    for name, rx, _keep in _candidates(text):
        if rx.search(text):
            return name
    found = _unprefixed(text)
    return found[0][0] if found else None


def redact(text: str) -> str:
    """``text`` with every secret replaced by ``[REDACTED]`` (what names it, like ``token=``, stays)."""
    for _name, rx, keep in _candidates(text):
        text = rx.sub(lambda m, k=keep: m.group(k) + MASK, text) if keep else rx.sub(MASK, text)
    for _name, token in _unprefixed(text):
        text = text.replace(token, MASK)
    return text


def redact_obj(obj: Any) -> Any:
    """Every string inside a JSON-like value, redacted; the structure is kept."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_obj(v) for v in obj]
    return obj


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def escape_controls(text: str) -> str:
    """Control characters as visible escapes (``\\n``, ``\\x1b``): one log record stays one line, and a file
    name cannot forge a second one."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(m.group(), f"\\x{ord(m.group()):02x}"),
                        text)
