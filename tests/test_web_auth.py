"""The dashboard's login tokens and sessions: one use, a short life, only hashes on disk (0600), a CSRF check."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from aiwg_service.web.auth import Sessions


def test_a_login_token_works_once(tmp_path: Path) -> None:
    s = Sessions(tmp_path / "web-sessions.json")
    token = s.one_time_token()
    pair = s.redeem(token)
    assert pair is not None
    sid, csrf = pair
    assert s.redeem(token) is None  # spent
    assert s.redeem("made-up") is None and s.redeem("") is None
    session = s.session(sid)
    assert session is not None and session["csrf"] == csrf
    assert s.session("another") is None and s.session(None) is None


def test_an_old_token_is_refused(tmp_path: Path) -> None:
    s = Sessions(None)
    token = s.one_time_token()
    for k in s.tokens:
        s.tokens[k] -= 10_000  # as if two minutes had long passed
    assert s.redeem(token) is None


def test_sessions_survive_a_restart_as_hashes_only(tmp_path: Path) -> None:
    path = tmp_path / "web-sessions.json"
    s = Sessions(path)
    sid, csrf = s.redeem(s.one_time_token())  # type: ignore[misc]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert sid not in text  # a leaked file logs nobody in
    again = Sessions(path)
    assert again.session(sid) is not None and again.session(sid)["csrf"] == csrf  # type: ignore[index]
    again.logout(sid)
    assert Sessions(path).session(sid) is None


def test_a_broken_sessions_file_means_logging_in_again(tmp_path: Path) -> None:
    path = tmp_path / "web-sessions.json"
    path.write_text("{not json")
    assert Sessions(path).sessions == {}
    path.write_text(json.dumps({"sessions": {"x": {"no": "csrf"}}}))
    assert Sessions(path).sessions == {}


def test_csrf_is_compared_in_full() -> None:
    session = {"csrf": "abc123"}
    assert Sessions.csrf_ok(session, "abc123")
    assert not Sessions.csrf_ok(session, "abc12")
    assert not Sessions.csrf_ok(session, None)
    assert not Sessions.csrf_ok(session, "")
