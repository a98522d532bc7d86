"""``.aiwg/daemon/daemon.log``: bounded, private, and rotated so that a running ``tail -f`` keeps seeing lines."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from service_fixture import wait_for

from aiwg_service.project_log import ProjectLogs


def test_rotation_keeps_a_tail_f_reading(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / ".aiwg").mkdir(parents=True)
    handler = ProjectLogs(lambda r: (4096, 2, logging.INFO) if r == str(root) else None)
    handler.retain({str(root)})
    log = logging.getLogger("test.project_log")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    path = root / ".aiwg" / "daemon" / "daemon.log"
    assert path.exists() and path.stat().st_mode & 0o777 == 0o600
    tail = subprocess.Popen(["tail", "-f", "-n", "0", str(path)], stdout=subprocess.PIPE, text=True)
    try:
        log.info("not a project's line")  # no PROJECT: the journal's only
        log.info("other project", extra={"PROJECT": str(tmp_path / "q")})  # not served: dropped
        log.debug("below the level", extra={"PROJECT": str(root)})
        for i in range(200):  # ~60 lines per 4 KiB: three rotations
            log.info("line %03d %s", i, "x" * 40, extra={"PROJECT": str(root)})
        seen: list[str] = []
        wait_for(lambda: seen.append(tail.stdout.readline()) or "line 199" in seen[-1], 30,  # type: ignore[union-attr]
                 what="tail -f to reach the last line, across the truncations")
        got = [int(x.split("line ")[1][:3]) for x in seen if "line " in x]
        # tail -f kept reading the same file after each copy-truncate (lines written and copied away between two
        # of its reads are in daemon.log.1, as with logrotate's copytruncate)
        assert got[-1] == 199 and got == sorted(got)
    finally:
        tail.kill()
        tail.wait(10)
        log.removeHandler(handler)
        handler.close()
    text = path.read_text()
    assert "not a project's line" not in text and "other project" not in text and "below the level" not in text
    assert path.stat().st_size <= 4096
    rotated = sorted(p.name for p in path.parent.iterdir())
    assert rotated == ["daemon.log", "daemon.log.1", "daemon.log.2"]  # max_files copies, no temp file left
    assert all((path.parent / n).stat().st_mode & 0o777 == 0o600 for n in rotated)
