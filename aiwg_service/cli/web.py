"""``aiwgctl web``: open the dashboard in a browser through a one-time login URL (``--print-url`` only prints it).

The URL comes over the owner-only RPC socket (``web.login``); it works once, for two minutes, and its first
visit sets the session cookie.
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import render
from .core import call


def web(print_url: Annotated[bool, typer.Option("--print-url", help="print the one-time login URL instead of "
                                                "opening a browser")] = False,
        json: Annotated[bool, typer.Option("--json", help="print machine-readable JSON")] = False) -> None:
    """Open the web dashboard (a one-time login URL, as Jupyter's)."""
    res = call("web.login")
    if json:
        render.emit_json(res)
        return
    url = res["url"]
    if print_url:
        print(url)
        return
    import webbrowser

    try:
        opened = webbrowser.open(url)
    except webbrowser.Error:
        opened = False
    if opened:
        print(f"opened the dashboard in your browser (the link works once, for {res['expires_in']} s)")
    else:
        print(f"no browser to open here; visit this link within {res['expires_in']} s (it works once):")
        print(url)
