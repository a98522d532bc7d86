"""Extract the manual's runnable examples and run them against a real service.

The convention (docs/README.md says it for writers): a fenced block whose info string is ``sh example`` is
run; its lines starting with ``$ `` are commands (with their here-document, if any), the lines after a
command (up to the next ``$ ``) are the output it must print (stdout and stderr together). A command shown
without output must exit 0. In the output:

- ``…`` matches any text within a line; a line that is only ``…`` matches any number of lines;
- ``<name>`` (e.g. ``<task-id>``) matches one word and remembers it: later commands have ``<name>``
  replaced by it;
- runs of spaces count as one (tables align to what they hold), and ``/home/me`` is the example's home.

Every block of one file runs in order, in one scratch home (``~``), each starting where the last one
ended (``cd`` carries over). A command whose output does not match (yet) is run again until it does or
its deadline passes: an example shows the state the service reaches, which may take a moment.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^```sh example[^\n]*\n(.*?)^```\s*$", re.M | re.S)
HEREDOC = re.compile(r"<<-?\s*'?([A-Za-z_]+)'?")
PLACEHOLDER = re.compile(r"<([a-z][a-z0-9-]*)>")
EXAMPLE_HOME = "/home/me"


@dataclass
class Command:
    text: str
    expected: list[str]
    line: int  # in the file, for the failure message


@dataclass
class Scenario:
    path: Path
    commands: list[Command] = field(default_factory=list)


def extract(path: Path) -> Scenario:
    text = path.read_text()
    sc = Scenario(path)
    for m in FENCE.finditer(text):
        first = text.count("\n", 0, m.start(1)) + 1
        cur: Command | None = None
        heredoc: str | None = None
        for i, raw in enumerate(m.group(1).splitlines()):
            if heredoc is not None:  # a here-document belongs to its command, up to its terminator
                assert cur is not None
                cur.text += "\n" + raw
                if raw == heredoc:
                    heredoc = None
            elif raw.startswith("$ "):
                cur = Command(raw[2:], [], first + i)
                sc.commands.append(cur)
                doc = HEREDOC.search(raw)
                heredoc = doc.group(1) if doc else None
            elif cur is not None:
                cur.expected.append(raw)
            elif raw.strip():
                raise AssertionError(f"{path}:{first + i}: output before any `$ ` command")
    return sc


def _norm(line: str) -> str:
    return " ".join(line.split())


def _line_regex(line: str, home: str, captures: dict[str, str]) -> tuple[re.Pattern[str], list[str]]:
    names: list[str] = []
    out = []
    pos = 0
    line = _norm(line.replace(EXAMPLE_HOME, home))
    for m in re.finditer(r"…|<([a-z][a-z0-9-]*)>", line):
        out.append(re.escape(line[pos:m.start()]))
        if m.group(0) == "…":
            out.append(".*?")
        elif m.group(1) in captures:
            out.append(re.escape(captures[m.group(1)]))
        else:
            names.append(m.group(1))
            out.append(f"(?P<{m.group(1).replace('-', '_')}>\\S+?)")
        pos = m.end()
    out.append(re.escape(line[pos:]))
    return re.compile("".join(out) + r"\Z"), names


def match(expected: list[str], actual: list[str], home: str, captures: dict[str, str]) -> dict[str, str] | None:
    """The new captures when ``actual`` matches ``expected``, else None."""
    exp = [e for e in expected if e.strip()]
    act = [_norm(a) for a in actual if a.strip()]

    def walk(i: int, j: int, got: dict[str, str]) -> dict[str, str] | None:
        if i == len(exp):
            return got if j == len(act) else None
        if exp[i].strip() == "…":
            for k in range(j, len(act) + 1):
                res = walk(i + 1, k, got)
                if res is not None:
                    return res
            return None
        if j == len(act):
            return None
        rx, names = _line_regex(exp[i], home, {**captures, **got})
        m = rx.match(act[j])
        if m is None:
            return None
        return walk(i + 1, j + 1, {**got, **{n: m.group(n.replace("-", "_")) for n in names}})

    return walk(0, 0, {})


def run(sc: Scenario, env: dict[str, str], home: Path, deadline_s: float = 30.0) -> int:
    """Run every command; fail with the file and line of the first that does not hold. Returns how many ran."""
    captures: dict[str, str] = {}
    cwd = home
    cwd_file = home.parent / ".example-cwd"
    env = {**env, "HOME": str(home)}
    for cmd in sc.commands:
        text = PLACEHOLDER.sub(lambda m: captures.get(m.group(1), m.group(0)), cmd.text)
        script = f'{text}\nrc=$?; pwd > "{cwd_file}"; exit $rc\n'
        deadline = time.monotonic() + deadline_s
        first: list[str] | None = None
        while True:
            res = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                                 timeout=deadline_s + 30)
            out = (res.stdout + res.stderr).splitlines()
            first = out if first is None else first
            if not cmd.expected:
                got = {} if res.returncode == 0 else None
            else:
                got = match(cmd.expected, out, str(home), captures)
            if got is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # the service has not reached the state shown yet: ask again
        assert "Traceback" not in res.stderr, f"{sc.path}:{cmd.line}: $ {text}\n{res.stderr}"
        assert got is not None, (f"{sc.path}:{cmd.line}: $ {text}\nexit {res.returncode}; expected:\n"
                                 + "\n".join(cmd.expected) + "\ngot:\n" + "\n".join(out)
                                 + ("" if first == out else "\n(first run:)\n" + "\n".join(first)))
        captures.update(got)
        if cwd_file.exists():
            cwd = Path(cwd_file.read_text().strip())
    return len(sc.commands)


def docs(repo: Path) -> list[Path]:
    """The README and every page of docs/ that has a runnable example."""
    pages = [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]
    return [p for p in pages if "```sh example" in p.read_text()]


def examples_env(base: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in base.items() if k not in ("OLDPWD", "PWD")} | {"LC_ALL": "C.UTF-8",
                                                                           "COLUMNS": "200", "TERM": "dumb"}


__all__ = ["Command", "Scenario", "docs", "examples_env", "extract", "match", "run"]
