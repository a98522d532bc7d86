"""Rule validation through config.parse: every problem names the rule and the field; globs compile right."""

from __future__ import annotations

import pytest
from rules_support import config_errors, parse

from aiwg_service import config, schemas  # noqa: F401  (schemas registers every section)
from aiwg_service.rules.matching import compile_glob
from aiwg_service.rules.schema import rules_for

AIWG_RULE = {
    "id": "ts-review", "description": "review TypeScript changes", "enabled": True,
    "trigger": {"type": "file.modify", "source": "watch", "pattern": "^file\\.modify:watch$"},
    "conditions": [{"field": "payload.path", "operator": "matches", "value": "\\.ts$"}],
    "action": {"type": "agent", "prompt": "Review {{payload.path}}", "agent": "reviewer", "priority": 5},
    "cooldownMs": 30000, "requiresApproval": False,
}
RICH_RULE = {
    "id": "lint-fix", "description": "fix lint", "enabled": True,
    "triggers": [{"type": "file.modify", "paths": ["src/**/*.py"]}],
    "conditions": [{"shell": "make lint", "timeout_seconds": 60, "expect": "fail"}],
    "actions": [{"agent": {"prompt": "Fix the lint errors in {paths}"}}],
    "mode": "queued", "max": 3, "cooldown_seconds": 10, "max_runs_per_minute": 20,
}


def test_both_forms_and_the_default_config_validate() -> None:
    cfg = parse([AIWG_RULE, RICH_RULE])
    rules, errors = rules_for(cfg, "/p")
    assert errors == []
    by_id = {r.id: r for r in rules}
    assert by_id["ts-review"].form == "aiwg" and by_id["ts-review"].cooldown_s == 30.0
    assert by_id["lint-fix"].mode == "queued" and by_id["lint-fix"].max == 3
    assert not by_id["lint-fix"].sync_conditions and by_id["ts-review"].sync_conditions
    # the default project file's health-check job becomes a schedule: rule
    default_rules, errors = rules_for(config.parse(b"{}", "x").config, "/p")
    assert errors == [] and [r.id for r in default_rules] == ["schedule:health-check"]
    assert default_rules[0].cron == "0 */6 * * *" and default_rules[0].actions[0].kind == "doctor"


@pytest.mark.parametrize(("rule", "expected"), [
    ({**AIWG_RULE, "trigger": {"pattern": "*.ts"}},
     'rules[0] (ts-review): trigger.pattern: "*.ts" is not a valid regular expression'),
    ({**AIWG_RULE, "conditions": [{"field": "payload.path", "operator": "equal", "value": 1}]},
     'rules[0] (ts-review): conditions[0].operator: "equal" is not one of eq, equals, neq'),
    ({**AIWG_RULE, "conditions": [{"field": "x", "operator": "matches", "value": "(unclosed"}]},
     "rules[0] (ts-review): conditions[0].value: \"(unclosed\" is not a valid regular expression"),
    ({**AIWG_RULE, "conditions": [{"field": "x", "operator": "gt"}]},
     'rules[0] (ts-review): conditions[0].value: is required with operator "gt"'),
    ({**AIWG_RULE, "action": {"type": "sms"}},
     'rules[0] (ts-review): action.type: "sms" is not one of agent, notify, webhook'),
    ({**AIWG_RULE, "action": {"type": "agent"}}, "rules[0] (ts-review): action.prompt: is required"),
    ({**AIWG_RULE, "action": {"type": "webhook", "url": "ftp://x"}},
     'rules[0] (ts-review): action.url: "ftp://x" must be an http:// or https:// URL'),
    ({**AIWG_RULE, "cooldownMs": -1}, "rules[0] (ts-review): cooldownMs: -1 must be >= 0"),
    ({**RICH_RULE, "triggers": [{"type": "file.modify", "paths": ["src/[ab"]}]},
     "rules[0] (lint-fix): triggers[0].paths[0]: \"src/[ab\" is not a valid glob: unclosed '['"),
    ({**RICH_RULE, "triggers": [{"type": "file.modify", "path": "x"}]},
     "rules[0] (lint-fix): triggers[0].path: unknown key in a trigger"),
    ({**RICH_RULE, "triggers": []}, "rules[0] (lint-fix): triggers: must not be empty"),
    ({**RICH_RULE, "conditions": [{"shel": "make"}]},
     'rules[0] (lint-fix): conditions[0]: unknown condition kind "shel"'),
    ({**RICH_RULE, "conditions": [{"shell": "make", "expect": "failure"}]},
     'rules[0] (lint-fix): conditions[0].expect: "failure" is not one of success, fail'),
    ({**RICH_RULE, "conditions": [{"time": {"hours": "9-18"}}]},
     'rules[0] (lint-fix): conditions[0].time.hours: "9-18" must be a range like "09:00-18:00"'),
    ({**RICH_RULE, "conditions": [{"time": {"tz": "Mars/Olympus"}}]},
     'rules[0] (lint-fix): conditions[0].time.tz: "Mars/Olympus" is not a known time zone'),
    ({**RICH_RULE, "conditions": [{"any": [{"match": {"field": "type"}}]}]},
     "rules[0] (lint-fix): conditions[0].any[0].match: needs exactly one of equals, glob, regex"),
    ({**RICH_RULE, "actions": [{"tweet": {}}]}, 'rules[0] (lint-fix): actions[0]: unknown action kind "tweet"'),
    ({**RICH_RULE, "actions": [{"agent": {"priority": 1}}]},
     "rules[0] (lint-fix): actions[0].agent.prompt: is required"),
    ({**RICH_RULE, "actions": [{"emit": {"type": "file.*"}}]},
     'rules[0] (lint-fix): actions[0].emit.type: "file.*" must be a concrete event type'),
    ({**RICH_RULE, "mode": "sequential"},
     'rules[0] (lint-fix): mode: "sequential" is not one of single, queued, restart, parallel'),
    ({**RICH_RULE, "max": 0}, "rules[0] (lint-fix): max: 0 must be >= 1"),
    ({**RICH_RULE, "mode": "single", "max": 3}, 'rules[0] (lint-fix): max: only applies to mode queued or parallel'),
    ({**RICH_RULE, "trigger": {}}, "rules[0] (lint-fix): mixes the AIWG form"),
    ({"id": "x", "description": "nothing"}, "rules[0] (x): needs triggers and actions"),
    ({**RICH_RULE, "id": "schedule:x"}, 'rules[0] (schedule:x): id: "schedule:x": ids starting with'),
    ({**RICH_RULE, "id": ""}, "rules[0]: id: must be a non-empty string"),
])
def test_invalid_rules_name_rule_and_field(rule: dict, expected: str) -> None:
    errors = config_errors({"rules": [rule]})
    assert any(e.startswith(f".aiwg/daemon.json: {expected}") for e in errors), errors


def test_duplicates_and_all_problems_at_once() -> None:
    errors = config_errors({"rules": [AIWG_RULE, {**RICH_RULE, "mode": "x"}, AIWG_RULE]})
    assert '.aiwg/daemon.json: rules[2] (ts-review): id: duplicate rule id "ts-review" (also rules[0])' in errors
    assert any("rules[1] (lint-fix): mode" in e for e in errors)


def test_schedule_job_shorthand_validation() -> None:
    errs = config_errors({"schedule": {"jobs": [{"id": "fix", "cron": "0 2 * * *", "action": "agent"},
                                                {"id": "sh", "cron": "0 2 * * *", "action": "shell:"}]}})
    assert '.aiwg/daemon.json: schedule.jobs[0] (fix): prompt: is required when action is "agent"' in errs
    assert any(e.startswith(".aiwg/daemon.json: schedule.jobs[1] (sh): action: \"shell:\" needs a command")
               for e in errs)


@pytest.mark.parametrize(("glob", "yes", "no"), [
    ("src/**/*.py", ["src/a.py", "src/x/y/a.py"], ["lib/a.py", "src/a.pyc", "xsrc/a.py"]),
    ("*.py", ["a.py", "deep/dir/a.py"], ["a.pyx"]),
    ("src/*.{ts,js}", ["src/a.ts", "src/b.js"], ["src/a.mjs", "src/x/a.ts"]),
    ("docs/", ["docs/a.md", "docs/x/y"], ["doc/a.md"]),
    ("test_[!x]*.py", ["t/test_a.py"], ["test_x.py"]),
])
def test_globs(glob: str, yes: list[str], no: list[str]) -> None:
    g = compile_glob(glob)
    assert all(g.matches(p) for p in yes), [p for p in yes if not g.matches(p)]
    assert not any(g.matches(p) for p in no), [p for p in no if g.matches(p)]
