"""``aiwgctl rules``: list, enable, disable, trace and test automation rules (add with
``app.add_typer(rules_app, name="rules")``)."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated, Any

import typer

from . import render
from .core import call, fail, project_param

rules_app = typer.Typer(help="Automation rules: list, enable/disable, traces, dry runs.", invoke_without_command=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]
ProjectOpt = Annotated[Path | None, typer.Option("--project", help="only this project's rules")]


def _project(project: Path | None) -> dict[str, Any]:
    root = project_param(project)
    return {"project": root} if root is not None else {}


def _when(iso: str | None) -> str:
    return (iso or "never").replace("T", " ")[:19]


@rules_app.callback()
def rules_list(ctx: typer.Context, project: ProjectOpt = None, json: JsonOpt = False) -> None:
    """List the rules (id, project, enabled, mode, last run, outcome, runs)."""
    if ctx.invoked_subcommand is not None:
        return
    res = call("automation.status", _project(project))
    if json:
        render.emit_json(res)
        return
    rows = []
    for r in res["rules"]:
        enabled = ("held: untrusted" if r.get("untrusted") else "yes") if r["enabled"] else "no"
        if r.get("override"):  # automation.enable/disable RULE: kept across reloads until `aiwgctl rules enable`
            enabled += " (override)"
        rows.append((r["id"], r["project"], enabled, r["mode"], _when(r.get("last_run")), r.get("last_outcome") or "",
                     r["runs"], r["skipped"], r.get("next_fire", "")))
    render.table(["id", "project", "enabled", "mode", "last run", "outcome", "runs", "skipped", "next fire"], rows,
                 empty="no rules (add them under \"rules\" in .aiwg/daemon.json)")
    for r in res["rules"]:
        if r.get("disabled_reason"):
            print(render.safe(f"{r['id']}: {r['disabled_reason']}"))
        elif r.get("override") == "enabled" and r.get("config_enabled") is False:
            print(f"{r['id']}: enabled by automation.enable (the config disables it)")
    if any(r.get("override") for r in res["rules"]):
        print("overrides hold across reloads and restarts; `aiwgctl rules enable` (no rule) drops them all")
    untrusted = {r["project"]: r["untrusted"] for r in res["rules"] if r.get("untrusted")}
    for root, why in untrusted.items():
        print(render.safe(f"{root}: untrusted, its rules run nothing: {why}"))


def _set(rule_id: str | None, enabled: bool, project: Path | None, json: bool) -> None:
    params: dict[str, Any] = {**_project(project)}
    if rule_id is not None:
        params["ruleId"] = rule_id
    res = call("automation.enable" if enabled else "automation.disable", params)
    if json:
        render.emit_json(res)
        return
    if res.get("restored"):
        print(f"every rule as its config says: enabled {', '.join(res['enabled_rules']) or 'none'}"
              + (f"; disabled in config: {', '.join(res['disabled_in_config'])}" if res["disabled_in_config"] else ""))
        return
    what = rule_id if rule_id is not None else f"all rules ({', '.join(res.get('rules', []))})"
    print(f"{what}: {'enabled' if enabled else 'disabled'}")


@rules_app.command("enable")
def rules_enable(rule_id: Annotated[str | None, typer.Argument(help="rule id (default: every rule)")] = None,
                 project: ProjectOpt = None, json: JsonOpt = False) -> None:
    """Enable a rule (persists across restarts and reloads; also lifts a loop-guard pause); with no rule, drop
    every override: each rule is as its config says."""
    _set(rule_id, True, project, json)


@rules_app.command("disable")
def rules_disable(rule_id: Annotated[str | None, typer.Argument(help="rule id (default: every rule)")] = None,
                  project: ProjectOpt = None, json: JsonOpt = False) -> None:
    """Disable a rule (persists across restarts and reloads until enabled again)."""
    _set(rule_id, False, project, json)


@rules_app.command("trace")
def rules_trace(rule_id: Annotated[str, typer.Argument(help="rule id")],
                run_id: Annotated[str | None, typer.Argument(help="one run in full")] = None,
                limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 20,
                project: ProjectOpt = None, json: JsonOpt = False) -> None:
    """Recent runs of a rule, or one run in full (conditions, actions, task ids)."""
    params: dict[str, Any] = {"ruleId": rule_id, "limit": limit, **_project(project)}
    if run_id is not None:
        params["runId"] = run_id
    res = call("automation.trace", params)
    if json or run_id is not None:
        render.emit_json(res.get("run", res))
        return
    render.table(["run", "started", "ms", "outcome", "event", "path", "tasks", "reason"],
                 [(r["run_id"], _when(r["started"]), r.get("duration_ms"), r["outcome"], r.get("event_type"),
                   r.get("event_path") or "", ",".join(r.get("task_ids") or []), r.get("reason") or "")
                  for r in res["runs"]], empty=f"no runs of {rule_id} yet")


@rules_app.command("test")
def rules_test(rule_id: Annotated[str, typer.Argument(help="rule id")],
               event: Annotated[str | None, typer.Option("--event", help='JSON, e.g. {"type": "file.modify", '
                                                         '"data": {"path": "src/a.py"}}')] = None,
               project: ProjectOpt = None, json: JsonOpt = False) -> None:
    """Dry run: match the trigger and run the conditions (shell ones too) against an event; never acts."""
    params: dict[str, Any] = {"ruleId": rule_id, **_project(project)}
    if event is not None:
        try:
            params["event"] = jsonlib.loads(event)
        except ValueError as exc:
            fail(f"--event is not valid JSON: {exc}")
        if not isinstance(params["event"], dict):
            fail("--event must be a JSON object")
    res = call("automation.test", params, timeout=None)
    if json:
        render.emit_json(res)
        return
    ev = res["event"]
    print(f"event:      {ev['type']} {jsonlib.dumps(ev.get('data', {}))}")
    print(f"triggered:  {'yes (' + '; '.join(res['matched_triggers']) + ')' if res['triggered'] else 'no'}")
    for c in res["conditions"]:
        extra = f" exit {c['exit']}, {c['duration_ms']} ms" if c.get("kind") == "shell" else ""
        print(f"condition:  {c['kind']}: {'pass' if c['ok'] else 'FAIL'}{extra}")
    for b in res["blocked_by"]:
        print(render.safe(f"blocked:    {b}"))
    print(f"would run:  {'yes' if res['would_run'] else 'no'}")
    for a in res["actions"]:
        desc = ", ".join(f"{k}={v}" for k, v in a.items() if k != "kind")
        print(render.safe(f"  action:   {a['kind']}: {desc}"))
