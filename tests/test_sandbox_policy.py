"""The sandbox policy without running anything: narrowing, resolution, both renderings, the proxy's matching,
and the config section's errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from aiwg_service import config
from aiwg_service.sandbox import SandboxSection, bwrap_argv, choose, narrow, resolve, unit_properties
from aiwg_service.sandbox.policy import split_hidden
from aiwg_service.sandbox.proxy import Proxy, allowed
from aiwg_service.sandbox.schema import section_of


def test_a_project_can_only_narrow() -> None:
    base = SandboxSection(write=["~/.cache/pip", "~/x"], network="allow", allow_hosts=["a.com", "b.com"],
                          socket="read")
    assert narrow(base, None) == base
    off = narrow(base, section_of("off"))
    assert off.enabled and off.network == "allow" and off.allow_hosts == ["a.com", "b.com"]
    wide = narrow(base, SandboxSection(network="full", write=["~", "~/x"], allow_hosts=["evil.com"]))
    assert wide.network == "allow" and wide.allow_hosts == ["a.com", "b.com"] and wide.write == ["~/x"]
    tight = narrow(base, SandboxSection(network="allow", allow_hosts=["b.com", "evil.com"], socket="none",
                                        hide=["~/y"], memory_deny_write_execute=True))
    assert tight.allow_hosts == ["b.com"] and tight.socket == "none" and tight.hide == ["~/y"]
    assert tight.memory_deny_write_execute is True
    assert narrow(SandboxSection(), SandboxSection(network="allow", allow_hosts=["x.org"])).allow_hosts == ["x.org"]
    assert narrow(base, SandboxSection(network="none")).network == "none"
    # the owner's "off" stays off unless the project turns it on
    assert not narrow(section_of("off"), None).enabled
    assert narrow(section_of("off"), SandboxSection(network="none")).network == "none"


def test_resolve(tmp_path: Path) -> None:
    home, proj, other = tmp_path / "home", tmp_path / "p", tmp_path / "o"
    p = resolve(SandboxSection(write=["~/.cache/pip"], hide=["~/secret"]), kind="claude", cwd=str(proj),
                home=str(home), service_dirs=[str(tmp_path / "state")], other_projects=[str(other), str(tmp_path)],
                socket="/run/s.sock", profile="claude")
    assert p.write[0] == str(proj) and str(home / ".claude") in p.write and str(home / ".cache/pip") in p.write
    assert str(home / ".ssh") in p.hide and str(home / "secret") in p.hide and str(other) in p.hide
    assert str(tmp_path) not in p.hide  # holds the task's own project: never hidden
    assert p.socket is None and p.memory_deny_write_execute is False  # claude: node's JIT
    assert resolve(SandboxSection(), kind="shell", cwd=str(proj), home=str(home)).memory_deny_write_execute
    assert not resolve(section_of("off"), kind="shell", cwd=str(proj), home=str(home)).enabled


def test_worktree_writes_its_repository_git_dir(tmp_path: Path) -> None:
    repo, wt = tmp_path / "repo", tmp_path / "wt"
    (repo / ".git" / "worktrees" / "wt").mkdir(parents=True)
    (repo / ".git" / "worktrees" / "wt" / "commondir").write_text("../..\n")
    wt.mkdir()
    (wt / ".git").write_text(f"gitdir: {repo}/.git/worktrees/wt\n")
    p = resolve(SandboxSection(), kind="shell", cwd=str(wt), home=str(tmp_path / "h"))
    assert p.write[:2] == [str(wt), str(repo / ".git")]


def test_renderings_from_one_policy(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for d in (home / ".ssh", home / ".claude", tmp_path / "state" / "runs", tmp_path / "p"):
        d.mkdir(parents=True)
    p = resolve(SandboxSection(network="none"), kind="shell", cwd=str(tmp_path / "p"), home=str(home),
                service_dirs=[str(tmp_path / "state")])
    props = unit_properties(p, keep=[str(tmp_path / "state" / "runs")])
    assert "ProtectSystem=strict" in props and "PrivateNetwork=yes" in props and "NoNewPrivileges=yes" in props
    assert f"TemporaryFileSystem={tmp_path / 'state'}:ro" in props  # holds the runner's records: masked
    assert any(x.startswith("InaccessiblePaths=") and str(home / ".ssh") in x for x in props)
    assert not any(".gnupg" in x for x in props)  # absent: no mount for it
    argv = bwrap_argv(p)
    assert argv[0] == "bwrap" and "--unshare-net" in argv and argv[-1] == "--"
    assert argv[argv.index("--chdir") + 1] == str(tmp_path / "p")
    assert str(home / ".ssh") not in argv  # under /tmp: gone with the private /tmp already
    outside = msgspec.structs.replace(p, hide=[str(Path.home() / ".ssh-aiwg-test"), str(tmp_path / "p" / "sub")])
    argv = bwrap_argv(outside, exists=lambda _p: True)
    i = argv.index(str(Path.home() / ".ssh-aiwg-test"))
    assert argv[i - 2:i] == ["--ro-bind", "/dev/null"]  # not a directory here: a file's stand-in
    j = argv.index(str(tmp_path / "p" / "sub"))
    assert j > argv.index("--bind")  # hidden inside a bound tree: after the bind
    assert not unit_properties(resolve(section_of("off"), kind="shell", cwd="/x", home=str(home)))
    assert split_hidden(["/a", "/b"], ["/a/c", "/b"]) == ([], ["/a"])


def test_mechanism(tmp_path: Path) -> None:
    p = resolve(SandboxSection(), kind="shell", cwd=str(tmp_path), home=str(tmp_path), profile="x")
    assert choose(p, systemd=True).name == "systemd"
    assert choose(p, systemd=False, path=str(tmp_path)).name == "refused"
    assert 'agents.x.sandbox to "off"' in choose(p, systemd=False, path=str(tmp_path)).detail
    assert choose(None, systemd=False, path=str(tmp_path)).name == "off"


def test_proxy_matching() -> None:
    hosts = ["api.example.com", "*.github.com", "10.0.0.0/8", "db.local:5432", "[::1]:8080"]
    assert allowed("api.example.com", 443, hosts) and allowed("API.Example.com.", 443, hosts)
    assert allowed("codeload.github.com", 443, hosts) and not allowed("github.com.evil.org", 443, hosts)
    assert allowed("10.1.2.3", 80, hosts) and not allowed("11.0.0.1", 80, hosts)
    assert allowed("db.local", 5432, hosts) and not allowed("db.local", 22, hosts)
    assert allowed("::1", 8080, hosts) and not allowed("::1", 22, hosts)
    assert not allowed("example.com", 443, hosts)


def test_proxy_refuses_and_relays(tmp_path: Path) -> None:
    async def go() -> None:
        srv = await asyncio.start_server(lambda r, w: (w.write(b"hello"), w.close()), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        px = Proxy("t-px", [f"localhost:{port}"], str(tmp_path / "px.sock"))
        await px.start()

        async def ask(target: str) -> bytes:
            r, w = await asyncio.open_unix_connection(px.path)
            w.write(f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
            data = await asyncio.wait_for(r.read(), 10)
            w.close()
            return data

        assert (await ask(f"localhost:{port}")).endswith(b"\r\n\r\nhello")
        assert (await ask(f"127.0.0.1:{port}")).startswith(b"HTTP/1.1 403")
        assert px.refused == 1
        await px.close()
        srv.close()

    asyncio.run(go())
    assert not (tmp_path / "px.sock").exists()


@pytest.mark.parametrize(("value", "where", "says"), [
    ({"network": "bogus"}, "agents.a.sandbox.network", "is not one of"),
    (3, "agents.a.sandbox", "must be"),
    ({"allow_hosts": ["a b"]}, "agents.a.sandbox.allow_hosts", ""),
])
def test_config_errors_name_the_path(value: object, where: str, says: str) -> None:
    import json

    import aiwg_service.schemas  # noqa: F401  (every section registered)

    with pytest.raises(config.ConfigError) as e:
        config.parse(json.dumps({"agents": {"a": {"sandbox": value}}}), "x.json")
    assert where in str(e.value) and says in str(e.value)


def test_an_unknown_sandbox_key_is_a_warning_naming_it() -> None:
    import aiwg_service.schemas  # noqa: F401

    loaded = config.parse('{"agents": {"a": {"sandbox": {"hdie": ["~/x"]}}}}', "x.json")
    assert any("agents.a.sandbox.hdie" in str(w) for w in loaded.warnings), loaded.warnings



