"""What a new user meets first, as the README tells it (issue 31): `config check` reports every problem at once,
names a project file's service-only keys as ignored, never requires a secret that only the service's
environment or credentials hold (and asks the running service about it); `aiwgctl logs` for a foreground
service without --log-file says where the log goes; `top --once` shows the history."""

from __future__ import annotations

import json
from pathlib import Path

from service_fixture import ServiceEnv

HOOK = {"webhook": {"hooks": [{"id": "ci", "kind": "github", "secret_env": "AIWG_NEWCOMER_GH"}]}}
ELSEWHERE = "provided by the service's environment or credentials"


def _file(env: ServiceEnv, name: str, data: dict[str, object]) -> Path:
    path = env.tmp / name / ".aiwg" / "daemon.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    return path


def test_config_check_never_requires_the_services_secret(svc_env: ServiceEnv) -> None:
    cfg = _file(svc_env, "hooked", HOOK)
    # no service: the secret is named as the service's, not required of aiwgctl's own environment
    res = svc_env.ctl("config", "check", str(cfg))
    assert res.returncode == 0, res.stderr
    assert f"webhook secret AIWG_NEWCOMER_GH: {ELSEWHERE} (not checked: the service is not running)" in res.stdout
    # a running service whose systemd credential holds it (LoadCredential=): asked, and it says set
    creds = svc_env.tmp / "creds"
    creds.mkdir()
    (creds / "AIWG_NEWCOMER_GH").write_text("credential-secret-0123456789abcdefghijklmnop\n")
    svc_env.env["CREDENTIALS_DIRECTORY"] = str(creds)
    svc_env.start()
    del svc_env.env["CREDENTIALS_DIRECTORY"]  # aiwgctl's environment has neither the variable nor the credential
    res = svc_env.ctl("config", "check", str(cfg))
    assert res.returncode == 0, res.stderr
    assert f"webhook secret AIWG_NEWCOMER_GH: {ELSEWHERE}: set in the running service" in res.stdout
    js = json.loads(svc_env.ctl("config", "check", str(cfg), "--json", check=True).stdout)
    assert js["valid"] and js["secrets"] == [{"name": "AIWG_NEWCOMER_GH", "kind": "github", "status": "set",
                                              "problem": None}]
    # a secret the service does not have either: an error, said by the service, and a non-zero exit
    missing = _file(svc_env, "unset", {"webhook": {"hooks": [{"id": "x", "kind": "token",
                                                              "secret_env": "AIWG_NEWCOMER_NONE"}]}})
    res = svc_env.ctl("config", "check", str(missing))
    assert res.returncode == 1
    assert f"{missing}: webhook secret AIWG_NEWCOMER_NONE: the secret is not set" in res.stderr, res.stderr
    # the service's answer never carries the value
    got = svc_env.call("webhook.secrets", {"secrets": [{"name": "AIWG_NEWCOMER_GH", "kind": "github"}]})
    assert "credential-secret-0123456789abcdefghijklmnop" not in json.dumps(got) and got["secrets"][0]["set"] is True
    bad = svc_env.connect().request("webhook.secrets", {"secrets": [{"name": "not a name"}]})
    assert bad["error"]["code"] == -32602 and "secrets" in bad["error"]["message"]


def test_config_check_reports_errors_and_warnings_at_once(svc_env: ServiceEnv) -> None:
    cfg = _file(svc_env, "both", {"watch": {"paths": [{"path": "src/", "events": ["modfy"]}], "colour": "blue"},
                                  "messaging": {"users": {"telegram:123": "write"}}})
    res = svc_env.ctl("config", "check", str(cfg))
    assert res.returncode == 1 and res.stdout == ""
    lines = res.stderr.splitlines()
    assert lines == [
        f'{cfg}: watch.paths[0].events[0]: "modfy" is not one of create, modify, delete',
        f"warning: {cfg}: watch.colour: unknown key, ignored",
        f"warning: {cfg}: messaging.users: ignored in a project's file: users, bridges and limits come from the "
        "service-wide file only (a project's file may add subscriptions)",
    ], res.stderr
    js = json.loads(svc_env.ctl("config", "check", str(cfg), "--json").stdout)
    assert not js["valid"] and len(js["errors"]) == 1 and len(js["warnings"]) == 2


def test_service_only_keys_in_a_project_file_are_named(svc_env: ServiceEnv) -> None:
    cfg = _file(svc_env, "proj", {"web": {"port": 9999}, "webhook": {"port": 9000},
                                  "budgets": {"tz": "UTC", "project_daily_usd": 1},
                                  "messaging": {"subscriptions": []}, "executors": {}})
    res = svc_env.ctl("config", "check", str(cfg))
    assert res.returncode == 0, res.stderr
    warned = [ln for ln in res.stdout.splitlines() if ln.startswith("warning:")]
    assert sorted(w.split(": ")[2] for w in warned) == ["budgets.tz", "executors", "web", "webhook.port"], warned
    assert all("ignored in a project's file: only the service-wide file sets it" in w for w in warned)
    # the same keys in the service-wide file are its own: no word about them
    svc = svc_env.config_home / "aiwg" / "daemon.json"
    svc.parent.mkdir(parents=True)
    svc.write_text(cfg.read_text())
    res = svc_env.ctl("config", "check", str(svc), check=True)
    assert "warning" not in res.stdout and res.stdout.startswith(f"{svc}: valid")


def test_logs_of_a_foreground_service_without_log_file(service: ServiceEnv) -> None:
    res = service.ctl("logs")
    assert res.returncode == 1 and res.stdout == ""
    assert "logs to its stderr" in res.stderr and "--log-file" in res.stderr and "No entries" not in res.stderr


def test_logs_of_a_foreground_service_with_log_file(svc_env: ServiceEnv) -> None:
    log = svc_env.tmp / "aiwg.log"
    svc_env.start("--log-file", str(log))
    res = svc_env.ctl("logs", "-n", "200", check=True)
    assert "ready" in res.stdout


def test_top_once_shows_the_history(service: ServiceEnv) -> None:
    service.call("messaging.notify", {"message": "hello from the test"})
    last = service.call("events.list", {"limit": 1})["events"][-1]
    # from outside the project: the service's own socket, where events of no project show too
    out = service.ctl("top", "--once", check=True, cwd=service.tmp).stdout
    assert "(waiting for events)" not in out, out
    events = out.split("EVENTS\n", 1)[1].splitlines()
    assert events[0].split()[1] == last["type"], out
