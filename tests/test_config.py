"""Config validation: every error path names the file, the JSON path and the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiwg_service import config, schemas  # noqa: F401  (schemas registers every section)

F = ".aiwg/daemon.json"


def errors_of(data: object) -> list[str]:
    with pytest.raises(config.ConfigError) as exc:
        config.parse(json.dumps(data) if not isinstance(data, str) else data, F)
    return exc.value.errors


def test_defaults_match_the_aiwg_daemon() -> None:
    d = config.default_dict()
    assert d["daemon"] == {"heartbeat_interval_seconds": 30, "max_parallel_actions": 3,
                           "action_timeout_minutes": 120, "log": {"max_size_mb": 50, "max_files": 5, "level": "info"}}
    assert d["watch"] == {
        "enabled": True,
        "paths": [{"path": ".aiwg/", "events": ["create", "modify", "delete"],
                   "ignore": ["*.tmp", "working/**", "daemon/**"]},
                  {"path": "src/", "events": ["modify"], "extensions": [".ts", ".js", ".mjs"]}],
        "debounce_ms": 2000,
    }
    assert d["schedule"] == {"enabled": True,
                             "jobs": [{"id": "health-check", "cron": "0 */6 * * *", "action": "doctor"}]}
    # the file we write and the schema's own defaults are the same configuration
    loaded = config.parse(json.dumps(d), F)
    assert loaded.warnings == []
    assert loaded.config == config.Config()


def test_enum_error_has_the_issue_wording() -> None:
    errs = errors_of({"watch": {"paths": [{"path": "a"}, {"path": "src/", "events": ["modfy"]}]}})
    assert errs == ['.aiwg/daemon.json: watch.paths[1].events[0]: "modfy" is not one of create, modify, delete']


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"daemon": {"max_parallel_actions": 0}}, "daemon.max_parallel_actions: 0 must be >= 1"),
        ({"daemon": {"max_parallel_actions": True}}, "daemon.max_parallel_actions: must be an integer, not true"),
        ({"daemon": {"heartbeat_interval_seconds": "30"}},
         'daemon.heartbeat_interval_seconds: must be an integer, not "30"'),
        ({"daemon": {"log": {"level": "loud"}}}, 'daemon.log.level: "loud" is not one of debug, info, warning, error'),
        ({"daemon": {"log": {"max_files": -1}}}, "daemon.log.max_files: -1 must be >= 0"),
        ({"daemon": []}, "daemon: must be an object, not a list"),
        ({"watch": {"enabled": "yes"}}, 'watch.enabled: must be a boolean, not "yes"'),
        ({"watch": {"debounce_ms": -5}}, "watch.debounce_ms: -5 must be >= 0"),
        ({"watch": {"paths": {}}}, "watch.paths: must be a list, not an object"),
        ({"watch": {"paths": [{}]}}, "watch.paths[0].path: is required"),
        ({"watch": {"paths": [{"path": ""}]}}, "watch.paths[0].path: must not be empty"),
        ({"watch": {"paths": [{"path": "src", "extensions": ["ts"]}]}},
         'watch.paths[0].extensions[0]: "ts" must start with a dot, like ".ts"'),
        ({"watch": {"paths": [{"path": "src", "ignore": [1]}]}}, "watch.paths[0].ignore[0]: must be a string, not 1"),
        ({"schedule": {"jobs": [{"id": "x"}]}}, "schedule.jobs[0].cron: is required"),
        ({"schedule": {"jobs": [{"id": "has space", "cron": "* * * * *"}]}},
         'schedule.jobs[0].id: "has space" may use only letters, digits and _ . : -'),
        ({"schedule": {"jobs": [{"id": "a", "cron": "* * * * *"}, {"id": "a", "cron": "* * * * *"}]}},
         'schedule.jobs[1].id: duplicate job id "a"'),
        ({"webhook": {"port": 70000}}, "webhook.port: 70000 must be <= 65535"),
        ({"webhook": {"secret_env": "1BAD"}}, 'webhook.secret_env: "1BAD" must be the name of an environment variable'),
        ({"webhook": {"secret": "hunter2"}}, 'webhook.secret: looks like a secret; keep it out of config: set an '
                                             'environment variable and name it in "secret_env"'),
        ({"messaging": {"slack": {"token": "xoxb-1"}}}, "messaging.slack.token: looks like a secret"),
        ({"messaging": {"slack": {"token_env": "not a name"}}},
         'messaging.slack.token_env: "not a name" must be the name of an environment variable'),
    ],
)
def test_each_error_path(data: dict[str, object], expected: str) -> None:
    errs = errors_of(data)
    assert len(errs) == 1, errs
    assert errs[0].startswith(f"{F}: {expected}"), errs[0]


def test_all_errors_are_reported_at_once() -> None:
    errs = errors_of({"daemon": {"max_parallel_actions": 0, "log": {"level": "x"}}, "watch": {"debounce_ms": "x"}})
    assert len(errs) == 3


def test_unknown_keys_are_warnings_not_errors() -> None:
    loaded = config.parse(json.dumps({"daemon": {"colour": "blue"}, "extra": 1}), F)
    assert loaded.warnings == [f"{F}: daemon.colour: unknown key, ignored", f"{F}: extra: unknown key, ignored"]


def test_not_json_and_not_an_object() -> None:
    assert errors_of("{bad")[0].startswith(f"{F}: line 1 column 2: invalid JSON")
    assert errors_of("[1]") == [f"{F}: the top level must be a JSON object"]


def test_missing_file_is_the_defaults(tmp_path: Path) -> None:
    loaded = config.load_file(tmp_path / "none.json")
    assert loaded.config.daemon.max_parallel_actions == 3


def test_write_default_never_clobbers(tmp_path: Path) -> None:
    path = tmp_path / ".aiwg" / "daemon.json"
    assert config.write_default(path) is True
    path.write_text('{"watch": {"enabled": false}}')
    assert config.write_default(path) is False
    assert json.loads(path.read_text()) == {"watch": {"enabled": False}}
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind


@pytest.mark.parametrize(
    ("agents", "expected"),
    [
        ({"lint": {"max_turns": 0}}, "agents.lint.max_turns: 0 must be >= 1"),
        ({"lint": {"kind": "robot"}}, 'agents.lint.kind: "robot" is not one of claude, shell, command'),
        ({"lint": {"kind": "command"}}, "agents.lint: kind 'command' needs a non-empty 'command' argv"),
        ({"lint": {"kind": "command", "command": ["lint", "--all"]}},
         "agents.lint.command: must contain {prompt} (where the task's prompt goes)"),
        ({"lint": {"memory_max": "lots"}}, 'agents.lint.memory_max: "lots" must be a size like "512M", "2G", '
                                           '"50%" or "infinity"'),
        ({"lint": {"cpu_quota": "half"}}, 'agents.lint.cpu_quota: "half" must be a percentage like "50%" or "200%"'),
        ({"lint": {"env": ["NOT VALID"]}}, 'agents.lint.env[0]: "NOT VALID" must be the name of an environment '
                                           'variable'),
        ({"lint": {"retry": "x"}}, 'agents.lint.retry: must be an integer, not "x"'),
        ({"lint": {"api_key": "sk-123"}}, "agents.lint.api_key: looks like a secret"),
        ({"bad name": {}}, "agents.bad name: a profile name may use only letters, digits and _ . -"),
        ({"lint": []}, "agents.lint: must be an object, not a list"),
    ],
)
def test_agent_profile_errors_name_their_path(agents: dict[str, object], expected: str) -> None:
    errs = errors_of({"agents": agents})
    assert len(errs) == 1 and errs[0].startswith(f"{F}: {expected}"), errs


def test_agent_profiles_load_typed_and_unknown_keys_warn() -> None:
    from aiwg_service.tasks.model import AgentProfile

    loaded = config.parse(json.dumps({"agents": {"lint": {"kind": "command", "command": ["lint", "{prompt}"],
                                                          "retry": 0, "colour": "red"}}}), F)
    assert loaded.config.agents == {"lint": AgentProfile(kind="command", command=["lint", "{prompt}"], retry=0)}
    assert loaded.warnings == [f"{F}: agents.lint.colour: unknown key, ignored"]
