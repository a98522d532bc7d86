"""Issue 22, finding 8: secret shapes of every provider the service may meet, with real-shaped fake tokens;
``aiwgctl`` escapes control characters in text output; ``--log-file`` is created 0600."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from service_fixture import BIN, ServiceEnv, wait_for

from aiwg_service.cli.render import safe
from aiwg_service.policy import redact

# fake, but shaped exactly as each provider issues them (none of these is a real credential)
TOKENS = {
    "GitHub token": "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "GitHub fine-grained": "github_pat_11ABCDEFG0" + "x" * 20 + "_" + "Y" * 30,
    "GitLab token": "glpat-" + "xYz12AbC34dEf56GhI78",
    "Slack token": "xoxb-" + "1234567890-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx",
    "Slack app token": "xapp-1-A0123456789-1234567890123-" + "abcdef0123456789" * 2,
    "Telegram bot token": "123456789:AA" + "Hk3Lm9Qp2Rs7Tu5Vw1Xy8Za4Bc6De0Fg",
    "Discord bot token": "MTA4NzY1NDMyMTA5ODc2NTQzMg" + ".GhIjKl." + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
    "AWS access key id": "AKIA" + "IOSFODNN7EXAMPLE",
    "AWS secret access key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY",
    "Google API key": "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
    "OpenAI key": "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" + "AbCdEfGh",
    "Anthropic key": "sk-ant-api03-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAbCdEfGhIjKlMn",
    "Stripe key": "sk_live_" + "51HAbCdEfGhIjKlMnOpQrStUv",
    "npm token": "npm_" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAbCd",
    "PyPI token": "pypi-AgEIcHlwaS5vcmc" + "CJDk4ZmEzMjI1LWQ5NzgtNGFkOC1hYzZiLTQyOTk5ZjkwNDQ0NQACKlsz",
}


@pytest.mark.parametrize("name", sorted(TOKENS))
def test_every_provider_token_is_found_and_redacted(name: str) -> None:
    token = TOKENS[name]
    line = f"the agent printed {token} in its output"
    assert redact.find(line) is not None, name
    assert token not in redact.redact(line) and redact.MASK in redact.redact(line)


def test_ordinary_text_is_left_alone() -> None:
    for text in ("commit 3f786850e387550fdab836ed7e6dc881de23001b merged", "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t",
                 "the quick brown fox jumps over the lazy dog", "ThisIsAFortyCharacterLongIdentifierName"):
        assert redact.find(text) is None, text


def test_aiwgctl_escapes_control_characters_in_events(svc_env: ServiceEnv) -> None:
    svc_env.write_project_config({"watch": {"debounce_ms": 0, "paths": [{"path": "inbox/", "events": ["create"]}]},
                                  "schedule": {"jobs": []}})
    (svc_env.project / "inbox").mkdir()
    svc_env.start()
    evil = "x\n2026-01-01 ERROR \x1b[31mforged"
    (svc_env.project / "inbox" / evil).write_text("")
    wait_for(lambda: svc_env.call("events.list", {"type": "file.create"})["events"], 20, what="the event")
    out = svc_env.ctl("events", check=True).stdout
    assert "\x1b" not in out and "\nforged" not in out and "\n2026-01-01 ERROR" not in out
    assert "x\\n2026-01-01 ERROR \\x1b[31mforged" in out
    assert safe("a\u2028b") == "a\\u2028b"


def test_the_log_file_is_private(svc_env: ServiceEnv) -> None:
    log = svc_env.tmp / "logs" / "service.log"
    log.parent.mkdir()
    env = {**svc_env.env}
    proc = subprocess.Popen([str(BIN / "aiwg-service"), "run", "--project", str(svc_env.project),
                             "--log-file", str(log)], env=env, cwd=svc_env.tmp, preexec_fn=lambda: os.umask(0o022))
    svc_env.proc = proc
    try:
        wait_for(lambda: log.exists() and "ready" in log.read_text(), 20, what="the log file")
        assert log.stat().st_mode & 0o777 == 0o600
    finally:
        proc.terminate()
        proc.wait(20)


def test_config_refuses_the_new_shapes(tmp_path: Path) -> None:
    from aiwg_service import config, schemas  # noqa: F401

    with pytest.raises(config.ConfigError) as exc:
        config.parse(json.dumps({"agents": {"x": {"args": ["--key", TOKENS["GitLab token"]]}}}), "daemon.json")
    assert "GitLab token" in str(exc.value) or "secret" in str(exc.value)
