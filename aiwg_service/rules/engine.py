"""The automation engine subsystem: match bus events against each project's rules and run them.

Matching happens inline on the bus handler (indexed, so 1,000 rules stay cheap); rules whose conditions are all
synchronous are decided there too, so only runs that act (or that need a shell condition) become tasks. Modes
follow Home Assistant (single, queued, restart, parallel); a cooldown spaces runs; the loop guard pauses a rule
that acts more than ``max_runs_per_minute`` times in a minute. Every run leaves a trace in SQLite.

Injected, never imported: ``submit_task`` (the task supervisor) and ``doctor``; see ``actions.Hooks``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from .. import protocol as p
from ..events.bus import EventBus
from ..protocol import Event, utc_now
from .actions import ActionFailed, ApproveAction, Doctor, Hooks, SubmitTask
from .approvals import (
    ApprovalAlreadyDecided,
    ApprovalGate,
    ApprovalNotAllowed,
    ApprovalNotFound,
    actions_hash,
    shown,
)
from .conditions import Ctx, ProcessGate
from .matching import TriggerIndex, event_paths
from .regexes import TIMEOUT_S as REGEX_TIMEOUT_S
from .regexes import UserRegex
from .schema import Rule, rules_for
from .traces import TraceStore, summary_of

log = logging.getLogger("aiwg.automation")

LOOP_WINDOW = 60.0
DEFAULT_MAX_CHAIN_DEPTH = 3
DEFAULT_MAX_RULE_PROCESSES = 8
TASK_DEPTHS_KEPT = 10_000  # tasks whose chain depth is remembered (for their task.* events)
LOOP_DISABLE_SECONDS = 300.0
FLUSH_INTERVAL = 0.25
EVENT_DATA_CAP = 4000
_seq = itertools.count()


#: ``untrusted(project)``: why the project's rules may not run (an untrusted config), or None. From wiring.
Untrusted = Callable[[str], str | None]


def new_run_id() -> str:
    return f"run-{time.time_ns() // 1_000_000:011x}-{next(_seq) & 0xFFFFF:05x}"


def _event_summary(event: Event) -> dict[str, Any]:
    data: Any = event.data
    raw = msgspec.json.encode(data)
    if len(raw) > EVENT_DATA_CAP:
        data = {"truncated": raw[:EVENT_DATA_CAP].decode(errors="replace")}
    return {"id": event.id, "type": event.type, "time": event.time, "project": event.project,
            "source": event.source, "data": data}


class RuleState:
    """Per (project, rule id); survives config reloads so counters, cooldowns and the loop guard carry over."""

    __slots__ = ("acted", "disabled_reason", "disabled_until", "last_acted", "last_outcome", "last_run", "queue",
                 "restarted", "running", "runs", "skipped")

    def __init__(self) -> None:
        self.runs = 0
        self.skipped = 0
        self.last_run: str | None = None
        self.last_outcome: str | None = None
        self.last_acted = float("-inf")
        self.running: dict[str, asyncio.Task[None]] = {}
        self.queue: deque[tuple[Event, list[str], int]] = deque()
        self.acted: deque[float] = deque()
        self.disabled_until = 0.0
        self.disabled_reason: str | None = None
        self.restarted: set[str] = set()


class AutomationEngine:
    name = "automation"

    def __init__(self, bus: EventBus, state_dir: Path | str, *, submit_task: SubmitTask, doctor: Doctor,
                 keep_traces: int = 100, loop_disable_seconds: float = LOOP_DISABLE_SECONDS,
                 flush_interval: float = FLUSH_INTERVAL, untrusted: Untrusted | None = None) -> None:
        self.bus = bus
        #: why a project may not run anything now (its config is not trusted), or None
        self.untrusted: Untrusted = untrusted or (lambda _project: None)
        self.store = TraceStore(Path(state_dir) / "automation.db", keep_traces)
        self.hooks = Hooks(bus, submit_task, doctor)
        self.approvals = ApprovalGate(bus, state_dir, on_decided=self._on_decided)
        self.approvals.changed = self._shown_changed
        self.loop_disable_seconds = loop_disable_seconds
        self.flush_interval = flush_interval
        self.rules: dict[str, dict[str, Rule]] = {}
        self.indexes: dict[str, TriggerIndex] = {}
        self.states: dict[tuple[str, str], RuleState] = {}
        self.overrides: dict[tuple[str, str], bool] = {}
        self.errors: dict[str, list[str]] = {}
        self.events_seen = 0
        self.events_matched = 0
        self.chain_cuts = 0
        self.gate = ProcessGate(DEFAULT_MAX_RULE_PROCESSES)
        self.max_depth: dict[str, int] = {}
        #: task id -> chain depth of the rule run that queued it, so the task's own events carry it on
        self.task_depths: dict[str, int] = {}
        self._sub: Any = None
        self._flusher: asyncio.Task[None] | None = None
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.store.open()
        self.approvals.open()
        self.overrides = self.store.overrides()
        self._stopping = False
        self._sub = self.bus.subscribe("*", self.on_event, name="automation", retries=0, max_queue=100_000)

    async def stop(self) -> None:
        self._stopping = True
        if self._sub is not None:
            self.bus.unsubscribe(self._sub)
            self._sub = None
        tasks = [t for st in self.states.values() for t in st.running.values()]
        for st in self.states.values():
            st.queue.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._flusher is not None:
            # let a pending flush finish (at most flush_interval): cancelling it mid-write would leave its
            # thread writing while close() flushes on the same connection
            await asyncio.gather(self._flusher, return_exceptions=True)
        self.approvals.close()
        self.store.close()

    def _add_trace(self, trace: dict[str, Any]) -> None:
        """Keep a trace; the first one after a quiet spell schedules a flush (an idle engine never wakes)."""
        self.store.add(trace)
        if self._flusher is None and not self._stopping:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon(), name="automation:flush")

    async def _flush_soon(self) -> None:
        """Write the traces gathered over ``flush_interval`` in one transaction, off the event loop.

        The task stays ``_flusher`` until its write is done (and loops while traces came in meanwhile), so
        ``stop`` waits for the write in its thread before it closes the database."""
        try:
            while True:
                await asyncio.sleep(self.flush_interval)
                try:
                    batch = self.store.take()
                    if batch:
                        await asyncio.to_thread(self.store.write, batch)  # keeps SQLite off the event loop
                except Exception:
                    log.exception("cannot write automation traces to %s", self.store.path)
                if not self.store.pending:
                    return
        finally:
            self._flusher = None

    def project_health(self, root: str) -> dict[str, Any]:
        """Rule counts for a client that came through ``root``'s own socket."""
        rules = self.rules.get(root, {})
        return {"rules": len(rules), "ruleCount": len(rules),
                "rules_enabled": sum(1 for r in rules.values() if self._enabled(r))}

    def health(self) -> dict[str, Any]:
        states = list(self.states.values())
        now = time.monotonic()
        return {
            "projects": len(self.rules),
            "rules": sum(len(r) for r in self.rules.values()),
            "enabled": True,  # the engine runs (the AIWG CLI prints it as "Automation: enabled")
            "ruleCount": sum(len(r) for r in self.rules.values()),
            "rules_enabled": sum(1 for rs in self.rules.values() for r in rs.values() if self._enabled(r)),
            "running": sum(len(s.running) for s in states),
            "queued": sum(len(s.queue) for s in states),
            "runs": sum(s.runs for s in states),
            "skipped": sum(s.skipped for s in states),
            "loop_guarded": sum(1 for s in states if s.disabled_until > now),
            "events_seen": self.events_seen,
            "events_matched": self.events_matched,
            "config_errors": sum(len(e) for e in self.errors.values()),
            "regex_timeouts": UserRegex.timeouts,
            "chain_cuts": self.chain_cuts,
            "rule_processes": self.gate.running,
            "rule_processes_waiting": self.gate.waiting,
            "max_rule_processes": self.gate.limit,
            "approvals": self.approvals.health(),
        }

    # -- configuration -----------------------------------------------------------------------------------------
    def apply(self, configs: Any) -> None:
        """Rebuild every project's rules; counters, overrides and in-flight runs carry over."""
        roots = set()
        for root, project in configs.projects.items():
            self.set_project(root, project.config)
            roots.add(root)
        limit = configs.service.daemon.max_rule_processes
        if limit != self.gate.limit:
            self.gate.set_limit(limit)
        for root in list(self.rules):
            if root not in roots:
                del self.rules[root]
                del self.indexes[root]
        if not self.approvals.armed:  # first apply: the rules are known, so overdue approvals can expire now
            self.arm_approvals()
        self.approvals.cancel_changed()  # a request resumes only what it showed

    def set_project(self, root: str, cfg: Any) -> list[Rule]:
        auto = getattr(cfg, "automation", None)
        self.max_depth[root] = auto.max_chain_depth if auto is not None else DEFAULT_MAX_CHAIN_DEPTH
        rules, errors = rules_for(cfg, root)
        # config validation already refused these; this only guards a config built without config.validate
        self.errors[root] = [f"{path}: {problem}" for path, problem in errors]
        for e in self.errors[root]:
            log.error("rule left out: %s", e, extra={"PROJECT": root})
        self.set_rules(root, rules)
        return rules

    def set_rules(self, root: str, rules: list[Rule]) -> None:
        self.rules[root] = {r.id: r for r in rules}
        self.indexes[root] = TriggerIndex(rules)
        for r in rules:
            st = self.states.get((root, r.id))
            if st is not None and st.disabled_until:  # a reload lifts the loop guard
                st.disabled_until, st.disabled_reason = 0.0, None
                st.acted.clear()

    def _state(self, key: tuple[str, str]) -> RuleState:
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = RuleState()
        return st

    def _enabled(self, rule: Rule) -> bool:
        return self.overrides.get((rule.project, rule.id), rule.enabled)

    # -- matching ----------------------------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        """The bus handler (sync on purpose: the bus runs sync handlers without a coroutine per event)."""
        if event.type.startswith("automation.") or self._stopping:
            return
        self.events_seen += 1
        UserRegex.deadline = time.monotonic() + REGEX_TIMEOUT_S  # one regex budget for the whole dispatch
        try:
            if event.project is not None:
                idx = self.indexes.get(event.project)
                if idx is not None:
                    self._match(event.project, idx, event)
            else:
                for root, idx in list(self.indexes.items()):
                    self._match(root, idx, event)
        finally:
            UserRegex.deadline = None

    def _match(self, root: str, idx: TriggerIndex, event: Event) -> None:
        d = event.data
        paths = event_paths(event, root) if ("path" in d or "paths" in d) else []
        matched = idx.match(event, paths)
        if not matched:
            return
        self.events_matched += 1
        own = d.get("rule_id")
        depth = self.depth_of(event)
        for rule, _trig in matched:
            if own is not None and own == rule.id and rule.ignore_own_events:
                continue
            self.fire(rule, event, paths, depth)

    def depth_of(self, event: Event) -> int:
        """How many rule runs led to this event: emitted events say so; a task's events inherit the depth of
        the run that queued the task; anything else came from outside (0)."""
        d = event.data
        depth = d.get("chain_depth")
        if isinstance(depth, int) and not isinstance(depth, bool):
            return max(0, depth)
        if event.type.startswith("task."):
            return self.task_depths.get(str(d.get("id") or d.get("taskId") or ""), 0)
        return 0

    def fire(self, rule: Rule, event: Event, paths: list[str], depth: int = 0) -> None:
        """A trigger matched: apply enable state, loop guard, cooldown and mode, then run (or skip)."""
        key = (rule.project, rule.id)
        if not self.overrides.get(key, rule.enabled):
            return
        st = self._state(key)
        why = self.untrusted(rule.project)
        if why is not None:  # held back: traced, never run (not even its conditions)
            trace = self._trace(rule, event, paths, new_run_id())
            self._finish(rule, st, trace, time.monotonic(), "untrusted", why)
            return
        now = time.monotonic()
        if st.disabled_until:
            if now < st.disabled_until:
                st.skipped += 1  # the loop guard's trace already says why; one per trigger would flood
                return
            st.disabled_until, st.disabled_reason = 0.0, None
        if rule.cooldown_s and now - st.last_acted < rule.cooldown_s:
            left = rule.cooldown_s - (now - st.last_acted)
            self._skip(rule, st, event, paths, f"cooldown: {left:.1f}s of {rule.cooldown_s:g}s left")
            return
        if st.running:
            mode = rule.mode
            if mode == "single":
                self._skip(rule, st, event, paths, "already running (mode single)")
                return
            if mode == "queued":
                if len(st.running) + len(st.queue) >= rule.max:
                    self._skip(rule, st, event, paths, f"queue full (mode queued, max {rule.max})")
                else:
                    st.queue.append((event, paths, depth))
                return
            if mode == "restart":
                for run_id, task in list(st.running.items()):
                    st.restarted.add(run_id)
                    del st.running[run_id]
                    task.cancel()
            elif len(st.running) >= rule.max:
                self._skip(rule, st, event, paths, f"{len(st.running)} runs in flight (mode parallel, max {rule.max})")
                return
        self._start(rule, st, event, paths, depth)

    # -- runs --------------------------------------------------------------------------------------------------
    def _trace(self, rule: Rule, event: Event, paths: list[str], run_id: str) -> dict[str, Any]:
        return {"run_id": run_id, "rule_id": rule.id, "project": rule.project, "form": rule.form, "mode": rule.mode,
                "event": _event_summary(event), "event_type": event.type,
                "event_path": paths[0] if paths else None, "started": utc_now(), "conditions": [], "actions": [],
                "task_ids": [], "outcome": None, "reason": None}

    def _skip(self, rule: Rule, st: RuleState, event: Event, paths: list[str], reason: str) -> None:
        trace = self._trace(rule, event, paths, new_run_id())
        self._finish(rule, st, trace, time.monotonic(), "skipped", reason)

    def _start(self, rule: Rule, st: RuleState, event: Event, paths: list[str], depth: int = 0) -> None:
        run_id = new_run_id()
        t0 = time.monotonic()
        ctx = Ctx(event, rule.project, rule.id, run_id, paths, rule.env, depth, self.gate)
        trace = self._trace(rule, event, paths, run_id)
        trace["chain_depth"] = depth
        # The loop guard counts every run that can change anything: one that gets to act, and one that runs a
        # shell condition, whether or not that condition passes (it may rewrite the file it watches). Runs that
        # only fail an inline field/match/time test have no side effect and are not counted.
        blocked = self._chain_cut(rule, trace, depth)
        if not blocked and not rule.sync_conditions:
            blocked = self._loop_guard(rule, st, trace)
        if blocked:
            self._finish(rule, st, trace, t0, "skipped", blocked)
            return
        if rule.sync_conditions:
            for c in rule.conditions:
                r = c.check(ctx)
                trace["conditions"].append(r)
                if not r["ok"]:
                    self._finish(rule, st, trace, t0, "condition_failed", f"conditions[{len(trace['conditions']) - 1}]"
                                                                          f" ({r['kind']}) not met")
                    return
            blocked = self._loop_guard(rule, st, trace) or self._guard(rule, st, trace)
            if blocked:
                self._finish(rule, st, trace, t0, "skipped", blocked)
                return
            coro = self._run(rule, st, ctx, trace, t0, True)
        else:
            coro = self._run(rule, st, ctx, trace, t0, False)
        task = asyncio.get_running_loop().create_task(coro, name=f"rule:{rule.id}:{run_id}")
        st.running[run_id] = task
        task.add_done_callback(lambda _t: self._reap(rule, st, ctx, trace, t0))

    def _reap(self, rule: Rule, st: RuleState, ctx: Ctx, trace: dict[str, Any], t0: float) -> None:
        """A task cancelled before its first step never enters ``_run``: finish its trace here."""
        if trace.get("finished") is not None:
            return
        st.running.pop(ctx.run_id, None)
        reason = ("restarted by a newer trigger (mode restart)" if ctx.run_id in st.restarted
                  else "cancelled: the service is stopping")
        st.restarted.discard(ctx.run_id)
        self._finish(rule, st, trace, t0, "cancelled", reason)
        self._drain(rule, st)

    def _chain_cut(self, rule: Rule, trace: dict[str, Any], depth: int) -> str | None:
        """A run whose work would lie deeper than ``automation.max_chain_depth`` from an outside event is cut:
        rules that trigger each other through tasks or emitted events end there instead of running forever."""
        limit = self.max_depth.get(rule.project, DEFAULT_MAX_CHAIN_DEPTH)
        if depth < limit:
            return None
        self.chain_cuts += 1
        reason = (f"chain depth: the triggering event is {depth} rule run(s) away from an outside event; "
                  f"automation.max_chain_depth is {limit}")
        log.warning("rule %s: %s", rule.id, reason, extra={"PROJECT": rule.project})
        self.bus.publish("automation.chain_cut", rule.project,
                         {"rule_id": rule.id, "run_id": trace["run_id"], "depth": depth, "max_chain_depth": limit,
                          "event_type": trace["event_type"], "event_id": trace["event"]["id"]}, source="automation")
        return reason

    def _loop_guard(self, rule: Rule, st: RuleState, trace: dict[str, Any]) -> str | None:
        """More than ``max_runs_per_minute`` runs that could change something: pause the rule."""
        now = time.monotonic()
        acted = st.acted
        while acted and acted[0] < now - LOOP_WINDOW:
            acted.popleft()
        acted.append(now)
        if len(acted) > rule.max_runs_per_minute:
            n = len(acted)
            st.disabled_until = now + self.loop_disable_seconds
            reason = (f"loop guard: {n} runs within {LOOP_WINDOW:g}s exceeds max_runs_per_minute "
                      f"{rule.max_runs_per_minute}; rule paused for {self.loop_disable_seconds:g}s (or until "
                      f"reload or automation.enable)")
            st.disabled_reason = f"{reason}, since {utc_now()}"
            st.queue.clear()
            acted.clear()
            log.warning("rule %s: %s", rule.id, reason, extra={"PROJECT": rule.project})
            self.bus.publish("automation.loop_detected", rule.project,
                             {"rule_id": rule.id, "run_id": trace["run_id"], "runs": n,
                              "max_runs_per_minute": rule.max_runs_per_minute,
                              "disabled_seconds": self.loop_disable_seconds, "event_type": trace["event_type"]},
                             source="automation")
            return reason
        return None

    def _guard(self, rule: Rule, st: RuleState, trace: dict[str, Any]) -> str | None:
        """About to act (conditions passed): approvals still pending. Returns why not, or None."""
        st.last_acted = time.monotonic()
        if rule.needs_approval:
            pending = self.approvals.pending_for(rule.project, rule.id)
            limit = 1 if rule.mode in ("single", "restart") else rule.max
            if len(pending) >= limit:
                return (f"approval {', '.join(sorted(pending))} still pending (mode {rule.mode}"
                        + (f", max {rule.max})" if limit > 1 else ")"))
        return None

    async def _run(self, rule: Rule, st: RuleState, ctx: Ctx, trace: dict[str, Any], t0: float,
                   conditions_done: bool) -> None:
        outcome, reason = "success", None
        try:
            if not conditions_done:
                for c in rule.conditions:
                    r = await c.acheck(ctx)
                    trace["conditions"].append(r)
                    if not r["ok"]:
                        outcome = "condition_failed"
                        reason = f"conditions[{len(trace['conditions']) - 1}] ({r['kind']}) not met"
                        return
                blocked = self._guard(rule, st, trace)
                if blocked:
                    outcome, reason = "skipped", blocked
                    return
            if rule.requires_approval:
                outcome, reason = "pending_approval", self._park(rule, ctx, trace, None, 0)
                return
            outcome, reason = await self._actions(rule, ctx, trace, 0)
        except asyncio.CancelledError:
            outcome = "cancelled"
            reason = ("restarted by a newer trigger (mode restart)" if ctx.run_id in st.restarted
                      else "cancelled: the service is stopping")
            raise
        except Exception as exc:  # a bug in a condition: fail this run, never the engine
            log.exception("rule %s: run %s crashed", rule.id, ctx.run_id)
            outcome, reason = "error", f"{type(exc).__name__}: {exc}"
        finally:
            st.running.pop(ctx.run_id, None)
            st.restarted.discard(ctx.run_id)
            self._finish(rule, st, trace, t0, outcome, reason)
            self._drain(rule, st)

    def _remember_task(self, task_id: str, depth: int) -> None:
        if len(self.task_depths) >= TASK_DEPTHS_KEPT:
            self.task_depths.pop(next(iter(self.task_depths)))
        self.task_depths[task_id] = depth

    async def _actions(self, rule: Rule, ctx: Ctx, trace: dict[str, Any],
                       start_at: int) -> tuple[str, str | None]:
        """Run the actions from ``start_at`` in order; an ``approve`` action parks the run there."""
        outcome, reason = "success", None
        current: dict[str, Any] | None = None
        why = self.untrusted(rule.project)
        if why is not None:  # trust revoked (or the config changed) while the run waited
            return "untrusted", why
        for i in range(start_at, len(rule.actions)):
            action = rule.actions[i]
            if isinstance(action, ApproveAction):
                return "pending_approval", self._park(rule, ctx, trace, action, i + 1)
            t1 = time.monotonic()
            current = {"index": i, "kind": action.kind, "ok": None}
            trace["actions"].append(current)
            try:
                res = await action.run(ctx, self.hooks)
                current.update(ok=True, result=res)
                if "task_id" in res:
                    trace["task_ids"].append(res["task_id"])
                    self._remember_task(res["task_id"], ctx.depth + 1)
            except ActionFailed as exc:
                current.update(ok=False, error=str(exc), result=exc.detail)
            except asyncio.CancelledError:
                current.update(ok=False, error="cancelled")
                raise
            except Exception as exc:
                log.exception("rule %s: actions[%d] (%s) crashed", rule.id, i, action.kind)
                current.update(ok=False, error=f"{type(exc).__name__}: {exc}")
            current["duration_ms"] = round((time.monotonic() - t1) * 1000, 1)
            if not current["ok"]:
                if outcome == "success":
                    outcome, reason = "error", f"actions[{i}] ({action.kind}): {current['error']}"
                if not action.continue_on_error:
                    break
        return outcome, reason

    # -- approval gates ----------------------------------------------------------------------------------------
    def _park(self, rule: Rule, ctx: Ctx, trace: dict[str, Any], gate: ApproveAction | None, resume_at: int) -> str:
        """Persist a pending approval for this run; the run ends as ``pending_approval`` until it is decided."""
        rest = [a.describe(ctx) for a in rule.actions[resume_at:]]
        message = (gate.render_message(ctx) if gate is not None else None) or \
            f"rule {rule.id} wants to run: {_what(rest)}"
        ap = self.approvals.request(
            project=rule.project, rule_id=rule.id, run_id=ctx.run_id, event=msgspec.to_builtins(ctx.event),
            paths=ctx.paths, message=message, actions=rest, approvers=gate.approvers if gate else [],
            timeout_s=gate.timeout_s if gate else 60 * 60.0, on_timeout=gate.on_timeout if gate else "reject",
            resume_at=resume_at)
        trace["approval"] = {k: ap[k] for k in ("id", "state", "message", "requested", "expires", "on_timeout",
                                                 "approvers")}
        if gate is not None:
            trace["actions"].append({"index": resume_at - 1, "kind": "approve", "ok": None, "approval_id": ap["id"]})
        return f"waiting for approval {ap['id']} (expires {ap['expires']})"

    def _shown_changed(self, row: dict[str, Any]) -> str | None:
        """Why a pending request's rule would now run something other than what the request showed, or None.
        (A rule that is gone is handled when the decision comes.)"""
        rule = self.rules.get(row["project"], {}).get(row["rule_id"])
        if rule is None:
            return None
        event = msgspec.convert(json.loads(row["event"]), Event)
        ctx = Ctx(event, row["project"], row["rule_id"], row["run_id"], json.loads(row["paths"]), rule.env, 0,
                  self.gate)
        try:
            now = shown([a.describe(ctx) for a in rule.actions[row["resume_at"]:]])
        except Exception as exc:  # a template that no longer renders: not what was shown either
            return f"the rule's actions cannot be shown any more ({exc})"
        if actions_hash(now) != actions_hash(row["actions"]):
            return f"rule {row['rule_id']}'s actions changed since the request was shown"
        return None

    def _on_decided(self, row: dict[str, Any], go_on: bool) -> None:
        """The gate's callback: run the rest of the actions with the original event, or end the run."""
        project, rule_id, run_id = row["project"], row["rule_id"], row["run_id"]
        rule = self.rules.get(project, {}).get(rule_id)
        event = msgspec.convert(json.loads(row["event"]), Event)
        paths = json.loads(row["paths"])
        trace = self.store.run(project, rule_id, run_id) if self.store.db is not None else None
        if trace is None:  # pruned (more than keep runs since): start a fresh record under the same run id
            trace = {"run_id": run_id, "rule_id": rule_id, "project": project, "event": _event_summary(event),
                     "event_type": event.type, "event_path": paths[0] if paths else None, "started": row["requested"],
                     "conditions": [], "actions": [], "task_ids": []}
        trace["resumed"] = True
        trace["finished"] = trace["outcome"] = trace["reason"] = None
        trace["approval"] = {**trace.get("approval", {}), "id": row["id"], "state": row["state"],
                             "decided_by": row["decided_by"], "decided_via": row["decided_via"],
                             "decided_at": row["decided_at"], "reason": row["reason"]}
        for a in trace["actions"]:
            if a.get("approval_id") == row["id"]:
                a["ok"] = go_on
                a["result"] = {"state": row["state"], "by": row["decided_by"], "via": row["decided_via"]}
        st = self._state((project, rule_id))
        t0 = time.monotonic()
        why = self._shown_changed(row) if go_on and rule is not None else None
        if why is not None:  # e.g. expired with on_timeout approve after the rule changed: run nothing
            go_on, row = False, {**row, "state": "rejected", "reason": f"cancelled: {why}"}
        if rule is None or not go_on or self._stopping:
            self.approvals.store.set_resumed(row["id"], "done" if not go_on else "running")
            if not go_on:
                who = "" if row["state"] == "expired" else f" by {row['decided_by']} via {row['decided_via']}"
                reason = f"approval {row['id']} {row['state']}{who}" + (f": {row['reason']}" if row["reason"] else "")
                outcome = row["state"]
            elif rule is None:
                outcome, reason = "error", f"approval {row['id']} approved, but rule {rule_id} no longer exists"
                self.approvals.store.set_resumed(row["id"], "done")
            else:
                outcome, reason = "cancelled", "approved while the service was stopping; not run"
            if rule is None:
                rule = Rule(rule_id, project, "gone")
            self._finish(rule, st, trace, t0, outcome, reason)
            return
        self.approvals.store.set_resumed(row["id"], "running")
        ctx = Ctx(event, project, rule_id, run_id, paths, rule.env, trace.get("chain_depth", self.depth_of(event)),
                  self.gate, approval_id=row["id"])
        task = asyncio.get_running_loop().create_task(self._resume(rule, st, ctx, trace, t0, row["resume_at"]),
                                                      name=f"rule:{rule_id}:{run_id}:approved")
        st.running[run_id] = task
        task.add_done_callback(lambda _t: self._reap(rule, st, ctx, trace, t0))

    async def _resume(self, rule: Rule, st: RuleState, ctx: Ctx, trace: dict[str, Any], t0: float,
                      start_at: int) -> None:
        outcome, reason = "success", None
        try:
            outcome, reason = await self._actions(rule, ctx, trace, start_at)
        except asyncio.CancelledError:
            outcome, reason = "cancelled", "cancelled: the service is stopping"
            raise
        except Exception as exc:
            log.exception("rule %s: approved run %s crashed", rule.id, ctx.run_id)
            outcome, reason = "error", f"{type(exc).__name__}: {exc}"
        finally:
            st.running.pop(ctx.run_id, None)
            if outcome != "cancelled" and ctx.approval_id is not None:
                self.approvals.store.set_resumed(ctx.approval_id, "done")
            self._finish(rule, st, trace, t0, outcome, reason)
            self._drain(rule, st)

    def arm_approvals(self) -> None:
        """Once the rules are known: record runs a stop cut short, expire what is overdue, set the expiry timer."""
        self._interrupted_approvals()
        self.approvals.arm()

    def _interrupted_approvals(self) -> None:
        """Approved runs that a stop or crash cut short: recorded as interrupted, never re-run (they may have acted)."""
        for row in self.approvals.store.unfinished():
            self.approvals.store.set_resumed(row["id"], "interrupted")
            trace = self.store.run(row["project"], row["rule_id"], row["run_id"])
            log.warning("approval %s: the approved actions of rule %s were interrupted by a stop; not re-run",
                        row["id"], row["rule_id"], extra={"PROJECT": row["project"]})
            if trace is not None:
                trace["outcome"] = "interrupted"
                trace["reason"] = (f"approval {row['id']} was {row['state']}, but the service stopped while its "
                                   f"actions ran; not re-run")
                trace["finished"] = utc_now()
                self._add_trace(trace)

    def _finish(self, rule: Rule, st: RuleState, trace: dict[str, Any], t0: float, outcome: str,
                reason: str | None) -> None:
        trace["finished"] = utc_now()
        trace["duration_ms"] = round((time.monotonic() - t0) * 1000, 2)
        trace["outcome"], trace["reason"] = outcome, reason
        if outcome in ("skipped", "untrusted"):
            st.skipped += 1
            if outcome == "untrusted":
                st.last_run, st.last_outcome = trace["started"], outcome
        else:
            if not trace.get("resumed"):
                st.runs += 1
            st.last_run, st.last_outcome = trace["started"], outcome
        self._add_trace(trace)
        if outcome in ("success", "error", "cancelled", "pending_approval", "rejected", "expired"):
            lvl = logging.WARNING if outcome == "error" else logging.INFO
            log.log(lvl, "rule %s run %s: %s%s", rule.id, trace["run_id"], outcome, f" ({reason})" if reason else "",
                    extra={"PROJECT": rule.project})
            if not self._stopping:
                self.bus.publish("automation.run", rule.project,
                                 {"rule_id": rule.id, "run_id": trace["run_id"], "outcome": outcome,
                                  "reason": reason, "task_ids": trace["task_ids"]}, source="automation")

    def _drain(self, rule: Rule, st: RuleState) -> None:
        """Queued mode: start the next waiting trigger once nothing is in flight."""
        while st.queue and not st.running and not self._stopping:
            if not self._enabled(rule) or st.disabled_until > time.monotonic():
                st.queue.clear()
                return
            event, paths, depth = st.queue.popleft()
            self._start(rule, st, event, paths, depth)

    # -- enable / disable --------------------------------------------------------------------------------------
    def set_enabled(self, rule: Rule, enabled: bool | None) -> None:
        """Override the config's ``enabled`` (kept across reloads and restarts); None drops the override."""
        key = (rule.project, rule.id)
        if enabled is None:
            self.overrides.pop(key, None)
            self.store.clear_override(rule.project, rule.id)
            enabled = rule.enabled
        else:
            self.overrides[key] = enabled
            self.store.set_override(rule.project, rule.id, enabled, utc_now())
        st = self.states.get(key)
        if st is not None:
            if enabled:
                st.disabled_until, st.disabled_reason = 0.0, None
                st.acted.clear()
            else:
                st.queue.clear()

    # -- queries -----------------------------------------------------------------------------------------------
    def _project(self, project: str | None) -> str | None:
        if project is None:
            return None
        if project in self.rules:
            return project
        root = str(Path(project).expanduser().resolve())
        if root not in self.rules:
            raise p.RpcError(p.INVALID_PARAMS, f"Invalid params: project: {project} is not a registered project",
                             {"param": "project"})
        return root

    def find(self, rule_id: str | None, project: str | None = None) -> list[Rule]:
        root = self._project(project)
        out = []
        for r, rules in self.rules.items():
            if root is not None and r != root:
                continue
            if rule_id is None:
                out.extend(rules.values())
            elif rule_id in rules:
                out.append(rules[rule_id])
        if rule_id is not None and not out:
            raise p.RpcError(p.INVALID_PARAMS, f"Invalid params: ruleId: no rule {p.quote(rule_id)}"
                             + (f" in {p.quote(root)}" if root else ""), {"param": "ruleId"})
        return out

    def disabled_reason(self, rule: Rule) -> str | None:
        key = (rule.project, rule.id)
        ov = self.overrides.get(key)
        if ov is False:
            return "disabled by automation.disable" + (" (the config enables it)" if rule.enabled else "")
        if ov is None and not rule.enabled:
            return "disabled in config"
        st = self.states.get(key)
        if st is not None and st.disabled_until > time.monotonic():
            return st.disabled_reason
        return None

    def rule_status(self, rule: Rule) -> dict[str, Any]:
        st = self.states.get((rule.project, rule.id)) or RuleState()
        reason = self.disabled_reason(rule)
        out: dict[str, Any] = {
            "id": rule.id, "project": rule.project, "description": rule.description, "enabled": reason is None,
            "form": rule.form, "mode": rule.mode, "triggers": rule.triggers_text(), "last_run": st.last_run,
            "last_outcome": st.last_outcome, "runs": st.runs, "skipped": st.skipped, "running": len(st.running),
            "queued": len(st.queue),
        }
        if reason:
            out["disabled_reason"] = reason
        ov = self.overrides.get((rule.project, rule.id))
        out["config_enabled"] = rule.enabled
        out["override"] = None if ov is None else ("enabled" if ov else "disabled")
        why = self.untrusted(rule.project)
        if why is not None:
            out["untrusted"] = why
        pending = self.approvals.pending_for(rule.project, rule.id)
        if pending:
            out["pending_approvals"] = sorted(pending)
        nf = _next_fire(rule)
        if nf:
            out["next_fire"] = nf
        return out

    # -- RPC ---------------------------------------------------------------------------------------------------
    def register_rpc(self, rpc: Any) -> None:
        rpc.register("automation.status", self.rpc_status)
        rpc.register("automation.enable", self.rpc_enable)
        rpc.register("automation.disable", self.rpc_disable)
        rpc.register("automation.trace", self.rpc_trace)
        rpc.register("automation.test", self.rpc_test)
        rpc.register("approval.list", self.rpc_approval_list)
        rpc.register("approval.approve", lambda params, conn=None: self._rpc_decide(params, conn, True))
        rpc.register("approval.reject", lambda params, conn=None: self._rpc_decide(params, conn, False))

    def rpc_approval_list(self, params: p.ApprovalListParams, _conn: Any = None) -> dict[str, Any]:
        root = self._project(params.project) if params.project is not None else None
        state = None if params.state == "all" else params.state
        return {"approvals": self.approvals.list(state, root, params.limit)}

    def _rpc_decide(self, params: p.ApprovalDecideParams, conn: Any, approve: bool) -> dict[str, Any]:
        """``via`` comes from the channel that delivered the decision, never from the params (a caller cannot
        claim to be a chat user an approval names): a channel the service built says so (the dashboard: ``web``),
        the local socket is ``cli``; who is the peer's user, from SO_PEERCRED."""
        by = _peer_name(conn)
        via = getattr(conn, "channel", None) or "cli"
        try:
            ap = self.approvals.decide(params.approvalId, approve, by, via, params.reason)
        except ApprovalNotFound as exc:
            raise p.RpcError(p.INVALID_PARAMS, f"Invalid params: approvalId: {exc}", {"param": "approvalId"}) from None
        except ApprovalAlreadyDecided as exc:
            raise p.RpcError(p.ALREADY_DECIDED, str(exc), {"approval": exc.approval}) from None
        except ApprovalNotAllowed as exc:
            raise p.RpcError(p.NOT_ALLOWED, str(exc)) from None
        return {"approval": ap}

    def rpc_status(self, params: p.AutomationStatusParams, _conn: Any = None) -> dict[str, Any]:
        return {"rules": [self.rule_status(r) for r in self.find(None, params.project)]}

    def _set(self, params: p.RuleIdParams, enabled: bool) -> dict[str, Any]:
        """One rule: override its config's ``enabled``. Every rule (no ``ruleId``): ``disable`` switches them
        all off; ``enable`` drops the overrides, so each is as its config says (never on where it says off)."""
        rules = self.find(params.ruleId, params.project)
        restore = enabled and params.ruleId is None
        for r in rules:
            self.set_enabled(r, None if restore else enabled)
            word = (("enabled" if r.enabled else "left disabled (as its config says)") if restore
                    else "enabled" if enabled else "disabled")
            log.info("rule %s %s", r.id, word, extra={"PROJECT": r.project})
        out: dict[str, Any] = {"ruleId": params.ruleId, "enabled": enabled}
        if params.ruleId is None:
            out["rules"] = [r.id for r in rules]
            if restore:
                out["restored"] = True
                out["enabled_rules"] = [r.id for r in rules if r.enabled]
                out["disabled_in_config"] = [r.id for r in rules if not r.enabled]
        return out

    def rpc_enable(self, params: p.RuleIdParams, _conn: Any = None) -> dict[str, Any]:
        return self._set(params, True)

    def rpc_disable(self, params: p.RuleIdParams, _conn: Any = None) -> dict[str, Any]:
        return self._set(params, False)

    def rpc_trace(self, params: p.AutomationTraceParams, _conn: Any = None) -> dict[str, Any]:
        rules = self.find(params.ruleId, params.project)
        if params.runId is not None:
            for r in rules:
                run = self.store.run(r.project, r.id, params.runId)
                if run is not None:
                    return {"run": run}
            raise p.RpcError(p.INVALID_PARAMS, f"Invalid params: runId: no run '{params.runId}' of rule "
                                               f"'{params.ruleId}'", {"param": "runId"})
        runs = [x for r in rules for x in self.store.runs(r.project, r.id, params.limit)]
        runs.sort(key=lambda x: x["run_id"], reverse=True)
        return {"ruleId": params.ruleId, "runs": runs[: params.limit]}

    async def rpc_test(self, params: p.AutomationTestParams, _conn: Any = None) -> dict[str, Any]:
        rule = self.find(params.ruleId, params.project)[0]
        return await self.test_rule(rule, params.event)

    async def test_rule(self, rule: Rule, raw_event: dict[str, Any] | None) -> dict[str, Any]:
        """Trigger match and conditions (shell ones really run), and what the actions would do; never acts."""
        if raw_event is None:
            event = rule.triggers[0].synthetic_event(rule.project)
        else:
            data = raw_event.get("data", raw_event.get("payload", {}))
            if not isinstance(data, dict):
                raise p.RpcError(p.INVALID_PARAMS, "Invalid params: event.data: must be an object",
                                 {"param": "event.data"})
            data = dict(data)
            for k in ("path", "paths", "job_id", "agent"):
                if k in raw_event and k not in data:
                    data[k] = raw_event[k]
            event = Event("ev-test", str(raw_event.get("type", rule.triggers[0].type)), utc_now(),
                          raw_event.get("project") or rule.project, str(raw_event.get("source", "test")), data)
        paths = event_paths(event, rule.project)
        matched = [t.text for t in rule.triggers if t.full_match(event, paths)]
        ctx = Ctx(event, rule.project, rule.id, "test-" + new_run_id()[4:], paths, rule.env)
        results, passed = [], True
        why = self.untrusted(rule.project)
        for c in [] if why is not None else rule.conditions:  # an untrusted shell condition never runs
            r = await c.acheck(ctx)
            results.append(r)
            if not r["ok"]:
                passed = False
                break
        blocked = [f"untrusted: {why}"] if why is not None else []
        reason = self.disabled_reason(rule)
        if reason:
            blocked.append(reason)
        st = self.states.get((rule.project, rule.id))
        if st is not None:
            left = rule.cooldown_s - (time.monotonic() - st.last_acted)
            if rule.cooldown_s and left > 0:
                blocked.append(f"cooldown: {left:.1f}s left")
            if st.running and rule.mode == "single":
                blocked.append("a run is in flight (mode single): this trigger would be skipped")
        if event.data.get("rule_id") == rule.id and rule.ignore_own_events:
            blocked.append("the event was emitted by this rule (ignore_own_events)")
        pending = self.approvals.pending_for(rule.project, rule.id)
        if rule.needs_approval and pending and rule.mode in ("single", "restart"):
            blocked.append(f"approval {', '.join(sorted(pending))} still pending (mode {rule.mode})")
        would = bool(matched) and passed and not blocked
        return {"ruleId": rule.id, "project": rule.project, "event": msgspec.to_builtins(event),
                "triggered": bool(matched), "matched_triggers": matched, "conditions": results,
                "conditions_passed": passed, "blocked_by": blocked, "would_run": would,
                "needs_approval": rule.needs_approval,
                "actions": [a.describe(ctx) for a in rule.actions], "acted": False}


def _peer_name(conn: Any) -> str:
    """Who is on the other end of an RPC connection: the peer's user name from SO_PEERCRED."""
    uid = getattr(conn, "peer_uid", None)
    if uid is None:
        return "local"
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _what(actions: list[dict[str, Any]]) -> str:
    """One line saying what the parked actions will do, for the approval's default message."""
    out = []
    for a in actions:
        k = a.get("kind")
        detail = a.get("prompt") or a.get("command") or a.get("message") or a.get("url") or a.get("type") or ""
        out.append(f"{k} {detail!r}" if detail else str(k))
    return "; ".join(out) or "nothing more"


def _next_fire(rule: Rule) -> str | None:
    """When a schedule: rule fires next (in the job's tz, else local time); None if unknown."""
    if not rule.cron or not rule.enabled:
        return None
    try:
        from cronsim import CronSim

        if rule.tz:
            from zoneinfo import ZoneInfo

            now = datetime.now(ZoneInfo(rule.tz))
        else:
            now = datetime.now().astimezone()
        return next(CronSim(rule.cron, now)).isoformat(timespec="seconds")
    except Exception:
        return None


__all__ = ["AutomationEngine", "RuleState", "summary_of"]
