"""Fire-time computation for standard 5-field cron schedules.

Pure library: no asyncio, no I/O beyond resolving the system time zone.  It backs the scheduler
subsystem and ``aiwgctl cron next``, which runs without a service, so ``cronsim`` and ``zoneinfo``
(together ~20 ms to import) are imported lazily inside the functions that need them.

Parsing and fire times come from cronsim (Debian-cron compatible).  Its DST semantics, which this
module keeps unchanged and which ``tests/test_cron.py`` pins down:

* Jobs whose minute *and* hour fields do not start with ``*`` (e.g. ``30 2 * * *``, ``0 1-3 * * *``,
  ``@daily``) are scheduled in wall-clock time.  A time skipped by spring-forward fires at the first
  valid minute after the gap (``30 2 * * *`` fires at 03:00 that day; several skipped slots collapse
  into one run at 03:00).  A time repeated by fall-back fires once, at its first occurrence.
* Jobs whose minute or hour field starts with ``*`` (``* * * * *``, ``*/30 * * * *``, ``0 * * * *``,
  ``0 */2 * * *``, ``@hourly``) are scheduled in real elapsed time: they fire in both copies of a
  repeated hour and simply have no runs in the skipped hour (``* 2 * * *`` does not run at all on
  a spring-forward day whose 02:00-03:00 hour is skipped).
* Day-of-month and day-of-week are AND-ed when either field starts with ``*``, otherwise OR-ed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, tzinfo
from itertools import islice

__all__ = [
    "MACROS",
    "CronSchedule",
    "format_time",
    "parse_time",
    "resolve_system_zone",
    "validate_expression",
    "validate_timezone",
]

#: Macros accepted in place of a 5-field expression (cronsim itself does not know them).
MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_FIELD_HELP = "minute hour day-of-month month day-of-week"
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_MONTH_NAMES = {n: i + 1 for i, n in enumerate(_MONTHS)}
_DAY_NAMES = {n: i for i, n in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
# (name, lowest, highest, symbolic names mapped to numbers)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTH_NAMES),
    ("day-of-week", 0, 7, _DAY_NAMES),
)
_DOM, _DOW = 2, 4

# Reference start for the "does this expression ever fire" check in validate_expression().
_PROBE_START = datetime(2026, 1, 1, tzinfo=UTC)
# Defensive cap on results skipped while enforcing "strictly after" (see CronSchedule._iter).
_MAX_SKIPS = 100_000


# --------------------------------------------------------------------------------------------------
# Validation


def _expand(expr: str) -> str:
    """Return the 5-field form of ``expr`` (macros expanded); assumes ``expr`` is valid."""
    text = expr.strip()
    return MACROS.get(text.lower(), text) if text.startswith("@") else text


def _check_value(field: int, text: str) -> str | None:
    """Explain why a single value (number or name) is invalid for ``field``, or None."""
    _name, low, high, names = _FIELDS[field]
    if text.upper() in names:
        return None
    if text.isascii() and text.isdigit():
        value = int(text)
        if low <= value <= high:
            return None
        return f"{value} is out of range {low}-{high}"
    if names:
        first, last = next(iter(names)), list(names)[-1]
        return f"{text!r} is not a number or name (use {low}-{high} or {first}-{last})"
    if text == "":
        return "missing value"
    return f"{text!r} is not a number (use {low}-{high})"


def _check_range(field: int, text: str) -> str | None:
    """Explain why ``*``, a value or a ``start-end`` range is invalid, or None."""
    if text == "*":
        return None
    if "-" in text:
        start, end = text.split("-", 1)
        problem = _check_value(field, start) or _check_value(field, end)
        if problem:
            return problem
        names = _FIELDS[field][3]
        lo = names[start.upper()] if start.upper() in names else int(start)
        hi = names[end.upper()] if end.upper() in names else int(end)
        if hi < lo:
            return f"range {text} is reversed (start must not exceed end)"
        return None
    return _check_value(field, text)


def _check_term(field: int, term: str) -> str | None:
    """Explain why one comma-separated term of a field is invalid, or None."""
    if term == "":
        return "empty item in list"
    if field == _DOM and term.upper() in ("L", "LW"):
        return None
    if field == _DOW and "#" in term:
        day, nth = term.split("#", 1)
        if not (nth.isascii() and nth.isdigit() and 1 <= int(nth) <= 5):
            return f"{term!r}: the number after # must be 1-5"
        return _check_value(field, day)
    if field == _DOW and term.upper().endswith("L"):
        day = term[:-1]
        if not (day.isascii() and day.isdigit()):
            return f"{term!r}: L needs a weekday number before it (e.g. 5L = last Friday)"
        return _check_value(field, day)
    if "/" in term:
        base, step = term.split("/", 1)
        if not (step.isascii() and step.isdigit() and int(step) > 0):
            return f"step {step!r} in {term!r} must be a positive integer"
        return _check_range(field, base)
    return _check_range(field, term)


def _diagnose(fields: list[str]) -> str | None:
    """Find the first field-level problem, phrased for humans, or None."""
    for index, text in enumerate(fields):
        for term in text.split(","):
            problem = _check_term(index, term)
            if problem:
                return f"{_FIELDS[index][0]} field: {problem}"
    return None


def _problem(expr: object) -> str | None:
    """Core of validate_expression(); may raise only on truly unexpected input."""
    if not isinstance(expr, str):
        return f"expression must be a string, not {type(expr).__name__}"
    text = expr.strip()
    if not text:
        return f"empty expression; expected 5 fields ({_FIELD_HELP}) or a macro such as @daily"
    if text.startswith("@"):
        if text.lower() in MACROS:
            return None
        if text.lower() == "@reboot":
            return "@reboot is not supported: it is not a time-based schedule"
        return f"unknown macro {text}; supported: {', '.join(MACROS)}"
    fields = text.split()
    if len(fields) == 6:
        return (
            f"has 6 fields; expected 5 ({_FIELD_HELP}). "
            "A leading seconds field (6-field cron) is not supported"
        )
    if len(fields) != 5:
        return f"has {len(fields)} field{'s' if len(fields) != 1 else ''}; expected 5 ({_FIELD_HELP})"

    from cronsim import CronSim, CronSimError

    try:
        sim = CronSim(text, _PROBE_START)
    except CronSimError as exc:
        specific = _diagnose(fields)
        if specific:
            return specific
        if str(exc) == "Bad day-of-month":
            return "day-of-month field: no selected month has that many days"
        return f"invalid expression ({exc})"
    try:
        next(sim)
    except (StopIteration, OverflowError):
        return "never fires (no matching date within 50 years)"
    return None


def validate_expression(expr: str) -> str | None:
    """Return a human-readable problem with ``expr``, or None if it is a valid schedule.

    Never raises, so callers (config loading, CLI) can report every bad job instead of crashing.
    """
    try:
        problem = _problem(expr)
    except Exception as exc:  # defensive: the contract is "never raises"
        problem = f"invalid expression ({type(exc).__name__}: {exc})"
    if problem is None:
        return None
    return f'"{expr}": {problem}' if isinstance(expr, str) else problem


def _load_zone(name: str) -> tzinfo:
    """Load an IANA zone by name (raises on unknown names)."""
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def validate_timezone(tz: str | None) -> str | None:
    """Return a problem with the IANA zone name ``tz``, or None; None/"" means the system zone."""
    if tz is None or tz == "":
        return None
    if not isinstance(tz, str):
        return f"time zone must be a string, not {type(tz).__name__}"
    try:
        _load_zone(tz)
    except Exception:  # ZoneInfoNotFoundError, ValueError (bad key), IsADirectoryError, ...
        return f'unknown time zone "{tz}": expected an IANA name such as "Europe/Berlin" or "UTC"'
    return None


# --------------------------------------------------------------------------------------------------
# System time zone


def _zone_key_from_path(path: str) -> str | None:
    """Map ``/usr/share/zoneinfo/Europe/Berlin`` (or ``posix/...``) to ``Europe/Berlin``."""
    marker = "/zoneinfo/"
    if marker not in path:
        return None
    key = path.rsplit(marker, 1)[1]
    return key.removeprefix("posix/") or None


def _zone_from_file(path: str) -> tzinfo:
    from zoneinfo import ZoneInfo

    with open(path, "rb") as fh:
        return ZoneInfo.from_file(fh, key=os.path.basename(path))


def _try_key(key: str | None) -> tzinfo | None:
    if not key:
        return None
    try:
        return _load_zone(key)
    except Exception:
        return None


def resolve_system_zone(
    environ: Mapping[str, str] | None = None,
    localtime: str = "/etc/localtime",
    timezone_file: str = "/etc/timezone",
) -> tuple[str, tzinfo]:
    """Return ``(name, zone)`` for the system's local zone as a DST-aware IANA zone.

    ``datetime.now().astimezone().tzinfo`` is a fixed offset and would be wrong across DST, so the
    real zone is looked up, in order: ``TZ`` (``Name``, ``:Name`` or a zoneinfo file path); the
    ``/etc/localtime`` symlink target below ``.../zoneinfo/``; ``/etc/timezone`` (Debian); the
    ``/etc/localtime`` file's own rules (name ``"localtime"``); finally UTC.  A ``TZ`` value that
    zoneinfo cannot load (e.g. a POSIX rule string) is ignored rather than treated as UTC.
    """
    env = os.environ if environ is None else environ
    tz_env = env.get("TZ", "").strip().removeprefix(":")
    if tz_env:
        if tz_env.startswith("/"):
            key = _zone_key_from_path(tz_env)
            zone = _try_key(key)
            if zone is not None and key:
                return key, zone
            try:
                return tz_env, _zone_from_file(tz_env)
            except Exception:
                pass
        else:
            zone = _try_key(tz_env)
            if zone is not None:
                return tz_env, zone
    if os.path.islink(localtime):
        try:
            target = os.path.join(os.path.dirname(localtime), os.readlink(localtime))
        except OSError:
            target = ""
        for path in (target, os.path.realpath(localtime)):
            key = _zone_key_from_path(path)
            zone = _try_key(key)
            if zone is not None and key:
                return key, zone
    try:
        with open(timezone_file, encoding="utf-8") as fh:
            key = fh.read().strip()
    except OSError:
        key = ""
    zone = _try_key(key)
    if zone is not None:
        return key, zone
    try:
        return "localtime", _zone_from_file(localtime)
    except Exception:
        return "UTC", UTC


# --------------------------------------------------------------------------------------------------
# Schedules


class CronSchedule:
    """A validated cron expression bound to a time zone; computes fire times.

    All returned datetimes are aware and expressed in the schedule's zone.  Naive inputs are
    interpreted as wall-clock time in the schedule's zone.
    """

    __slots__ = ("_cron", "expr", "tz_name", "zone")

    def __init__(self, expr: str, tz: str | None = None) -> None:
        problem = validate_expression(expr) or validate_timezone(tz)
        if problem:
            raise ValueError(problem)
        self.expr: str = expr.strip()
        self._cron: str = _expand(expr)
        if tz:
            self.tz_name: str = tz
            self.zone: tzinfo = _load_zone(tz)
        else:
            self.tz_name, self.zone = resolve_system_zone()

    def __repr__(self) -> str:
        return f"CronSchedule({self.expr!r}, tz={self.tz_name!r})"

    def _aware(self, dt: datetime) -> datetime:
        """Return ``dt`` as an aware datetime in the schedule's zone."""
        if dt.tzinfo is None or dt.utcoffset() is None:
            return dt.replace(tzinfo=self.zone)
        return dt.astimezone(self.zone)

    def _iter(self, start: datetime) -> Iterator[datetime]:
        """Yield fire times strictly after aware ``start``, strictly increasing.

        cronsim runs fixed-time jobs on naive wall-clock time, so a start inside a repeated
        (fall-back) hour can make it report an earlier instant first; those are skipped here.
        Ordering is checked in UTC because Python compares two datetimes sharing a tzinfo by
        wall-clock time, ignoring ``fold`` (02:00 CET would wrongly sort before 02:30 CEST).
        """
        from cronsim import CronSim

        sim = CronSim(self._cron, start.astimezone(self.zone))
        last = start.astimezone(UTC)
        skipped = 0
        while True:
            try:
                fire = next(sim)
            except (StopIteration, OverflowError):
                return
            fire_utc = fire.astimezone(UTC)
            if fire_utc <= last:
                skipped += 1
                if skipped > _MAX_SKIPS:  # pragma: no cover - would be a cronsim bug
                    raise RuntimeError(f"cronsim made no progress for {self.expr!r} after {start}")
                continue
            skipped = 0
            last = fire_utc
            yield fire

    def next_after(self, dt: datetime) -> datetime:
        """Return the first fire time strictly after ``dt``.

        Raises ValueError if the schedule has no fire time within cronsim's 50-year horizon.
        """
        for fire in self._iter(self._aware(dt)):
            return fire
        raise ValueError(f"{self.expr!r} has no fire time within 50 years after {dt.isoformat()}")

    def iter_after(self, dt: datetime) -> Iterator[datetime]:
        """Yield fire times strictly after ``dt`` in increasing order (lazily, possibly forever)."""
        return self._iter(self._aware(dt))

    def next_n(self, dt: datetime, n: int) -> list[datetime]:
        """Return the next ``n`` fire times strictly after ``dt``."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return list(islice(self.iter_after(dt), n))

    def _first_utc(self, after_utc: datetime) -> datetime | None:
        """First fire time strictly after ``after_utc``, in UTC, or None past cronsim's horizon."""
        fire = next(self._iter(after_utc), None)
        return None if fire is None else fire.astimezone(UTC)

    def missed_since(self, last_run: datetime, now: datetime) -> datetime | None:
        """Return the most recent fire time in ``(last_run, now]``, or None if there is none.

        The scheduler runs a missed job once on return (not once per missed slot), so only the
        latest slot matters.  Rather than walking every slot (43,200 for ``* * * * *`` over 30
        days), this bisects the gap using only "first fire after t" lookups, so the result follows
        exactly the same (DST) semantics as forward iteration.  Bound: at most
        ``2 * (log2(gap in seconds) + 2)`` lookups, i.e. <= ~48 for a 30-day gap, <= ~68 for 100 years.
        """
        start = self._aware(last_run).astimezone(UTC)
        end = self._aware(now).astimezone(UTC)
        if end <= start:
            return None
        lo = self._first_utc(start)
        if lo is None or lo > end:
            return None
        # All in UTC. Invariants: lo is a fire time <= end; no fire time in (hi, end]; lo <= hi.
        hi = end
        while True:
            nxt = self._first_utc(lo)
            if nxt is None or nxt > hi:
                return lo.astimezone(self.zone)
            lo = nxt
            mid = lo + (hi - lo) / 2
            cand = self._first_utc(mid)
            if cand is not None and cand <= hi:
                lo = cand
            else:
                hi = mid


# --------------------------------------------------------------------------------------------------
# Formatting


def format_time(dt: datetime) -> str:
    """Format an aware datetime as ISO-8601 with offset, seconds precision (for CLI and logs)."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"format_time needs an aware datetime, got naive {dt.isoformat()}")
    return dt.replace(microsecond=0).isoformat(timespec="seconds")


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 date/time (``--from``); naive results mean the schedule's zone."""
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f'invalid time "{text}": expected ISO-8601 such as 2026-03-29T01:30 or 2026-03-29T01:30+01:00'
        ) from None
