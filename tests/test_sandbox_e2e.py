"""Confined agents for real: the local executor runs a probing agent under a resolved policy, as a transient
unit under the real user manager (systemd's sandbox) and in the foreground (bubblewrap).

The world: the owner's home with planted secrets, the agent's project (a git repository with a test), another
project with a ``.env``, the service's state and runtime directories (with a socket standing in for the
service's), a listener on 127.0.0.2 standing in for the internet, and one on 127.0.0.1 that ``allow`` names.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from aiwg_service.executors import LaunchSpec
from aiwg_service.executors.local import LocalExecutor, unit_name
from aiwg_service.sandbox import SandboxSection, resolve

PROBE = str(Path(__file__).with_name("fake_probe.py"))
SECRETS = {".ssh/id_ed25519": "SSH-PRIVATE-KEY-PLANTED", ".aws/credentials": "AWS-SECRET-PLANTED"}


class Listener:
    """Accepts and closes, on a thread, until closed."""

    def __init__(self, family: int, addr: object) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(addr)
        self.sock.listen(16)
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            c.close()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        for rel, text in SECRETS.items():
            p = self.home / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        (self.home / ".claude").mkdir()
        self.project = tmp / "project"
        self.project.mkdir()
        (self.project / "test_ok.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
        git = ["git", "-C", str(self.project)]
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "config", "user.email", "agent@example.invalid"], check=True)
        subprocess.run([*git, "config", "user.name", "agent"], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", "init"], check=True)
        self.other = tmp / "other"
        self.other.mkdir()
        (self.other / ".env").write_text("OTHER-PROJECT-SECRET")
        self.state = tmp / "state"
        self.runtime = tmp / "run"
        self.runtime.mkdir(mode=0o700)
        self.socket_path = self.runtime / "daemon.sock"
        self.service = Listener(socket.AF_UNIX, str(self.socket_path))
        self.internet = Listener(socket.AF_INET, ("127.0.0.2", 0))
        self.allowed = Listener(socket.AF_INET, ("127.0.0.1", 0))

    def worktree(self) -> Path:
        wt = self.state / "worktrees" / "wt1"
        wt.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", str(self.project), "worktree", "add", "-q", "-b", "wt1", str(wt)], check=True)
        return wt

    def policy(self, cwd: Path | None = None, **section: object):
        return resolve(SandboxSection(**section), kind="shell", cwd=str(cwd or self.project), home=str(self.home),
                       service_dirs=[str(self.state), str(self.runtime)], other_projects=[str(self.other)],
                       socket=str(self.socket_path), profile="shell")

    def close(self) -> None:
        for x in (self.service, self.internet, self.allowed):
            x.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


@pytest.fixture(params=["bubblewrap", "systemd"])
def mode(request: pytest.FixtureRequest) -> Iterator[dict]:
    if request.param == "bubblewrap":
        if shutil.which("bwrap") is None:
            if os.environ.get("AIWG_NO_SKIP"):
                pytest.fail("bubblewrap is not installed")
            pytest.skip("bubblewrap is not installed")
        yield {"use_systemd": False, "environ": dict(os.environ), "sd": None}
        return
    sd = request.getfixturevalue("sd")
    yield {"use_systemd": True, "environ": sd.env, "sd": sd}


def run_probe(world: World, mode: dict, task_id: str, words: list[str], policy, cwd: Path | None = None,
              during=None, report: bool = True) -> dict[str, str]:
    if policy is not None and os.path.dirname(PROBE) not in policy.read_only:
        # the probe script is an argument, not the program: keep the checkout's tests visible (read-only), as
        # they would be were the checkout not under /tmp (hidden by the private /tmp)
        policy = msgspec.structs.replace(policy, read_only=[*policy.read_only, os.path.dirname(PROBE)])

    async def go() -> dict[str, str]:
        ex = LocalExecutor(world.state, use_systemd=mode["use_systemd"], environ=mode["environ"])
        log = world.tmp / f"{task_id}.log"
        env = {"PATH": os.environ["PATH"], "HOME": str(world.home), "LANG": "C.UTF-8"}
        spec = LaunchSpec(task_id=task_id, argv=[sys.executable, PROBE, *words], cwd=str(cwd or world.project),
                          env=env, log_path=str(log), sandbox=policy)
        h = await ex.start(spec)
        assert h["sandbox"]["mechanism"] == ("systemd" if mode["use_systemd"] else "bubblewrap")
        if during is not None:
            await asyncio.get_running_loop().run_in_executor(None, during, h)
        info = await ex.wait(h)
        await ex.forget(h)
        await ex.close()
        text = log.read_text()
        m = re.search(r"^PROBE (.*)$", text, re.M)
        if not report:
            return {}
        assert m, f"the probe did not report (exit {info}):\n{text[-3000:]}"
        return json.loads(m.group(1))

    return asyncio.run(go())


def secret_words(world: World) -> list[str]:
    return [f"read={world.home / rel}" for rel in SECRETS] + [
        f"list={world.home / '.ssh'}", f"list={world.home / '.aws'}", f"read={world.other / '.env'}",
        f"list={world.other}", f"unix={world.socket_path}", f"list={world.runtime}"]


def assert_confined(world: World, r: dict[str, str]) -> None:
    for word, answer in r.items():
        if word.startswith(("read=", "list=")) and (str(world.home) in word or str(world.other) in word
                                                   or str(world.runtime) in word):
            assert "PLANTED" not in answer and "SECRET" not in answer and "id_ed25519" not in answer \
                and "credentials" not in answer and ".env" not in answer and "daemon.sock" not in answer, (word, answer)
    assert not r[f"unix={world.socket_path}"].startswith("ok"), r
    # what it wrote outside its project never reached the real place
    assert not (world.other / "evil").exists()
    assert not (world.home / "evil").exists()
    assert (world.home / ".ssh" / "id_ed25519").read_text() == SECRETS[".ssh/id_ed25519"]


def test_agent_writes_its_project_and_nothing_else(world: World, mode: dict) -> None:
    words = [f"write={world.project / 'out.txt'}", f"write={world.home / '.claude' / 'state.json'}",
             *secret_words(world), f"write={world.other / 'evil'}", f"write={world.home / 'evil'}",
             f"write={world.project / '.aiwg-probe'}",
             f"connect=127.0.0.2:{world.internet.port}",
             "run=git+add+-A+&&+git+commit+-qm+by-the-agent", f"run={sys.executable}+-m+pytest+-q+-p+no:cacheprovider"]
    r = run_probe(world, mode, "t-fs", words, world.policy())
    assert r[f"write={world.project / 'out.txt'}"] == "ok"
    assert (world.project / "out.txt").read_text() == "written by the agent\n"
    assert r[f"write={world.home / '.claude' / 'state.json'}"] == "ok"
    assert (world.home / ".claude" / "state.json").exists()
    assert_confined(world, r)
    assert r[f"connect=127.0.0.2:{world.internet.port}"] == "ok"  # network "full": the default
    assert r["run=git+add+-A+&&+git+commit+-qm+by-the-agent"] == "ok", r
    log = subprocess.run(["git", "-C", str(world.project), "log", "--format=%s"], capture_output=True, text=True)
    assert log.stdout.splitlines()[0] == "by-the-agent"
    assert r[f"run={sys.executable}+-m+pytest+-q+-p+no:cacheprovider"] == "ok", r


def test_network_allow_goes_through_the_filtering_proxy(world: World, mode: dict,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    policy = world.policy(network="allow", allow_hosts=[f"localhost:{world.allowed.port}"])
    words = [f"connect=127.0.0.2:{world.internet.port}", f"connect=127.0.0.1:{world.allowed.port}",
             f"proxy=localhost:{world.allowed.port}", f"proxy=127.0.0.2:{world.internet.port}",
             f"write={world.project / 'ok'}"]
    with caplog.at_level(logging.WARNING, logger="aiwg_service.sandbox.proxy"):
        r = run_probe(world, mode, "t-net", words, policy)
    assert r[f"connect=127.0.0.2:{world.internet.port}"].startswith("err"), r  # no route out but the proxy
    assert r[f"connect=127.0.0.1:{world.allowed.port}"].startswith("err"), r  # the host's loopback neither
    assert r[f"proxy=localhost:{world.allowed.port}"] == "ok", r
    assert r[f"proxy=127.0.0.2:{world.internet.port}"] == "status:403", r
    assert world.internet.accepted == 0 and world.allowed.accepted >= 1
    refusals = [rec for rec in caplog.records if "refused a connection" in rec.getMessage()]
    assert refusals and getattr(refusals[0], "TASK_ID", None) == "t-net"
    assert f"127.0.0.2:{world.internet.port}" in refusals[0].getMessage()


def test_network_none(world: World, mode: dict) -> None:
    r = run_probe(world, mode, "t-none", [f"connect=127.0.0.2:{world.internet.port}",
                                          f"connect=127.0.0.1:{world.allowed.port}"], world.policy(network="none"))
    assert all(v.startswith("err") for v in r.values()), r
    assert world.internet.accepted == 0 and world.allowed.accepted == 0


def test_worktree_session_commits_into_its_repository(world: World, mode: dict) -> None:
    wt = world.worktree()
    words = [f"write={wt / 'wt.txt'}", *secret_words(world), f"write={world.other / 'evil'}",
             "run=git+add+-A+&&+git+commit+-qm+in-the-worktree",
             f"run={sys.executable}+-m+pytest+-q+-p+no:cacheprovider"]
    r = run_probe(world, mode, "t-wt", words, world.policy(cwd=wt), cwd=wt)
    assert r[f"write={wt / 'wt.txt'}"] == "ok"
    assert_confined(world, r)
    assert r["run=git+add+-A+&&+git+commit+-qm+in-the-worktree"] == "ok", r
    log = subprocess.run(["git", "-C", str(world.project), "log", "wt1", "--format=%s"], capture_output=True,
                         text=True)
    assert log.stdout.splitlines()[0] == "in-the-worktree"
    assert r[f"run={sys.executable}+-m+pytest+-q+-p+no:cacheprovider"] == "ok", r


def test_socket_granted_read_only_is_reachable(world: World, mode: dict) -> None:
    r = run_probe(world, mode, "t-sock", [f"unix={world.socket_path}", f"list={world.runtime}"],
                  world.policy(socket="read"))
    assert r[f"unix={world.socket_path}"] == "ok", r
    assert r[f"list={world.runtime}"] == "ok:daemon.sock"  # the socket, nothing else of the runtime dir


def test_systemd_analyze_security_of_a_running_agent(world: World, sd) -> None:
    scores: list[float] = []

    def analyze(_handle: dict) -> None:
        unit = unit_name("t-score")
        sd.wait_for(lambda: sd.show(unit, "ActiveState").get("ActiveState") == "active", timeout=30,
                    message="the agent unit never ran")
        out = sd.run(["systemd-analyze", "security", "--user", "--no-pager", unit], as_user=True)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
        assert m, out.stdout[-2000:] + out.stderr
        scores.append(float(m.group(1)))

    mode = {"use_systemd": True, "environ": sd.env, "sd": sd}
    # kind "claude" (node: no MemoryDenyWriteExecute), network full: the default and widest agent unit
    policy = resolve(SandboxSection(), kind="claude", cwd=str(world.project), home=str(world.home))
    run_probe(world, mode, "t-score", ["sleep=30"], policy, during=lambda h: (analyze(h), sd.systemctl(
        "kill", unit_name("t-score"))), report=False)
    print(f"exposure of a running agent unit: {scores}")
    assert scores and scores[0] <= 4.0, scores


def test_node_runs_in_a_claude_unit_and_why_its_memory_may_be_writable_and_executable(world: World, sd) -> None:
    """The ``claude`` kind leaves ``MemoryDenyWriteExecute`` off: node's JIT needs W+X memory (measured here:
    node aborts under it); a ``shell`` unit has it on and an ordinary program runs."""
    node = shutil.which("node")
    if node is None:
        if os.environ.get("AIWG_NO_SKIP"):
            pytest.fail("node is not installed (the claude agent's runtime)")
        pytest.skip("node is not installed")
    mode = {"use_systemd": True, "environ": sd.env, "sd": sd}
    js = "run=" + node + "+-e+'console.log(Array.from({length:100000},(_,i)=>i*2).reduce((a,b)=>a-b))'"
    claude = resolve(SandboxSection(), kind="claude", cwd=str(world.project), home=str(world.home))
    assert run_probe(world, mode, "t-node", [js], claude)[js] == "ok"
    strict = resolve(SandboxSection(memory_deny_write_execute=True), kind="claude", cwd=str(world.project),
                     home=str(world.home))
    assert run_probe(world, mode, "t-node-wx", [js], strict)[js].startswith("rc:")


def test_a_restarted_service_serves_a_running_tasks_proxy_again(world: World, mode: dict) -> None:
    policy = world.policy(network="allow", allow_hosts=[f"localhost:{world.allowed.port}"])
    proxy_word = f"proxy=localhost:{world.allowed.port}"

    async def go() -> dict[str, str]:
        first = LocalExecutor(world.state, use_systemd=mode["use_systemd"], environ=mode["environ"])
        log = world.tmp / "t-rs.log"
        spec = LaunchSpec(task_id="t-rs", argv=[sys.executable, PROBE, "sleep=4", proxy_word], cwd=str(world.project),
                          env={"PATH": os.environ["PATH"], "HOME": str(world.home)}, log_path=str(log),
                          sandbox=policy)
        h = await first.start(spec)
        claim = Path(h["run"] + ".claim")
        deadline = time.monotonic() + 30
        while not (claim.exists() and '"runner"' in claim.read_text()):  # the run is under way
            assert time.monotonic() < deadline, "the runner never claimed the run"
            await asyncio.sleep(0.02)
        await first.close()  # the service goes away: its proxy with it
        assert not Path(h["sandbox"]["proxy"]).exists()
        second = LocalExecutor(world.state, use_systemd=mode["use_systemd"], environ=mode["environ"])
        from aiwg_service.executors import RunRef

        probe = await second.adopt(RunRef(task_id="t-rs", log_path=str(log), handle=h))
        assert probe.state == "running", probe
        assert Path(h["sandbox"]["proxy"]).exists()  # served again, where the sandbox sees it
        await second.wait(probe.handle or h)
        await second.forget(probe.handle or h)
        assert not Path(h["sandbox"]["proxy"]).parent.exists()
        await second.close()
        m = re.search(r"^PROBE (.*)$", log.read_text(), re.M)
        assert m, log.read_text()
        return json.loads(m.group(1))

    assert asyncio.run(go())[proxy_word] == "ok"
