"""aiwg-web.socket under a real systemd user manager: `aiwgctl install --web` writes the port from web.port and
enables the unit; a visit while the service is stopped starts it and is answered (a login page, not a lost
request); `aiwgctl web --print-url` logs in through the TCP port; the Unix socket (0600) serves a reverse proxy;
/metrics answers with the token from a private EnvironmentFile=."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import stat
import sys
from pathlib import Path

from systemd_env import REPO_ROOT, UserManager
from webhook_support import free_port

BIN = Path(sys.executable).parent
TOKEN = "systemd-metrics-token-0123456789"


class UnixHTTPConnection(http.client.HTTPConnection):
    """What a reverse proxy does: HTTP over the dashboard's Unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(self.path)


def get(conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None
        ) -> tuple[int, dict[str, str], str]:
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        conn.close()


def test_web_socket_activates_the_service_and_logs_in(sd: UserManager, tmp_path: Path) -> None:
    for d in (sd.config_home / "aiwg", sd.state_home / "aiwg"):
        shutil.rmtree(d, ignore_errors=True)
    port = free_port()
    config_home = tmp_path / "config"
    service_cfg = json.dumps({"web": {"port": port}})  # web.enabled unset: on because the unit passes its sockets
    for home in (config_home, sd.config_home):
        (home / "aiwg").mkdir(parents=True, exist_ok=True)
        (home / "aiwg" / "daemon.json").write_text(service_cfg)
    secret_file = tmp_path / "secrets.env"
    secret_file.write_text(f"AIWG_METRICS_TOKEN={TOKEN}\n")
    secret_file.chmod(0o600)
    sd.install_unit_text("aiwg.service.d/test.conf",
                         "[Service]\n"
                         f"Environment=PYTHONPATH={REPO_ROOT} XDG_CONFIG_HOME={config_home}\n"
                         f"EnvironmentFile={secret_file}\n"
                         "RestartSec=100ms\n")
    sd.install_units(BIN)
    env = {**sd.env, "PYTHONPATH": str(REPO_ROOT), "PATH": f"{BIN}:{sd.env['PATH']}"}

    def ctl(*args: str) -> str:
        res = sd.run([str(BIN / "aiwgctl"), *args], env=env)
        assert res.returncode == 0 and "Traceback" not in res.stderr, f"aiwgctl {args}: {res.stdout}{res.stderr}"
        return res.stdout

    try:
        out = ctl("install", "--web")
        assert f"aiwg-web.socket enabled, listening on 127.0.0.1:{port}" in out
        unit = (sd.unit_dir / "aiwg-web.socket").read_text()
        assert f"\nListenStream=127.0.0.1:{port}\n" in unit and "FileDescriptorName=web" in unit
        assert sd.show("aiwg-web.socket", "ActiveState")["ActiveState"] == "active"
        sd.systemctl("stop", "aiwg.service", check=True)
        assert sd.show("aiwg.service", "ActiveState")["ActiveState"] == "inactive"

        # the service is stopped: a visit starts it and is answered (no session yet: the login page)
        status, headers, body = get(http.client.HTTPConnection("127.0.0.1", port, timeout=60), "/")
        assert status == 401 and "aiwgctl web" in body and "script-src 'self'" in headers["content-security-policy"]
        assert sd.show("aiwg.service", "ActiveState")["ActiveState"] == "active"

        url = ctl("web", "--print-url").strip()
        assert url.startswith(f"http://127.0.0.1:{port}/login?token=")
        status, headers, _ = get(http.client.HTTPConnection("127.0.0.1", port, timeout=60), url.split(str(port), 1)[1])
        assert status == 303
        cookie = headers["set-cookie"].split(";", 1)[0]
        status, _, body = get(http.client.HTTPConnection("127.0.0.1", port, timeout=60), "/", {"Cookie": cookie})
        assert status == 200 and "Running" in body

        # the Unix socket for a reverse proxy: owner-only, from systemd, the same dashboard
        web = json.loads(ctl("status", "--json"))["subsystems"]["web"]
        assert web["from_systemd"] is True and web["listening"] == f"127.0.0.1:{port}"
        unix = str(sd.runtime_dir / "aiwg" / "web.sock")
        assert web["unix"] == unix
        assert stat.S_IMODE(os.stat(unix).st_mode) == 0o600
        assert get(UnixHTTPConnection(unix), "/")[0] == 401
        assert get(UnixHTTPConnection(unix), "/", {"Cookie": cookie})[0] == 200

        # /metrics with its own token from the service's private environment file
        assert get(http.client.HTTPConnection("127.0.0.1", port, timeout=60), "/metrics")[0] == 401
        status, _, text = get(http.client.HTTPConnection("127.0.0.1", port, timeout=60), "/metrics",
                              {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and "aiwg_tasks{" in text
        assert TOKEN not in sd.show("aiwg.service", "Environment")["Environment"]
        assert ctl("ping").startswith("pong")
    finally:
        sd.run([str(BIN / "aiwgctl"), "uninstall"], env=env)
    assert not (sd.unit_dir / "aiwg-web.socket").exists()
    assert sd.show("aiwg-web.socket", "ActiveState")["ActiveState"] == "inactive"
