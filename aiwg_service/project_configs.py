"""Each project's config loaded on its own, so that one bad file never takes down another project.

A project whose file cannot be used now (invalid, unreadable, nested too deep, its ``.aiwg`` turned into a
symlink, refused by a check) keeps its last good config: the one running, else the copy saved the last time
the file loaded (``<state>/last-good/``, so a restart does not lose it). It is marked failed with the reason.
With no good config at all it is not served, and listed as failed. Only the service-wide file can stop the
service.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from . import config, paths, safefs
from .atomic import write_atomic
from .config import FailedProject, Project
from .policy import trust

log = logging.getLogger("aiwg.service")


class LastGood:
    """The bytes of each project's last config that loaded, one private file per project."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "last-good"

    def _path(self, root: str) -> Path:
        return self.dir / (hashlib.sha256(root.encode()).hexdigest()[:32] + ".json")

    def save(self, root: str, data: bytes) -> None:
        path = self._path(root)
        with contextlib.suppress(OSError):
            if path.read_bytes() == data:
                return
        try:
            paths.ensure_private_dir(self.dir)
            write_atomic(path, data)
        except OSError as exc:
            log.warning("cannot keep a copy of %s's good config: %s", root, exc.strerror or exc,
                        extra={"PROJECT": root})

    def load(self, root: str) -> bytes | None:
        try:
            return safefs.read_limited(self._path(root))
        except OSError:
            return None

    def forget(self, root: str) -> None:
        with contextlib.suppress(OSError):
            self._path(root).unlink()


#: what the service does to a project just read: judge its trust and serve it only what it may set
Prepare = Callable[[Project, "config.Loaded"], None]


def read_project(root: str, persistent: bool) -> tuple[Project, config.Loaded]:
    """Load ``root``'s file as it is now (writing the default one if it has none), with what was loaded;
    raise ConfigError."""
    if not Path(root).is_dir():
        raise config.ConfigError([f"{root}: not a directory"])
    cfg_path = paths.project_config_file(root)
    try:
        if config.write_default(cfg_path):
            log.info("wrote the default config to %s", cfg_path, extra={"PROJECT": root})
    except OSError as exc:
        raise config.ConfigError([f"{cfg_path}: cannot write the default config: {exc.strerror or exc}"]) from None
    loaded = config.load_file(cfg_path)  # errors name the whole path: which project's file it is
    project = Project(root, loaded.config, loaded.warnings, persistent, loaded.sha256, trust.needs(loaded.raw))
    return project, loaded


def load(root: str, persistent: bool, previous: Project | None, last_good: LastGood,
         prepare: Prepare, assess: Callable[[Project], None]) -> Project | FailedProject:
    """The project as it should run now: its file, else its last good config (marked failed), else failed.
    ``prepare`` judges a freshly read config's trust and restricts it to what the project may set;
    ``assess`` re-judges the trust of the config already running."""
    try:
        project, loaded = read_project(root, persistent)
    except config.ConfigError as exc:
        errors = exc.errors
    except Exception as exc:  # whatever else fails one project's load (a check's bug) fails that project only
        log.debug("loading %s failed", root, exc_info=True, extra={"PROJECT": root})
        errors = [f"{paths.project_config_file(root)}: cannot be loaded: {exc.__class__.__name__}: {exc}"]
    else:
        if loaded.data is not None:
            last_good.save(root, loaded.data)
        prepare(project, loaded)
        return project
    for e in errors:
        log.error("%s", e, extra={"PROJECT": root})
    if previous is not None:
        kept = dataclasses.replace(previous, errors=list(errors), persistent=persistent,
                                   last_good=previous.last_good or "memory")
        log.warning("project %s keeps running its last good config", root, extra={"PROJECT": root})
        assess(kept)
        return kept
    saved = last_good.load(root)
    if saved is not None:
        cfg_path = paths.project_config_file(root)
        try:
            loaded = config.load_bytes(saved, cfg_path, f"{cfg_path} (last good copy)")
        except config.ConfigError as exc:  # the schema moved on since it was saved
            errors = errors + exc.errors
        else:
            project = Project(root, loaded.config, loaded.warnings, persistent, loaded.sha256,
                              trust.needs(loaded.raw), errors=list(errors), last_good="saved")
            log.warning("project %s runs its last good config, saved from an earlier run", root,
                        extra={"PROJECT": root})
            prepare(project, loaded)
            return project
    log.warning("project %s is not served: its config failed and it has no good one to fall back on", root,
                extra={"PROJECT": root})
    return FailedProject(root, persistent, list(errors))
