"""The service core: load config, start subsystems in order, serve, reload, and stop in reverse.

Subsystems never import each other; they meet at the bus (and the task store), and ``wiring`` builds
them from narrow ports. Each one follows the same small contract (``ports.Subsystem``), so the start order
is one list.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import gc
import importlib
import json
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from . import (
    __version__,
    aiwg_shape,
    config,
    faults,
    logsafe,
    looplag,
    paths,
    project_configs,
    project_log,
    safefs,
    served,
)
from . import protocol as p
from . import schemas as _schemas  # noqa: F401  (importing it registers every config section)
from . import systemd as sd
from .atomic import LatestWriter, write_atomic
from .config import Configs, Project, resolve_root
from .events import api as events_api
from .events.bus import EventBus
from .operations import Operations, Stopping
from .owned import OwnedTasks
from .policy import fields, identity, trust
from .policy.gate import Gate
from .ports import Subsystem
from .rpc import Connection, RpcServer, bind_socket

log = logging.getLogger("aiwg.service")


@dataclass
class RunOptions:
    projects: list[str] = field(default_factory=list)
    registered_only: bool = False
    socket: str | None = None
    log_file: str | None = None


class AlreadyRunning(RuntimeError):
    pass


class ApplyFailed(RuntimeError):
    """A subsystem refused a new config; the previous one was put back everywhere."""

    def __init__(self, subsystem: str, error: BaseException) -> None:
        super().__init__(f"{subsystem}: {error or type(error).__name__}")
        self.subsystem = subsystem
        self.error = error


def _root(path: str) -> str:
    """A project's identity; a path that cannot be resolved (a symlink loop) stays as written, to fail alone."""
    try:
        return resolve_root(path)
    except (OSError, RuntimeError):
        return os.path.abspath(path)


class Service:
    """One per user (or per project instance): owns the lock, the socket and the subsystems."""

    def __init__(self, opts: RunOptions) -> None:
        self.opts = opts
        #: where the log goes (main.setup_logging chose the same way): ``aiwgctl logs`` reads it from state.json
        self.log_to = "file" if opts.log_file else "journal" if sd.under_journal() else "stderr"
        self.state_dir = paths.state_dir()
        self.socket_path = paths.socket_path(opts.socket)
        self.bus = EventBus(self.state_dir / "deadletters.json", seq_path=self.state_dir / "events.seq")
        self.rpc = RpcServer()
        self.subsystems: list[Subsystem] = []
        self.started: list[Subsystem] = []
        self.configs: Configs | None = None
        self.started_at = time.time()
        self.stop_event = asyncio.Event()
        self.last_reload: dict[str, Any] = {"ok": True, "time": None, "errors": []}
        self.socket_activated = False
        self._lock_fd: int | None = None
        self._timers: list[asyncio.Task[None]] = []
        self._status_pending = False
        self.ops = Operations()  # every change (reload, projects, trust, stop), one at a time
        self.background = OwnedTasks("service", log)
        self.loop_lag = looplag.LoopLag()
        #: heartbeat and status rewrites of state.json, in a thread (stop drains it before the last write)
        self._state_out = LatestWriter(self.state_dir / "state.json",
                                       lambda exc: log.error("cannot write state.json: %s", exc))
        self.last_heartbeat: str | None = None
        self.trust_store = trust.TrustStore(self.state_dir)
        self.last_good = project_configs.LastGood(self.state_dir)
        #: projects stopped through their ``daemon.pid`` (the AIWG CLI's ``stop``): not served until added again
        self.stopped: set[str] = set()
        self.project_logs = project_log.ProjectLogs(self.log_limits)
        self.presence = served.Presence(self.rpc, paths.runtime_base() / "p", lambda: self.socket_path,
                                        self.state_dir / "state.json", self.stop_serving)
        self._trust_announced: dict[str, tuple[str | None, str]] = {}
        self.gate = Gate(self.untrusted, self._project_channels, self.bus.publish)
        self.rpc.gate = self.gate.rpc_hook

    # -- config ----------------------------------------------------------------------------------------
    def registry_file(self) -> Path:
        return self.state_dir / "projects.json"

    def registered(self) -> list[str]:
        try:
            data = json.loads(self.registry_file().read_text())
            return [str(x) for x in data.get("projects", [])]
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.error("project registry %s unreadable (%s); serving no registered projects",
                      self.registry_file(), exc)
            return []

    def save_registry(self, configs: Configs | None = None) -> None:
        configs = configs or self.configs
        assert configs is not None
        roots = sorted({r for r, pr in configs.projects.items() if pr.persistent}
                       | {r for r, f in configs.failed.items() if f.persistent})  # a failed one stays registered
        write_atomic(self.registry_file(), json.dumps({"projects": roots}, indent=2).encode() + b"\n")

    def _project_channels(self) -> dict[str, list[str]]:
        return self.configs.service.messaging.project_channels if self.configs is not None else {}

    def load_project(self, root: str, persistent: bool, service_cfg: Any = None) -> Project:
        """``root``'s config as it is on disk now (``project.add``): raise ConfigError if it cannot be used."""
        project, loaded = project_configs.read_project(root, persistent)
        if loaded.data is not None:
            self.last_good.save(root, loaded.data)
        self.prepare_project(project, loaded, service_cfg)
        return project

    def prepare_project(self, project: Project, loaded: config.Loaded, service_cfg: Any = None) -> None:
        """Judge a freshly read config's trust, then serve it only what it may set: inert fields, and limits
        no higher than the service's (``policy.fields``)."""
        self.assess_trust(project)
        if loaded.raw is not None:  # serve only what it may set: inert fields, limits no higher than ours
            service = service_cfg if service_cfg is not None else self.current_configs().service
            project.config = self._restricted(project, loaded, service)

    @staticmethod
    def _restricted(project: Project, loaded: config.Loaded, service: Any) -> Any:
        display = config.display_name(paths.project_config_file(project.root), Path(project.root))
        raw = fields.restrict(loaded.raw, project.untrusted is None, service, project.warnings.append)
        if raw == loaded.raw:
            return loaded.config
        try:
            return config.validate(raw, display).config
        except config.ConfigError:  # e.g. a rule naming an agent profile it may not define: hold every rule
            raw = {k: v for k, v in raw.items() if k != "rules"}
            raw.get("schedule", {}).pop("jobs", None)
            return config.validate(raw, display).config

    # -- trust -----------------------------------------------------------------------------------------
    def assess_trust(self, project: Project) -> None:
        project.untrusted = trust.verdict(project.root, project.sha256, project.needs_trust, self.trust_store)

    def untrusted(self, root: str) -> str | None:
        """The port rules and agent profiles obey: why ``root`` may not run anything now, or None."""
        pr = self.configs.projects.get(root) if self.configs is not None else None
        return pr.untrusted if pr is not None else None

    def announce_trust(self) -> None:
        """One ``trust.required`` event (and log line) per untrusted project and config, so bridges can ask."""
        assert self.configs is not None
        for root, pr in self.configs.projects.items():
            if pr.untrusted is None:
                self._trust_announced.pop(root, None)
                continue
            key = (pr.sha256, pr.untrusted)
            if self._trust_announced.get(root) == key:
                continue
            self._trust_announced[root] = key
            log.warning("project %s is untrusted: %s; its rules and jobs run nothing", root, pr.untrusted,
                        extra={"PROJECT": root})
            self.bus.publish("trust.required", root, {"path": root, "reason": pr.untrusted,
                                                      "needs": pr.needs_trust, "sha256": pr.sha256}, "service")

    async def trust_changed(self, root: str, sha256: str | None) -> None:
        """Re-judge every project: reload, since what a project is served with depends on its trust (and the
        user trusted what is on disk now: run that, not the older copy)."""
        assert self.configs is not None
        del root, sha256  # what a project is served with depends on its trust: re-read them all (what is on
        await self._reload()  # disk now, which is what the user trusted; already inside a change)
        for project in self.configs.projects.values():
            self.assess_trust(project)
        self.announce_trust()
        self.write_state()
        self.schedule_status()

    def load_all(self) -> Configs:
        """Load the service file and every project's file; raise ConfigError with every problem."""
        errors: list[str] = []
        service_cfg = config.Config()
        service_warnings: list[str] = []
        try:
            loaded = config.load_file(paths.service_config_file())
            service_cfg, service_warnings = loaded.config, loaded.warnings
        except config.ConfigError as exc:
            errors.extend(exc.errors)
        roots: dict[str, bool] = {}
        for r in self.registered():
            roots[_root(r)] = True
        cli = self.opts.projects or ([] if self.opts.registered_only else [os.getcwd()])
        for r in cli:
            roots.setdefault(_root(r), False)
        if self.configs is not None:  # projects added at run time stay through a reload
            for r, pr in self.configs.projects.items():
                roots.setdefault(r, pr.persistent)
            for r, fp in self.configs.failed.items():
                roots.setdefault(r, fp.persistent)
        if errors:  # only the service-wide file stops everything
            raise config.ConfigError(errors)
        projects: dict[str, Project] = {}
        failed: dict[str, config.FailedProject] = {}
        for root, persistent in roots.items():
            if persistent and not Path(root).is_dir():
                # a deleted project must not keep the whole service down (exit 78 is never restarted)
                service_warnings.append(f"registered project {root} no longer exists; skipped "
                                        f"(`aiwgctl project remove {root}` forgets it)")
                continue
            if root in self.stopped:
                continue
            # one project's file never takes down another: it keeps its last good config, or is not served
            previous = self.configs.projects.get(root) if self.configs is not None else None
            got = project_configs.load(root, persistent, previous, self.last_good,
                                       lambda pr, ld: self.prepare_project(pr, ld, service_cfg), self.assess_trust)
            if isinstance(got, Project):
                projects[root] = got
            else:
                failed[root] = got
        self.fail_across_files(service_cfg, projects, failed)
        return Configs(service_cfg, service_warnings, projects, failed)

    def fail_across_files(self, service_cfg: Any, projects: dict[str, Project],
                          failed: dict[str, config.FailedProject]) -> None:
        """Checks across files (a hook id defined twice...): the project whose file a problem names fails as a
        bad file of its own would: it keeps the config it runs now, or, with none, is not served; the others run."""
        errors = self.files_errors(service_cfg, projects)
        for root in list(projects):
            mine = [e for e in errors if e.startswith(f"{paths.project_config_file(root)}:")]
            if not mine:
                continue
            previous = self.configs.projects.get(root) if self.configs is not None else None
            for e in mine:
                log.error("%s (project %s %s)", e, root,
                          "keeps the config it runs" if previous is not None else "is not served",
                          extra={"PROJECT": root})
            if previous is not None:
                projects[root] = dataclasses.replace(previous, errors=mine,
                                                     last_good=previous.last_good or "memory")
            else:
                failed[root] = config.FailedProject(root, projects.pop(root).persistent, mine)

    @staticmethod
    def files_errors(service_cfg: Any, projects: dict[str, Project]) -> list[str]:
        """Checks across files (``config.FILES_CHECKS``: a hook id in two files...), on what is served."""
        files = {str(paths.project_config_file(r)): pr.config for r, pr in projects.items()}
        return [e for check in config.FILES_CHECKS for e in check(service_cfg, str(paths.service_config_file()), files)]

    # -- lifecycle -------------------------------------------------------------------------------------
    def acquire_lock(self) -> None:
        paths.ensure_private_dir(self.state_dir, allow_link=True)  # the user's own choice of disk
        identity.load_key(self.state_dir)  # signs the caller tokens agents and rule shells carry
        changed = paths.tighten_tree(self.state_dir)
        if changed:
            log.info("made %d file(s) in %s private (0600/0700)", changed, self.state_dir)
        fd = os.open(self.state_dir / "service.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(
                f"aiwg-service is already running for this user (pid {other}, state {self.state_dir}); "
                f"talk to it with `aiwgctl status`, or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def listening_socket(self) -> socket.socket:
        for fd, name in sd.listen_fds():
            if name in ("webhook", "aiwg-webhook.socket", "web", "aiwg-web.socket"):  # webhooks' and the dashboard's
                continue
            if name in ("rpc", "aiwg.socket", "unknown", "") or name.endswith(".socket"):
                self.socket_activated = True
                sock = socket.socket(fileno=fd)
                # The unit decides the path (aiwg@.socket: instances/<escaped>.sock), not our default:
                # project links and daemon.status must name the socket clients can really reach.
                bound = sock.getsockname()
                if isinstance(bound, str) and bound.startswith("/"):
                    self.socket_path = Path(bound)
                log.info("serving on the socket passed by systemd (fd %d, %s)", fd, self.socket_path)
                return sock
        return bind_socket(self.socket_path)

    def build(self) -> None:
        """The fixed start order (``wiring``), built from narrow ports, never from this object."""
        from .wiring import CorePorts, build_subsystems

        self.subsystems = build_subsystems(CorePorts(
            bus=self.bus, rpc=self.rpc, configs=self.current_configs, state_dir=self.state_dir,
            listen=self.listening_socket, health=self.health, config_status=lambda: self.last_reload,
            socket_path=lambda: self.socket_path, untrusted=self.untrusted, state=self.state,
            request_stop=self.request_stop, gate=self.gate,
        ))

    def current_configs(self) -> Configs:
        """The read-only view subsystems get: always the configs in force now."""
        assert self.configs is not None, "configs are loaded before any subsystem is built"
        return self.configs

    def log_limits(self, root: str) -> tuple[int, int, int] | None:
        """A served project's ``daemon.log`` bounds and level (its own file's ``daemon.log``), else None."""
        pr = self.configs.projects.get(root) if self.configs is not None else None
        if pr is None:
            return None
        lc = pr.config.daemon.log
        return lc.max_size_mb * 1024 * 1024, lc.max_files, logging.getLevelName(lc.level.upper())

    async def start(self) -> None:
        self.loop_lag.install()
        loop = asyncio.get_running_loop()
        # a stop asked for while the service starts (the socket answers early) is a graceful stop once it has
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        self.acquire_lock()
        logging.getLogger().addHandler(logsafe.install(self.project_logs))
        self.configs = self.load_all()
        for w in self.configs.service_warnings:
            log.warning("%s", w)
        for pr in self.configs.projects.values():
            for w in pr.warnings:
                log.warning("%s", w, extra={"PROJECT": pr.root})
        self.register_rpc()
        # Answer first: the socket serves as soon as the config is loaded, so ping and daemon.status answer
        # (saying what is still starting) while the subsystems are imported and started; any other method
        # waits until they are (rpc.RpcServer.starting).
        self.rpc.starting = asyncio.Event()
        self.rpc.max_connections = self.configs.service.daemon.max_connections
        await self.rpc.serve(self.listening_socket())
        try:
            # the subsystems' modules load in a thread: the loop answers pings meanwhile
            await asyncio.to_thread(importlib.import_module, "aiwg_service.wiring")
            self.build()
            for sub in self.subsystems:
                await asyncio.sleep(0)  # a turn for whatever arrived on the socket
                log.debug("starting %s", sub.name)
                await sub.start()
                self.started.append(sub)
            await self.apply_configs()
            await self.sync_presence()  # project sockets and links: in place before "ready"
        finally:
            self.rpc.starting.set()  # waiting requests run now (or fail as they would, if start failed)
            self.rpc.starting = None
        self.announce_trust()
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self._timers.append(self.background.spawn(self._heartbeat(), "heartbeat"))
        interval = sd.watchdog_interval()
        if interval:
            self._timers.append(self.background.spawn(self._watchdog(interval), "watchdog"))
        self.bus.subscribe("task.*", lambda _e: self.schedule_status(), name="status-line")
        self.write_state()
        # start-up objects live as long as the service: keep them out of every future GC pass
        gc.freeze()
        sd.notify_status(self.status_line())
        sd.notify_ready()
        log.info("aiwg-service %s ready: %d project(s), socket %s", __version__, len(self.configs.projects),
                 "from systemd" if self.socket_activated else self.socket_path)

    async def run(self) -> None:
        await self.start()
        await self.stop_event.wait()
        await self.ops.stop(self.stop)  # after the change in progress; later ones are refused

    def request_stop(self) -> None:
        if not self.stop_event.is_set():
            log.info("stopping")
            self.rpc.accepting = False
            self.ops.stopping = True
            self.stop_event.set()

    def _on_sighup(self) -> None:
        if self.ops.stopping:
            log.info("SIGHUP ignored: the service is stopping")
            return
        self.background.spawn(self._sighup_reload(), "SIGHUP reload")

    async def _sighup_reload(self) -> None:
        try:
            await self.reload()  # refusals and failures are logged by the reload itself
        except Stopping:
            log.info("SIGHUP reload dropped: the service is stopping")

    async def stop(self) -> None:
        sd.notify_stopping()
        assert self.configs is not None
        grace = self.configs.service.daemon.stop_timeout_seconds
        sd.notify_extend_timeout((grace + 15) * 1_000_000)
        for t in self._timers:
            t.cancel()
        await self.background.close()
        for sub in reversed(self.started):
            try:
                await sub.stop()
            except Exception:
                log.exception("stopping %s failed", sub.name)
        self.started.clear()
        await self.presence.close()
        await self._state_out.drain()  # a heartbeat's rewrite in flight must not land after the last one
        self.write_state(stopped=True)
        logging.getLogger().removeHandler(self.project_logs)
        self.project_logs.close()
        if not self.socket_activated and safefs.is_socket(self.socket_path):  # never a file put in its place
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        self.loop_lag.close()
        log.info("stopped")

    async def apply_configs(self, fault_point: str | None = None) -> None:
        """Hand the configs in force to every started subsystem, in start order; the first refusal raises
        ``ApplyFailed`` (``fault_point``: where a test may inject one, see ``faults``)."""
        assert self.configs is not None
        for sub in self.started:
            apply = getattr(sub, "apply", None)
            if apply is None:
                continue
            try:
                if fault_point is not None:
                    faults.fail(fault_point, sub.name)
                res = apply(self.configs)
                if asyncio.iscoroutine(res):
                    await res
            except Exception as exc:
                raise ApplyFailed(sub.name, exc) from exc
        self.schedule_status()

    async def switch_configs(self, new: Configs, what: str) -> None:
        """Make ``new`` the config of every subsystem, or, when one refuses it, the previous one again in
        every subsystem (those applied before the refusal too), then raise ``ApplyFailed``."""
        old = self.configs
        self.configs = new
        try:
            await self.apply_configs(fault_point=f"{what}.apply")
        except ApplyFailed as exc:
            log.error("%s: %s refused the new config (%s); restoring the previous config everywhere", what,
                      exc.subsystem, exc.error or type(exc.error).__name__, exc_info=exc.error)
            self.configs = old
            for sub in self.started:
                apply = getattr(sub, "apply", None)
                if apply is None:
                    continue
                try:
                    res = apply(old)
                    if asyncio.iscoroutine(res):
                        await res
                except Exception:
                    log.exception("%s: %s could not take the previous config back either", what, sub.name)
            self.schedule_status()
            raise

    async def reload(self) -> dict[str, Any]:
        """Re-read every config file and apply it, as one service-owned change (see ``operations``)."""
        return await self.ops.run("daemon.reload", self._reload)

    async def _reload(self) -> dict[str, Any]:
        """Apply only if all of it is valid, else keep the old one running; a subsystem that refuses the new
        config rolls it back everywhere. A project whose own file fails keeps its last good config (or is not
        served) while the others reload. RELOADING=1 is always followed by READY=1."""
        sd.notify_reloading()
        try:
            return await self._reload_inner()
        finally:
            sd.notify_ready()

    async def _reload_inner(self) -> dict[str, Any]:
        when = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            new = self.load_all()
        except config.ConfigError as exc:
            self.last_reload = {"ok": False, "time": when, "errors": exc.errors}
            for e in exc.errors:
                log.error("reload refused: %s", e)
            sd.notify_status("reload refused: invalid config; old config still running · " + self.status_line())
            return {"reloaded": False, "errors": exc.errors}
        try:
            await self.switch_configs(new, "reload")
        except ApplyFailed as exc:
            error = f"reload failed in {exc}; the previous config was restored"
            self.last_reload = {"ok": False, "time": when, "errors": [error], "rolled_back": True}
            self.write_state()
            sd.notify_status(f"reload failed in {exc.subsystem}; old config restored · " + self.status_line())
            return {"reloaded": False, "errors": [error], "rolled_back": True}
        await self.sync_presence()
        self.announce_trust()
        warnings = new.service_warnings + [w for pr in new.projects.values() for w in pr.warnings]
        failures = new.failures()
        errors = [e for f in failures for e in f["errors"]]
        failed = [f["path"] for f in failures]
        self.last_reload = {"ok": not errors, "time": when, "errors": errors, "warnings": warnings, "failed": failed}
        self.write_state()
        log.info("reloaded: %d project(s)", len(new.projects))
        for f in failures:
            kept = "keeps its last good config" if f["served"] else "is not served"
            for e in f["errors"]:
                log.error("reload refused: %s (project %s %s; the others reloaded)", e, f["path"], kept,
                          extra={"PROJECT": f["path"]})
        sd.notify_status(self.status_line())
        return {"reloaded": True, "errors": errors, "warnings": warnings, "failed": failed}

    # -- state, heartbeat, watchdog, status line --------------------------------------------------------
    def starting(self) -> list[str]:
        """Subsystems not started yet (all of them, by name, while the wiring is still being imported)."""
        if self.rpc.starting is None:
            return []
        if not self.subsystems:
            return ["subsystems"]
        return [sub.name for sub in self.subsystems if sub not in self.started]

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        waiting = set(self.starting())
        for sub in self.subsystems:
            if sub.name in waiting:
                out[sub.name] = {"starting": True}
                continue
            try:
                out[sub.name] = sub.health()
            except Exception as exc:
                out[sub.name] = {"error": str(exc)}
        return out

    def state(self) -> dict[str, Any]:
        assert self.configs is not None
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": datetime.fromtimestamp(self.started_at, UTC).isoformat(timespec="seconds"),
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "socket": str(self.socket_path),
            "socket_activated": self.socket_activated,
            "log_file": self.opts.log_file and str(Path(self.opts.log_file).resolve()),
            "log_to": self.log_to,
            "state_dir": str(self.state_dir),
            "projects": self.project_infos(),
            "subsystems": self.health(),
            "counts": {"requests": self.rpc.requests, "connections": len(self.rpc.connections),
                       "internal_errors": self.rpc.errors, "events": self.bus.published},
            "config": self.last_reload,
            "loop": self.loop_lag.snapshot(),
            "operations": {"current": self.ops.current, "done": self.ops.done, "stopping": self.ops.stopping},
            "status": self.status_line(),
            "starting": self.starting(),
        }

    def daemon_status(self, project: str | None = None) -> dict[str, Any]:
        """``daemon.status``: our state, plus the fields the AIWG daemon's CLI prints (``aiwg_shape``); through a
        project's own socket, those fields count that project's tasks, rules, jobs and watched events only."""
        st = self.state()
        if project is not None:
            st["project"] = project
            st["subsystems"] = aiwg_shape.scoped(st["subsystems"], project, self.project_health(project))
        problems = aiwg_shape.issues(st["subsystems"], self.last_reload, self.failures())
        st.update(aiwg_shape.status(st["subsystems"], len(self.rpc.connections), problems))
        return st

    def project_health(self, root: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for sub in self.subsystems:
            of = getattr(sub, "project_health", None)
            if of is not None:
                try:
                    out[sub.name] = of(root)
                except Exception as exc:
                    out[sub.name] = {"error": str(exc)}
        return out

    def failures(self) -> list[dict[str, Any]]:
        return self.configs.failures() if self.configs is not None else []

    def write_state(self, stopped: bool = False, *, background: bool = False) -> None:
        """``background``: the frequent rewrites (heartbeat, status changes) go through a worker thread;
        the others (start, changes, stop) are written before this returns."""
        try:
            st = self.state()
            st["running"] = not stopped
            st["last_heartbeat"] = self.last_heartbeat
            problems = aiwg_shape.issues(st["subsystems"], self.last_reload, self.failures())
            st.update(aiwg_shape.state_file(st["subsystems"], problems))
            data = msgspec.json.encode(st)
            if background:
                self._state_out.submit(data)
            else:
                write_atomic(self.state_dir / "state.json", data)
        except OSError as exc:
            log.error("cannot write state.json: %s", exc)

    async def _heartbeat(self) -> None:
        hb = self.state_dir / "heartbeat"
        while True:
            looplag.poke()  # the heartbeat's own work (health of every subsystem, state.json) is measured
            self.last_heartbeat = datetime.now(UTC).isoformat(timespec="seconds")
            try:
                # rewritten in place (its mtime is what counts), created private whatever the umask
                fd = os.open(hb, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
                try:
                    os.write(fd, self.last_heartbeat.encode() + b"\n")
                finally:
                    os.close(fd)
            except OSError as exc:
                log.error("cannot touch the heartbeat file: %s", exc)
            self.write_state(background=True)
            assert self.configs is not None
            await asyncio.sleep(self.configs.service.daemon.heartbeat_interval_seconds)

    async def _watchdog(self, interval: float) -> None:
        # sent from the event loop itself: if the loop hangs, systemd stops hearing from us
        while True:
            sd.notify_watchdog()
            await asyncio.sleep(interval)

    def status_line(self) -> str:
        assert self.configs is not None
        n = len(self.configs.projects)
        parts = [f"{n} project{'s' if n != 1 else ''}"]
        health = self.health()
        tasks = health.get("supervisor", {})
        if "running" in tasks:
            parts.append(f"{tasks['running']} running")
            parts.append(f"{tasks.get('queued', 0)} queued")
        watcher = health.get("watcher", {})
        if "watched_dirs" in watcher:
            n_dirs = watcher["watched_dirs"]
            parts.append(f"watching {n_dirs:,} dir{'s' if n_dirs != 1 else ''}")
        failed = len(self.configs.failures())
        if failed:
            parts.append(f"{failed} failed (aiwgctl project list)")
        untrusted = sum(1 for pr in self.configs.projects.values() if pr.untrusted is not None)
        if untrusted:
            parts.append(f"{untrusted} untrusted (aiwgctl trust)")
        if not self.last_reload.get("ok", True):
            parts.append("last reload failed" if self.last_reload.get("rolled_back") else "last reload refused")
        starting = self.starting()
        if starting:
            parts.append("starting " + ", ".join(starting))
        return " · ".join(parts)

    def schedule_status(self) -> None:
        """Coalesce STATUS= updates and state.json rewrites (the AIWG CLI's fallback reads its agent
        counts): at most one per half second, however busy the bus is."""
        if self._status_pending:
            return
        self._status_pending = True

        def send() -> None:
            self._status_pending = False
            if self.configs is not None:
                sd.notify_status(self.status_line())
                if self.started:
                    self.write_state(background=True)

        asyncio.get_running_loop().call_later(0.5, send)

    # -- projects --------------------------------------------------------------------------------------
    async def sync_presence(self) -> None:
        """Each served project's own socket, ``.aiwg/daemon.pid``, links and log, in line with what is served."""
        assert self.configs is not None
        await self.presence.sync(self.configs.projects)
        self.project_logs.retain(self.configs.projects)

    async def stop_serving(self, root: str) -> None:
        """A project's ``daemon.pid`` stand-in got SIGTERM (the AIWG CLI's ``stop``): serve it no more, until
        ``aiwgctl project add`` or the next start. Stopping the only project served stops the service."""
        with contextlib.suppress(Stopping):  # the whole service is stopping anyway
            await self.ops.run("project.stop", lambda: self._stop_serving(root))

    async def _stop_serving(self, root: str) -> None:
        assert self.configs is not None
        if root not in self.configs.projects:
            return
        if len(self.configs.projects) == 1:
            self.request_stop()
            return
        self.stopped.add(root)
        del self.configs.projects[root]
        await self.sync_presence()
        await self.apply_configs()
        self.write_state()
        log.info("project %s is no longer served (stopped through its daemon.pid); `aiwgctl project add %s` "
                 "serves it again", root, root, extra={"PROJECT": root})
        self.bus.publish("project.stopped", root, {"path": root}, "service")

    # -- RPC handlers ----------------------------------------------------------------------------------
    def register_rpc(self) -> None:
        r = self.rpc.register
        r("ping", self.rpc_ping)
        # (an in-process caller, the dashboard's, has no project: it sees the whole service)
        r("daemon.status", lambda _p, c: self.daemon_status(getattr(c, "project", None)))
        r("daemon.reload", self.rpc_reload)
        r("project.add", self.rpc_project_add)
        r("project.remove", self.rpc_project_remove)
        r("project.list", self.rpc_project_list)
        r("trust.show", self.rpc_trust_show)
        r("trust.allow", self.rpc_trust_allow)
        r("trust.revoke", self.rpc_trust_revoke)
        events_api.register(self.rpc, self.bus)

    @staticmethod
    def rpc_ping(_params: p.NoParams, _conn: Connection) -> dict[str, Any]:
        return {"pong": True, "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds")}

    async def change(self, name: str, fn: Any) -> Any:
        """Run ``fn`` as a service-owned change (see ``operations``); a caller that hangs up loses only the
        reply. Refused with SERVER_BUSY once the service is stopping."""
        try:
            return await self.ops.run(name, fn)
        except Stopping as exc:
            raise p.RpcError(p.SERVER_BUSY, str(exc)) from None

    async def rpc_reload(self, _params: p.ReloadParams, _conn: Connection) -> dict[str, Any]:
        result = await self.change("daemon.reload", self._reload)
        if result.get("rolled_back"):
            raise p.RpcError(p.INTERNAL_ERROR, result["errors"][0], {"errors": result["errors"], "rolled_back": True})
        if not result["reloaded"]:
            raise p.RpcError(p.CONFIG_INVALID, "reload refused: invalid config; the old config keeps running",
                             {"errors": result["errors"]})
        if result.get("failed"):
            raise p.RpcError(p.CONFIG_INVALID, f"reload refused for {len(result['failed'])} project(s): invalid "
                             "config; each keeps its last good config (or is not served); the others reloaded",
                             {"errors": result["errors"], "failed": result["failed"]})
        return result

    def project_infos(self) -> list[dict[str, Any]]:
        """Every project: served ones, then those not served because their config failed."""
        assert self.configs is not None
        registered = set(self.registered()) if self.stopped else set()
        stopped = [{"path": r, "state": "stopped", "served": False, "persistent": r in registered, "warnings": [],
                    "config": str(paths.project_config_file(r)), "trusted": False, "untrusted_reason": None,
                    "needs_trust": [], "errors": [],
                    "reason": "stopped through its .aiwg/daemon.pid; `aiwgctl project add` serves it again"}
                   for r in sorted(self.stopped)]
        return ([pr.info() for pr in self.configs.projects.values()] + [f.info() for f in self.configs.failed.values()]
                + stopped)

    def rpc_project_list(self, _params: p.NoParams, _conn: Connection) -> dict[str, Any]:
        return {"projects": self.project_infos()}

    async def rpc_project_add(self, params: p.ProjectPathParams, _conn: Connection) -> dict[str, Any]:
        root = resolve_root(params.path)
        return await self.change("project.add", lambda: self._project_add(root))  # type: ignore[no-any-return]

    def _save_registry_or_refuse(self, configs: Configs, what: str) -> None:
        try:
            self.save_registry(configs)
        except OSError as exc:
            raise p.RpcError(p.INTERNAL_ERROR, f"{what}: cannot write {self.registry_file()}: "
                                               f"{exc.strerror or exc}; nothing changed") from None

    async def _switch_projects(self, new: Configs, what: str) -> None:
        """Disk first (the registry), then memory (every subsystem); a refusal puts both back."""
        assert self.configs is not None
        old = self.configs
        self._save_registry_or_refuse(new, what)
        try:
            await self.switch_configs(new, what.split(" ", 1)[0])
        except ApplyFailed as exc:
            try:
                self.save_registry(old)
            except OSError as err:
                log.error("%s: cannot restore %s: %s", what, self.registry_file(), err)
            raise p.RpcError(p.INTERNAL_ERROR, f"{what} failed in {exc}; nothing changed") from None

    async def _project_add(self, root: str) -> dict[str, Any]:
        assert self.configs is not None
        existing = self.configs.projects.get(root)
        if existing is not None and existing.persistent:
            return {"added": False, "project": existing.info()}
        try:
            project = self.load_project(root, persistent=True)
        except config.ConfigError as exc:
            raise p.RpcError(p.CONFIG_INVALID if Path(root).is_dir() else p.INVALID_PARAMS,
                             f"cannot add {root}: {exc.errors[0]}", {"param": "path", "errors": exc.errors}) from None
        errors = self.files_errors(self.configs.service, {**self.configs.projects, root: project})
        if errors:
            raise p.RpcError(p.CONFIG_INVALID, f"cannot add {root}: {errors[0]}", {"param": "path", "errors": errors})
        old = self.configs
        await self._switch_projects(Configs(old.service, old.service_warnings, {**old.projects, root: project},
                                            {r: f for r, f in old.failed.items() if r != root}),
                                    f"project.add {root}")
        self.stopped.discard(root)
        await self.sync_presence()
        self.write_state()
        log.info("project added: %s", root, extra={"PROJECT": root})
        self.bus.publish("project.added", root, {"path": root}, "service")
        self.announce_trust()
        return {"added": True, "project": project.info()}

    async def rpc_project_remove(self, params: p.ProjectPathParams, _conn: Connection) -> dict[str, Any]:
        root = resolve_root(params.path)
        return await self.change("project.remove", lambda: self._project_remove(root))  # type: ignore[no-any-return]

    async def _project_remove(self, root: str) -> dict[str, Any]:
        assert self.configs is not None
        if root not in self.configs.projects and root not in self.configs.failed:
            raise p.RpcError(p.INVALID_PARAMS, f"Invalid params: path: {root} is not a registered project",
                             {"param": "path"})
        old = self.configs
        await self._switch_projects(Configs(old.service, old.service_warnings,
                                            {r: pr for r, pr in old.projects.items() if r != root},
                                            {r: f for r, f in old.failed.items() if r != root}),
                                    f"project.remove {root}")
        self.last_good.forget(root)
        self.stopped.discard(root)
        await self.sync_presence()
        self.write_state()
        log.info("project removed: %s", root, extra={"PROJECT": root})
        self.bus.publish("project.removed", root, {"path": root}, "service")
        return {"removed": True, "path": root}

    def _describe(self, path: str) -> dict[str, Any]:
        root = resolve_root(path)
        if not Path(root).is_dir():
            raise p.RpcError(p.INVALID_PARAMS, f"Invalid params: path: {root} is not a directory", {"param": "path"})
        try:
            d = trust.describe(root, self.trust_store)
        except trust.Unreadable as exc:
            raise p.RpcError(p.CONFIG_INVALID, str(exc), {"param": "path"}) from None
        assert self.configs is not None
        served = self.configs.projects.get(root)
        d["served"] = served is not None
        d["untrusted_reason"] = served.untrusted if served is not None else None
        return d

    def rpc_trust_show(self, params: p.ProjectPathParams, _conn: Connection) -> dict[str, Any]:
        return self._describe(params.path)

    async def rpc_trust_allow(self, params: p.TrustParams, _conn: Connection) -> dict[str, Any]:
        return await self.change("trust.allow", lambda: self._trust_allow(params))  # type: ignore[no-any-return]

    async def _trust_allow(self, params: p.TrustParams) -> dict[str, Any]:
        d = self._describe(params.path)
        root = d["path"]
        if d["problem"]:
            raise p.RpcError(p.NOT_ALLOWED, f"{root} cannot be trusted: {d['problem']}", {"param": "path"})
        if params.sha256 is not None and params.sha256 != d["sha256"]:
            raise p.RpcError(p.INVALID_PARAMS, f"{d['config']} changed since it was shown; nothing was trusted "
                                               f"(run `aiwgctl trust` again)", {"param": "sha256"})
        if d["sha256"] is not None and d["needs"]:
            try:
                self.trust_store.allow(root, d["sha256"], d["needs"])
            except OSError as exc:
                raise p.RpcError(p.INTERNAL_ERROR, f"cannot write {self.trust_store.path}: {exc.strerror}") from None
            log.info("project %s trusted (config sha256 %s)", root, d["sha256"][:12], extra={"PROJECT": root})
            await self.trust_changed(root, d["sha256"])
        return {"trusted": True, "path": root, "sha256": d["sha256"], "needs": d["needs"]}

    async def rpc_trust_revoke(self, params: p.ProjectPathParams, _conn: Connection) -> dict[str, Any]:
        root = resolve_root(params.path)
        return await self.change("trust.revoke", lambda: self._trust_revoke(root))  # type: ignore[no-any-return]

    async def _trust_revoke(self, root: str) -> dict[str, Any]:
        try:
            had = self.trust_store.revoke(root)
        except OSError as exc:
            raise p.RpcError(p.INTERNAL_ERROR, f"cannot write {self.trust_store.path}: {exc.strerror}") from None
        log.info("project %s untrusted by request", root, extra={"PROJECT": root})
        await self.trust_changed(root, None)
        return {"revoked": had, "path": root}
