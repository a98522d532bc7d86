"""``sandbox.check``: each profile's confinement as the service would apply it now (read-only)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .. import protocol as p
from ..rpc import RpcServer
from ..sandbox.report import describe

if TYPE_CHECKING:
    from .subsystems import SupervisorSubsystem


def _invalid(param: str, message: str) -> p.RpcError:
    return p.RpcError(p.INVALID_PARAMS, f"Invalid params: {param}: {message}", {"param": param})


def register(rpc: RpcServer, sup: SupervisorSubsystem, projects: Callable[[], Iterable[str]],
             resolve_root: Callable[[str], str]) -> None:
    def project_of(value: str | None) -> str:
        served = list(projects())
        if value is None:
            # no project named: the only one served, else a stand-in path (what matters is the rest)
            return served[0] if len(served) == 1 else os.path.join(os.path.expanduser("~"), "PROJECT")
        try:
            root = resolve_root(value)
        except (OSError, RuntimeError, ValueError) as exc:
            raise _invalid("project", f"cannot resolve {p.quote(value)}: {exc}") from None
        if root not in served:
            raise _invalid("project", f"{p.quote(root)} is not a project this service serves")
        return root

    async def check(params: p.SandboxCheckParams, _conn: Any) -> dict[str, Any]:
        project = project_of(params.project)
        names = sup.agent_names(project)
        if params.profile is not None and params.profile not in names:
            raise _invalid("profile", f"unknown agent profile {p.quote(params.profile)} (known: {', '.join(names)})")
        rows = [await describe(*sup.sandbox_of(name, project)) for name in ([params.profile] if params.profile
                                                                            else names)]
        return {"project": project, "profiles": rows}

    rpc.register("sandbox.check", check)
