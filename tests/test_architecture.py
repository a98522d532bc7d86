"""The house's shape, read from the code: layers (import-linter), no import cycles, a light client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parent.parent
SERVICE_INTERNALS = ("aiwg_service.service", "aiwg_service.wiring", "aiwg_service.rpc", "aiwg_service.main",
                     "aiwg_service.events.bus", "aiwg_service.events.watcher", "aiwg_service.tasks.supervisor",
                     "aiwg_service.rules.engine")


def loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_linter_contracts_are_kept() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    res = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_no_import_cycles_between_modules() -> None:
    """Every import arrow a -> b, at any level (function-level imports too), has no way back from b to a."""
    graph = grimp.build_graph("aiwg_service", exclude_type_checking_imports=True)
    cycles = []
    for a in sorted(graph.modules):
        for b in sorted(graph.find_modules_directly_imported_by(a)):
            if b != a and not a.startswith(b + ".") and not b.startswith(a + "."):
                back = graph.find_shortest_chain(importer=b, imported=a)
                if back is not None:
                    cycles.append(" -> ".join((a, *back)))
    assert cycles == []


def test_importing_the_cli_loads_no_service_internals() -> None:
    mods = loaded_after("import aiwg_service.cli, aiwg_service.cli.entry, aiwg_service.cli.app")
    assert "typer" in mods  # the full command tree was really built
    assert sorted(m for m in mods if m.startswith(SERVICE_INTERNALS)) == []


def test_ping_and_status_load_neither_typer_nor_msgspec() -> None:
    """The fast path's whole import set: what ``aiwgctl ping`` pays before it talks to the service."""
    mods = loaded_after("import aiwg_service.cli.entry, aiwg_service.client")
    # the peer-uid and socket-directory checks (issue 18) parse SO_PEERCRED without struct
    heavy = {"typer", "msgspec", "json", "socket", "struct", "aiwg_service.protocol", "aiwg_service.paths"}
    assert sorted(heavy & mods) == []
