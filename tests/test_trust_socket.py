"""Issue 18, part 2: aiwgctl talks only to its owner's service. A second real user plays the impostor."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from service_fixture import BIN, REPO, ServiceEnv, wait_for
from trust_support import Impostor, User

from aiwg_service.client import Client
from aiwg_service.client import Impostor as Refused


def alice_env(alice: User, home: Path) -> dict[str, str]:
    """Alice's shell without XDG_RUNTIME_DIR: the client falls back to /tmp/aiwg-<uid>."""
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(REPO),
            "PYTHONDONTWRITEBYTECODE": "1", "XDG_STATE_HOME": str(home / "state"),
            "XDG_CONFIG_HOME": str(home / "config"), "LANG": "C.UTF-8"}


@pytest.fixture
def alice_home(users: tuple[User, User], shared_tmp: Path) -> Path:
    alice, _ = users
    home = shared_tmp / "alice"
    home.mkdir(mode=0o700)
    os.chown(home, alice.uid, alice.gid)
    return home


def clean_fallback(uid: int) -> Path:
    d = Path(f"/tmp/aiwg-{uid}")
    subprocess.run(["rm", "-rf", str(d)], check=True)
    return d


def test_a_planted_tmp_dir_never_receives_a_prompt(users: tuple[User, User], shared_tmp: Path,
                                                    alice_home: Path) -> None:
    alice, mallory = users
    fallback = clean_fallback(alice.uid)
    subprocess.run([*mallory.as_user(), "mkdir", "-m", "0777", str(fallback)], check=True)
    imp = Impostor(mallory, fallback / "daemon.sock", shared_tmp)
    try:
        res = subprocess.run([*alice.as_user(), str(BIN / "aiwgctl"), "task", "submit", "the secret is hunter2"],
                             env=alice_env(alice, alice_home), cwd=alice_home, capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 1 and "Traceback" not in res.stderr
        assert f"refusing to talk to {fallback}/daemon.sock" in res.stderr
        assert f"belongs to uid {mallory.uid}" in res.stderr
        # the service refuses the planted directory too
        svc = subprocess.run([*alice.as_user(), str(BIN / "aiwg-service"), "run", "--project", str(alice_home)],
                             env=alice_env(alice, alice_home), cwd=alice_home, capture_output=True, text=True,
                             timeout=60)
        assert svc.returncode != 0 and f"owned by uid {mallory.uid}" in svc.stderr
        assert imp.received() == []  # not a connection, not a byte
    finally:
        imp.stop()
        clean_fallback(alice.uid)


def test_a_planted_tmp_symlink_is_never_followed_or_chmod_ed(users: tuple[User, User], shared_tmp: Path,
                                                             alice_home: Path) -> None:
    alice, mallory = users
    fallback = clean_fallback(alice.uid)
    victim = alice_home / "shared"  # a directory of alice's that others may read
    victim.mkdir(mode=0o755)
    os.chown(victim, alice.uid, alice.gid)
    subprocess.run([*mallory.as_user(), "ln", "-s", str(victim), str(fallback)], check=True)
    try:
        svc = subprocess.run([*alice.as_user(), str(BIN / "aiwg-service"), "run", "--project", str(alice_home)],
                             env=alice_env(alice, alice_home), cwd=alice_home, capture_output=True, text=True,
                             timeout=60)
        assert svc.returncode != 0 and "is a symlink" in svc.stderr and "Traceback" not in svc.stderr
        assert victim.stat().st_mode & 0o777 == 0o755 and list(victim.iterdir()) == []
    finally:
        clean_fallback(alice.uid)


def test_peer_uid_is_checked_on_every_connection(users: tuple[User, User], shared_tmp: Path,
                                                  tmp_path: Path) -> None:
    """Another user's socket moved into our own 0700 directory: only SO_PEERCRED can tell."""
    _, mallory = users
    theirs = shared_tmp / "m"
    subprocess.run([*mallory.as_user(), "mkdir", "-m", "0755", str(theirs)], check=True)
    imp = Impostor(mallory, theirs / "daemon.sock", shared_tmp)
    ours = tmp_path / "run"
    ours.mkdir(mode=0o700)
    os.rename(theirs / "daemon.sock", ours / "daemon.sock")
    try:
        with pytest.raises(Refused, match=f"served by uid {mallory.uid}, not by you"):
            Client(str(ours / "daemon.sock"), 10)
        res = subprocess.run([str(BIN / "aiwgctl"), "--socket", str(ours / "daemon.sock"), "ping"],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert res.returncode == 1 and "refusing to talk to" in res.stderr and "Traceback" not in res.stderr
        # connected, then closed unspoken (the listener logs each connection once the client has gone)
        assert wait_for(lambda: len(imp.received()) == 2 and imp.received()) == ["conn 0 b''", "conn 0 b''"]
    finally:
        imp.stop()


def test_a_socket_dir_open_to_others_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    with pytest.raises(Refused, match="mode 0755, not 0700"):
        Client(str(d / "daemon.sock"), 5)


def test_a_link_to_another_users_socket_is_ignored(service: ServiceEnv, users: tuple[User, User],
                                                   shared_tmp: Path) -> None:
    """A committed or planted .aiwg/daemon/daemon.sock leading to mallory's socket: our own service answers."""
    _, mallory = users
    theirs = shared_tmp / "m"
    subprocess.run([*mallory.as_user(), "mkdir", "-m", "0755", str(theirs)], check=True)
    imp = Impostor(mallory, theirs / "daemon.sock", shared_tmp)
    planted = shared_tmp / "work" / "repo"
    (planted / ".aiwg" / "daemon").mkdir(parents=True)
    (planted / ".aiwg" / "daemon" / "daemon.sock").symlink_to(theirs / "daemon.sock")
    try:
        res = service.ctl("ping", cwd=planted)
        assert res.returncode == 0, res.stderr
        assert f"pong from {service.socket}" in res.stdout
        assert "warning: ignoring" in res.stderr and f"belongs to uid {mallory.uid}" in res.stderr
        assert imp.received() == []
    finally:
        imp.stop()
