"""Tests for aiwg_service.events.cron: real fire-time computations, checked against cronsim and by hand."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from aiwg_service.events.cron import (
    MACROS,
    CronSchedule,
    format_time,
    parse_time,
    resolve_system_zone,
    validate_expression,
    validate_timezone,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(zone: ZoneInfo, text: str, fold: int = 0) -> datetime:
    """Aware datetime from a wall-clock ISO string in ``zone``."""
    return datetime.fromisoformat(text).replace(tzinfo=zone, fold=fold)


def fmt(times: list[datetime]) -> list[str]:
    return [format_time(t) for t in times]


def u(dt: datetime) -> datetime:
    """UTC instant. Needed for ordering: Python compares datetimes sharing a tzinfo by wall-clock
    time and ignores ``fold``, so 02:00 CET would wrongly sort before 02:30 CEST."""
    return dt.astimezone(UTC)


# --------------------------------------------------------------------------------------------------
# Agreement with cronsim

EXPRESSIONS = [
    "* * * * *",
    "*/7 * * * *",
    "1-30/5 * * * *",
    "0 * * * *",
    "15 */3 * * *",
    "30 2 * * *",
    "0 1-3 * * *",
    "0 9 * * MON-FRI",
    "0 0 1,15 * *",
    "0 12 * JAN,jul *",
    "0 0 L * *",
    "0 6 * * 5L",
    "0 6 * * MON#2",
    "0 0 13 * FRI",
    "45 23 31 * *",
    "0 0 29 2 *",
]


@pytest.mark.parametrize("expr", EXPRESSIONS)
@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "America/New_York"])
def test_matches_cronsim(expr: str, tz: str) -> None:
    zone = ZoneInfo(tz)
    for start in (at(zone, "2026-01-05T10:17:00"), at(zone, "2026-03-01T00:00:00")):
        expected = list(islice(CronSim(expr, start), 40))
        got = CronSchedule(expr, tz).next_n(start, 40)
        assert fmt(got) == fmt(expected)  # offsets included, so fold differences are caught
        assert [u(g) for g in got] == [u(e) for e in expected]
        assert all(g.tzinfo is zone for g in got)


@pytest.mark.parametrize("macro", sorted(MACROS))
def test_macros_equal_their_expansion(macro: str) -> None:
    start = at(BERLIN, "2026-02-27T13:13:13")
    via_macro = CronSchedule(macro.upper(), "Europe/Berlin").next_n(start, 12)
    via_expr = list(islice(CronSim(MACROS[macro], start), 12))
    assert fmt(via_macro) == fmt(via_expr)
    assert len(via_macro) == 12


def test_macro_values() -> None:
    start = at(BERLIN, "2026-05-13T10:00")  # a Wednesday
    tz = "Europe/Berlin"
    assert format_time(CronSchedule("@hourly", tz).next_after(start)) == "2026-05-13T11:00:00+02:00"
    assert format_time(CronSchedule("@daily", tz).next_after(start)) == "2026-05-14T00:00:00+02:00"
    assert format_time(CronSchedule("@midnight", tz).next_after(start)) == "2026-05-14T00:00:00+02:00"
    assert format_time(CronSchedule("@weekly", tz).next_after(start)) == "2026-05-17T00:00:00+02:00"
    assert format_time(CronSchedule("@monthly", tz).next_after(start)) == "2026-06-01T00:00:00+02:00"
    assert format_time(CronSchedule("@yearly", tz).next_after(start)) == "2027-01-01T00:00:00+01:00"
    assert format_time(CronSchedule("@annually", tz).next_after(start)) == "2027-01-01T00:00:00+01:00"


def test_names_case_insensitive_and_range_steps() -> None:
    start = at(UTC, "2026-01-01T00:00")  # a Thursday
    lower = CronSchedule("0 8 * jan-mar mon,wed,fri", "UTC").next_n(start, 30)
    upper = CronSchedule("0 8 * 1-3 1,3,5", "UTC").next_n(start, 30)
    assert lower == upper
    assert fmt(lower[:3]) == [
        "2026-01-02T08:00:00+00:00",
        "2026-01-05T08:00:00+00:00",
        "2026-01-07T08:00:00+00:00",
    ]
    assert {d.month for d in lower} <= {1, 2, 3}
    steps = CronSchedule("1-30/5 * * * *", "UTC").next_n(start, 7)
    assert [d.minute for d in steps] == [1, 6, 11, 16, 21, 26, 1]
    assert steps[-1].hour == 1
    # 7 means Sunday, like 0.
    assert CronSchedule("0 0 * * 7", "UTC").next_n(start, 4) == CronSchedule("0 0 * * SUN", "UTC").next_n(
        start, 4
    )


# --------------------------------------------------------------------------------------------------
# next_after / iter_after / next_n semantics


def test_next_after_is_strictly_after() -> None:
    sched = CronSchedule("0 * * * *", "UTC")
    on_fire = at(UTC, "2026-06-01T10:00:00")
    assert sched.next_after(on_fire) == at(UTC, "2026-06-01T11:00:00")
    assert sched.next_after(on_fire - timedelta(microseconds=1)) == on_fire
    assert sched.next_after(on_fire + timedelta(microseconds=500)) == at(UTC, "2026-06-01T11:00:00")


def test_naive_input_uses_schedule_zone_and_aware_input_is_converted() -> None:
    sched = CronSchedule("0 9 * * *", "America/New_York")
    naive = datetime(2026, 7, 1, 8, 59)
    assert format_time(sched.next_after(naive)) == "2026-07-01T09:00:00-04:00"
    # 13:30 UTC is 09:30 in New York, so today's 09:00 has passed.
    got = sched.next_after(datetime(2026, 7, 1, 13, 30, tzinfo=UTC))
    assert format_time(got) == "2026-07-02T09:00:00-04:00"
    assert got.tzinfo is NEW_YORK


def test_next_n_and_iter_after() -> None:
    sched = CronSchedule("*/20 * * * *", "UTC")
    start = at(UTC, "2026-01-01T00:05")
    assert fmt(sched.next_n(start, 3)) == [
        "2026-01-01T00:20:00+00:00",
        "2026-01-01T00:40:00+00:00",
        "2026-01-01T01:00:00+00:00",
    ]
    assert sched.next_n(start, 0) == []
    with pytest.raises(ValueError):
        sched.next_n(start, -1)
    it = sched.iter_after(start)
    assert isinstance(it, Iterator)
    assert list(islice(it, 3)) == sched.next_n(start, 3)


def test_constructor_rejects_bad_input_with_validate_message() -> None:
    with pytest.raises(ValueError) as err:
        CronSchedule("61 * * * *", "UTC")
    assert str(err.value) == validate_expression("61 * * * *")
    with pytest.raises(ValueError) as err:
        CronSchedule("* * * * *", "Nowhere/Land")
    assert str(err.value) == validate_timezone("Nowhere/Land")
    assert repr(CronSchedule(" @daily ", "UTC")) == "CronSchedule('@daily', tz='UTC')"


# --------------------------------------------------------------------------------------------------
# DST, hand-checked. Europe/Berlin 2026: 03-29 02:00 CET -> 03:00 CEST; 10-25 03:00 CEST -> 02:00 CET.
# America/New_York 2026: 03-08 02:00 EST -> 03:00 EDT; 11-01 02:00 EDT -> 01:00 EST.


def test_berlin_spring_forward_fixed_time_job_runs_once_at_0300() -> None:
    sched = CronSchedule("30 2 * * *", "Europe/Berlin")
    got = sched.next_n(at(BERLIN, "2026-03-28T12:00"), 3)
    # 02:30 does not exist on 03-29; cronsim moves it to the first valid minute after the gap.
    assert fmt(got) == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]
    assert sum(1 for d in got if d.date().isoformat() == "2026-03-29") == 1


def test_berlin_fall_back_fixed_time_job_runs_once_at_first_occurrence() -> None:
    sched = CronSchedule("30 2 * * *", "Europe/Berlin")
    got = sched.next_n(at(BERLIN, "2026-10-24T12:00"), 3)
    assert fmt(got) == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00"]
    # Starting inside the repeated hour (second pass, CET) must not yield the already-past CEST 02:30.
    second_pass = at(BERLIN, "2026-10-25T02:15", fold=1)
    assert second_pass.utcoffset() == timedelta(hours=1)
    assert format_time(sched.next_after(second_pass)) == "2026-10-26T02:30:00+01:00"
    raw_cronsim = next(s for s in CronSim("30 2 * * *", second_pass) if u(s) > u(second_pass))
    assert fmt([sched.next_after(second_pass)]) == fmt([raw_cronsim])


def test_berlin_hourly_job_fires_in_both_repeated_hours_and_skips_missing_hour() -> None:
    sched = CronSchedule("0 * * * *", "Europe/Berlin")
    fall = sched.next_n(at(BERLIN, "2026-10-25T00:30"), 5)
    assert fmt(fall) == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T04:00:00+01:00",
    ]
    # Exactly one hour of real time between consecutive runs: hourly means every elapsed hour.
    assert {b - a for a, b in pairwise(u(t) for t in fall)} == {timedelta(hours=1)}
    spring = sched.next_n(at(BERLIN, "2026-03-29T00:30"), 3)
    assert fmt(spring) == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T04:00:00+02:00",
    ]
    assert {b - a for a, b in pairwise(u(t) for t in spring)} == {timedelta(hours=1)}


def test_berlin_every_30_minutes_during_fall_back_runs_in_both_passes() -> None:
    sched = CronSchedule("*/30 * * * *", "Europe/Berlin")
    got = sched.next_n(at(BERLIN, "2026-10-25T01:15"), 7)
    assert fmt(got) == [
        "2026-10-25T01:30:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]
    assert {b - a for a, b in pairwise(u(t) for t in got)} == {timedelta(minutes=30)}
    spring = sched.next_n(at(BERLIN, "2026-03-29T01:15"), 3)
    assert fmt(spring) == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]


def test_berlin_wall_clock_hour_range_across_transitions() -> None:
    sched = CronSchedule("0 1-3 * * *", "Europe/Berlin")
    # Spring: 02:00 is skipped and merges with the 03:00 run (one run, not two).
    assert fmt(sched.next_n(at(BERLIN, "2026-03-29T00:00"), 3)) == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T01:00:00+02:00",
    ]
    # Fall: 02:00 runs once (first occurrence).
    assert fmt(sched.next_n(at(BERLIN, "2026-10-25T00:00"), 4)) == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-26T01:00:00+01:00",
    ]


def test_minute_wildcard_in_skipped_hour_has_no_runs() -> None:
    """Debian-cron semantics: ``* 2 * * *`` is real-time scheduled, so it has no runs on 03-29."""
    got = CronSchedule("* 2 * * *", "Europe/Berlin").next_after(at(BERLIN, "2026-03-29T00:00"))
    assert format_time(got) == "2026-03-30T02:00:00+02:00"


def test_new_york_transitions() -> None:
    tz = "America/New_York"
    spring = CronSchedule("30 2 * * *", tz).next_n(at(NEW_YORK, "2026-03-08T00:00"), 2)
    assert fmt(spring) == ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    fall = CronSchedule("30 1 * * *", tz).next_n(at(NEW_YORK, "2026-11-01T00:00"), 2)
    assert fmt(fall) == ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    hourly = CronSchedule("0 * * * *", tz).next_n(at(NEW_YORK, "2026-11-01T00:30"), 4)
    assert fmt(hourly) == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T03:00:00-05:00",
    ]
    hourly_spring = CronSchedule("0 * * * *", tz).next_n(at(NEW_YORK, "2026-03-08T00:30"), 3)
    assert fmt(hourly_spring) == [
        "2026-03-08T01:00:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-08T04:00:00-04:00",
    ]
    # The fixed 02:30 run happens after midnight UTC-wise on the 8th, and exactly once that day.
    assert [d.date().isoformat() for d in spring].count("2026-03-08") == 1


DST_WINDOWS = [
    ("Europe/Berlin", "2026-03-28T22:00"),
    ("Europe/Berlin", "2026-10-24T22:00"),
    ("America/New_York", "2026-03-07T22:00"),
    ("America/New_York", "2026-10-31T22:00"),
]
DST_EXPRESSIONS = ["30 2 * * *", "0 1-3 * * *", "0 * * * *", "*/30 * * * *", "* 2 * * *", "0-59/10 0-5 * * *"]


@pytest.mark.parametrize("tz,window_start", DST_WINDOWS)
@pytest.mark.parametrize("expr", DST_EXPRESSIONS)
def test_next_after_consistent_from_any_start_across_dst(expr: str, tz: str, window_start: str) -> None:
    """next_after(t) must be the first element > t of one fixed, increasing set of fire times."""
    zone = ZoneInfo(tz)
    sched = CronSchedule(expr, tz)
    origin = at(zone, window_start)
    fires = [f for f in islice(sched.iter_after(origin), 400) if f < origin + timedelta(hours=30)]
    instants = [u(f) for f in fires]
    assert instants == sorted(set(instants))  # strictly increasing, no duplicates
    probe = origin.astimezone(UTC)
    while probe < origin + timedelta(hours=8):
        t = probe.astimezone(zone)  # carries the right fold inside the repeated hour
        expected = next(f for f in fires if u(f) > u(t))
        assert format_time(sched.next_after(t)) == format_time(expected), format_time(t)
        probe += timedelta(minutes=7)


# --------------------------------------------------------------------------------------------------
# missed_since


def brute_missed(sched: CronSchedule, last_run: datetime, now: datetime) -> datetime | None:
    latest = None
    for fire in sched.iter_after(last_run):
        if u(fire) > u(now):
            return latest
        latest = fire
    return latest


def test_missed_since_no_miss() -> None:
    sched = CronSchedule("0 * * * *", "UTC")
    assert sched.missed_since(at(UTC, "2026-01-01T10:00"), at(UTC, "2026-01-01T10:59:59")) is None
    assert sched.missed_since(at(UTC, "2026-01-01T10:00"), at(UTC, "2026-01-01T10:00")) is None
    assert sched.missed_since(at(UTC, "2026-01-01T12:00"), at(UTC, "2026-01-01T10:00")) is None


def test_missed_since_one_miss_includes_now_excludes_last_run() -> None:
    sched = CronSchedule("0 * * * *", "UTC")
    assert sched.missed_since(at(UTC, "2026-01-01T10:00"), at(UTC, "2026-01-01T11:00")) == at(
        UTC, "2026-01-01T11:00"
    )
    assert sched.missed_since(at(UTC, "2026-01-01T10:00"), at(UTC, "2026-01-01T11:30")) == at(
        UTC, "2026-01-01T11:00"
    )


def test_missed_since_many_misses_returns_only_latest() -> None:
    sched = CronSchedule("*/15 * * * *", "Europe/Berlin")
    got = sched.missed_since(at(BERLIN, "2026-05-01T08:00"), at(BERLIN, "2026-05-03T17:44:59"))
    assert format_time(got) == "2026-05-03T17:30:00+02:00"
    sparse = CronSchedule("0 9 1 * *", "Europe/Berlin")
    got = sparse.missed_since(at(BERLIN, "2025-01-01T10:00"), at(BERLIN, "2026-05-20T00:00"))
    assert format_time(got) == "2026-05-01T09:00:00+02:00"


def test_missed_since_large_gap_is_bisected(monkeypatch: pytest.MonkeyPatch) -> None:
    sched = CronSchedule("* * * * *", "UTC")
    last_run = at(UTC, "2026-01-01T00:00:30")
    now = at(UTC, "2026-01-31T00:00:10")  # 30 days: 43,200 missed slots
    calls = 0
    real_iter = CronSchedule._iter

    def counting_iter(self: CronSchedule, start: datetime) -> Iterator[datetime]:
        nonlocal calls
        calls += 1
        return real_iter(self, start)

    monkeypatch.setattr(CronSchedule, "_iter", counting_iter)
    assert sched.missed_since(last_run, now) == at(UTC, "2026-01-31T00:00")
    assert calls <= 2 * (22 + 2)  # log2(30 days in seconds) < 22


@pytest.mark.parametrize("tz,window_start", DST_WINDOWS)
@pytest.mark.parametrize("expr", DST_EXPRESSIONS)
def test_missed_since_matches_brute_force_across_dst(expr: str, tz: str, window_start: str) -> None:
    zone = ZoneInfo(tz)
    sched = CronSchedule(expr, tz)
    origin = at(zone, window_start).astimezone(UTC)
    for start_min in range(0, 8 * 60, 37):
        last_run = (origin + timedelta(minutes=start_min)).astimezone(zone)
        for gap_min in (1, 29, 61, 95, 180, 600):
            # Real elapsed minutes (aware arithmetic in a DST zone would be wall-clock arithmetic).
            now = (last_run.astimezone(UTC) + timedelta(minutes=gap_min)).astimezone(zone)
            got = sched.missed_since(last_run, now)
            expected = brute_missed(sched, last_run, now)
            assert (got and format_time(got)) == (expected and format_time(expected)), (
                format_time(last_run),
                format_time(now),
            )


# --------------------------------------------------------------------------------------------------
# Validation messages


@pytest.mark.parametrize(
    "expr,fragment",
    [
        ("61 * * * *", '"61 * * * *": minute field: 61 is out of range 0-59'),
        ("0 24 * * *", "hour field: 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month field: 0 is out of range 1-31"),
        ("0 0 * 13 *", "month field: 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week field: 8 is out of range 0-7"),
        ("0 0 * FOO *", "month field: 'FOO' is not a number or name (use 1-12 or JAN-DEC)"),
        ("0 0 * * funday", "day-of-week field: 'funday' is not a number or name (use 0-7 or SUN-SAT)"),
        ("x * * * *", "minute field: 'x' is not a number (use 0-59)"),
        ("30-10 * * * *", "minute field: range 30-10 is reversed"),
        ("*/0 * * * *", "minute field: step '0' in '*/0' must be a positive integer"),
        ("0 0 1,,2 * *", "day-of-month field: empty item in list"),
        ("0 0 * * MON#6", "day-of-week field: 'MON#6': the number after # must be 1-5"),
        ("0 0 30 2 *", "day-of-month field: no selected month has that many days"),
        ("* * * *", "has 4 fields; expected 5 (minute hour day-of-month month day-of-week)"),
        ("0 0 0 * * *", "has 6 fields; expected 5"),
        ("0 0 0 * * * *", "has 7 fields; expected 5"),
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("@reboot", "@reboot is not supported"),
        ("@fortnightly", "unknown macro @fortnightly; supported: @yearly"),
        ("hello world", "has 2 fields; expected 5"),
    ],
)
def test_invalid_expressions_have_clear_messages(expr: str, fragment: str) -> None:
    problem = validate_expression(expr)
    assert problem is not None
    assert fragment in problem
    assert problem.startswith(f'"{expr}": ')


def test_six_fields_message_mentions_seconds() -> None:
    problem = validate_expression("0 */5 * * * *")
    assert problem is not None
    assert "seconds field" in problem and "not supported" in problem


@pytest.mark.parametrize(
    "expr", ["* * * * *", "1-30/5 * * * *", "0 0 * jan-DEC sun-sat", "@Daily", " 0 0 L * * "]
)
def test_valid_expressions(expr: str) -> None:
    assert validate_expression(expr) is None


@pytest.mark.parametrize("junk", [None, 42, b"* * * * *", ["*"] * 5, "\x00\x00", "* * * * \u0663"])
def test_validate_expression_never_raises(junk: object) -> None:
    problem = validate_expression(junk)  # type: ignore[arg-type]
    assert isinstance(problem, str) and problem


def test_validate_timezone() -> None:
    assert validate_timezone("Europe/Berlin") is None
    assert validate_timezone("UTC") is None
    assert validate_timezone(None) is None
    assert validate_timezone("") is None
    for bad in ("Mars/Olympus_Mons", "Europe", "../../etc/passwd", "/etc/localtime", "Europe/Berlin "):
        problem = validate_timezone(bad)
        assert problem == f'unknown time zone "{bad}": expected an IANA name such as "Europe/Berlin" or "UTC"'
    assert validate_timezone(5) is not None  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# System zone resolution


def _fake_zoneinfo_tree(tmp_path: Path) -> Path:
    """A fake /usr/share/zoneinfo with a real Berlin TZif file, so symlink targets are resolvable."""
    real = Path("/usr/share/zoneinfo/Europe/Berlin")
    tree = tmp_path / "usr/share/zoneinfo/Europe"
    tree.mkdir(parents=True)
    (tree / "Berlin").write_bytes(real.read_bytes())
    return tree / "Berlin"


def test_resolve_system_zone_from_tz_env(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    name, zone = resolve_system_zone({"TZ": "America/New_York"}, missing, missing)
    assert (name, zone) == ("America/New_York", NEW_YORK)
    name, zone = resolve_system_zone({"TZ": ":Europe/Berlin"}, missing, missing)
    assert name == "Europe/Berlin" and zone is BERLIN
    name, _ = resolve_system_zone({"TZ": "/usr/share/zoneinfo/Europe/Berlin"}, missing, missing)
    assert name == "Europe/Berlin"


def test_resolve_system_zone_from_localtime_symlink(tmp_path: Path) -> None:
    berlin_file = _fake_zoneinfo_tree(tmp_path)
    link = tmp_path / "localtime"
    link.symlink_to(berlin_file)
    name, zone = resolve_system_zone({}, str(link), str(tmp_path / "nope"))
    assert name == "Europe/Berlin"
    # A real DST-aware zone, not a fixed offset: offsets differ between winter and summer.
    assert zone.utcoffset(datetime(2026, 1, 1)) == timedelta(hours=1)
    assert zone.utcoffset(datetime(2026, 7, 1)) == timedelta(hours=2)


def test_resolve_system_zone_fallbacks(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    tzfile = tmp_path / "timezone"
    tzfile.write_text("America/New_York\n")
    assert resolve_system_zone({"TZ": "Bogus/Zone"}, missing, str(tzfile)) == ("America/New_York", NEW_YORK)
    # /etc/localtime as a plain copied file: its own rules are used.
    copy = tmp_path / "localtime"
    copy.write_bytes(Path("/usr/share/zoneinfo/Europe/Berlin").read_bytes())
    name, zone = resolve_system_zone({}, str(copy), missing)
    assert name == "localtime"
    assert zone.utcoffset(datetime(2026, 7, 1)) == timedelta(hours=2)
    assert resolve_system_zone({}, missing, missing) == ("UTC", UTC)


def test_schedule_without_tz_uses_system_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    sched = CronSchedule("0 9 * * *")
    assert sched.tz_name == "America/New_York"
    assert format_time(sched.next_after(datetime(2026, 1, 1, 15, tzinfo=UTC))) == "2026-01-02T09:00:00-05:00"


# --------------------------------------------------------------------------------------------------
# Formatting, parsing, import cost


def test_format_time() -> None:
    assert format_time(at(BERLIN, "2026-03-29T03:00:00.123456")) == "2026-03-29T03:00:00+02:00"
    assert format_time(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00+00:00"
    with pytest.raises(ValueError):
        format_time(datetime(2026, 1, 1))


def test_parse_time() -> None:
    assert parse_time("2026-03-29T01:30+01:00") == at(BERLIN, "2026-03-29T01:30")
    assert parse_time("2026-03-29T01:30Z") == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert parse_time(" 2026-03-29 ").tzinfo is None
    with pytest.raises(ValueError, match="invalid time"):
        parse_time("yesterday")


def test_import_is_lazy() -> None:
    """``aiwgctl`` imports this module on every invocation; cronsim/zoneinfo must not load eagerly."""
    code = "import sys, aiwg_service.events.cron; print('cronsim' in sys.modules, 'zoneinfo' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["False", "False"]
