"""Conversations and their turns in ``<state>/chat.db`` (SQLite, WAL, 0600).

A conversation's turns are ordinary tasks; this file keeps what the task store does not: which tasks
belong together, the agent session they share, where they must run (the realpath claude keys sessions
by), and a copy of each turn's outcome, so history outlives the task store's retention.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["Conversation", "ConversationStore", "Turn", "new_conversation_id"]

MIGRATIONS: list[str] = [
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY NOT NULL,
        project TEXT NOT NULL,
        cwd TEXT NOT NULL,
        title TEXT NOT NULL DEFAULT '',
        agent TEXT NOT NULL DEFAULT 'claude',
        session_id TEXT,
        session_state TEXT NOT NULL DEFAULT 'new',
        key TEXT UNIQUE,
        parent TEXT,
        fork_turn INTEGER,
        fork_mode TEXT,
        created_at TEXT NOT NULL,
        last_used_at TEXT NOT NULL
    );
    CREATE INDEX conversations_project_used ON conversations(project, last_used_at);
    CREATE INDEX conversations_used ON conversations(last_used_at);
    CREATE TABLE turns (
        conversation TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        n INTEGER NOT NULL,
        task_id TEXT NOT NULL UNIQUE,
        message TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT 'chat',
        state TEXT NOT NULL DEFAULT 'queued',
        session_id TEXT,
        cost_usd REAL,
        result TEXT,
        error TEXT,
        created_at TEXT NOT NULL,
        finished_at TEXT,
        PRIMARY KEY (conversation, n)
    );
    """,
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY NOT NULL,
        project TEXT NOT NULL,
        tmux TEXT NOT NULL,
        cwd TEXT NOT NULL,
        worktree TEXT,
        branch TEXT,
        agent TEXT,
        prompt TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        ended_at TEXT,
        exit_status INTEGER
    );
    """,
]

#: Turn states after which nothing changes (the task store's final states, plus ``lost`` for a turn
#: whose task was pruned before we saw its end).
FINAL = frozenset({"completed", "failed", "timeout", "cancelled", "lost"})


class Turn(msgspec.Struct, kw_only=True):
    conversation: str
    n: int
    task_id: str
    message: str
    source: str = "chat"
    state: str = "queued"
    session_id: str | None = None
    cost_usd: float | None = None
    result: str | None = None
    error: str | None = None
    created_at: str = ""
    finished_at: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINAL


class Conversation(msgspec.Struct, kw_only=True):
    id: str
    project: str
    cwd: str
    title: str = ""
    agent: str = "claude"
    session_id: str | None = None
    #: ``new`` (no turn has reached the agent), ``active`` (the agent knows the session), ``lost`` (the agent
    #: said it has no such session: deleted), ``pending-fork`` (a fork whose first turn has not run).
    session_state: str = "new"
    key: str | None = None
    parent: str | None = None
    fork_turn: int | None = None
    fork_mode: str | None = None  # "session": claude --fork-session; "summary": a new session with a recap
    created_at: str = ""
    last_used_at: str = ""


_CONV_FIELDS = Conversation.__struct_fields__
_TURN_FIELDS = Turn.__struct_fields__


def new_conversation_id() -> str:
    """``c-`` + ms since epoch (base 36) + 4 random hex: short, sorts by creation, unique enough."""
    ms = time.time_ns() // 1_000_000
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while ms:
        ms, r = divmod(ms, 36)
        out = digits[r] + out
    return f"c-{out}{secrets.token_hex(2)}"


class ConversationStore:
    """Synchronous, on the loop thread: point reads and writes of a few rows."""

    def __init__(self, state_dir: str | os.PathLike[str], filename: str = "chat.db") -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.dir / filename
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        old = os.umask(0o077)  # the -wal and -shm files sqlite creates next to it
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
        finally:
            os.umask(old)
        # NORMAL: in WAL mode a commit survives a crash or kill -9 of the service (it is in the WAL, in the
        # page cache); only a power loss can take the last ones.  The tasks a turn stands for are in the
        # task store, which syncs every commit.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        cur = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if cur > len(MIGRATIONS):
            raise RuntimeError(f"{self.path} has schema v{cur}, newer than this aiwg-service")
        for version in range(cur, len(MIGRATIONS)):
            with self.tx() as db:
                for stmt in [s.strip() for s in MIGRATIONS[version].split(";") if s.strip()]:
                    db.execute(stmt)
                db.execute(f"PRAGMA user_version = {version + 1}")

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    # -- conversations ------------------------------------------------------------------------------
    def insert(self, conv: Conversation) -> Conversation:
        vals = [getattr(conv, f) for f in _CONV_FIELDS]
        with self.tx() as db:
            db.execute(f"INSERT INTO conversations ({', '.join(_CONV_FIELDS)}) "
                       f"VALUES ({', '.join('?' * len(_CONV_FIELDS))})", vals)
        return conv

    def get(self, conv_id: str) -> Conversation | None:
        row = self._db.execute(f"SELECT {', '.join(_CONV_FIELDS)} FROM conversations WHERE id = ?",
                               (conv_id,)).fetchone()
        return None if row is None else Conversation(**dict(zip(_CONV_FIELDS, row, strict=True)))

    def by_key(self, key: str) -> Conversation | None:
        row = self._db.execute(f"SELECT {', '.join(_CONV_FIELDS)} FROM conversations WHERE key = ?",
                               (key,)).fetchone()
        return None if row is None else Conversation(**dict(zip(_CONV_FIELDS, row, strict=True)))

    def update(self, conv_id: str, **fields: Any) -> None:
        bad = set(fields) - set(_CONV_FIELDS)
        if bad:
            raise ValueError(f"unknown conversation fields {sorted(bad)}")
        with self.tx() as db:
            db.execute(f"UPDATE conversations SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                       (*fields.values(), conv_id))

    def list(self, project: str | None = None, limit: int = 50, *, terminal: bool = False) -> list[dict[str, Any]]:
        """Newest use first, with each conversation's turn count, total cost and last turn's state."""
        conds, params = (["c.project = ?"], [project]) if project is not None else ([], [])
        if terminal:
            conds.append("c.key IS NULL")
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        sql = (f"SELECT {', '.join('c.' + f for f in _CONV_FIELDS)}, count(t.n), total(t.cost_usd), "
               f"(SELECT state FROM turns WHERE conversation = c.id ORDER BY n DESC LIMIT 1) "
               f"FROM conversations c LEFT JOIN turns t ON t.conversation = c.id {where} "
               f"GROUP BY c.id ORDER BY c.last_used_at DESC, c.id DESC LIMIT ?")
        out = []
        for row in self._db.execute(sql, (*params, limit)):
            d = dict(zip(_CONV_FIELDS, row[: len(_CONV_FIELDS)], strict=True))
            d["turns"], d["cost_usd"], d["last_state"] = row[len(_CONV_FIELDS):]
            d["cost_usd"] = round(d["cost_usd"] or 0.0, 6)
            out.append(d)
        return out

    def delete(self, conv_id: str) -> bool:
        with self.tx() as db:
            cur = db.execute("DELETE FROM conversations WHERE id = ?", (conv_id,))
        return cur.rowcount > 0

    # -- turns --------------------------------------------------------------------------------------
    def add_turn(self, turn: Turn, touch: str) -> None:
        vals = [getattr(turn, f) for f in _TURN_FIELDS]
        with self.tx() as db:
            db.execute(f"INSERT INTO turns ({', '.join(_TURN_FIELDS)}) VALUES ({', '.join('?' * len(_TURN_FIELDS))})",
                       vals)
            db.execute("UPDATE conversations SET last_used_at = ? WHERE id = ?", (touch, turn.conversation))

    def set_turn_task(self, placeholder: str, task_id: str) -> None:
        """A pending turn learns its task (see ``Conversations._queue_turn``)."""
        with self.tx() as db:
            db.execute("UPDATE turns SET task_id = ?, state = 'queued', error = NULL, finished_at = NULL "
                       "WHERE task_id = ?", (task_id, placeholder))

    def delete_turn(self, task_id: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM turns WHERE task_id = ?", (task_id,))

    def turns(self, conv_id: str, upto: int | None = None) -> list[Turn]:
        sql = f"SELECT {', '.join(_TURN_FIELDS)} FROM turns WHERE conversation = ?"
        params: list[Any] = [conv_id]
        if upto is not None:
            sql += " AND n <= ?"
            params.append(upto)
        rows = self._db.execute(sql + " ORDER BY n", params).fetchall()
        return [Turn(**dict(zip(_TURN_FIELDS, r, strict=True))) for r in rows]

    def last_turn(self, conv_id: str) -> Turn | None:
        row = self._db.execute(f"SELECT {', '.join(_TURN_FIELDS)} FROM turns WHERE conversation = ? "
                               f"ORDER BY n DESC LIMIT 1", (conv_id,)).fetchone()
        return None if row is None else Turn(**dict(zip(_TURN_FIELDS, row, strict=True)))

    def turn_of_task(self, task_id: str) -> Turn | None:
        row = self._db.execute(f"SELECT {', '.join(_TURN_FIELDS)} FROM turns WHERE task_id = ?",
                               (task_id,)).fetchone()
        return None if row is None else Turn(**dict(zip(_TURN_FIELDS, row, strict=True)))

    def turn_count(self, conv_id: str) -> int:
        return int(self._db.execute("SELECT count(*) FROM turns WHERE conversation = ?", (conv_id,)).fetchone()[0])

    def unfinished_turns(self, conv_id: str | None = None) -> list[Turn]:
        finals = sorted(FINAL)
        sql = f"SELECT {', '.join(_TURN_FIELDS)} FROM turns WHERE state NOT IN ({', '.join('?' * len(finals))})"
        params: list[Any] = list(finals)
        if conv_id is not None:
            sql += " AND conversation = ?"
            params.append(conv_id)
        rows = self._db.execute(sql + " ORDER BY conversation, n", params).fetchall()
        return [Turn(**dict(zip(_TURN_FIELDS, r, strict=True))) for r in rows]

    # -- interactive sessions -----------------------------------------------------------------------
    def add_session(self, row: dict[str, Any]) -> None:
        cols = list(row)
        with self.tx() as db:
            db.execute(f"INSERT INTO sessions ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                       [row[c] for c in cols])

    def sessions(self, project: str | None = None, *, live_only: bool = False) -> list[dict[str, Any]]:
        where, params = [], []
        if project is not None:
            where.append("project = ?")
            params.append(project)
        if live_only:
            where.append("ended_at IS NULL")
        sql = "SELECT * FROM sessions" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        cur = self._db.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def session(self, sid: str) -> dict[str, Any] | None:
        cur = self._db.execute("SELECT * FROM sessions WHERE id = ?", (sid,))
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))

    def end_session(self, sid: str, ended_at: str, exit_status: int | None) -> None:
        with self.tx() as db:
            db.execute("UPDATE sessions SET ended_at = ?, exit_status = ? WHERE id = ?", (ended_at, exit_status, sid))

    def update_turn(self, task_id: str, **fields: Any) -> None:
        bad = set(fields) - set(_TURN_FIELDS)
        if bad:
            raise ValueError(f"unknown turn fields {sorted(bad)}")
        with self.tx() as db:
            db.execute(f"UPDATE turns SET {', '.join(f'{k} = ?' for k in fields)} WHERE task_id = ?",
                       (*fields.values(), task_id))
