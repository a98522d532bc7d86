"""The service core: load config, start subsystems in order, serve, reload, and stop in reverse.

Subsystems never import each other; they meet at the bus (and the task store), and ``wiring`` builds
them from narrow ports. Each one follows the same small contract (``ports.Subsystem``), so the start order
is one list.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
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

from . import __version__, aiwg_shape, config, paths, pidfile, safefs, trust
from . import protocol as p
from . import schemas as _schemas  # noqa: F401  (importing it registers every config section)
from . import systemd as sd
from .atomic import write_atomic
from .config import Configs, Project, resolve_root
from .events import api as events_api
from .events.bus import EventBus
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


class Service:
    """One per user (or per project instance): owns the lock, the socket and the subsystems."""

    def __init__(self, opts: RunOptions) -> None:
        self.opts = opts
        #: where the log goes (main.setup_logging chose the same way): ``aiwgctl logs`` reads it from state.json
        self.log_to = "file" if opts.log_file else "journal" if sd.under_journal() else "stderr"
        self.state_dir = paths.state_dir()
        self.socket_path = paths.socket_path(opts.socket)
        self.bus = EventBus(self.state_dir / "deadletters.json")
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
        self._reloading = asyncio.Lock()
        self.last_heartbeat: str | None = None
        self.trust_store = trust.TrustStore(self.state_dir)
        self._trust_announced: dict[str, tuple[str | None, str]] = {}

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

    def save_registry(self) -> None:
        assert self.configs is not None
        roots = sorted(r for r, pr in self.configs.projects.items() if pr.persistent)
        write_atomic(self.registry_file(), json.dumps({"projects": roots}, indent=2).encode() + b"\n")

    def load_project(self, root: str, persistent: bool) -> Project:
        if not Path(root).is_dir():
            raise config.ConfigError([f"{root}: not a directory"])
        cfg_path = paths.project_config_file(root)
        try:
            if config.write_default(cfg_path):
                log.info("wrote the default config to %s", cfg_path, extra={"PROJECT": root})
        except OSError as exc:
            raise config.ConfigError([f"{cfg_path}: cannot write the default config: {exc.strerror}"]) from None
        loaded = config.load_file(cfg_path, Path(root))
        project = Project(root, loaded.config, loaded.warnings, persistent, loaded.sha256,
                          trust.needs(loaded.raw))
        self.assess_trust(project)
        return project

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
        """Re-judge every project; reload when the file on disk is newer than the one running."""
        assert self.configs is not None
        pr = self.configs.projects.get(root)
        if pr is not None and sha256 is not None and pr.sha256 != sha256:
            await self.reload()  # the user trusted what is on disk now: run that, not the older copy
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
            roots[resolve_root(r)] = True
        cli = self.opts.projects or ([] if self.opts.registered_only else [os.getcwd()])
        for r in cli:
            roots.setdefault(resolve_root(r), False)
        if self.configs is not None:  # projects added at run time stay through a reload
            for r, pr in self.configs.projects.items():
                roots.setdefault(r, pr.persistent)
        projects: dict[str, Project] = {}
        for root, persistent in roots.items():
            if persistent and not Path(root).is_dir():
                # a deleted project must not keep the whole service down (exit 78 is never restarted)
                service_warnings.append(f"registered project {root} no longer exists; skipped "
                                        f"(`aiwgctl project remove {root}` forgets it)")
                continue
            try:
                projects[root] = self.load_project(root, persistent)
            except config.ConfigError as exc:
                errors.extend(exc.errors)
        if errors:
            raise config.ConfigError(errors)
        return Configs(service_cfg, service_warnings, projects)

    # -- lifecycle -------------------------------------------------------------------------------------
    def acquire_lock(self) -> None:
        paths.ensure_private_dir(self.state_dir, allow_link=True)  # the user's own choice of disk
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
            request_stop=self.request_stop,
        ))

    def current_configs(self) -> Configs:
        """The read-only view subsystems get: always the configs in force now."""
        assert self.configs is not None, "configs are loaded before any subsystem is built"
        return self.configs

    async def start(self) -> None:
        self.acquire_lock()
        self.configs = self.load_all()
        for w in self.configs.service_warnings:
            log.warning("%s", w)
        for pr in self.configs.projects.values():
            for w in pr.warnings:
                log.warning("%s", w, extra={"PROJECT": pr.root})
        self.register_rpc()
        self.build()
        for sub in self.subsystems:
            log.debug("starting %s", sub.name)
            await sub.start()
            self.started.append(sub)
        await self.apply_configs()
        for root in self.configs.projects:
            self.link_project(root)
        self.announce_trust()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        self._timers.append(asyncio.ensure_future(self._heartbeat()))
        interval = sd.watchdog_interval()
        if interval:
            self._timers.append(asyncio.ensure_future(self._watchdog(interval)))
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
        await self.stop()

    def request_stop(self) -> None:
        if not self.stop_event.is_set():
            log.info("stopping")
            self.rpc.accepting = False
            self.stop_event.set()

    async def stop(self) -> None:
        sd.notify_stopping()
        assert self.configs is not None
        grace = self.configs.service.daemon.stop_timeout_seconds
        sd.notify_extend_timeout((grace + 15) * 1_000_000)
        for t in self._timers:
            t.cancel()
        for sub in reversed(self.started):
            try:
                await sub.stop()
            except Exception:
                log.exception("stopping %s failed", sub.name)
        self.started.clear()
        for root in self.configs.projects:
            self.remove_pid_file(root)
        self.write_state(stopped=True)
        if not self.socket_activated and safefs.is_socket(self.socket_path):  # never a file put in its place
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        log.info("stopped")

    async def apply_configs(self) -> None:
        assert self.configs is not None
        for sub in self.started:
            apply = getattr(sub, "apply", None)
            if apply is not None:
                res = apply(self.configs)
                if asyncio.iscoroutine(res):
                    await res
        self.schedule_status()

    async def reload(self) -> dict[str, Any]:
        """Re-read every config file; apply only if all of it is valid, else keep the old one running."""
        async with self._reloading:
            sd.notify_reloading()
            when = datetime.now(UTC).isoformat(timespec="seconds")
            try:
                new = self.load_all()
            except config.ConfigError as exc:
                self.last_reload = {"ok": False, "time": when, "errors": exc.errors}
                for e in exc.errors:
                    log.error("reload refused: %s", e)
                sd.notify_status("reload refused: invalid config; old config still running · " + self.status_line())
                sd.notify_ready()
                return {"reloaded": False, "errors": exc.errors}
            self.configs = new
            await self.apply_configs()
            self.announce_trust()
            warnings = new.service_warnings + [w for pr in new.projects.values() for w in pr.warnings]
            self.last_reload = {"ok": True, "time": when, "errors": [], "warnings": warnings}
            self.write_state()
            log.info("reloaded: %d project(s)", len(new.projects))
            sd.notify_status(self.status_line())
            sd.notify_ready()
            return {"reloaded": True, "errors": [], "warnings": warnings}

    # -- state, heartbeat, watchdog, status line --------------------------------------------------------
    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for sub in self.subsystems:
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
            "projects": [pr.info() for pr in self.configs.projects.values()],
            "subsystems": self.health(),
            "counts": {"requests": self.rpc.requests, "connections": len(self.rpc.connections),
                       "internal_errors": self.rpc.errors, "events": self.bus.published},
            "config": self.last_reload,
            "status": self.status_line(),
        }

    def daemon_status(self) -> dict[str, Any]:
        """``daemon.status``: our state, plus the fields the AIWG daemon's CLI prints (``aiwg_shape``)."""
        st = self.state()
        problems = aiwg_shape.issues(st["subsystems"], self.last_reload)
        st.update(aiwg_shape.status(st["subsystems"], len(self.rpc.connections), problems))
        return st

    def write_state(self, stopped: bool = False) -> None:
        try:
            st = self.state()
            st["running"] = not stopped
            st["last_heartbeat"] = self.last_heartbeat
            st.update(aiwg_shape.state_file(st["subsystems"], aiwg_shape.issues(st["subsystems"], self.last_reload)))
            write_atomic(self.state_dir / "state.json", msgspec.json.encode(st))
        except OSError as exc:
            log.error("cannot write state.json: %s", exc)

    async def _heartbeat(self) -> None:
        hb = self.state_dir / "heartbeat"
        while True:
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
            self.write_state()
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
        untrusted = sum(1 for pr in self.configs.projects.values() if pr.untrusted is not None)
        if untrusted:
            parts.append(f"{untrusted} untrusted (aiwgctl trust)")
        if not self.last_reload.get("ok", True):
            parts.append("last reload refused")
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
                    self.write_state()

        asyncio.get_running_loop().call_later(0.5, send)

    # -- projects --------------------------------------------------------------------------------------
    def link_project(self, root: str) -> None:
        """Give AIWG tools what they look for, where they look: ``.aiwg/daemon.pid``, and links
        ``.aiwg/daemon/daemon.sock`` -> our socket and ``.aiwg/daemon/state.json`` -> our state file.

        Made through directory fds that never follow a symlink: a committed ``.aiwg`` or ``.aiwg/daemon``
        link is refused, so nothing we make can land outside the project."""
        self._link(root, "daemon.sock", str(self.socket_path))
        self._link(root, "state.json", str(self.state_dir / "state.json"))
        self.write_pid_file(root)

    @staticmethod
    def _link(root: str, name: str, target: str) -> None:
        link = os.path.join(root, ".aiwg", "daemon", name)
        try:
            with safefs.project_subdir(root, ".aiwg", "daemon") as fd:
                if safefs.set_link(fd, name, target) == "occupied":
                    log.warning("%s exists and is not our link (an old AIWG daemon?); leaving it", link,
                                extra={"PROJECT": root})
        except OSError as exc:
            log.warning("cannot link %s to %s: %s", link, target, exc.strerror or exc, extra={"PROJECT": root})

    def write_pid_file(self, root: str) -> None:
        """The AIWG CLI's first check: ``.aiwg/daemon.pid`` holds a live pid (see ``pidfile``)."""
        try:
            pidfile.write(root)
        except OSError as exc:
            log.warning("cannot write %s/.aiwg/%s: %s", root, pidfile.NAME, exc, extra={"PROJECT": root})

    def remove_pid_file(self, root: str) -> None:
        with contextlib.suppress(OSError):
            pidfile.remove(root)

    def unlink_project(self, root: str) -> None:
        self.remove_pid_file(root)
        with contextlib.suppress(OSError), safefs.project_subdir(root, ".aiwg", "daemon", create=False) as fd:
            for name, target in (("daemon.sock", self.socket_path), ("state.json", self.state_dir / "state.json")):
                with contextlib.suppress(OSError):
                    if os.readlink(name, dir_fd=fd) == str(target):
                        os.unlink(name, dir_fd=fd)

    # -- RPC handlers ----------------------------------------------------------------------------------
    def register_rpc(self) -> None:
        r = self.rpc.register
        r("ping", self.rpc_ping)
        r("daemon.status", lambda _p, _c: self.daemon_status())
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

    async def rpc_reload(self, _params: p.ReloadParams, _conn: Connection) -> dict[str, Any]:
        result = await self.reload()
        if not result["reloaded"]:
            raise p.RpcError(p.CONFIG_INVALID, "reload refused: invalid config; the old config keeps running",
                             {"errors": result["errors"]})
        return result

    def rpc_project_list(self, _params: p.NoParams, _conn: Connection) -> dict[str, Any]:
        assert self.configs is not None
        return {"projects": [pr.info() for pr in self.configs.projects.values()]}

    async def rpc_project_add(self, params: p.ProjectPathParams, _conn: Connection) -> dict[str, Any]:
        assert self.configs is not None
        root = resolve_root(params.path)
        existing = self.configs.projects.get(root)
        if existing is not None and existing.persistent:
            return {"added": False, "project": existing.info()}
        try:
            project = self.load_project(root, persistent=True)
        except config.ConfigError as exc:
            raise p.RpcError(p.CONFIG_INVALID if Path(root).is_dir() else p.INVALID_PARAMS,
                             f"cannot add {root}: {exc.errors[0]}", {"param": "path", "errors": exc.errors}) from None
        self.configs.projects[root] = project
        self.save_registry()
        self.link_project(root)
        await self.apply_configs()
        self.write_state()
        log.info("project added: %s", root, extra={"PROJECT": root})
        self.bus.publish("project.added", root, {"path": root}, "service")
        self.announce_trust()
        return {"added": True, "project": project.info()}

    async def rpc_project_remove(self, params: p.ProjectPathParams, _conn: Connection) -> dict[str, Any]:
        assert self.configs is not None
        root = resolve_root(params.path)
        if root not in self.configs.projects:
            raise p.RpcError(p.INVALID_PARAMS, f"Invalid params: path: {root} is not a registered project",
                             {"param": "path"})
        del self.configs.projects[root]
        self.save_registry()
        self.unlink_project(root)
        await self.apply_configs()
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
        try:
            had = self.trust_store.revoke(root)
        except OSError as exc:
            raise p.RpcError(p.INTERNAL_ERROR, f"cannot write {self.trust_store.path}: {exc.strerror}") from None
        log.info("project %s untrusted by request", root, extra={"PROJECT": root})
        await self.trust_changed(root, None)
        return {"revoked": had, "path": root}
