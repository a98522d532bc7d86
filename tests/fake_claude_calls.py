"""The fake agent calls the service's socket from inside its task (an agent turned against its owner).

Steered by words in the prompt (see ``tests/fake_claude.py``):

  rpc=SOCKET       connect to the service's socket and call each method of ``calls=``
  calls=M1,M2      methods, each with the params in ``CALL_PARAMS`` (default trust.allow,approval.approve,daemon.stop)
  clear-env        make the calls from a child that has an empty environment (``env -i``): the token is gone,
                   the service must still know it by its ancestry

The replies (one JSON object per method: ``{"method", "error" | "result"}``) become the result text.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

CALL_PARAMS = {
    "trust.allow": lambda: {"path": os.getcwd()},
    "trust.revoke": lambda: {"path": os.getcwd()},
    "approval.approve": lambda: {"approvalId": "a-nonexistent", "via": "telegram:111"},
    "daemon.stop": lambda: {},
    "project.add": lambda: {"path": "/tmp"},
    "task.submit": lambda: {"prompt": "a child task"},
    "task.list": lambda: {},
    "ping": lambda: None,
}


def _opt(words: list[str], key: str) -> str | None:
    for w in words:
        if w.startswith(key + "="):
            return w.split("=", 1)[1]
    return None


def call_all(path: str, methods: list[str]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
    f = s.makefile("rb")
    for i, m in enumerate(methods, 1):
        msg: dict[str, object] = {"jsonrpc": "2.0", "id": i, "method": m}
        params = CALL_PARAMS.get(m, dict)()
        if params is not None:
            msg["params"] = params
        s.sendall(json.dumps(msg).encode() + b"\n")
        reply = json.loads(f.readline())
        out.append({"method": m, **{k: reply[k] for k in ("error", "result") if k in reply}})
    s.close()
    return out


def maybe_call(words: list[str]) -> str | None:
    """The replies as JSON text, when the prompt asks for calls; else None."""
    path = _opt(words, "rpc")
    if not path:
        return None
    methods = (_opt(words, "calls") or "trust.allow,approval.approve,daemon.stop").split(",")
    if "clear-env" in words:
        res = subprocess.run([sys.executable, __file__, path, *methods], env={}, capture_output=True, text=True,
                             timeout=60)
        return res.stdout.strip() or f"child failed: {res.stderr[-500:]}"
    return json.dumps(call_all(path, methods))


if __name__ == "__main__":
    print(json.dumps(call_all(sys.argv[1], sys.argv[2:])))
