"""Answer first, start the rest after (issue #24): the socket answers ``ping`` and ``daemon.status`` while
the subsystems start, any other request waits for them instead of failing; a subsystem that is not
configured is not imported; third-party warnings are the log's debug, not the journal's warnings."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

from service_fixture import ServiceEnv

from aiwg_service.rpc import RpcServer, bind_socket


def test_ping_answers_while_starting_and_other_methods_wait(tmp_path: Path) -> None:
    async def scenario() -> list[dict]:
        server = RpcServer()
        server.register("ping", lambda _p, _c: {"pong": True})
        server.starting = asyncio.Event()
        sock_path = tmp_path / "s" / "rpc.sock"
        await server.serve(bind_socket(sock_path))
        reader, writer = await asyncio.open_unix_connection(str(sock_path))
        # task.list has no handler yet (its subsystem is "starting"); a batch holding it waits too
        writer.write(b'{"jsonrpc":"2.0","method":"task.list","params":{},"id":1}\n'
                     b'[{"jsonrpc":"2.0","method":"ping","id":3},{"jsonrpc":"2.0","method":"task.list","id":4}]\n'
                     b'{"jsonrpc":"2.0","method":"ping","id":2}\n')
        first = json.loads(await asyncio.wait_for(reader.readline(), 10))
        assert first == {"jsonrpc": "2.0", "result": {"pong": True}, "id": 2}  # answered before the others
        server.register("task.list", lambda _p, _c: {"tasks": []})  # the subsystem came up
        server.starting.set()
        server.starting = None
        rest = [json.loads(await asyncio.wait_for(reader.readline(), 10)) for _ in range(2)]
        writer.close()
        await server.close()
        return [first, *rest]

    _ping, *rest = asyncio.run(scenario())
    single = next(r for r in rest if isinstance(r, dict))
    batch = next(r for r in rest if isinstance(r, list))
    assert single == {"jsonrpc": "2.0", "result": {"tasks": []}, "id": 1}
    assert sorted(x["id"] for x in batch) == [3, 4] and all("result" in x for x in batch)


def test_status_says_nothing_is_starting_once_ready(service: ServiceEnv) -> None:
    st = service.call("daemon.status")
    assert st["starting"] == []
    assert "starting" not in st["status"]


def test_unconfigured_subsystems_are_not_imported(tmp_path: Path) -> None:
    """The service's whole wiring, built and imported as at start: no bridge, web or SSH library."""
    code = ("import sys; import aiwg_service.service, aiwg_service.wiring; "
            "print([m for m in ('aiohttp', 'slack_sdk', 'discord', 'asyncssh', 'prompt_toolkit', 'apprise') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_third_party_warnings_and_chatter_are_debug(capsys) -> None:  # type: ignore[no-untyped-def]
    from aiwg_service import config, main

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        main.setup_logging(argparse.Namespace(log_level="info", log_file=None), config.LogConfig())
        warnings.warn("asyncssh: a deprecated cipher", UserWarning, stacklevel=1)
        logging.getLogger("asyncssh.connection").info("Command: the whole remote script")
        logging.getLogger("asyncssh").warning("a real problem")
        logging.getLogger("aiwg.service").info("ours")
    finally:
        logging.captureWarnings(False)
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    err = capsys.readouterr().err
    assert "deprecated cipher" not in err and "remote script" not in err
    assert "WARNING asyncssh: a real problem" in err and "INFO aiwg.service: ours" in err
