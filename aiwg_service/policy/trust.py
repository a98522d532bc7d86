"""Project trust: a cloned repository changes nothing until its owner allows it (as direnv's ``allow``).

A project's ``.aiwg/daemon.json`` travels with the repository. What it may set alone is an allow-list
(``fields.DECLARED``: what to watch, debounce, log level, lower limits, rules and jobs that only notify, emit
or run the doctor); anything else, including every field added to the schema later, needs trust. Such a
config is untrusted until the user runs ``aiwgctl trust``; the record is keyed by the project's real path and
the sha256 of the file's bytes, so any edit (a ``git pull``) needs a new look. A project whose ``.aiwg``
directory or file is not the user's, a symlink, or group- or world-writable is never trusted, whatever it
sets (as sshd's StrictModes). The store is one JSON file in the state directory (0600); if it cannot be
read, nothing is trusted.

This module only reads raw JSON and the file system; ``policy.gate`` asks it, and the core serves an
untrusted project with only its inert fields (``fields.restrict``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from typing import Any

from .. import safefs
from .fields import gated, short

STORE_NAME = "trust.json"
_short = short
#: Event types only the service publishes: a rule that emits one could forge a task's failure, an approval
#: or a delivery, so it needs trust (``emit`` of the project's own types stays inert).
SERVICE_EVENTS = ("task.", "approval.", "gate.", "trust.", "policy.", "webhook.", "budget.", "project.",
                  "health.", "automation.", "daemon.", "notify.", "messaging.", "session.", "chat.", "cron.",
                  "file.")


def _conditions(conds: Any, where: str, out: list[str]) -> None:
    if not isinstance(conds, list):
        conds = [conds] if isinstance(conds, dict) else []
    for i, c in enumerate(conds):
        if not isinstance(c, dict):
            continue
        at = f"{where}[{i}]"
        if "shell" in c:
            out.append(f"{at}: shell condition: {_short(c['shell'])}")
        for k in ("not", "any", "all"):
            if k in c:
                _conditions(c[k], f"{at}.{k}", out)


def _rule(raw: Any, i: int, out: list[str]) -> None:
    if not isinstance(raw, dict):
        return
    rid = raw.get("id")
    where = f"rules[{i}]" + (f" ({rid})" if isinstance(rid, str) else "")
    before = len(out)
    _conditions(raw.get("conditions", []), f"{where}: conditions", out)
    act = raw.get("action")
    if isinstance(act, dict):  # the AIWG form
        typ = act.get("type")
        if typ == "agent":
            out.append(f"{where}: agent action: {_short(act.get('prompt', ''))}")
        elif typ == "webhook":
            out.append(f"{where}: webhook action: POST {_url(act)}")
    acts = raw.get("actions")
    for j, a in enumerate(acts if isinstance(acts, list) else []):
        if not isinstance(a, dict):
            continue
        at = f"{where}: actions[{j}]"
        if "shell" in a:
            out.append(f"{at}: shell: {_short(a['shell'])}")
        if isinstance(a.get("agent"), dict):
            body = a["agent"]
            who = f" (agent {body['agent']})" if isinstance(body.get("agent"), str) else ""
            out.append(f"{at}: agent task{who}: {_short(body.get('prompt', ''))}")
        if isinstance(a.get("webhook"), dict):
            out.append(f"{at}: webhook: POST {_url(a['webhook'])}")
        emit = a.get("emit")
        etype = emit.get("type") if isinstance(emit, dict) else None
        if isinstance(etype, str) and etype.startswith(SERVICE_EVENTS):
            out.append(f"{at}: emits a service event: {_short(etype)}")
    env = raw.get("env")
    if len(out) > before and isinstance(env, list) and env:  # what those commands may read of yours
        out.append(f"{where}: passes your environment variables {_short(', '.join(map(str, env)))}")


def _url(body: dict[str, Any]) -> str:
    if "url_env" in body:
        return f"the URL in ${_short(body['url_env'])}"
    return _short(body.get("url", ""))


def _job(job: Any, i: int, out: list[str]) -> None:
    if not isinstance(job, dict):
        return
    action = str(job.get("action", "doctor")).strip()
    where = f"schedule.jobs[{i}] ({job.get('id')}, {_short(job.get('cron', ''))})"
    if action.startswith("shell:"):
        out.append(f"{where}: shell: {_short(action[6:].strip())}")
    elif action == "agent" or job.get("prompt") is not None:
        out.append(f"{where}: agent task: {_short(job.get('prompt') or '')}")
    elif any(ch.isspace() for ch in action):
        out.append(f"{where}: agent task: {_short(action)}")


def needs(raw: Any) -> list[str]:
    """What this config (parsed JSON, as written) sets that needs trust: one line each. Rules and jobs that
    run something first (in file order), then every other field outside the allow-list.

    Empty means it sets only inert fields (the default config) and needs no trust."""
    out: list[str] = []
    if not isinstance(raw, dict):
        return out
    rules = raw.get("rules")
    for i, r in enumerate(rules if isinstance(rules, list) else []):
        _rule(r, i, out)
    sched = raw.get("schedule")
    jobs = sched.get("jobs") if isinstance(sched, dict) else None
    for i, j in enumerate(jobs if isinstance(jobs, list) else []):
        _job(j, i, out)
    out.extend(gated(raw))
    return out


def strict_modes(root: str) -> str | None:
    """Why this project's config can never be trusted (StrictModes), or None."""
    uid = os.getuid()
    for rel in (".aiwg", ".aiwg/daemon.json"):
        p = os.path.join(root, rel)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"{p}: {exc.strerror}"
        if stat.S_ISLNK(st.st_mode):
            return f"{p} is a symlink"
        if st.st_uid != uid:
            return f"{p} is owned by uid {st.st_uid}, not by you (uid {uid})"
        if st.st_mode & 0o022:
            return f"{p} is {'group' if st.st_mode & 0o020 else 'world'}-writable (mode {st.st_mode & 0o777:04o})"
    return None


class StoreError(Exception):
    """The trust store cannot be read or written; callers fail closed."""


class TrustStore:
    """``trust.json`` in the state directory: ``{projects: {real path: {sha256, trusted_at, needs}}}``."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.path = os.path.join(os.fspath(state_dir), STORE_NAME)

    def load(self) -> dict[str, dict[str, Any]]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
                raise StoreError(f"{self.path} must be a regular file of yours, mode 0600")
            with os.fdopen(os.dup(fd), "rb") as f:
                data = json.loads(f.read(16 << 20))
            projects = data["projects"]
            if not isinstance(projects, dict) or not all(
                    isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in projects.values()):
                raise ValueError("bad records")
            return projects
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise StoreError(f"{self.path} is corrupt ({exc}); nothing is trusted until it is fixed "
                             f"(remove it and trust your projects again)") from None
        finally:
            os.close(fd)

    def get(self, root: str) -> dict[str, Any] | None:
        return self.load().get(root)

    def _save(self, projects: dict[str, dict[str, Any]]) -> None:
        d = os.path.dirname(self.path)
        os.makedirs(d, mode=0o700, exist_ok=True)
        tmp = os.path.join(d, f".{STORE_NAME}.{os.urandom(8).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps({"version": 1, "projects": projects}, indent=2, sort_keys=True).encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def allow(self, root: str, sha256: str, what: list[str]) -> dict[str, Any]:
        """Trust ``root``'s config with exactly this content. A corrupt store is replaced (it trusted nothing)."""
        try:
            projects = self.load()
        except StoreError:
            projects = {}
        rec = {"sha256": sha256, "trusted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "needs": what}
        projects[root] = rec
        self._save(projects)
        return rec

    def revoke(self, root: str) -> bool:
        try:
            projects = self.load()
        except StoreError:
            projects = {}
        had = projects.pop(root, None) is not None
        self._save(projects)
        return had


def verdict(root: str, sha256: str | None, what: list[str], store: TrustStore) -> str | None:
    """None if the project may run what its config says; else why not, in one line.

    StrictModes come first, whatever the config sets: a project that is not the user's is never trusted."""
    problem = strict_modes(root)
    if problem:
        return f"never trusted: {problem} (fix the ownership or mode first)"
    if not what:
        return None  # sets only inert fields: nothing to trust
    hint = f"review and allow it with `aiwgctl trust {root}`"
    try:
        rec = store.get(root)
    except StoreError as exc:
        return str(exc)
    if rec is None:
        return f"not trusted yet: its config can run commands; {hint}"
    if rec.get("sha256") != sha256:
        return f"its config changed since you trusted it ({rec.get('trusted_at', '?')}); {hint}"
    return None


def diff(before: list[str], after: list[str]) -> list[str]:
    """What a re-trust adds (+) and drops (-), against what was trusted last time."""
    old, new = set(before), set(after)
    return [f"+ {x}" for x in after if x not in old] + [f"- {x}" for x in before if x not in new]


class Unreadable(Exception):
    """The project's config cannot be shown (missing is fine; unreadable or not JSON is this)."""


def describe(root: str, store: TrustStore) -> dict[str, Any]:
    """What ``aiwgctl trust`` shows: what the config on disk could run, and what was trusted before."""
    cfg = os.path.join(root, ".aiwg", "daemon.json")
    out: dict[str, Any] = {"path": root, "config": cfg, "exists": True, "sha256": None, "needs": [],
                           "problem": strict_modes(root), "previous": None, "store_error": None}
    try:
        data = safefs.read_limited(cfg)
    except FileNotFoundError:
        out["exists"] = False
        return out
    except OSError as exc:
        raise Unreadable(f"{cfg}: cannot read: {exc.strerror or exc}") from None
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise Unreadable(f"{cfg}: not valid JSON ({exc})") from None
    out["sha256"] = hashlib.sha256(data).hexdigest()
    out["needs"] = needs(raw)
    try:
        out["previous"] = store.get(root)
    except StoreError as exc:
        out["store_error"] = str(exc)
    prev = out["previous"]
    out["trusted"] = out["problem"] is None and (not out["needs"] or (prev is not None
                                                                       and prev.get("sha256") == out["sha256"]))
    return out
