"""The trust store's own file is checked before it is believed: a store another local user could write (group
or world writable, or not ours) would let them trust any project, so such a store trusts nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from service_fixture import ServiceEnv, wait_for
from test_trust import evil_config, lines, outcomes


def untrusted_reason(env: ServiceEnv) -> str | None:
    projects = {p["path"]: p for p in env.call("project.list")["projects"]}
    return projects[str(env.project)]["untrusted_reason"]


@pytest.mark.parametrize("spoil", ["group-writable", "world-readable", "not-ours"])
def test_a_store_others_could_write_trusts_nothing(svc_env: ServiceEnv, tmp_path: Path, spoil: str) -> None:
    marker = tmp_path / "MARKER"
    svc_env.write_project_config(evil_config(marker))  # trusted: the store is written 0600
    svc_env.start()
    assert untrusted_reason(svc_env) is None
    store = svc_env.state_dir / "trust.json"
    if spoil == "group-writable":
        store.chmod(0o620)
    elif spoil == "world-readable":
        store.chmod(0o644)
    else:
        if os.geteuid() != 0:
            pytest.skip("needs root to give the store to another uid")
        os.chown(store, 65534, 65534)
    svc_env.call("daemon.reload")
    reason = untrusted_reason(svc_env)
    assert reason is not None and "must be a regular file of yours, mode 0600" in reason, reason
    (svc_env.project / "src").mkdir(exist_ok=True)
    (svc_env.project / "src" / "x").write_text("1")
    wait_for(lambda: "untrusted" in outcomes(svc_env, "pwn", svc_env.project), 20, what="a held-back run")
    assert lines(marker) == []
