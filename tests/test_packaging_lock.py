"""The lock files packaging/build.sh builds the venv from still match pyproject.toml (packaging/lock.sh)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(lock: Path) -> dict[str, str]:
    """name -> version of every `name==version` in a lock file, each of which must carry hashes."""
    text = lock.read_text()
    pins = {}
    for block in re.split(r"\n(?=\S)", text):
        m = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block)
        if m:
            assert "--hash=sha256:" in block, f"{lock.name}: {m.group(1)} is pinned without a hash"
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def test_every_dependency_is_pinned_by_hash() -> None:
    """Each of pyproject.toml's dependencies has a hash-pinned version in packaging/requirements.lock, whose
    pins satisfy it; run packaging/lock.sh after changing the dependencies."""
    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = pinned(REPO / "packaging/requirements.lock")
    for dep in deps:
        req = Requirement(dep)
        version = pins.get(canonical(req.name))
        assert version is not None, f"{req.name} is not in packaging/requirements.lock: run packaging/lock.sh"
        assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version} does not satisfy {dep}"
    assert "--require-hashes" in (REPO / "packaging/build.sh").read_text()


def test_build_tools_are_pinned_by_hash() -> None:
    assert {"pip", "setuptools", "wheel"} <= set(pinned(REPO / "packaging/build-requirements.lock"))
