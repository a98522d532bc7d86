"""aiwg-webhook.socket under a real systemd user manager: `aiwgctl install --webhook` writes the port from
webhook.port; a signed POST while the service is stopped activates it, is answered 202 (not lost), and the rule
fires. The secret comes from a private EnvironmentFile= (0600), never from the unit or the config.

LoadCredential= would be the better home for it, and the service reads $CREDENTIALS_DIRECTORY (test_webhooks.py
covers that with a real credentials directory), but systemd 252's user manager run by root in this test's
namespaces leaves the credentials directory empty (even for SetCredential=), so this test cannot use it."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from systemd_env import REPO_ROOT, UserManager
from webhook_support import free_port, github_headers, post

BIN = Path(sys.executable).parent
SECRET = "credential-secret-" + uuid.uuid4().hex


def test_webhook_socket_activates_the_service_and_the_rule_fires(sd: UserManager, tmp_path: Path) -> None:
    for d in (sd.config_home / "aiwg", sd.state_home / "aiwg"):
        shutil.rmtree(d, ignore_errors=True)
    port = free_port()
    config_home = tmp_path / "config"
    # a service-wide hook whose secret only the service's EnvironmentFile= holds: install must not require it
    service_cfg = json.dumps({"webhook": {"port": port, "secret_vars": ["AIWG_TEST_GH"], "hooks": [
        {"id": "svc", "kind": "github", "secret_env": "AIWG_TEST_GH"}]}})
    for home in (config_home, sd.config_home):  # the service's (drop-in) and aiwgctl's view of the config
        (home / "aiwg").mkdir(parents=True, exist_ok=True)
        (home / "aiwg" / "daemon.json").write_text(service_cfg)
    secret_file = tmp_path / "secrets.env"
    secret_file.write_text(f"AIWG_TEST_GH={SECRET}\n")
    secret_file.chmod(0o600)
    sd.install_unit_text("aiwg.service.d/test.conf",
                         "[Service]\n"
                         f"Environment=PYTHONPATH={REPO_ROOT} XDG_CONFIG_HOME={config_home}\n"
                         f"EnvironmentFile={secret_file}\n"
                         "RestartSec=100ms\n")
    sd.install_units(BIN)
    project = Path(tempfile.mkdtemp(prefix="aiwgw", dir="/tmp"))
    env = {**sd.env, "PYTHONPATH": str(REPO_ROOT), "PATH": f"{BIN}:{sd.env['PATH']}"}

    def ctl(*args: str) -> str:
        res = sd.run([str(BIN / "aiwgctl"), *args], env=env)
        assert res.returncode == 0 and "Traceback" not in res.stderr, f"aiwgctl {args}: {res.stdout}{res.stderr}"
        return res.stdout

    try:
        (project / ".aiwg").mkdir()
        (project / ".aiwg" / "daemon.json").write_text(json.dumps({
            "watch": {"paths": []}, "schedule": {"jobs": []},
            "webhook": {"hooks": [{"id": "ci", "kind": "github", "secret_env": "AIWG_TEST_GH", "events": ["push"]}]},
            "rules": [{"id": "on-push", "triggers": [{"type": "webhook.github", "data": {"event": "push"}}],
                       "actions": [{"shell": "echo \"$AIWG_EVENT_JSON\" > pushed.json"}]}]}))
        out = ctl("install", "--webhook")
        assert f"aiwg-webhook.socket enabled, listening on 127.0.0.1:{port}" in out
        # asked of the service (the request starts it through aiwg.socket), never of aiwgctl's own environment
        assert ("webhook secret AIWG_TEST_GH: provided by the service's environment or credentials: set in the "
                "running service") in out, out
        unit = (sd.unit_dir / "aiwg-webhook.socket").read_text()
        assert f"\nListenStream=127.0.0.1:{port}\n" in unit and "FileDescriptorName=webhook" in unit
        assert sd.show("aiwg-webhook.socket", "ActiveState")["ActiveState"] == "active"
        ctl("project", "add", str(project))
        checked = ctl("config", "check", str(project / ".aiwg" / "daemon.json"))
        assert "set in the running service" in checked and "valid" in checked, checked
        # the config runs a shell action: trusted through the service, in its own $STATE_DIRECTORY
        assert "trusted: " in ctl("trust", str(project), "--yes")
        sd.systemctl("stop", "aiwg.service", check=True)
        assert sd.show("aiwg.service", "ActiveState")["ActiveState"] == "inactive"

        # the service is stopped: a signed delivery starts it and is answered, not lost
        body = json.dumps({"ref": "refs/heads/main", "after": "abc123"}).encode()
        delivery = str(uuid.uuid4())
        status, answer = post(port, "/hooks/ci", body, github_headers(SECRET, body, delivery), timeout=60)
        assert (status, answer["accepted"], answer["delivery_id"]) == (202, True, delivery)
        assert sd.show("aiwg.service", "ActiveState")["ActiveState"] == "active"
        pushed = sd.wait_for(lambda: (project / "pushed.json").exists() and (project / "pushed.json").read_text(),
                             20, message="the rule on webhook.github")
        ev = json.loads(pushed)
        assert ev["data"]["delivery_id"] == delivery and ev["data"]["payload"]["after"] == "abc123"
        # a bad signature through the same socket: 401; the RPC socket kept its own fd
        assert post(port, "/hooks/ci", body, github_headers("wrong-secret-123", body, str(uuid.uuid4())))[0] == 401
        listing = json.loads(ctl("webhook", "list", "--json"))
        assert listing["from_systemd"] is True and listing["listening"] == f"127.0.0.1:{port}"
        (ci,) = [h for h in listing["hooks"] if h["id"] == "ci"]
        assert ci["accepted"] == 1 and ci["refused"] == 1
        assert ctl("ping").startswith("pong")
        # the secret is in neither the unit nor the journal
        assert SECRET not in sd.show("aiwg.service", "Environment")["Environment"]
        assert SECRET not in sd.journalctl("-t", "aiwg", "-o", "cat").stdout
    finally:
        sd.run([str(BIN / "aiwgctl"), "uninstall"], env=env)
        shutil.rmtree(project, ignore_errors=True)
    assert not (sd.unit_dir / "aiwg-webhook.socket").exists()
    assert sd.show("aiwg-webhook.socket", "ActiveState")["ActiveState"] == "inactive"
