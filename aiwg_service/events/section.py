"""The ``watch`` and ``schedule`` sections: what the watcher and the cron scheduler read from config."""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct, field

from ..config import add_root_check, register_literal, register_pattern, register_section, show_value

EventKind = Literal["create", "modify", "delete"]
EXTENSION = r"^\.[^/\s]+$"
JOB_ID = r"^[A-Za-z0-9_.:-]+$"


class WatchPath(Struct):
    path: Annotated[str, Meta(min_length=1)]
    events: list[EventKind] = field(default_factory=lambda: ["create", "modify", "delete"])
    ignore: list[str] = field(default_factory=list)
    extensions: list[Annotated[str, Meta(pattern=EXTENSION)]] = field(default_factory=list)


def _default_watch_paths() -> list[WatchPath]:
    return [
        WatchPath(".aiwg/", ["create", "modify", "delete"], ["*.tmp", "working/**", "daemon/**"]),
        WatchPath("src/", ["modify"], extensions=[".ts", ".js", ".mjs"]),
    ]


class WatchSection(Struct):
    enabled: bool = True
    paths: list[WatchPath] = field(default_factory=_default_watch_paths)
    debounce_ms: Annotated[int, Meta(ge=0, le=600_000)] = 2000


class CronJob(Struct):
    id: Annotated[str, Meta(min_length=1, pattern=JOB_ID)]
    cron: Annotated[str, Meta(min_length=1)]
    action: Annotated[str, Meta(min_length=1)] = "doctor"
    prompt: str | None = None
    agent: str | None = None
    tz: str | None = None
    catch_up: bool = False
    enabled: bool = True


def _default_jobs() -> list[CronJob]:
    return [CronJob("health-check", "0 */6 * * *", "doctor")]


class ScheduleSection(Struct):
    enabled: bool = True
    jobs: list[CronJob] = field(default_factory=_default_jobs)


def check_schedule(cfg: Any) -> list[tuple[str, str]]:
    """Cron syntax, time zones and unique ids: what types alone cannot say."""
    from .cron import validate_expression, validate_timezone  # lazy: cronsim only when there are jobs

    errors: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, job in enumerate(cfg.schedule.jobs):
        if job.id in seen:
            errors.append((f"schedule.jobs[{i}].id", f"duplicate job id {show_value(job.id)}"))
        seen.add(job.id)
        problem = validate_expression(job.cron)
        if problem:
            errors.append((f"schedule.jobs[{i}].cron", problem))
        if job.tz:
            problem = validate_timezone(job.tz)
            if problem:
                errors.append((f"schedule.jobs[{i}].tz", problem))
    return errors


def escapes_root(root: str, rel: str) -> str | None:
    """Why ``rel`` (a watch path) leads outside ``root`` (its real path), by name or through a symlink."""
    norm = os.path.normpath(rel.strip() or ".")
    if os.path.isabs(norm) or norm == ".." or norm.startswith("../"):
        return "is outside the project root"
    real = os.path.realpath(os.path.join(root, norm))
    if real != root and not real.startswith(root.rstrip("/") + "/"):
        return f"leads outside the project root (to {real}, through a symlink)"
    return None


def check_watch_paths(cfg: Any, root: str) -> list[tuple[str, str]]:
    """Watch paths stay inside the project, checked on disk: ``config check`` says what the service enforces."""
    out = []
    for i, wp in enumerate(cfg.watch.paths):
        problem = escapes_root(root, wp.path)
        if problem:
            out.append((f"watch.paths[{i}].path", f"{show_value(wp.path)} {problem}"))
    return out


register_literal(EventKind)
register_pattern(EXTENSION, '{v} must start with a dot, like ".ts"')
register_pattern(JOB_ID, "{v} may use only letters, digits and _ . : -")
register_section("watch", WatchSection, WatchSection)
register_section("schedule", ScheduleSection, ScheduleSection, check=check_schedule)
add_root_check(check_watch_paths)
