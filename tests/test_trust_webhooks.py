"""Issue 22, finding 4: a clone's webhook hooks. Untrusted: not served. A well-known variable as the secret:
refused by name. A secret the service file does not name: refused. A hook id in two files: a config error
naming both files, at start and at reload. Real clones, the real service, real HTTP on loopback."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from service_fixture import ServiceEnv, wait_for
from trust_support import Origin
from webhook_support import SECRETS, free_port, post, token_headers


def service_file(env: ServiceEnv, port: int, **webhook: object) -> None:
    path = env.config_home / "aiwg" / "daemon.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"webhook": {"port": port, **webhook}}))


def clone_with(tmp: Path, name: str, hooks: list[dict[str, object]]) -> Path:
    where = tmp / f"origin-{name}"
    where.mkdir()
    origin = Origin(where)
    origin.commit({".aiwg/daemon.json": json.dumps({
        "watch": {"paths": []}, "schedule": {"jobs": []}, "webhook": {"hooks": hooks},
        "rules": [{"id": "forge", "triggers": [{"type": "webhook.*"}],
                   "actions": [{"emit": {"type": "task.failed", "data": {"id": "t-forged"}}}]}]})})
    return origin.clone(tmp / name)


def test_a_clones_hooks_are_not_served_until_trusted(svc_env: ServiceEnv, tmp_path: Path) -> None:
    port = free_port()
    svc_env.env.update(SECRETS)
    service_file(svc_env, port, secret_vars=["AIWG_TEST_TOK"], hooks=[
        {"id": "mine", "kind": "token", "secret_env": "AIWG_TEST_TOK"}])
    clone = clone_with(tmp_path, "clone", [{"id": "theirs", "kind": "token", "secret_env": "AIWG_TEST_TOK"}])
    svc_env.start(projects=[clone])
    wait_for(lambda: svc_env.call("daemon.status")["subsystems"]["webhooks"].get("listening"), 15,
             what="the webhook listener")
    start_listening = svc_env.call("webhook.list")
    assert [h["id"] for h in start_listening["hooks"]] == ["mine"], start_listening
    body = b"{}"
    status, _ = post(port, "/hooks/theirs", body, token_headers(SECRETS["AIWG_TEST_TOK"], body, str(uuid.uuid4())))
    assert status == 404 and svc_env.call("events.list", {"type": "webhook.*"})["events"] == []
    svc_env.ctl("trust", str(clone), "--yes", check=True)
    assert sorted(h["id"] for h in svc_env.call("webhook.list")["hooks"]) == ["mine", "theirs"]


def test_a_well_known_variable_is_never_a_secret(svc_env: ServiceEnv, tmp_path: Path) -> None:
    service_file(svc_env, free_port())
    clone = clone_with(tmp_path, "clone", [{"id": "ci", "kind": "token", "secret_env": "HOME"}])
    svc_env.start(projects=[])
    res = svc_env.ctl("project", "add", str(clone))
    assert res.returncode == 1 and "HOME is a well-known variable whose value anyone can guess" in res.stderr


def test_a_project_hook_may_use_only_secrets_the_service_file_names(svc_env: ServiceEnv, tmp_path: Path) -> None:
    svc_env.env.update(SECRETS)
    service_file(svc_env, free_port())  # names no secret variable
    clone = clone_with(tmp_path, "clone", [{"id": "ci", "kind": "token", "secret_env": "AIWG_TEST_TOK"}])
    svc_env.start(projects=[])
    svc_env.ctl("trust", str(clone), "--yes", check=True)
    res = svc_env.ctl("project", "add", str(clone))
    assert res.returncode == 1 and "AIWG_TEST_TOK is not named as a webhook secret by the service-wide file" \
        in res.stderr
    assert svc_env.call("webhook.list")["hooks"] == []


def test_a_hook_id_in_two_files_is_a_config_error_naming_both(svc_env: ServiceEnv, tmp_path: Path) -> None:
    svc_env.env.update(SECRETS)
    port = free_port()
    service_file(svc_env, port, secret_vars=["AIWG_TEST_TOK", "AIWG_TEST_GH"])
    one = clone_with(tmp_path, "one", [{"id": "ci", "kind": "token", "secret_env": "AIWG_TEST_TOK"}])
    two = clone_with(tmp_path, "two", [{"id": "ci", "kind": "github", "secret_env": "AIWG_TEST_GH"}])
    svc_env.trust(one)
    svc_env.trust(two)
    # at start: the project whose file repeats the id is not served (the error names both files); the other
    # project and the service run on (one project never takes down another)
    svc_env.start(projects=[one, two])
    by = {pr["path"]: pr for pr in svc_env.call("project.list")["projects"]}
    clash = f'{two}/.aiwg/daemon.json: webhook.hooks[0].id: hook id "ci" is also defined in {one}/.aiwg/daemon.json'
    assert by[str(two)]["served"] is False and clash in " ".join(by[str(two)]["errors"]), by[str(two)]
    assert by[str(one)]["served"] is True and clash in svc_env.log_text()
    assert [h["project"] for h in svc_env.call("webhook.list")["hooks"]] == [str(one)]
    svc_env.stop()
    # at project add: refused, the error names both files
    svc_env.start(projects=[one])
    res = svc_env.ctl("project", "add", str(two))
    assert res.returncode == 1 and f'hook id "ci" is also defined in {one}/.aiwg/daemon.json' in res.stderr
    # the same through a reload: a project file that gains the other's hook id is refused, the old config runs on
    cfg = json.loads((one / ".aiwg/daemon.json").read_text())
    cfg["webhook"]["hooks"].append({"id": "mine", "kind": "token", "secret_env": "AIWG_TEST_TOK"})
    svc_env.write_project_config(cfg, one)  # and trusted: trust is not what refuses it
    service_file(svc_env, port, secret_vars=["AIWG_TEST_TOK", "AIWG_TEST_GH"],
                 hooks=[{"id": "mine", "kind": "github", "secret_env": "AIWG_TEST_GH"}])
    res = svc_env.ctl("reload")
    assert res.returncode == 1
    out = res.stdout + res.stderr
    assert f'{one}/.aiwg/daemon.json: webhook.hooks[1].id: hook id "mine" is also defined in ' in out
    # the project keeps the config it ran (its hook ci); the service-wide file reloaded (its hook mine)
    hooks = {h["id"]: h["project"] for h in svc_env.call("webhook.list")["hooks"]}
    assert hooks == {"ci": str(one), "mine": None}, hooks
