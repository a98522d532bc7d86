"""``aiwgctl sandbox check [PROFILE]`` and ``aiwgctl doctor``: what an agent may touch, and what is wrong."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from . import render
from .core import call, fail

sandbox_app = typer.Typer(help="Agent confinement: what each profile's agents can read, write and reach.",
                          no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]


def _print_profile(row: dict[str, Any], verbose: bool) -> None:
    pairs: list[tuple[str, Any]] = [("profile", row["profile"]), ("mechanism", row["mechanism"] + (
        f" ({row['detail']})" if row.get("detail") and row["mechanism"] != "refused" else ""))]
    if row["mechanism"] == "refused":
        pairs.append(("refused", row["detail"]))
    if not row.get("enabled"):
        pairs += [("read", row["read"]), ("write", row["write"]), ("network", "full (unconfined)")]
        render.kv(pairs)
        return
    pairs.append(("read", row["read"]))
    pairs.append(("write", ", ".join(row["write"])))
    if row.get("read_only_inside"):
        pairs.append(("read-only", ", ".join(row["read_only_inside"])))
    hidden = row.get("hidden") or []
    pairs.append(("hidden", ", ".join(hidden) if verbose else f"{len(hidden)} paths (--verbose lists them)"))
    net = row["network"] + (f": {', '.join(row['allow_hosts']) or 'nothing'} (through the filtering proxy)"
                            if row["network"] == "allow" else "")
    pairs.append(("network", net))
    pairs.append(("socket", "read-only access" if row["socket"] != "hidden" else "hidden"))
    pairs.append(("W^X memory", "denied" if row["memory_deny_write_execute"] else "allowed (node's JIT needs it)"))
    score = row.get("score")
    pairs.append(("exposure", f"{score} {row.get('verdict', '')} (systemd-analyze security)" if score is not None
                  else f"unknown: {row.get('verdict')}"))
    render.kv(pairs)
    if verbose:
        print("unit properties:")
        for p in row["properties"]:
            print(f"  {p}")


@sandbox_app.command("check")
def check(profile: Annotated[str | None, typer.Argument(help="one agent profile (default: all)")] = None,
          project: Annotated[str | None, typer.Option("--project", "-p", help="a served project")] = None,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help="list hidden paths and unit properties")]
          = False, json: JsonOpt = False) -> None:
    """What an agent of PROFILE can read, write and reach, and its unit's exposure score."""
    params: dict[str, Any] = {}
    if profile is not None:
        params["profile"] = profile
    if project is not None:
        params["project"] = os.path.abspath(project)
    res = call("sandbox.check", params, timeout=60.0)
    if json:
        render.emit_json(res)
        return
    print(f"project: {res['project']}")
    for row in res["profiles"]:
        print()
        _print_profile(row, verbose)


def doctor(project: Annotated[str | None, typer.Option("--project", "-p", help="a served project")] = None,
           json: JsonOpt = False) -> None:
    """Health checks, including which sandbox each agent profile gets."""
    res = call("doctor", {"project": os.path.abspath(project)} if project else {}, timeout=60.0)
    if json:
        render.emit_json(res)
        return
    render.table(["check", "ok", "detail"], [(c["name"], "yes" if c["ok"] else "NO", c["detail"])
                                             for c in res["checks"]])
    if not res["ok"]:
        fail("some checks failed")
