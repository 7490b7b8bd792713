"""Trading calendars: when a market has bars, so that closed hours are not reported as gaps.

Three calendars, chosen by ``cleaning.calendar`` or inferred from the data (``auto``):

* ``24/7``: bars at every step (crypto);
* ``24/5``: FX, closed from Friday 17:00 to Sunday 17:00 New York time (21:00 or 22:00 UTC
  with daylight saving time, from the time zone database);
* ``weekdays``: closed on Saturdays and Sundays (stocks, futures; holidays remain gaps);
* ``days:0123456``: daily bars on the UTC weekdays listed (0 = Monday), for daily bars
  stamped at another market's midnight (Tokyo's Monday to Friday are UTC Sunday to Thursday:
  ``days:01236``).

A missing bar is a gap only if the market was open at its time.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from trademl.errors import ConfigError

__all__ = [
    "CALENDARS",
    "check_calendar",
    "infer_calendar",
    "is_open",
    "missing_open_bars",
    "open_times_between",
]

CALENDARS = ("auto", "24/7", "24/5", "weekdays")
_WEEK = pd.Timedelta(days=7)


def is_open(times: pd.DatetimeIndex, calendar: str) -> np.ndarray:
    """Whether ``calendar``'s market is open at each of ``times`` (UTC)."""
    if calendar == "24/7":
        return np.ones(len(times), dtype=bool)
    day, hour = times.day_of_week.to_numpy(), times.hour.to_numpy()
    if calendar == "weekdays":
        return day < 5
    if calendar == "24/5":
        utc = times if times.tz is not None else times.tz_localize("UTC")
        ny = utc.tz_convert("America/New_York")
        day, hour = ny.day_of_week.to_numpy(), ny.hour.to_numpy()
        closed = (day == 5) | ((day == 4) & (hour >= 17)) | ((day == 6) & (hour < 17))
        return ~closed
    return np.isin(day, _open_days(check_calendar(calendar)))


def check_calendar(calendar: str) -> str:
    """``calendar`` if valid (a name of :data:`CALENDARS` or ``days:`` and weekday digits)."""
    if calendar in CALENDARS or (
        isinstance(calendar, str)
        and re.fullmatch(r"days:[0-6]{1,7}", calendar)
        and len(set(calendar[5:])) == len(calendar) - 5
    ):
        return calendar
    raise ConfigError(
        f"cleaning.calendar={calendar!r} is not valid; choose one of {', '.join(CALENDARS)}, or "
        "days: and the UTC weekdays with bars (0 = Monday), e.g. days:01236"
    )


def _open_days(calendar: str) -> list[int]:
    return [int(d) for d in calendar[5:]]


def infer_calendar(index: pd.DatetimeIndex, step: pd.Timedelta) -> str:
    """The calendar the data shows: at least two weekends with bars on the Friday before and
    the Monday after, and not one Saturday bar, mean a market closed at weekends (with Sunday
    bars: FX 24/5, else ``weekdays``). Anything less is no evidence: ``24/7``."""
    if len(index) < 2 or step >= pd.Timedelta(days=7):
        return "24/7"
    if step >= pd.Timedelta(days=1):  # daily bars: the weekdays that have bars, if clear
        return _daily_calendar(index)
    days = index.day_of_week
    if (days == 5).any():
        return "24/7"
    first = index[0].normalize()
    saturdays = pd.date_range(
        first + pd.Timedelta(days=(5 - first.day_of_week) % 7), index[-1], freq="7D"
    )
    ts = index.asi8
    day = pd.Timedelta(days=1).value

    def has_bars(start, end):
        return np.searchsorted(ts, end, "left") > np.searchsorted(ts, start, "left")

    sat = saturdays.asi8
    seen = has_bars(sat - day, sat) & has_bars(sat + 2 * day, sat + 3 * day)
    if seen.sum() < 2:
        return "24/7"
    return "24/5" if (days == 6).any() else "weekdays"


def _daily_calendar(index: pd.DatetimeIndex) -> str:
    """Daily bars: the UTC weekdays seen, when over at least three weeks some never have one
    and the others do in most weeks (else ``24/7``)."""
    weeks = (index[-1] - index[0]) / _WEEK
    if weeks < 3:
        return "24/7"
    counts = np.bincount(index.day_of_week, minlength=7)
    seen = np.flatnonzero(counts)
    if len(seen) == 7 or (counts[seen] < 0.5 * weeks).any():
        return "24/7"
    return "weekdays" if list(seen) == [0, 1, 2, 3, 4] else "days:" + "".join(map(str, seen))


def missing_open_bars(index: pd.DatetimeIndex, step: int, calendar: str) -> tuple[np.ndarray, ...]:
    """Gaps in the grid of ``step`` nanoseconds at times the market was open.

    Returns the positions ``i`` of the bars after which open bars are missing, and how many
    (counted week by week, so a gap of years costs no more than a week of grid points; for
    ``24/5`` a gap of more than a week may be off by one bar per daylight-saving change).
    """
    ts = index.asi8
    steps = np.diff(ts)
    after = np.flatnonzero(steps > step)
    if calendar == "24/7" or after.size == 0:
        return after, np.ceil(steps[after] / step).astype(np.int64) - 1
    counts = np.array([_count_open(ts[i], ts[i + 1], step, calendar) for i in after], np.int64)
    keep = counts > 0
    return after[keep], counts[keep]


def open_times_between(a: int, b: int, step: int, calendar: str) -> pd.DatetimeIndex:
    """The grid times ``a + k step`` strictly between ``a`` and ``b`` (ns) when open."""
    times = pd.date_range(
        pd.Timestamp(a, tz="UTC") + pd.Timedelta(step, unit="ns"),
        pd.Timestamp(b, tz="UTC") - pd.Timedelta(1, unit="ns"),
        freq=pd.Timedelta(step, unit="ns"),
    )
    return times[is_open(times, calendar)]


def _count_open(a: int, b: int, step: int, calendar: str) -> int:
    total = int(np.ceil((b - a) / step)) - 1
    week = _WEEK.value
    per_week_points = week // step if week % step == 0 else None
    if per_week_points is None or total < per_week_points:
        return len(open_times_between(a, a + (total + 1) * step, step, calendar))
    weeks = total // per_week_points
    per_week = len(open_times_between(a, a + week + step, step, calendar))
    start = a + weeks * week
    return weeks * per_week + len(open_times_between(start, b, step, calendar))
