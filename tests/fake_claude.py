#!/usr/bin/env python3
"""Stand-in for ``claude -p PROMPT --output-format stream-json --verbose``.

Behaviour is steered by words in the prompt:
  sleep=S          sleep S seconds before answering
  fail             exit 1 after an error result
  error-result     result line with is_error/error_max_turns, exit 0
  ignore-term      ignore SIGTERM
  spawn-grandchild fork a grandchild that ignores SIGTERM and sleeps; pidfile=PATH gets its pid
  pidfile=PATH     where to write the grandchild's (or, without it, our own) pid
  big=N            print N MB of assistant text lines
  garbage          interleave non-JSON lines
  env=NAME         report the value of env var NAME in the result text
  mark=PATH        append "start <pid> <t>" / "end <pid> <t>" lines to PATH
  rpc=SOCKET       call the service's socket from inside the task (``fake_claude_calls.py``)
  probe            try the other words as reads, writes and connects (``fake_probe.py``); the result
                   text is ``PROBE {json}``: what a confined agent could do

Sessions, as claude keeps them (see ``fake_claude_sessions.py``): ``--session-id UUID`` starts one
(refused if it exists), ``--resume ID`` continues one (refused, as claude does, if there is none for this
cwd), ``--fork-session`` continues a copy under a new id, ``--agent NAME`` is reported.  With any of them
the result says which turn of which session it was and what was asked before, so tests see the context.
Every run appends its argv and cwd to ``~/.claude/fake-calls.jsonl``.  Without ``-p`` it is interactive
(``fake_claude_sessions.interactive``): a prompt, answers to each line, ``/exit``.
"""

import json
import os
import signal
import sys
import time

import fake_claude_sessions as sessions


def out(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def opt(words: list[str], key: str) -> str | None:
    for w in words:
        if w.startswith(key + "="):
            return w.split("=", 1)[1]
    return None


def main() -> int:
    argv = sys.argv[1:]
    sessions.record_call(argv)
    if "-p" not in argv and "--print" not in argv:
        return sessions.interactive(argv)
    # the prompt is the positional argument: after "--" when the caller ends options (as aiwg-service does)
    # or, as aiwg-service gives it, on stdin (as `claude -p` reads it when no prompt word follows)
    if "--" in argv:
        prompt = argv[argv.index("--") + 1]
    elif "-p" in argv and argv.index("-p") + 1 < len(argv) and not argv[argv.index("-p") + 1].startswith("-"):
        prompt = argv[argv.index("-p") + 1]
    else:
        prompt = sys.stdin.read()
    model = argv[argv.index("--model") + 1] if "--model" in argv else "fake-model"
    words = prompt.split()
    try:
        session = sessions.open_session(argv)
    except sessions.Refused as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    sid = session.id if session is not None else f"sess-{os.getpid()}"
    described = session.describe() if session is not None else ""
    if session is not None:
        session.begin(prompt)
    mark = opt(words, "mark")
    if mark:
        with open(mark, "a") as f:
            f.write(f"start {os.getpid()} {time.time():.6f}\n")
    if "ignore-term" in words:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pidfile = opt(words, "pidfile")
    if "spawn-grandchild" in words:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.execvp("sleep", ["sleep", "300"])
        if pidfile:
            with open(pidfile + ".tmp", "w") as f:
                f.write(str(pid))
            os.rename(pidfile + ".tmp", pidfile)
    elif pidfile:
        with open(pidfile + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(pidfile + ".tmp", pidfile)

    out({"type": "system", "subtype": "init", "session_id": sid, "model": model,
         "cwd": os.getcwd(), "tools": ["Bash", "Read", "Edit"], "argv": argv,
         "agent": sessions.flag(argv, "--agent")})
    if "garbage" in words:
        sys.stdout.write("this is not json\n{broken json\n")
        sys.stderr.write("warning: something on stderr\n")
        sys.stdout.flush()
        sys.stderr.flush()
    usage1 = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 100,
              "cache_read_input_tokens": 200}
    msg = {"id": "msg_1", "role": "assistant", "model": model,
           "content": [{"type": "text", "text": "Working on it."}], "usage": usage1}
    out({"type": "assistant", "message": msg, "session_id": sid})
    tool = {"id": "msg_1", "role": "assistant", "model": model,
            "content": [{"type": "tool_use", "id": "tu_1", "name": "Bash", "input": {"command": "ls"}}],
            "usage": usage1}
    out({"type": "assistant", "message": tool, "session_id": sid})
    out({"type": "user", "message": {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "tu_1", "content": [{"type": "text", "text": "a\nb"}]}]},
        "session_id": sid})
    if "garbage" in words:
        sys.stdout.write("\x00\x01 binary-ish junk\n[]\n42\n")
        sys.stdout.flush()
    big = opt(words, "big")
    if big:
        line = json.dumps({"type": "assistant", "message": {"id": "msg_big", "content": [
            {"type": "text", "text": "x" * 1000}]}, "session_id": sid}) + "\n"
        n = int(float(big) * 1024 * 1024) // len(line) + 1
        chunk = line * 64
        for _ in range(n // 64 + 1):
            sys.stdout.write(chunk)
        sys.stdout.flush()
    import fake_claude_extras as extras  # rising cost, long runs: see that module

    extras.ticks(words, sid, model, out)
    sleep = opt(words, "sleep")
    if sleep:
        end = time.monotonic() + float(sleep)
        while (left := end - time.monotonic()) > 0:
            time.sleep(left)
    text = "Done: " + prompt[:200]
    import fake_claude_calls

    called = fake_claude_calls.maybe_call(words)
    if called is not None:
        text = called
    if "probe" in words:
        import fake_probe

        text = "PROBE " + json.dumps(fake_probe.run(words))
    envname = opt(words, "env")
    if envname:
        text = f"{envname}={os.environ.get(envname, '<unset>')}"
    if session is not None:
        text += " " + described
        session.add_turn(prompt, text)
    failed = "fail" in words
    err_result = "error-result" in words
    usage = {"input_tokens": 1234, "output_tokens": 567, "cache_creation_input_tokens": 89,
             "cache_read_input_tokens": 4321}
    result = {"type": "result", "subtype": "error_max_turns" if err_result else
              ("error_during_execution" if failed else "success"),
              "is_error": failed or err_result, "result": text, "session_id": sid,
              "total_cost_usd": 0.0123, "duration_ms": 1500, "duration_api_ms": 1200, "num_turns": 3,
              "usage": usage}
    extras.adjust_result(words, result)
    out(result)
    if mark:
        with open(mark, "a") as f:
            f.write(f"end {os.getpid()} {time.time():.6f}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
