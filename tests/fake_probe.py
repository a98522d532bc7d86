#!/usr/bin/env python3
"""What a confined agent can do: each word is one attempt, the answer is one JSON object on stdout.

  read=PATH       read a file                  -> "ok:<first 40 bytes>" or "err:<errno name>"
  list=PATH       list a directory             -> "ok:<names>" or "err:..."
  write=PATH      create/overwrite a file      -> "ok" or "err:..."
  connect=H:P     TCP connect                  -> "ok" or "err:..."
  unix=PATH       connect to a Unix socket     -> "ok" or "err:..."
  proxy=H:P       CONNECT through $HTTPS_PROXY -> "ok" (200) or "status:<code>" or "err:..."
  run=CMD         run a shell command in cwd   -> "ok" or "rc:<n>:<stderr tail>"

Used by ``fake_claude.py`` (a ``probe`` word in the prompt) and directly by a ``shell`` profile.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from urllib.parse import urlsplit


def _err(e: OSError) -> str:
    return "err:" + (errno.errorcode.get(e.errno or 0, str(e.errno)) if e.errno else str(e))


def attempt(word: str) -> tuple[str, str] | None:
    op, sep, arg = word.partition("=")
    if not sep or op == "report":
        return None
    try:
        if op == "read":
            with open(arg, "rb") as f:
                return word, "ok:" + f.read(40).decode(errors="replace")
        if op == "list":
            return word, "ok:" + ",".join(sorted(os.listdir(arg)))
        if op == "write":
            with open(arg, "w") as f:
                f.write("written by the agent\n")
            return word, "ok"
        if op == "connect":
            host, _, port = arg.rpartition(":")
            socket.create_connection((host, int(port)), timeout=3).close()
            return word, "ok"
        if op == "unix":
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(3)
            s.connect(arg)
            s.close()
            return word, "ok"
        if op == "proxy":
            proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
            if not proxy:
                return word, "err:no proxy"
            u = urlsplit(proxy)
            s = socket.create_connection((u.hostname, u.port or 80), timeout=5)
            s.sendall(f"CONNECT {arg} HTTP/1.1\r\nHost: {arg}\r\n\r\n".encode())
            head = s.recv(200).decode(errors="replace")
            s.close()
            code = head.split(" ", 2)[1] if head.startswith("HTTP/") else "?"
            return word, "ok" if code == "200" else f"status:{code}"
        if op == "sleep":
            import time

            time.sleep(float(arg))
            return word, "ok"
        if op == "run":
            cmd = arg.replace("+", " ")
            p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=120)
            return word, "ok" if p.returncode == 0 else f"rc:{p.returncode}:{(p.stderr + p.stdout)[-300:]}"
    except OSError as e:
        return word, _err(e)
    except subprocess.TimeoutExpired:
        return word, "err:timeout"
    return None


def run(words: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for w in words:
        r = attempt(w)
        if r is not None:
            out[r[0]] = r[1]
    return out


if __name__ == "__main__":
    print("PROBE " + json.dumps(run(sys.argv[1:])))
