"""Webhooks through the real service in the foreground: real HTTP on loopback, real SQLite, real rules.

Each kind: good, bad, missing, stale, replayed; then oversized, wrong method, unknown hook, malformed, floods
(per source address and per hook), `aiwgctl webhook list|test`, a port in use, and no port without hooks.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

import pytest
from service_fixture import ServiceEnv, wait_for
from webhook_support import (
    SECRETS,
    free_port,
    github_headers,
    gitlab_headers,
    post,
    standard_headers,
    token_headers,
)

from aiwg_service import config, schemas  # noqa: F401  (schemas registers every section)

WORKTREE = str(Path(__file__).resolve().parent.parent)
HOOKS = [{"id": "gh", "kind": "github", "secret_env": "AIWG_TEST_GH"},
         {"id": "gl", "kind": "gitlab", "secret_env": "AIWG_TEST_GL", "events": ["Push Hook"]},
         {"id": "std", "kind": "standard", "secret_env": "AIWG_TEST_STD"},
         {"id": "tok", "kind": "token", "secret_env": "AIWG_TEST_TOK"}]
RULES = [{"id": "on-push", "triggers": [{"type": "webhook.github", "data": {"event": "push"}}],
          "actions": [{"shell": "echo \"$AIWG_EVENT_JSON\" > pushed.json"}]}]


def setup(env: ServiceEnv, port: int, rate: dict[str, float] | None = None, credentials: bool = False) -> None:
    """Secrets in the service's environment, or (``credentials``) as files in a $CREDENTIALS_DIRECTORY."""
    env.env["PYTHONPATH"] = os.pathsep.join(x for x in (WORKTREE, env.env.get("PYTHONPATH")) if x)
    if credentials:
        creds = env.tmp / "credentials"
        creds.mkdir(mode=0o700)
        for name, value in SECRETS.items():
            (creds / name).write_text(value + "\n")
        env.env["CREDENTIALS_DIRECTORY"] = str(creds)
    else:
        env.env.update(SECRETS)
    service_cfg = env.config_home / "aiwg" / "daemon.json"
    service_cfg.parent.mkdir(parents=True, exist_ok=True)
    service_cfg.write_text(json.dumps({"webhook": {
        "secret_vars": sorted(SECRETS),  # the service-wide file names what may be a project hook's secret
        "port": port, "max_body_bytes": 4096,
        "rate_limit": rate or {"per_source_burst": 1000, "per_source_per_second": 1000,
                               "per_hook_burst": 1000, "per_hook_per_second": 1000}}}))
    env.write_project_config({"watch": {"paths": []}, "schedule": {"jobs": []}, "webhook": {"hooks": HOOKS},
                              "rules": RULES})


def start(env: ServiceEnv) -> None:
    """Start, then wait for the listener: it opens when the configs are applied, just after the RPC socket."""
    env.start()
    wait_for(lambda: env.call("daemon.status")["subsystems"]["webhooks"].get("listening"), 15,
             what="the webhook listener")


def events(env: ServiceEnv, type_: str) -> list[dict[str, object]]:
    return env.call("events.list", {"type": type_})["events"]


def test_each_kind_good_bad_missing_stale_replayed(svc_env: ServiceEnv) -> None:
    env = svc_env
    port = free_port()
    setup(env, port)
    start(env)
    body = json.dumps({"ref": "refs/heads/main", "commits": [{"id": "abc"}]}).encode()
    gh, gl, std, tok = (SECRETS[k] for k in ("AIWG_TEST_GH", "AIWG_TEST_GL", "AIWG_TEST_STD", "AIWG_TEST_TOK"))

    # GitHub: good -> 202 and the rule fires on webhook.github with data.event == push
    d1 = str(uuid.uuid4())
    status, ans = post(port, "/hooks/gh", body, github_headers(gh, body, d1))
    assert (status, ans["accepted"], ans["delivery_id"]) == (202, True, d1)
    pushed = wait_for(lambda: (env.project / "pushed.json").exists() and (env.project / "pushed.json").read_text(),
                      15, what="the rule on webhook.github")
    ev = json.loads(pushed)
    assert ev["type"] == "webhook.github" and ev["data"]["event"] == "push" and ev["data"]["delivery_id"] == d1
    assert ev["data"]["payload"]["ref"] == "refs/heads/main" and ev["source"] == "webhook"
    assert "X-Hub-Signature-256" not in ev["data"]["headers"] and ev["data"]["headers"]["X-GitHub-Event"] == "push"
    assert ev["data"]["origin"] == {"webhook": "gh", "delivery_id": d1}
    assert [e["data"]["delivery_id"] for e in events(env, "webhook.gh")] == [d1]
    # replayed: 200, nothing published
    assert post(port, "/hooks/gh", body, github_headers(gh, body, d1)) == (200, {"duplicate": True,
                                                                                 "delivery_id": d1})
    bad = github_headers(gh, body, str(uuid.uuid4()))
    bad["X-Hub-Signature-256"] = "sha256=" + "0" * 64
    assert post(port, "/hooks/gh", body, bad) == (401, {"error": "unauthorized"})
    missing = github_headers(gh, body, str(uuid.uuid4()))
    del missing["X-Hub-Signature-256"]
    assert post(port, "/hooks/gh", body, missing)[0] == 401
    tampered = github_headers(gh, body, str(uuid.uuid4()))
    assert post(port, "/hooks/gh", body + b" ", tampered)[0] == 401  # the signature covers the raw bytes

    # GitLab: token header; events filter
    d2 = str(uuid.uuid4())
    assert post(port, "/hooks/gl", body, gitlab_headers(gl, body, d2))[0] == 202
    assert post(port, "/hooks/gl", body, gitlab_headers(gl, body, d2))[0] == 200
    assert post(port, "/hooks/gl", body, gitlab_headers("wrong-token-xx", body, str(uuid.uuid4())))[0] == 401
    no_token = gitlab_headers(gl, body, str(uuid.uuid4()))
    del no_token["X-Gitlab-Token"]
    assert post(port, "/hooks/gl", body, no_token)[0] == 401
    status, ans = post(port, "/hooks/gl", body, gitlab_headers(gl, body, str(uuid.uuid4()), "Tag Push Hook"))
    assert status == 202 and ans["accepted"] is False  # answered, not published: not in events
    assert [e["data"]["event"] for e in events(env, "webhook.gl")] == ["Push Hook"]

    # Standard Webhooks: good, stale, bad, missing, replayed
    d3 = "msg_" + uuid.uuid4().hex
    assert post(port, "/hooks/std", body, standard_headers(std, body, d3))[0] == 202
    assert post(port, "/hooks/std", body, standard_headers(std, body, d3))[0] == 200
    stale = standard_headers(std, body, "msg_" + uuid.uuid4().hex, ts=int(time.time()) - 600)
    assert post(port, "/hooks/std", body, stale)[0] == 401
    future = standard_headers(std, body, "msg_" + uuid.uuid4().hex, ts=int(time.time()) + 600)
    assert post(port, "/hooks/std", body, future)[0] == 401
    wrong = standard_headers("whsec_" + "QUJDREVGR0hJSktMTU5PUA==", body, "msg_" + uuid.uuid4().hex)
    assert post(port, "/hooks/std", body, wrong)[0] == 401
    partial = standard_headers(std, body, "msg_" + uuid.uuid4().hex)
    del partial["webhook-timestamp"]
    assert post(port, "/hooks/std", body, partial)[0] == 401

    # a plain bearer token
    assert post(port, "/hooks/tok", body, token_headers(tok, body, "t-1"))[0] == 202
    assert post(port, "/hooks/tok", body, token_headers(tok, body, "t-1"))[0] == 200
    assert post(port, "/hooks/tok", body, token_headers("nope-nope-nope", body, "t-2"))[0] == 401
    assert post(port, "/hooks/tok", body, {"Content-Type": "application/json"})[0] == 401
    assert post(port, "/hooks/tok", body, {"Authorization": f"Basic {tok}"})[0] == 401

    # malformed, oversized, wrong method, unknown hook, unknown path
    junk = b"{not json"
    assert post(port, "/hooks/tok", junk, token_headers(tok, junk, "t-3")) == (400, {"error": "malformed payload"})
    big = json.dumps({"x": "y" * 5000}).encode()
    assert post(port, "/hooks/tok", big, token_headers(tok, big, "t-4")) == (413, {"error": "payload too large"})
    assert post(port, "/hooks/gh", method="GET")[0] == 405
    assert post(port, "/hooks/gh", method="PUT", body=body)[0] == 405
    assert post(port, "/hooks/nope", body, github_headers(gh, body, "x")) == (404, {"error": "not found"})
    assert post(port, "/admin", method="GET")[0] == 404
    # a chunked body over the cap is cut off too (no Content-Length to check up front)
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    chunk = b"a" * 3000
    conn.sendall(b"POST /hooks/tok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nAuthorization: Bearer "
                 + tok.encode() + b"\r\n\r\n" + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 2 + b"0\r\n\r\n")
    assert conn.recv(100).startswith(b"HTTP/1.1 413")
    conn.close()

    # aiwgctl webhook list and test
    listing = json.loads(env.ctl("webhook", "list", "--json", check=True).stdout)
    hooks = {h["id"]: h for h in listing["hooks"]}
    assert listing["listening"] == f"127.0.0.1:{port}" and listing["from_systemd"] is False
    assert hooks["gh"]["url"] == f"http://127.0.0.1:{port}/hooks/gh" and hooks["gh"]["kind"] == "github"
    assert hooks["gh"]["accepted"] == 1 and hooks["gh"]["duplicates"] == 1 and hooks["gh"]["refused"] >= 3
    assert hooks["tok"]["last"]["status"] == 413
    text = env.ctl("webhook", "list", check=True).stdout
    assert f"http://127.0.0.1:{port}/hooks/std" in text and "standard" in text
    payload = env.tmp / "push.json"
    payload.write_text(json.dumps({"ref": "refs/heads/test"}))
    out = env.ctl("webhook", "test", "gh", "--event", "push", "--payload", str(payload), check=True).stdout
    assert out.startswith(f"POST http://127.0.0.1:{port}/hooks/gh -> 202")
    for hook in ("gl", "std", "tok"):
        assert " -> 202 " in env.ctl("webhook", "test", hook, check=True).stdout
    wait_for(lambda: "refs/heads/test" in (env.project / "pushed.json").read_text(), 15, what="the test delivery")
    unknown = env.ctl("webhook", "test", "nope")
    assert unknown.returncode == 1 and "no hook 'nope'" in unknown.stderr

    # every refusal was logged with the hook id and the reason; no traceback
    log = env.log_text()
    assert "webhook gh: refused 401 from 127.0.0.1: bad signature" in log
    assert "webhook std: refused 401 from 127.0.0.1: stale timestamp" in log
    assert "webhook tok: refused 413" in log and "webhook nope: refused 404" in log and "refused 405" in log
    assert "webhook tok: refused 400 from 127.0.0.1: malformed payload" in log
    assert "Traceback" not in log and SECRETS["AIWG_TEST_GH"] not in log
    assert env.stop() == 0


def test_floods_per_source_and_per_hook(svc_env: ServiceEnv) -> None:
    env = svc_env
    port = free_port()
    setup(env, port, {"per_source_burst": 20, "per_source_per_second": 0.01, "per_hook_burst": 1000,
                      "per_hook_per_second": 1000}, credentials=True)  # secrets from systemd-style credentials
    start(env)
    tok = SECRETS["AIWG_TEST_TOK"]
    codes = [post(port, "/hooks/tok", b"{}", token_headers(tok, b"{}", f"a-{i}"), source="127.0.0.2")[0]
             for i in range(40)]
    assert codes.count(202) == 20 and codes.count(429) == 20 and codes[-1] == 429
    # another address is not limited by that flood
    assert post(port, "/hooks/tok", b"{}", token_headers(tok, b"{}", "b-1"), source="127.0.0.3")[0] == 202
    # per hook: reload with a small hook bucket; many addresses cannot get past it
    cfg = env.config_home / "aiwg" / "daemon.json"
    data = json.loads(cfg.read_text())
    data["webhook"]["rate_limit"] = {"per_source_burst": 1000, "per_hook_burst": 10, "per_hook_per_second": 0.01}
    cfg.write_text(json.dumps(data))
    env.call("daemon.reload")
    codes = [post(port, "/hooks/std", b"{}", standard_headers(SECRETS["AIWG_TEST_STD"], b"{}", f"m{i}"),
                  source=f"127.0.1.{i + 1}")[0] for i in range(30)]
    assert codes.count(202) == 10 and codes.count(429) == 20
    assert post(port, "/hooks/gh", b"{}", github_headers(SECRETS["AIWG_TEST_GH"], b"{}", "g1"))[0] == 202
    log = env.log_text()
    assert "webhook tok: refused 429 from 127.0.0.2: rate limit for 127.0.0.2" in log
    assert "webhook std: refused 429" in log and "rate limit for the hook" in log
    assert log.count("rate limit for 127.0.0.2") == 1  # logged once, then summarised, not once per request
    # random unknown hook ids from many addresses: one log line, not one per request
    for i in range(20):
        assert post(port, f"/hooks/random-{i}", b"{}", source=f"127.0.2.{i + 1}")[0] == 404
    assert post(port, "/hooks/%0Aforged", b"{}")[0] == 404
    log = env.log_text()
    assert log.count("refused 404") == 1 and "\nforged" not in log
    assert env.stop() == 0


def test_port_in_use_and_no_hooks_no_port(svc_env: ServiceEnv) -> None:
    env = svc_env
    port = free_port()
    setup(env, port)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    try:
        env.start()
        st = wait_for(lambda: (w := env.call("daemon.status")["subsystems"]["webhooks"]).get("error") and w, 15,
                      what="the listener's error")
        assert st["listening"] is None and f"cannot listen on 127.0.0.1:{port}" in st["error"]
        assert env.call("ping")["pong"] is True  # the rest of the service runs
        assert f"cannot listen on 127.0.0.1:{port}" in env.log_text() and "Traceback" not in env.log_text()
        assert "not listening (cannot listen on" in env.ctl("webhook", "list", check=True).stdout
    finally:
        blocker.close()
    # the port is free again: a reload listens; removing every hook gives the port back
    env.call("daemon.reload")
    assert env.call("daemon.status")["subsystems"]["webhooks"]["listening"] == f"127.0.0.1:{port}"
    env.write_project_config({"watch": {"paths": []}, "schedule": {"jobs": []}})
    env.call("daemon.reload")
    assert env.call("daemon.status")["subsystems"]["webhooks"]["listening"] is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing holds it
    assert env.stop() == 0


def parse_errors(doc: dict[str, object]) -> list[str]:
    try:
        config.parse(json.dumps(doc), "daemon.json")
    except config.ConfigError as exc:
        return exc.errors
    return []


def test_unset_secret_is_refused_at_config_check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in (*SECRETS, "AIWG_WEBHOOK_SECRET", "X_Y", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(k, raising=False)
    assert parse_errors({"webhook": {"hooks": [{"id": "bad id!", "kind": "svn"}]}}) == [
        'daemon.json: webhook.hooks[0].id: "bad id!" may use only letters, digits and _ . - (at most 64, starting '
        'with a letter or digit)',
        'daemon.json: webhook.hooks[0].kind: "svn" is not one of github, gitlab, standard, token']
    assert parse_errors({"webhook": {"hooks": [{"id": "gh", "kind": "github", "secret_env": "AIWG_TEST_GH"},
                                               {"id": "std", "kind": "standard"},
                                               {"id": "off", "kind": "token", "enabled": False}]}}) == [
        "daemon.json: webhook.hooks[0].secret_env: the secret is not set: set the environment variable AIWG_TEST_GH "
        "for the service, or give it a systemd credential named AIWG_TEST_GH (LoadCredential=)",
        "daemon.json: webhook.hooks[1] (secret from webhook.secret_env): the secret is not set: set the environment "
        "variable AIWG_WEBHOOK_SECRET for the service, or give it a systemd credential named AIWG_WEBHOOK_SECRET "
        "(LoadCredential=)"]
    # a systemd credential is enough; too short a secret, a duplicate id and events on a token hook are named
    creds = tmp_path / "creds"
    creds.mkdir()
    for name in ("AIWG_TEST_GH", "AIWG_WEBHOOK_SECRET"):
        (creds / name).write_text("credential-secret-0123456789-abcdefghij\n")
    (creds / "X_Y").write_text("short\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert parse_errors({"webhook": {"hooks": [
        {"id": "gh", "kind": "github", "secret_env": "AIWG_TEST_GH"}, {"id": "std", "kind": "standard"},
        {"id": "gh", "kind": "token", "secret_env": "X_Y", "events": ["push"]}]}}) == [
        'daemon.json: webhook.hooks[2].id: duplicate hook id "gh" (also webhook.hooks[0])',
        'daemon.json: webhook.hooks[2].events: only applies to kind github or gitlab, not "token"',
        "daemon.json: webhook.hooks[2].secret_env: the secret in X_Y is shorter than 32 bytes (use e.g. `openssl "
        "rand -hex 32`)"]
    assert parse_errors({"webhook": {"hooks": [{"id": "gh", "kind": "github", "secret_env": "AIWG_TEST_GH"}]}}) == []
    assert parse_errors({"webhook": {"hooks": [{"id": "gh", "kind": "github", "secret": "hunter22"}]}}) == [
        'daemon.json: webhook.hooks[0].secret: looks like a secret; keep it out of config: set an environment '
        'variable and name it in "secret_env"']
