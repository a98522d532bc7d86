"""``trace.get``: the chain from a source event through rule runs (conditions, approval) to the tasks
they queued (sessions, costs, outcomes), and the events those caused in turn, as one tree.

Built only from ports (``wiring.py`` connects them), so it imports no subsystem: look up an event,
a rule run, a task; find rule runs a given event triggered; find tasks by an origin key; find the
events a task caused.  From any id it first walks *up* to the root cause, then builds the tree down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["TracePorts", "Tracer"]

MAX_NODES = 500
MAX_DEPTH = 12


@dataclass
class TracePorts:
    event: Callable[[str], dict[str, Any] | None]
    rule_run: Callable[[str], dict[str, Any] | None]
    runs_for_event: Callable[[str], list[dict[str, Any]]]
    task: Callable[[str], dict[str, Any] | None]
    tasks_by_origin: Callable[[str, str], list[dict[str, Any]]]
    #: Events a task caused (its ``task.*`` events still in history, or seen by rule runs).
    events_of_task: Callable[[str], list[dict[str, Any]]]
    #: An approval gate by its id (its ``run_id`` leads to the rule run that asked).
    approval: Callable[[str], dict[str, Any] | None] = lambda _aid: None
    #: The event a webhook delivery published, by the delivery's id.
    event_by_delivery: Callable[[str], dict[str, Any] | None] = lambda _did: None


def _rule_of(origin: dict[str, Any]) -> str | None:
    return origin.get("rule") or origin.get("rule_id")


class Tracer:
    def __init__(self, ports: TracePorts) -> None:
        self.p = ports

    # -- up ---------------------------------------------------------------------------------------------
    def _kind(self, ident: str) -> tuple[str, dict[str, Any]] | None:
        if ident.startswith("t-"):
            t = self.p.task(ident)
            return ("task", t) if t else None
        if ident.startswith("ev-"):
            e = self.p.event(ident)
            return ("event", e) if e else None
        if ident.startswith("run-"):
            r = self.p.rule_run(ident)
            return ("rule_run", r) if r else None
        tasks = self.p.tasks_by_origin("conversation", ident)
        if tasks:
            return ("conversation", {"id": ident, "tasks": tasks})
        ap = self.p.approval(ident)  # an approval: the rule run that asked for it
        if ap and ap.get("run_id") and (r := self.p.rule_run(str(ap["run_id"]))):
            return ("rule_run", r)
        ev = self.p.event_by_delivery(ident)  # a webhook delivery: the event it published
        if ev:
            return ("event", ev)
        # a cron job, or an approval / delivery whose run or event is gone: start from a task it led to
        for key in ("approval_id", "approval", "webhook_delivery_id", "webhook_delivery", "cron_job"):
            tasks = self.p.tasks_by_origin(key, ident)
            if tasks:
                return ("task", tasks[0])
        return None

    def _parent(self, kind: str, d: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        if kind == "task":
            o = d.get("origin") or {}
            if o.get("run_id") and (r := self.p.rule_run(o["run_id"])):
                return "rule_run", r
            if o.get("event_id") and (e := self.p.event(o["event_id"])):
                return "event", e
            if o.get("conversation"):
                return "conversation", {"id": o["conversation"]}
            return None
        if kind == "rule_run":
            ev = d.get("event") or {}
            if ev.get("id"):
                return "event", self.p.event(ev["id"]) or ev
            return None
        if kind == "event":
            data = d.get("data") or {}
            if str(d.get("type", "")).startswith("task.") and isinstance(data.get("id"), str):
                t = self.p.task(data["id"])
                if t:
                    return "task", t
            o = data.get("origin") if isinstance(data.get("origin"), dict) else {}
            if o.get("run_id") and (r := self.p.rule_run(o["run_id"])):
                return "rule_run", r
        return None

    def root_of(self, ident: str) -> tuple[str, dict[str, Any]] | None:
        node = self._kind(ident)
        seen: set[str] = set()
        while node is not None:
            key = node[1].get("id") or node[1].get("run_id") or ""
            if key in seen:
                break
            seen.add(key)
            up = self._parent(*node)
            if up is None:
                break
            node = up
        return node

    # -- down ---------------------------------------------------------------------------------------------
    def get(self, ident: str) -> dict[str, Any] | None:
        root = self.root_of(ident)
        if root is None:
            return None
        self._count = 0
        self._seen: set[str] = set()
        self._cost = 0.0
        self._costs = 0
        tree = self._node(*root, depth=0)
        return {"id": ident, "root": tree, "total_cost_usd": round(self._cost, 6) if self._costs else None}

    def _node(self, kind: str, d: dict[str, Any], depth: int) -> dict[str, Any]:
        self._count += 1
        nid = str(d.get("id") or d.get("run_id") or "")
        self._seen.add(nid)
        node: dict[str, Any]
        kids: list[tuple[str, dict[str, Any]]] = []
        if kind == "event":
            node = {"kind": "event", "id": nid, "type": d.get("type"), "time": d.get("time"),
                    "project": d.get("project"), "source": d.get("source")}
            kids += [("rule_run", r) for r in self.p.runs_for_event(nid)]
            kids += [("task", t) for t in self.p.tasks_by_origin("event_id", nid)
                     if not (t.get("origin") or {}).get("run_id")]
        elif kind == "rule_run":
            run = d if "conditions" in d else (self.p.rule_run(nid) or d)
            node = {"kind": "rule_run", "id": run.get("run_id"), "rule": run.get("rule_id"),
                    "project": run.get("project"), "outcome": run.get("outcome"), "reason": run.get("reason"),
                    "started": run.get("started"), "duration_ms": run.get("duration_ms"),
                    "conditions": run.get("conditions", []), "approval": run.get("approval"),
                    "actions": [{k: a.get(k) for k in ("kind", "ok", "error") if k in a}
                                for a in run.get("actions", [])]}
            nid = str(node["id"])
            self._seen.add(nid)
            for tid in run.get("task_ids") or []:
                t = self.p.task(tid)
                if t:
                    kids.append(("task", t))
        elif kind == "task":
            cost = d.get("cost_usd")
            if cost is not None:
                self._cost += cost
                self._costs += 1
            node = {"kind": "task", "id": nid, "agent": d.get("agent"), "state": d.get("state"),
                    "project": d.get("project"), "source": d.get("source"), "origin": d.get("origin"),
                    "session_id": d.get("session_id"), "cost_usd": cost, "cost_status": d.get("cost_status"),
                    "exit_code": d.get("exit_code"), "error": d.get("error"), "started_at": d.get("started_at"),
                    "finished_at": d.get("finished_at"), "attempts": d.get("attempts"), "adopted": d.get("adopted")}
            # the events it caused that something acted on (e.g. task.failed firing another rule), and what
            # the policy gate refused it (its calls back to the socket)
            for e in self.p.events_of_task(nid):
                if e.get("type") == "policy.refused" or self.p.runs_for_event(e["id"]):
                    kids.append(("event", e))
        else:  # conversation
            node = {"kind": "conversation", "id": nid}
            kids += [("task", t) for t in (d.get("tasks") or self.p.tasks_by_origin("conversation", nid))]
        children = []
        for k, c in kids:
            cid = str(c.get("id") or c.get("run_id") or "")
            if cid in self._seen or depth >= MAX_DEPTH or self._count >= MAX_NODES:
                continue
            children.append(self._node(k, c, depth + 1))
        node["children"] = children
        return node
