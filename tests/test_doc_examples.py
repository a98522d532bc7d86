"""Every runnable example of the manual (README.md and docs/, blocks marked ``sh example``: see
tests/doc_examples.py) runs against a real service, with the fake agent on PATH: a change that makes an
example false fails here, naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from doc_examples import docs, examples_env, extract, match, run
from service_fixture import REPO, ServiceEnv
from tasks_support import make_fakebin

PAGES = docs(REPO)


def test_the_manual_has_runnable_examples() -> None:
    assert REPO / "README.md" in PAGES
    assert sum(len(extract(p).commands) for p in PAGES) >= 10


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_examples_hold(svc_env: ServiceEnv, page: Path) -> None:
    home = svc_env.tmp / "home"
    home.mkdir()
    # the example's ~ is a real home: config and state where a user's are (~/.config/aiwg, ~/.local/state/aiwg)
    svc_env.config_home, svc_env.state_home = home / ".config", home / ".local" / "state"
    svc_env.state_dir = svc_env.state_home / "aiwg"
    svc_env.env.update(HOME=str(home), XDG_CONFIG_HOME=str(svc_env.config_home),
                       XDG_STATE_HOME=str(svc_env.state_home))
    svc_env.env["PATH"] = f"{make_fakebin(svc_env.tmp)}:{svc_env.env['PATH']}"
    svc_env.start("--registered", projects=[])
    ran = run(extract(page), examples_env(svc_env.env), home)
    assert ran == len(extract(page).commands)


def test_the_matcher_catches_a_false_example() -> None:
    home = "/tmp/h"
    assert match(["added: /home/me/hello"], ["added: /tmp/h/hello"], home, {}) == {}
    assert match(["added: /home/me/hello"], ["added: /tmp/h/other"], home, {}) is None
    got = match(["id     state", "<task-id>  completed …", "…"], ["id state", "t-1 completed $0.01", "x", "y"],
                home, {})
    assert got == {"task-id": "t-1"}
    assert match(["<task-id> completed"], ["t-2 completed"], home, {"task-id": "t-1"}) is None
    assert match(["one"], ["one", "two"], home, {}) is None
