"""The executors section and subsystem in the real service: `aiwgctl executors` with a real Slurm cluster,
a real sshd and a host that does not answer; config errors name the file and the JSON path."""

from __future__ import annotations

import json
import socket

from service_fixture import ServiceEnv, wait_for
from slurm_env import SlurmCluster
from sshd_env import SshServer


def write_service_config(env: ServiceEnv, data: dict) -> None:
    path = env.config_home / "aiwg" / "daemon.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_aiwgctl_executors_lists_each_with_its_state(svc_env: ServiceEnv, slurm_cluster: SlurmCluster,
                                                     sshd: SshServer) -> None:
    with socket.socket() as s:  # a port nothing listens on: the "dead" host
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    cfg = svc_env.tmp / "ssh_config"
    cfg.write_text(sshd.ssh_config.read_text() + f"\nHost dead\n  HostName 127.0.0.1\n  Port {dead_port}\n")
    svc_env.env["PATH"] = f"{slurm_cluster.bin_dir}:{svc_env.env['PATH']}"
    write_service_config(svc_env, {"executors": {
        "cluster": {"kind": "slurm", "max_parallel": 4, "poll_min_seconds": 0.5},
        "box": {"kind": "ssh", "host": sshd.alias, "ssh_config": str(cfg),
                "remote_state_dir": str(svc_env.tmp / "remote")},
        "dead": {"kind": "ssh", "host": "dead", "ssh_config": str(cfg), "connect_timeout_seconds": 2},
    }})
    svc_env.start()

    def rows() -> dict[str, dict]:
        res = svc_env.ctl("executors", "--json", check=True)
        return {e["name"]: e for e in json.loads(res.stdout)["executors"]}

    got = wait_for(lambda: (r := rows()) and all(r[n]["state"] != "unknown" for n in ("cluster", "box", "dead"))
                   and r, 30, what="every executor probed")
    assert got["cluster"]["kind"] == "slurm" and got["cluster"]["state"] == "up"
    assert got["cluster"]["max_parallel"] == 4
    assert got["box"]["kind"] == "ssh" and got["box"]["state"] == "up"
    assert got["dead"]["state"] == "down" and "cannot connect to dead" in got["dead"]["last_error"]
    text = svc_env.ctl("executors", check=True).stdout
    assert text.splitlines()[0].split()[:3] == ["EXECUTOR", "KIND", "STATE"]
    assert "dead" in text and "down" in text
    status = svc_env.call("daemon.status")
    assert status["subsystems"]["executors"]["dead"]["state"] == "down"


def test_executor_config_errors_name_the_path(svc_env: ServiceEnv) -> None:
    bad = svc_env.tmp / "bad.json"
    bad.write_text(json.dumps({"executors": {"cluster": {"kind": "slurm", "mem": "lots", "partiton": "x"},
                                             "box": {"kind": "ssh"}, "x": {"kind": "k8s"}}}))
    res = svc_env.ctl("config", "check", str(bad))
    assert res.returncode == 1
    assert 'executors.cluster.mem: must be a Slurm memory size like "4000", "8G" or "512M"' in res.stderr
    assert "executors.box.host: is required" in res.stderr
    assert "executors.x.kind: must be one of local, slurm, ssh" in res.stderr
    assert "bad.json" in res.stderr
