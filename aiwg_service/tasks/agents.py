"""Agent profiles -> argv, child environment, stream-json parsing, process identity.

Pure functions and a small incremental parser: no asyncio here, so the parser
can be fed from the supervisor's read loop and unit-tested on bytes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import signal
from collections.abc import Callable, Mapping

import msgspec

from ..childenv import SAFE_ENV, sanitized
from .model import AgentProfile

__all__ = [
    "BUILTIN_PROFILES",
    "SAFE_ENV",
    "StreamJsonParser",
    "build_argv",
    "child_env",
    "kill_orphan_group",
    "locate_agent",
    "proc_identity",
    "profile_lookup",
    "prompt_stdin",
]

BUILTIN_PROFILES: dict[str, AgentProfile] = {
    "claude": AgentProfile(kind="claude"),
    "shell": AgentProfile(kind="shell"),
}



def profile_lookup(custom: Mapping[str, AgentProfile]) -> Callable[[str], AgentProfile]:
    """Name -> profile resolver: configured profiles win over the built-ins; KeyError if unknown."""

    def lookup(name: str) -> AgentProfile:
        p = custom.get(name) or BUILTIN_PROFILES.get(name)
        if p is None:
            raise KeyError(f"unknown agent profile {name!r}")
        return p

    return lookup


def build_argv(profile: AgentProfile, prompt: str, subagent: str | None = None,
               max_budget_usd: float | None = None) -> list[str]:
    """The argv to exec for ``prompt``; the prompt is always one argv element, never shell-parsed
    (except by the ``shell`` kind, whose whole point is that). ``subagent`` (a plain identifier,
    checked by the protocol) becomes ``--agent NAME`` for the ``claude`` kind; ``max_budget_usd`` goes
    to claude as ``--max-budget-usd`` unless the profile says its claude lacks the flag (``budget_flag``).

    For ``claude`` the prompt is not in argv at all: it goes on stdin (:func:`prompt_stdin`), so it can be
    of any size (an argv word stops at 128 KiB) and a prompt made from a file named
    ``--permission-mode=bypassPermissions`` can never be read as an option. A ``command`` profile's
    ``{prompt}`` is an argv element of its own (config check refuses ``--task={prompt}``), replaced whole,
    never glued to an option.
    """
    if profile.command:
        return [prompt if part == "{prompt}" else part for part in profile.command] + list(profile.args)
    if profile.kind == "shell":
        return ["/bin/sh", "-c", prompt, *profile.args]
    argv = ["claude", "-p", "--output-format", "stream-json", "--verbose"]
    if profile.model:
        argv += ["--model", profile.model]
    if profile.max_turns is not None:
        argv += ["--max-turns", str(profile.max_turns)]
    if profile.allowed_tools:
        argv += ["--allowedTools", ",".join(profile.allowed_tools)]
    if profile.permission_mode:
        argv += ["--permission-mode", profile.permission_mode]
    if subagent:
        argv += ["--agent", subagent]
    if max_budget_usd is not None and profile.budget_flag:
        argv += ["--max-budget-usd", f"{max_budget_usd:g}"]
    return [*argv, *profile.args]


#: Where Claude Code's installers put ``claude`` besides PATH (the native installer, ``claude migrate-installer``).
#: A user manager's PATH rarely has them, so a service under systemd looks there too.
CLAUDE_HOMES = (".local/bin", ".claude/local")


def locate_agent(name: str, path: str | None, home: str | None = None) -> str | None:
    """The executable an agent's argv[0] runs: PATH first, then, for ``claude``, its installers' places."""
    if "/" in name:
        return name if os.access(name, os.X_OK) and not os.path.isdir(name) else None
    found = shutil.which(name, path=path)
    if found is not None or name != "claude":
        return found
    home = home if home is not None else os.environ.get("HOME") or os.path.expanduser("~")
    for d in CLAUDE_HOMES:
        cand = os.path.join(home, d, name)
        if os.access(cand, os.X_OK) and not os.path.isdir(cand):
            return cand
    return None


def prompt_stdin(profile: AgentProfile, prompt: str) -> str | None:
    """What the agent reads on stdin: the prompt, unless its argv carries it (``shell``, ``{prompt}``)."""
    if profile.command:
        return None if "{prompt}" in profile.command else prompt
    return None if profile.kind == "shell" else prompt


def child_env(
    profile: AgentProfile, task_id: str, parent: Mapping[str, str] | None = None, *, systemd: bool = False
) -> dict[str, str]:
    """Sanitized environment: the safe base set, ``LC_*``, the profile's ``env`` names, ``AIWG_TASK_ID``.

    With ``systemd`` the user-bus address is kept as well, since ``systemd-run --user``
    needs it to reach the manager when it is not at the default path.
    """
    names = [*profile.env, "DBUS_SESSION_BUS_ADDRESS"] if systemd else profile.env
    env = sanitized(names, parent)
    env["AIWG_TASK_ID"] = task_id
    return env


# --- stream-json ---------------------------------------------------------------


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class _Block(msgspec.Struct):
    type: str = ""
    text: str | None = None


class _Message(msgspec.Struct):
    id: str | None = None
    content: list[_Block] | str = []
    usage: _Usage | None = None


class _Line(msgspec.Struct):
    """The fields we use from any stream-json line; the rest is skipped by msgspec."""

    type: str = ""
    subtype: str | None = None
    session_id: str | None = None
    model: str | None = None
    result: str | None = None
    is_error: bool = False
    # Raw: a malformed cost (a string, an object) must not cost us the whole result line.
    total_cost_usd: msgspec.Raw = msgspec.Raw()
    num_turns: int | None = None
    usage: _Usage | None = None
    # Raw: only decoded for assistant lines; tool results ("user") can be large.
    message: msgspec.Raw = msgspec.Raw()  # (msgspec cannot put Raw in a union with None)


_line_decoder = msgspec.json.Decoder(_Line)
_msg_decoder = msgspec.json.Decoder(_Message)


class StreamJsonParser:
    """Incremental parser for ``claude --output-format stream-json --verbose``.

    Feed it raw bytes as they arrive.  Lines that are not JSON (or not the shape
    we expect) are counted and ignored: the log keeps them, the parser never fails.
    """

    #: Longest line we buffer; longer ones (huge tool output) are skipped whole.
    MAX_LINE = 16 * 1024 * 1024
    #: Longest result text kept on the task (the full text is in the log).
    MAX_RESULT = 8000

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skipping = False
        self.session_id: str | None = None
        self.model: str | None = None
        self.result: str | None = None
        self.result_subtype: str | None = None
        self.is_error: bool = False
        self.cost_usd: float | None = None
        self.num_turns: int | None = None
        self.usage: _Usage | None = None
        self.last_text: str | None = None
        self.garbage_lines = 0
        self.json_lines = 0
        #: ``reported`` | ``missing`` | ``malformed``: what the result line said about the cost.
        self.cost_status: str | None = None
        self._msg_usage: dict[str, _Usage] = {}
        #: USD per million tokens (input, output, cache write, cache read), to estimate the cost of a
        #: run while it goes (stream-json reports the real figure only at the end).
        self.prices: tuple[float, float, float, float] | None = None

    def feed(self, data: bytes) -> None:
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                rest = data[start:]
                if not self._skipping:
                    self._buf += rest
                    if len(self._buf) > self.MAX_LINE:
                        self._buf.clear()
                        self._skipping = True
                        self.garbage_lines += 1
                return
            if self._skipping:
                self._skipping = False
            elif self._buf:
                self._buf += data[start:nl]
                self._line(bytes(self._buf))
                self._buf.clear()
            else:
                self._line(data[start:nl])
            start = nl + 1

    def close(self) -> None:
        """End of stream: a final line without newline still counts."""
        if self._buf and not self._skipping:
            self._line(bytes(self._buf))
        self._buf.clear()

    def _line(self, raw: bytes) -> None:
        raw = raw.strip()
        if not raw:
            return
        if raw[:1] != b"{":
            self.garbage_lines += 1
            return
        try:
            line = _line_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.garbage_lines += 1
            return
        self.json_lines += 1
        if line.session_id:
            self.session_id = line.session_id
        t = line.type
        if t == "system":
            if line.model:
                self.model = line.model
        elif t == "assistant" and len(line.message):
            self._assistant(line.message)
        elif t == "result":
            self.result_subtype = line.subtype
            self.is_error = bool(line.is_error) or (line.subtype not in (None, "success"))
            if line.result is not None:
                self.result = line.result[: self.MAX_RESULT]
            self._cost(line.total_cost_usd)
            if line.num_turns is not None:
                self.num_turns = line.num_turns
            if line.usage is not None:
                self.usage = line.usage

    def _cost(self, raw: msgspec.Raw) -> None:
        if not len(raw):
            self.cost_status = "missing"
            return
        try:
            v = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            v = None
        if v is None and bytes(raw).strip() == b"null":
            self.cost_status = "missing"
        elif isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 and v == v and v != float("inf"):
            self.cost_usd = float(v)
            self.cost_status = "reported"
        else:
            self.cost_status = "malformed"

    def running_cost(self) -> float | None:
        """The best figure for what the run has cost so far: the reported total once there is one,
        else an estimate from token usage when prices are known."""
        if self.cost_usd is not None:
            return self.cost_usd
        if self.prices is None or not self._msg_usage:
            return None
        pi, po, pw, pr = self.prices
        tot = 0.0
        for u in self._msg_usage.values():
            tot += (u.input_tokens * pi + u.output_tokens * po + u.cache_creation_input_tokens * pw
                    + u.cache_read_input_tokens * pr)
        return tot / 1e6

    def _assistant(self, raw: msgspec.Raw) -> None:
        try:
            msg = _msg_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.garbage_lines += 1  # JSON, but not the shape claude emits
            return
        if isinstance(msg.content, str):
            self.last_text = msg.content[: self.MAX_RESULT]
        else:
            texts = [b.text for b in msg.content if b.type == "text" and b.text]
            if texts:
                self.last_text = "\n".join(texts)[: self.MAX_RESULT]
        if msg.usage is not None:
            # claude repeats a message (same id, same usage) once per content block.
            self._msg_usage[msg.id or f"#{len(self._msg_usage)}"] = msg.usage

    def total_usage(self) -> _Usage | None:
        """The result line's usage, else the sum over distinct assistant messages (run was cut short)."""
        if self.usage is not None:
            return self.usage
        if not self._msg_usage:
            return None
        tot = _Usage()
        for u in self._msg_usage.values():
            tot.input_tokens += u.input_tokens
            tot.output_tokens += u.output_tokens
            tot.cache_creation_input_tokens += u.cache_creation_input_tokens
            tot.cache_read_input_tokens += u.cache_read_input_tokens
        return tot

    def summary(self) -> str | None:
        return self.result if self.result is not None else self.last_text


# --- process identity and orphan cleanup -------------------------------------

_boot_id: str | None = None


def _get_boot_id() -> str:
    global _boot_id
    if _boot_id is None:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _boot_id = f.read().strip()
        except OSError:
            _boot_id = "?"
    return _boot_id


def proc_identity(pid: int) -> str | None:
    """``"<boot_id>:<starttime>"`` of a live pid, None if it does not exist.

    starttime (field 22 of /proc/PID/stat, clock ticks since boot) plus the boot id
    identify a process uniquely, so a recycled pid is never mistaken for ours.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parens: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] == b"Z":
        return None  # zombie: already dead, only waiting to be reaped
    return f"{_get_boot_id()}:{int(fields[19])}"


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait (without polling) for a non-child pid to exit, via pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except OSError as e:
        return e.errno == errno.ESRCH
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        return bool(p.poll(timeout * 1000))
    finally:
        os.close(fd)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_orphan_group(pid: int, identity: str | None, grace_s: float = 2.0) -> bool:
    """Kill the process group a previous service life started, if it is provably ours.

    - leader alive with the recorded identity: ours -> SIGTERM, grace, SIGKILL the group;
    - leader alive with another identity: the pid was recycled -> leave it alone;
    - leader gone: Linux does not reuse a pid while it is still some group's pgid,
      so any members left in group ``pid`` are ours -> SIGKILL them.
    Returns True if something was signalled.
    """
    if pid <= 1:
        return False
    ident = proc_identity(pid)
    if ident is not None:
        if identity is None or ident != identity:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        _wait_gone(pid, grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        return True
    if _group_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        return True
    return False
