"""Run under ``unshare -U -r``: a supervisor following a run while inotify has no watch left.

``/proc/sys/user/max_inotify_watches`` is per user namespace: set to 0 here, the log watch gets ENOSPC as
when the user's watch limit is full, without touching the machine's. Exits non-zero with the failed
assertion on stderr; prints "ok" when every check held.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from aiwg_service.tasks.model import TaskState
from tests.tasks_support import Events, make_fakebin, make_supervisor, run

LIMIT = Path("/proc/sys/user/max_inotify_watches")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def main(tmp: Path, warnings: Records) -> None:
    os.environ["PATH"] = f"{make_fakebin(tmp)}:/usr/local/bin:/usr/bin:/bin"
    project = tmp / "proj"
    project.mkdir()
    ev = Events()
    out: dict[str, bytearray] = {}
    live: list[bool] = []  # was the run still going when output reached the follower?

    def on_output(tid: str, data: bytes) -> None:
        out.setdefault(tid, bytearray()).extend(data)
        live.append(tid in sup.running and sup.store.get(tid).state is TaskState.running)

    sup = make_supervisor(tmp, ev, on_output=on_output)
    sup.reconcile_s = 0.2
    assert sup._watch is None
    await sup.start()
    assert sup._watch is not None
    sup._watch.poll_s = 0.2
    old = LIMIT.read_text()
    LIMIT.write_text("0\n")
    try:
        t = sup.submit(str(project), "sleep=1 ticks=5 tick=0.1 during the limit")
        await asyncio.wait_for(sup.wait_idle(), 60)
    finally:
        LIMIT.write_text(old)
    done = sup.store.get(t.id)
    assert done is not None and done.state is TaskState.completed, done
    assert ev.types(t.id) == ["task.queued", "task.started", "task.completed"], ev.types(t.id)  # once
    log_bytes = Path(done.log_path or "").read_bytes()
    assert bytes(out[t.id]) == log_bytes, "every byte of the log reached the follower, once, in order"
    assert live and live[0], "output was followed while the run went on (read on the timer), not only at its end"
    assert any("cannot watch" in w and "every 0.2s" in w for w in warnings.lines), warnings.lines
    # the limit is back: the next run is followed by inotify again, and that is said too
    t2 = sup.submit(str(project), "after the limit")
    await asyncio.wait_for(sup.wait_idle(), 60)
    done2 = sup.store.get(t2.id)
    assert done2 is not None and done2.state is TaskState.completed, done2
    assert sup._watch.failed is None and sup._watch._ino is not None
    assert any("by inotify again" in w for w in warnings.lines), warnings.lines
    await sup.stop(0)
    sup.store.close()


if __name__ == "__main__":
    rec = Records()
    logging.getLogger("aiwg_service").addHandler(rec)
    run(main(Path(sys.argv[1]), rec))
    print("ok")
