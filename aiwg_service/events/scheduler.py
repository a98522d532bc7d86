"""The cron scheduler: each project's ``schedule.jobs`` -> ``cron.fired`` events on the bus.

It sleeps until the next fire time of any job on one wall-clock timer (``walltimer``); it never wakes to
poll. Each job's last fire time is persisted, so after a suspend or a stop a job with ``catch_up: true``
fires once for what it missed (not once per missed slot), and jobs without it just resume.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from .bus import EventBus
from .cron import CronSchedule, format_time
from .walltimer import WallTimer

log = logging.getLogger("aiwg.scheduler")


@dataclass
class Job:
    project: str
    id: str
    expr: str
    tz: str | None
    action: str
    prompt: str | None
    agent: str | None
    catch_up: bool
    schedule: CronSchedule
    next_fire: datetime | None = None
    last_fire: datetime | None = None
    fired: int = 0

    @property
    def key(self) -> str:
        return f"{self.project}|{self.id}"

    @property
    def signature(self) -> tuple[Any, ...]:
        return (self.expr, self.tz, self.action, self.prompt, self.agent, self.catch_up)


def _now() -> datetime:
    return datetime.now(UTC)


class CronScheduler:
    name = "scheduler"

    def __init__(self, bus: EventBus, state_dir: Path) -> None:
        self.bus = bus
        self.state_file = state_dir / "cron.json"
        self.jobs: dict[str, Job] = {}
        self.timer: WallTimer | None = None
        self.last_runs: dict[str, str] = {}

    async def start(self) -> None:
        try:
            self.last_runs = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            self.last_runs = {}
        except (OSError, ValueError) as exc:
            log.error("cron state %s unreadable (%s); catch-up starts afresh", self.state_file, exc)
            self.last_runs = {}
        self.timer = WallTimer(self._due)
        self.timer.start()

    async def stop(self) -> None:
        if self.timer is not None:
            self.timer.close()
            self.timer = None
        self._save()

    def apply(self, configs: Any) -> None:
        """Rebuild the job table from config; unchanged jobs keep their state and next fire time."""
        now = _now()
        wanted: dict[str, Job] = {}
        for root, project in configs.projects.items():
            sched = project.config.schedule
            if not sched.enabled:
                continue
            for j in sched.jobs:
                if not j.enabled:
                    continue
                job = Job(root, j.id, j.cron, j.tz, j.action, j.prompt, j.agent, j.catch_up,
                          CronSchedule(j.cron, j.tz))
                old = self.jobs.get(job.key)
                if old is not None and old.signature == job.signature:
                    wanted[job.key] = old
                    continue
                wanted[job.key] = job
                self._first_fire(job, now)
        self.jobs = wanted
        self._arm()

    def _first_fire(self, job: Job, now: datetime) -> None:
        last = self.last_runs.get(job.key)
        if last is not None:
            job.last_fire = datetime.fromisoformat(last)
        if job.catch_up and job.last_fire is not None:
            missed = job.schedule.missed_since(job.last_fire, now)
            if missed is not None:
                log.info("job %s missed its run at %s; catching up once", job.id, format_time(missed),
                         extra={"PROJECT": job.project})
                self._fire(job, missed, now, catch_up=True)
        job.next_fire = job.schedule.next_after(now)

    def _arm(self) -> None:
        if self.timer is None:
            return
        nxt = min((j.next_fire for j in self.jobs.values() if j.next_fire is not None), default=None)
        self.timer.arm(nxt.timestamp() if nxt is not None else None)

    def _due(self) -> None:
        """The timer fired (or the clock was set): fire what is due, once each, then re-arm."""
        now = _now()
        for job in list(self.jobs.values()):
            if job.next_fire is not None and job.next_fire <= now:
                self._fire(job, job.next_fire, now, catch_up=False)
                job.next_fire = job.schedule.next_after(now)
        self._save()
        self._arm()

    def _fire(self, job: Job, scheduled: datetime, now: datetime, catch_up: bool) -> None:
        job.fired += 1
        job.last_fire = now
        self.last_runs[job.key] = now.isoformat()
        data: dict[str, Any] = {"job_id": job.id, "action": job.action, "scheduled": format_time(scheduled),
                                "actual": format_time(now.astimezone(scheduled.tzinfo)), "catch_up": catch_up}
        if job.prompt is not None:
            data["prompt"] = job.prompt
        if job.agent is not None:
            data["agent"] = job.agent
        self.bus.publish("cron.fired", job.project, data, "cron")
        log.info("cron job %s fired (scheduled %s)", job.id, data["scheduled"], extra={"PROJECT": job.project})

    def _save(self) -> None:
        try:
            write_atomic(self.state_file, json.dumps(self.last_runs).encode())
        except OSError as exc:
            log.error("cannot save cron state: %s", exc)

    def list_jobs(self) -> list[dict[str, Any]]:
        return [{"project": j.project, "id": j.id, "cron": j.expr, "tz": j.tz or "system", "action": j.action,
                 "catch_up": j.catch_up, "fired": j.fired,
                 "next_fire": format_time(j.next_fire) if j.next_fire else None,
                 "last_fire": format_time(j.last_fire) if j.last_fire else None}
                for j in sorted(self.jobs.values(), key=lambda j: (j.next_fire or _now(), j.key))]

    def project_health(self, root: str) -> dict[str, Any]:
        return {"jobs": sum(1 for j in self.jobs.values() if j.project == root)}

    def health(self) -> dict[str, Any]:
        nxt = min((j.next_fire for j in self.jobs.values() if j.next_fire is not None), default=None)
        return {"jobs": len(self.jobs), "next_fire": format_time(nxt) if nxt else None,
                "fired": sum(j.fired for j in self.jobs.values())}
