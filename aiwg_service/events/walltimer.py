"""A wall-clock alarm in the event loop: an absolute CLOCK_REALTIME timerfd.

asyncio's timers run on the monotonic clock, which stands still while the machine is suspended, so a
cron job due during a suspend would fire late by the length of the sleep. An absolute realtime timerfd
fires as soon as the wall clock passes the target, resume included, and with TFD_TIMER_CANCEL_ON_SET it
also tells us when someone sets the clock, so we recompute instead of polling. Python 3.11 has no
``os.timerfd_create`` (3.13 has), hence the few ctypes calls.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable

CLOCK_REALTIME = 0
TFD_CLOEXEC = 0o2000000
TFD_NONBLOCK = 0o4000
TFD_TIMER_ABSTIME = 1
TFD_TIMER_CANCEL_ON_SET = 2


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                                  ctypes.POINTER(_Itimerspec)]


class WallTimer:
    """Calls ``callback`` when the wall clock reaches the armed time, or when the clock is set."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        fd = _libc.timerfd_create(CLOCK_REALTIME, TFD_CLOEXEC | TFD_NONBLOCK)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.fd = fd
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.fd, self._readable)

    def arm(self, when: float | None) -> None:
        """Fire at ``when`` (epoch seconds), or disarm with None."""
        spec = _Itimerspec()
        if when is not None:
            when = max(when, 1e-9)  # an all-zero value would disarm
            spec.it_value.tv_sec = int(when)
            spec.it_value.tv_nsec = int((when - int(when)) * 1e9)
        flags = TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET
        if _libc.timerfd_settime(self.fd, flags, ctypes.byref(spec), None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def _readable(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.ECANCELED:  # ECANCELED: the clock was set; the callback re-arms
                raise
        self.callback()

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.fd)
            self._loop = None
        os.close(self.fd)
