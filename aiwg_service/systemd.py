"""Temporary stub: replaced by the real systemd-python wrapper on merge."""

from __future__ import annotations

import logging
import os
import socket


def notify(state: str) -> bool:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), addr)
    return True


def notify_ready() -> bool:
    return notify("READY=1")


def notify_reloading() -> bool:
    import time
    return notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")


def notify_stopping() -> bool:
    return notify("STOPPING=1")


def notify_status(text: str) -> bool:
    return notify(f"STATUS={text}")


def notify_watchdog() -> bool:
    return notify("WATCHDOG=1")


def notify_extend_timeout(usec: int) -> bool:
    return notify(f"EXTEND_TIMEOUT_USEC={usec}")


def watchdog_interval() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    return int(usec) / 2e6


def listen_fds() -> list[tuple[int, str]]:
    return []


def under_journal() -> bool:
    return False


def make_journal_handler(identifier: str = "aiwg") -> logging.Handler:
    raise RuntimeError("no journal")
