"""Human approval gates: a rule run parked until someone approves or rejects it, or it expires.

Approvals live in SQLite (``state_dir/approvals.db``, WAL, synchronous FULL: a decision that was answered is on
disk), so a restart or ``kill -9`` loses none. A decision is one conditional UPDATE (``WHERE state = 'pending'``),
which is what makes "decide once" hold whoever asks first: the CLI, the RPC, a chat command or a button.

``ApprovalGate.decide`` is the narrow port a messaging hub receives; it raises ``ApprovalNotFound``,
``ApprovalAlreadyDecided`` or ``ApprovalNotAllowed`` (all ``ApprovalError``) with a sentence fit for a user.

Expiry sleeps on one timer for the earliest deadline; nothing polls.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..events.bus import EventBus

log = logging.getLogger("aiwg.approvals")

STATES = ("pending", "approved", "rejected", "expired")
#: approval.* names and the AIWG daemon's gate.* names for the same moments
EVENT_NAMES = {"pending": ("approval.requested", "gate.pending"), "approved": ("approval.approved", "gate.approved"),
               "rejected": ("approval.rejected", "gate.rejected"), "expired": ("approval.expired", "gate.timeout")}

SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    state TEXT NOT NULL,
    requested TEXT NOT NULL,
    expires_at REAL NOT NULL,
    on_timeout TEXT NOT NULL,
    resume_at INTEGER NOT NULL,
    message TEXT NOT NULL,
    approvers TEXT NOT NULL,
    actions TEXT NOT NULL,
    event TEXT NOT NULL,
    paths TEXT NOT NULL,
    decided_at TEXT,
    decided_by TEXT,
    decided_via TEXT,
    reason TEXT,
    resumed TEXT NOT NULL DEFAULT 'no'
);
CREATE INDEX IF NOT EXISTS approvals_by_state ON approvals (state, expires_at);
"""


class ApprovalError(Exception):
    """A decision that cannot be made; ``str(exc)`` is the sentence to show the person who asked."""


class ApprovalNotFound(ApprovalError):
    pass


class ApprovalAlreadyDecided(ApprovalError):
    def __init__(self, message: str, approval: dict[str, Any]) -> None:
        super().__init__(message)
        self.approval = approval


class ApprovalNotAllowed(ApprovalError):
    pass


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_approval_id() -> str:
    """Short enough to type in a chat (``/approve ap-3f9c1a2b``); random so ids cannot be guessed in order."""
    return "ap-" + secrets.token_hex(4)


class ApprovalStore:
    """The approvals table. Every method is one statement or one transaction; all calls come from the loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # created private, never world-readable
        os.close(fd)
        db = sqlite3.connect(self.path, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        self.db = db

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def _db(self) -> sqlite3.Connection:
        if self.db is None:
            raise RuntimeError("the approval store is not open")
        return self.db

    def insert(self, row: dict[str, Any]) -> None:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._db().execute(f"INSERT INTO approvals ({cols}) VALUES ({marks})", tuple(row.values()))

    def get(self, approval_id: str) -> dict[str, Any] | None:
        r = self._db().execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        return dict(r) if r else None

    def decide(self, approval_id: str, state: str, by: str, via: str, reason: str | None, when: str) -> bool:
        """True if this call made the decision; False if the approval was not pending any more."""
        cur = self._db().execute(
            "UPDATE approvals SET state = ?, decided_by = ?, decided_via = ?, reason = ?, decided_at = ? "
            "WHERE id = ? AND state = 'pending'", (state, by, via, reason, when, approval_id))
        return cur.rowcount == 1

    def set_resumed(self, approval_id: str, resumed: str) -> None:
        self._db().execute("UPDATE approvals SET resumed = ? WHERE id = ?", (resumed, approval_id))

    def pending(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db().execute(
            "SELECT * FROM approvals WHERE state = 'pending' ORDER BY expires_at")]

    def unfinished(self) -> list[dict[str, Any]]:
        """Approved runs whose remaining actions were cut short by a stop or crash."""
        return [dict(r) for r in self._db().execute(
            "SELECT * FROM approvals WHERE state IN ('approved', 'expired') AND resumed = 'running'")]

    def list(self, state: str | None, project: str | None, limit: int) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM approvals WHERE 1", []
        if state is not None:
            q += " AND state = ?"
            args.append(state)
        if project is not None:
            q += " AND project = ?"
            args.append(project)
        q += " ORDER BY requested DESC, id LIMIT ?"
        args.append(limit)
        return [dict(r) for r in self._db().execute(q, args)]


def public(row: dict[str, Any]) -> dict[str, Any]:
    """The approval as the RPC, the CLI and the events show it."""
    event = json.loads(row["event"])
    return {
        "id": row["id"], "state": row["state"], "project": row["project"], "rule_id": row["rule_id"],
        "run_id": row["run_id"], "message": row["message"], "requested": row["requested"],
        "expires": iso(row["expires_at"]), "on_timeout": row["on_timeout"],
        "approvers": json.loads(row["approvers"]), "actions": json.loads(row["actions"]),
        "event": {k: event.get(k) for k in ("id", "type", "time", "source", "data")},
        "decided_at": row["decided_at"], "decided_by": row["decided_by"], "decided_via": row["decided_via"],
        "reason": row["reason"], "actions_sha256": actions_hash(row["actions"]),
        "origin": {"approval_id": row["id"], "rule_id": row["rule_id"], "run_id": row["run_id"],
                   "event_id": event.get("id"), "project": row["project"]},
    }


def actions_hash(shown: str) -> str:
    """The hash of the exact actions a request showed (its ``actions`` column, as shown): an approval is
    bound to it, and resumes nothing else."""
    return hashlib.sha256(shown.encode()).hexdigest()


def shown(actions: list[dict[str, Any]]) -> str:
    """The actions as a request stores and shows them."""
    return json.dumps(actions, default=str)


#: Called when an approval is decided: (row, approved). The engine runs or ends the parked run.
OnDecided = Callable[[dict[str, Any], bool], None]
#: Why a pending approval no longer matches what its rule would run now (its actions changed), or None.
StillShown = Callable[[dict[str, Any]], str | None]


class ApprovalGate:
    """Requests, decisions, expiry and the events about them. The engine owns one and gives it ``on_decided``."""

    def __init__(self, bus: EventBus, state_dir: Path | str, on_decided: OnDecided | None = None) -> None:
        self.bus = bus
        self.store = ApprovalStore(Path(state_dir) / "approvals.db")
        self.on_decided = on_decided
        #: the engine's check that a request's rule would still run exactly what it showed
        self.changed: StillShown | None = None
        self.pending_by_rule: dict[tuple[str, str], set[str]] = {}
        self._deadlines: dict[str, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.armed = False
        self.requested = 0
        self.decided = 0
        self.expired = 0

    # -- lifecycle -------------------------------------------------------------------------------------------
    def open(self) -> None:
        self.store.open()
        for row in self.store.pending():
            self._track(row)

    def arm(self) -> None:
        """After the rules are known (the engine's first ``apply``): expire what is overdue, set the timer."""
        self.armed = True
        self._expire_due()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.armed = False
        self.store.close()

    def health(self) -> dict[str, Any]:
        return {"pending": len(self._deadlines), "requested": self.requested, "decided": self.decided,
                "expired": self.expired}

    def _track(self, row: dict[str, Any]) -> None:
        self._deadlines[row["id"]] = row["expires_at"]
        self.pending_by_rule.setdefault((row["project"], row["rule_id"]), set()).add(row["id"])

    def _untrack(self, row: dict[str, Any]) -> None:
        self._deadlines.pop(row["id"], None)
        ids = self.pending_by_rule.get((row["project"], row["rule_id"]))
        if ids is not None:
            ids.discard(row["id"])
            if not ids:
                del self.pending_by_rule[(row["project"], row["rule_id"])]

    def pending_for(self, project: str, rule_id: str) -> set[str]:
        return self.pending_by_rule.get((project, rule_id), set())

    # -- requests ----------------------------------------------------------------------------------------------
    def request(self, *, project: str, rule_id: str, run_id: str, event: dict[str, Any], paths: list[str],
                message: str, actions: list[dict[str, Any]], approvers: list[str], timeout_s: float,
                on_timeout: str, resume_at: int) -> dict[str, Any]:
        """Persist a pending approval and announce it (``approval.requested`` and ``gate.pending``)."""
        now = time.time()
        row: dict[str, Any] = {
            "id": new_approval_id(), "project": project, "rule_id": rule_id, "run_id": run_id, "state": "pending",
            "requested": iso(now), "expires_at": now + timeout_s, "on_timeout": on_timeout, "resume_at": resume_at,
            "message": message, "approvers": json.dumps(approvers), "actions": shown(actions),
            "event": json.dumps(event, default=str), "paths": json.dumps(paths),
        }
        for _ in range(5):
            try:
                self.store.insert(row)
                break
            except sqlite3.IntegrityError:
                row["id"] = new_approval_id()
        else:  # pragma: no cover - 5 collisions of 32 random bits
            raise RuntimeError("cannot allocate an approval id")
        row.update(decided_at=None, decided_by=None, decided_via=None, reason=None, resumed="no")
        self._track(row)
        self.requested += 1
        self._reschedule()
        pub = public(row)
        log.info("approval %s requested by rule %s (expires %s): %s", row["id"], rule_id, pub["expires"], message,
                 extra={"PROJECT": project, "RULE": rule_id})
        self._publish("pending", pub)
        return pub

    def _publish(self, state: str, pub: dict[str, Any]) -> None:
        data = {**pub, "approval_id": pub["id"]}
        for name in EVENT_NAMES[state]:
            self.bus.publish(name, pub["project"], data, source="automation")

    # -- decisions ---------------------------------------------------------------------------------------------
    def get(self, approval_id: str) -> dict[str, Any]:
        row = self.store.get(approval_id)
        if row is None:
            raise ApprovalNotFound(f"no approval {approval_id!r}")
        return public(row)

    def list(self, state: str | None = "pending", project: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return [public(r) for r in self.store.list(state, project, limit)]

    def decide(self, approval_id: str, approve: bool, by: str, via: str, reason: str | None = None) -> dict[str, Any]:
        """Approve or reject a pending approval, once. Returns the decided approval.

        ``by`` is who decided (a user name, ``telegram:12345``), ``via`` how (``cli``, ``rpc``, ``telegram``,
        ``slack-button``...). Raises ``ApprovalNotFound``, ``ApprovalAlreadyDecided`` (its message says by whom)
        or ``ApprovalNotAllowed`` when the approval names its approvers and ``by``/``via`` is not one of them.
        """
        row = self.store.get(approval_id)
        if row is None:
            raise ApprovalNotFound(f"no approval {approval_id!r}")
        if row["state"] == "pending" and row["expires_at"] <= time.time():
            self._expire(row)  # overdue (a suspend delayed the timer): it expires, it is not decided late
            row = self.store.get(approval_id) or row
        if row["state"] != "pending":
            raise ApprovalAlreadyDecided(_already(row), public(row))
        approvers = json.loads(row["approvers"])
        if approvers and by not in approvers and via not in approvers:
            raise ApprovalNotAllowed(f"{by} may not decide approval {approval_id} (approvers: {', '.join(approvers)})")
        why = self.changed(row) if approve and self.changed is not None else None
        if why is not None:
            self.cancel(row, why)
            raise ApprovalAlreadyDecided(f"approval {approval_id} was cancelled: {why}; nothing ran",
                                         public(self.store.get(approval_id) or row))
        state = "approved" if approve else "rejected"
        if not self.store.decide(approval_id, state, by, via, reason, iso(time.time())):
            row = self.store.get(approval_id) or row
            raise ApprovalAlreadyDecided(_already(row), public(row))
        return self._decided(approval_id, approve)

    def _decided(self, approval_id: str, go_on: bool) -> dict[str, Any]:
        row = self.store.get(approval_id)
        assert row is not None
        self._untrack(row)
        self._reschedule()
        pub = public(row)
        if row["state"] == "expired":
            self.expired += 1
        else:
            self.decided += 1
        how = f"{row['state']} by {row['decided_by']} via {row['decided_via']}"
        log.info("approval %s %s%s", approval_id, how, f": {row['reason']}" if row["reason"] else "",
                 extra={"PROJECT": row["project"], "RULE": row["rule_id"]})
        self._publish(row["state"], pub)
        if self.on_decided is not None:
            try:
                self.on_decided(row, go_on)
            except Exception:
                log.exception("approval %s: resuming the run failed", approval_id)
        return pub

    def cancel(self, row: dict[str, Any], why: str) -> None:
        """End a pending request whose rule changed what it would run: rejected by the service, with the reason
        on the bus (``approval.cancelled``, and the usual ``approval.rejected`` the chats show)."""
        if self.store.decide(row["id"], "rejected", "service", "policy", f"cancelled: {why}", iso(time.time())):
            log.warning("approval %s cancelled: %s", row["id"], why, extra={"PROJECT": row["project"],
                                                                           "RULE": row["rule_id"]})
            pub = self._decided(row["id"], False)
            self.bus.publish("approval.cancelled", row["project"], {**pub, "approval_id": row["id"], "why": why},
                             source="automation")

    def cancel_changed(self) -> None:
        """After a reload: cancel every pending request whose rule would now run something else."""
        if self.changed is None:
            return
        for row in self.store.pending():
            why = self.changed(row)
            if why is not None:
                self.cancel(row, why)

    # -- expiry ------------------------------------------------------------------------------------------------
    def _expire(self, row: dict[str, Any]) -> None:
        go_on = row["on_timeout"] == "approve"
        reason = f"no decision within the timeout (on_timeout: {row['on_timeout']})"
        if self.store.decide(row["id"], "expired", "timeout", "timer", reason, iso(time.time())):
            self._decided(row["id"], go_on)

    def _expire_due(self) -> None:
        self._timer = None
        now = time.time()
        for aid, deadline in sorted(self._deadlines.items(), key=lambda kv: kv[1]):
            if deadline > now:
                break
            row = self.store.get(aid)
            if row is None or row["state"] != "pending":
                self._deadlines.pop(aid, None)
                continue
            self._expire(row)
        self._reschedule()

    def _reschedule(self) -> None:
        if not self.armed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._deadlines:
            delay = max(0.0, min(self._deadlines.values()) - time.time())
            self._timer = asyncio.get_running_loop().call_later(delay + 0.01, self._expire_due)


def _already(row: dict[str, Any]) -> str:
    if row["state"] == "expired":
        return f"approval {row['id']} already expired at {row['decided_at']}"
    return (f"approval {row['id']} already {row['state']} by {row['decided_by']} (via {row['decided_via']}) "
            f"at {row['decided_at']}")
