"""The session side of the fake claude: where claude keeps sessions, and how it refuses bad ids.

Claude Code keeps a session as ``~/.claude/projects/<cwd with every non-alphanumeric as '-'>/<id>.jsonl``
(``$CLAUDE_CONFIG_DIR`` instead of ``~/.claude`` when set), so a session can only be resumed from the
directory it was started in.  The fake does the same, with one JSON line per turn, so a test can delete a
session file and see the service notice.  The error texts are claude's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path


class Refused(Exception):
    """claude would print this on stderr and exit 1."""


def flag(argv: list[str], name: str) -> str | None:
    if name in argv:
        i = argv.index(name)
        return argv[i + 1] if i + 1 < len(argv) else None
    return None


def config_dir() -> Path:
    env = os.environ.get("CLAUDE_CONFIG_DIR")
    return Path(env) if env else Path.home() / ".claude"


def project_dir(cwd: str | None = None) -> Path:
    real = os.path.realpath(cwd or os.getcwd())
    return config_dir() / "projects" / re.sub(r"[^A-Za-z0-9]", "-", real)


def record_call(argv: list[str]) -> None:
    """Append this run's argv, cwd and pid to ``fake-calls.jsonl`` (what tests read back)."""
    d = config_dir()
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "fake-calls.jsonl", "a") as f:
        f.write(json.dumps({"argv": argv, "cwd": os.getcwd(), "pid": os.getpid(), "time": time.time()}) + "\n")


class Session:
    def __init__(self, sid: str, path: Path, turns: list[dict[str, str]], forked_from: str | None = None) -> None:
        self.id = sid
        self.path = path
        self.turns = turns
        self.forked_from = forked_from

    def begin(self, prompt: str) -> None:
        """Record the user's message at once, as claude does: a run cut short still leaves a session."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({"prompt": prompt, "sessionId": self.id}) + "\n")

    def describe(self) -> str:
        earlier = " | ".join(t["prompt"][:60] for t in self.turns)
        fork = f" forked from {self.forked_from}" if self.forked_from else ""
        return f"(turn {len(self.turns) + 1} of session {self.id}{fork}; earlier: {earlier or '-'})"

    def add_turn(self, prompt: str, answer: str) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"answer": answer, "sessionId": self.id}) + "\n")
        self.turns.append({"prompt": prompt, "answer": answer})


def _load(path: Path) -> list[dict[str, str]]:
    """The user messages so far (a line per message, a line per answer)."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{"prompt": r["prompt"]} for r in lines if "prompt" in r]


def open_session(argv: list[str]) -> Session | None:
    """The session this run continues or starts, or None when no session flag was given."""
    new_id = flag(argv, "--session-id")
    resume = flag(argv, "--resume") or flag(argv, "-r")
    fork = "--fork-session" in argv
    pdir = project_dir()
    if new_id is not None:
        try:
            uuid.UUID(new_id)
        except ValueError:
            raise Refused("Error: Invalid session ID. Must be a valid UUID.") from None
    if resume is not None:
        src = pdir / f"{resume}.jsonl"
        if not src.exists():
            raise Refused(f"No conversation found with session ID: {resume}")
        if not fork:
            if new_id is not None:
                raise Refused("Error: --session-id can only be used with --continue or --resume "
                              "if --fork-session is also specified.")
            return Session(resume, src, _load(src))
        sid = new_id or str(uuid.uuid4())
        dst = pdir / f"{sid}.jsonl"
        shutil.copyfile(src, dst)
        return Session(sid, dst, _load(dst), forked_from=resume)
    if fork:
        raise Refused("Error: --fork-session requires --resume or --continue")
    if new_id is not None:
        path = pdir / f"{new_id}.jsonl"
        if path.exists():
            raise Refused(f"Error: Session ID {new_id} is already in use.")
        return Session(new_id, path, [])
    if "--agent" in argv:
        sid = str(uuid.uuid4())
        return Session(sid, pdir / f"{sid}.jsonl", [])
    return None


# --- interactive mode ----------------------------------------------------------------------------

PROMPT = "> "
BUSY = "✻ Thinking… (esc to interrupt)"


def interactive(argv: list[str]) -> int:
    """A line-oriented stand-in for claude's TUI: a prompt, a busy line while it works, an answer.

    Words in a line steer it as in print mode (``sleep=S``); ``/exit`` (or EOF) quits, ``exit=N``
    quits with status N.  The initial prompt (the last non-flag argument) is answered first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # claude's TUI takes Ctrl-C itself
    agent = flag(argv, "--agent")
    try:
        session = open_session(argv) or Session(str(uuid.uuid4()), project_dir() / "x.jsonl", [])
    except Refused as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    session.path = project_dir() / f"{session.id}.jsonl"
    print(f"fake claude (interactive) session {session.id}" + (f" agent {agent}" if agent else ""), flush=True)
    print(f"cwd: {os.getcwd()}", flush=True)
    takes_value = {"--session-id", "--resume", "-r", "--agent", "--model", "--permission-mode",
                   "--allowedTools", "--max-turns"}
    first = argv[argv.index("--") + 1] if "--" in argv and argv.index("--") + 1 < len(argv) else None
    skip = False
    for a in ([] if first is not None else argv):
        if skip:
            skip = False
        elif a in takes_value:
            skip = True
        elif not a.startswith("-"):
            first = a
    pending = [first] if first else []
    while True:
        if pending:
            line = pending.pop()
            print(PROMPT + line, flush=True)
        else:
            sys.stdout.write(PROMPT)
            sys.stdout.flush()
            raw = sys.stdin.readline()
            if not raw:
                return 0
            line = raw.strip()
        if not line:
            continue
        if line == "/exit":
            return 0
        words = line.split()
        code = next((w.split("=", 1)[1] for w in words if w.startswith("exit=")), None)
        if code is not None:
            return int(code)
        sys.stdout.write(BUSY)
        sys.stdout.flush()
        sleep = next((w.split("=", 1)[1] for w in words if w.startswith("sleep=")), None)
        if sleep:
            time.sleep(float(sleep))
        answer = f"Done: {line} {session.describe()}"
        if "probe" in words:  # what a confined session can do: the JSON goes to report=PATH (a pane wraps lines)
            import fake_probe

            found = fake_probe.run(words)
            report = next((w.split("=", 1)[1] for w in words if w.startswith("report=")), None)
            if report:
                with open(report, "w") as f:
                    json.dump(found, f)
            answer = "Done: probed"
        session.begin(line)
        session.add_turn(line, answer)
        sys.stdout.write("\r\033[K" + answer + "\n")
        sys.stdout.flush()
