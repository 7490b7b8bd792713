"""Loading and validating OHLCV candles.

:func:`load_ohlcv_data` reads CSV (with or without a header; comma, tab or semicolon
separated; plain or compressed; including Binance kline dumps and MetaTrader exports) and
Parquet into one canonical frame: a UTC ``DatetimeIndex`` named ``timestamp`` and float64
columns ``open, high, low, close, volume``, sorted by time. It does not repair values;
:func:`trademl.cleaning.clean_ohlcv_data` does, and counts what it touched.
:func:`validate_ohlcv` checks that a frame is clean enough to compute features on.

Timestamps are never turned into a wrong time silently. A timestamp outside pandas'
nanosecond range (1677-09-21 to 2262-04-11) is an error, and so is an implausible one: a
row cut off from the bulk of the file (the rows around its median time) by a gap longer
than both ``PLAUSIBLE_YEARS`` (20) years and ``PLAUSIBLE_SPAN_FACTOR`` (10) times the span
the file's rows cover at their median step (``rows x median step``). Such a row is a typo
or an epoch in the wrong unit; long histories (daily bars since 1950, yearly closes since
1900 followed by daily ones) have no such gap and load.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from trademl.data_io import (
    BINANCE_KLINE_COLUMNS,
    cells_to_float,
    is_number,
    looks_like_clock,
    read_table,
)
from trademl.errors import DataError

__all__ = [
    "BINANCE_KLINE_COLUMNS",
    "OHLCV_COLUMNS",
    "canonical_frame",
    "count_out_of_order",
    "load_ohlcv_data",
    "validate_ohlcv",
]

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")

# No market quantity comes near these; beyond them squares and products of prices and
# volumes lose precision or overflow. validate_ohlcv rejects them, the cleaner drops them.
MAX_VALUE = 1e30
MIN_PRICE = 1e-30

PLAUSIBLE_YEARS = 20
PLAUSIBLE_SPAN_FACTOR = 10

# Accepted column names (compared lower-case, without <>, with spaces, dashes and dots as "_").
# fmt: off
_ALIASES: dict[str, tuple[str, ...]] = {
    "timestamp": ("timestamp", "open_time", "opentime", "datetime", "date_time", "date", "time",
                  "ts", "unix", "time_utc", "timestamp_utc"),
    "open": ("open", "o", "open_price", "opening_price"),
    "high": ("high", "h", "high_price", "max"),
    "low": ("low", "l", "low_price", "min"),
    "close": ("close", "c", "close_price", "closing_price", "last", "price"),
    "volume": ("volume", "v", "vol", "base_volume", "volume_base", "qty", "tickvol", "tick_volume"),
}
# fmt: on

_NS_PER_YEAR = 365.2425 * 86_400 * 1e9
_UNIT_NAMES = {1_000_000_000: "seconds", 1_000_000: "milliseconds", 1_000: "microseconds"}
_NS_RANGE = "pandas datetimes span 1677-09-21 to 2262-04-11"

Locate = Callable[[int], str]


def load_ohlcv_data(path: str | Path) -> pd.DataFrame:
    """Load candles from a CSV or Parquet file.

    Parameters
    ----------
    path
        A ``.csv`` (optionally ``.gz``, ``.zip``, ``.bz2``, ``.xz``) or ``.parquet`` file.
        Column names are matched case-insensitively with common aliases (``timestamp``,
        ``date``, ``time``, ``open_time``; ``o``/``h``/``l``/``c``/``v``, MetaTrader's
        ``<DATE>``/``<TICKVOL>``, ...); separate date and time-of-day columns are combined.
        The delimiter (comma, tab or semicolon) is taken from the first line. A CSV whose
        first cell is a number or a date has no header: it is read as ``timestamp, open,
        high, low, close, volume`` (6 columns), MetaTrader's ``date, time, open, high, low,
        close, volume`` (7) or Binance klines (12). Blank lines, lines of separators only
        and a separator at the end of every line are ignored.

    Returns
    -------
    pandas.DataFrame
        float64 ``open, high, low, close, volume`` on a UTC ``DatetimeIndex``
        named ``timestamp``, sorted by time (stable). ``df.attrs`` records the
        ``source`` and how many ``unsorted_rows`` were moved by the sort.
        Missing and non-finite values are kept for :func:`clean_ohlcv_data` to handle.

    Raises
    ------
    DataError
        The file is missing, unreadable, empty, corrupt or of an unknown type; a line has
        more fields than the header; a column is missing, all-NaN or holds a non-numeric
        value; a timestamp is missing, unparseable, out of range or implausible. The
        message names the file, the column and the first bad line (CSV) or row (Parquet).
    """
    path = Path(path)
    table = read_table(path)
    return canonical_frame(table.frame, path, 0, table.where, locate=table.locate)


def _normalise_name(name: object) -> str:
    text = str(name).strip().lower().replace("<", "").replace(">", "")
    for ch in " -.":
        text = text.replace(ch, "_")
    return text


def _match_columns(raw: pd.DataFrame, path: Path) -> dict[str, str]:
    """Map canonical names to the file's column names."""
    normalised: dict[str, str] = {}
    for col in raw.columns:
        normalised.setdefault(_normalise_name(col), col)
    found: dict[str, str] = {}
    for canonical, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in normalised:
                found[canonical] = normalised[alias]
                break
    missing = [c for c in ("timestamp", *OHLCV_COLUMNS) if c not in found]
    if missing:
        hint = ""
        if "timestamp" in missing and str(raw.columns[:1].tolist()).startswith("['Unnamed: "):
            hint = "The first column has no name: call it timestamp"
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found columns "
            f"{', '.join(map(str, raw.columns))}. Accepted names: "
            + "; ".join(f"{c}: {'/'.join(_ALIASES[c][:4])}" for c in missing)
            + (f". {hint}" if hint else "")
        )
    # MetaTrader 5 writes real volume (VOL, all zero on forex) and tick volume (TICKVOL).
    tick = normalised.get("tickvol")
    if _normalise_name(found["volume"]) == "vol" and tick is not None:
        vol = pd.to_numeric(raw[found["volume"]], errors="coerce")
        if vol.fillna(0).eq(0).all():
            found["volume"] = tick
    for column in found.values():  # the reader names a repeated column "close.1"
        key = _normalise_name(column)
        same = [c for c in raw.columns if _normalise_name(re.sub(r"\.\d+$", "", str(c))) == key]
        if len(same) > 1:
            raise DataError(
                f"{path}: column '{column}' appears {len(same)} times; rename or drop the "
                "others so that it is clear which one to use"
            )
    return found


def _timestamp_column(raw: pd.DataFrame, found: dict[str, str]) -> tuple[pd.Series, str]:
    """The timestamp column, or a Date column joined with a time-of-day Time column."""
    column = found["timestamp"]
    times = {_normalise_name(c): c for c in raw.columns}.get("time")
    if _normalise_name(column) != "date" or times is None:
        return raw[column], str(column)
    clock = raw[times].astype("string").str.strip()
    first = clock.dropna()
    if first.empty or not looks_like_clock(str(first.iloc[0])):
        return raw[column], str(column)
    date = raw[column]
    if pd.api.types.is_datetime64_any_dtype(date):
        date = date.dt.strftime("%Y-%m-%d")
    joined = date.astype("string").str.strip() + " " + clock
    return joined, f"{column}+{times}"


def canonical_frame(
    raw: pd.DataFrame,
    path: Path,
    line_offset: int,
    where: str,
    *,
    locate: Callable[[int], int] | None = None,
) -> pd.DataFrame:
    """A raw table (as read from a file) as canonical candles, with load_ohlcv_data's checks.

    ``line_offset`` and ``where`` ("line" or "row") turn a row position into the location
    the error messages name (for a CSV with a header, data row 0 is line 2); ``locate``,
    when given, maps a row position to that number instead (lines counting blank ones).
    """
    columns = _match_columns(raw, path)
    position = locate if locate is not None else (lambda i: i + line_offset)

    def loc(i: int) -> str:
        return f"{where} {position(i)}"

    data: dict[str, np.ndarray] = {}
    for name in OHLCV_COLUMNS:
        col = raw[columns[name]]
        values = cells_to_float(col, path, columns[name], loc)
        if np.isnan(values).all():
            raise DataError(f"{path}: column '{columns[name]}' has no values (all empty/NaN)")
        data[name] = values
    stamps, stamp_name = _timestamp_column(raw, columns)
    index = _parse_timestamps(stamps, path, stamp_name, loc)
    _check_plausible(index.asi8, stamps, path, stamp_name, loc)
    df = pd.DataFrame(data, index=index)
    order = np.argsort(index.asi8, kind="stable")
    unsorted = count_out_of_order(index.asi8)
    if unsorted:
        df = df.iloc[order]
    df.attrs["source"] = str(path)
    df.attrs["unsorted_rows"] = int(unsorted)
    return df


def _epoch_to_ns(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epoch numbers to int64 nanoseconds, unit chosen per value by magnitude.

    seconds < 1e11 <= milliseconds < 1e14 <= microseconds < 1e17 <= nanoseconds.
    Per value, so files mixing milliseconds and microseconds (Binance changed
    its spot klines from ms to us in 2025) load correctly. Returns the nanoseconds,
    a mask of values out of int64 nanoseconds (or not finite) and each value's scale.
    """
    ints = values.dtype.kind in "iu"
    mag = np.abs(values.astype(np.float64))
    scale = np.select(
        [mag < 1e11, mag < 1e14, mag < 1e17], [1_000_000_000, 1_000_000, 1_000], default=1
    ).astype(np.int64)
    limit = np.iinfo(np.int64).max
    if ints:
        big = values > limit // scale
        whole = np.where(big, 0, values).astype(np.int64)
        return whole * scale, big, scale
    with np.errstate(over="ignore", invalid="ignore"):
        ns = values * scale
        bad = ~np.isfinite(ns) | (np.abs(ns) >= 2.0**63)
    ns = np.where(bad, 0.0, ns)
    if np.all(values == np.floor(values)) and not bad.any() and np.all(mag < 2.0**53):
        return values.astype(np.int64) * scale, bad, scale
    return np.round(ns).astype(np.int64), bad, scale


def _parse_timestamps(col: pd.Series, path: Path, name: str, loc: Locate) -> pd.DatetimeIndex:
    def fail(i: int, what: str, hint: str = "") -> DataError:
        return DataError(
            f"{path}: column '{name}' has {what} {_show(col.iloc[i])} at {loc(i)}{hint}"
        )

    missing = col.isna().to_numpy()
    if pd.api.types.is_datetime64_any_dtype(col):
        if missing.any():
            raise fail(int(np.flatnonzero(missing)[0]), "a missing timestamp")
        idx = pd.DatetimeIndex(col)
        idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
        return _as_ns(idx, fail)
    numeric_dtype = pd.api.types.is_numeric_dtype(col) and col.dtype.kind != "b"
    text = None if numeric_dtype else col.astype("string").str.strip()
    if text is not None:
        missing = missing | (text == "").fillna(True).to_numpy()
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise DataError(f"{path}: column '{name}' has a missing timestamp at {loc(i)}")
    if numeric_dtype:
        values = col.to_numpy()
    elif not is_number(str(text.iloc[0])):  # dates (the numbers test is slow on strings)
        return _parse_text(text, fail)
    else:
        numeric = pd.to_numeric(text, errors="coerce")
        values = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
    if values.dtype.kind in "iu" or not np.isnan(values).any():
        return _parse_epochs(values, fail)
    return _parse_text(text, fail)


_ONE_YEAR_NS = 365 * 86_400 * 10**9


def _parse_epochs(values: np.ndarray, fail) -> pd.DatetimeIndex:
    if values.dtype.kind == "f" and np.isinf(values).any():
        raise fail(int(np.flatnonzero(np.isinf(values))[0]), "a non-finite epoch")
    if np.any(values < 0):
        raise fail(int(np.flatnonzero(values < 0)[0]), "a negative epoch")
    dates = _yyyymmdd(values)
    if dates is not None:
        return dates
    ns, bad, scale = _epoch_to_ns(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        unit = _UNIT_NAMES.get(int(scale[i]), "nanoseconds")
        raise fail(
            i,
            "an epoch",
            f" that is out of range: read as {unit} it is after 2262 ({_NS_RANGE}); "
            "check the column's unit",
        )
    if ns.size and ns.max() < _ONE_YEAR_NS:  # every value in 1970: years, days, bar numbers
        raise fail(
            int(np.argmax(ns)),
            "a number",
            ": read as epoch seconds every value of the column falls in 1970, so these are "
            "not epochs (years? bar numbers?); write dates (2024-01-31 13:00:00) or epochs",
        )
    return pd.DatetimeIndex(pd.to_datetime(ns, unit="ns", utc=True), name="timestamp")


def _yyyymmdd(values: np.ndarray) -> pd.DatetimeIndex | None:
    """Whole numbers that all read as YYYYMMDD dates (19000101..22621231), else None.

    As epoch seconds they would all fall within seven weeks of 1970, so the reading is safe.
    """
    if values.size == 0 or values.min() < 19000101 or values.max() > 22621231:
        return None
    if values.dtype.kind == "f" and not np.all(values == np.floor(values)):
        return None
    text = pd.Series(values.astype(np.int64)).astype(str)
    parsed = pd.to_datetime(text, format="%Y%m%d", errors="coerce", utc=True)
    if parsed.isna().any():
        return None
    return pd.DatetimeIndex(parsed, name="timestamp").as_unit("ns")


def _parse_text(text: pd.Series, fail) -> pd.DatetimeIndex:
    first = text.iloc[0]
    if isinstance(first, str) and len(first) > 4 and first[4] == "." and first[:4].isdigit():
        text = text.str.replace(r"^(\d{4})\.(\d{1,2})\.(\d{1,2})", r"\1-\2-\3", regex=True)
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        try:
            alone = pd.DatetimeIndex(pd.to_datetime([text.iloc[i]], utc=True, format="ISO8601"))
            out_of_range = not alone.hasnans and out_of_ns_range(alone) is not None
        except (ValueError, OverflowError) as exc:  # OutOfBoundsDatetime is a ValueError
            out_of_range = "out of bounds" in str(exc).lower()
        if out_of_range:
            raise fail(i, "a timestamp", f" that is out of range ({_NS_RANGE})")
        raise fail(
            i,
            "an unparseable timestamp",
            "; expected ISO 8601 (2024-01-31T13:00:00Z), a date and a time column, "
            "or epoch seconds/milliseconds",
        )
    return _as_ns(pd.DatetimeIndex(parsed), fail)


def _as_ns(idx: pd.DatetimeIndex, fail) -> pd.DatetimeIndex:
    """``idx`` in nanoseconds, or the error naming its first value beyond that range."""
    i = out_of_ns_range(idx)
    if i is not None:
        raise fail(i, "a timestamp", f" that is out of range ({_NS_RANGE})")
    return idx.as_unit("ns").rename("timestamp")


def out_of_ns_range(index: pd.DatetimeIndex) -> int | None:
    """Position of the first time beyond pandas' nanoseconds (1677-09-21..2262-04-11), or None."""
    per_unit = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}[index.unit]
    bad = np.abs(index.asi8) > np.iinfo(np.int64).max // per_unit
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def _check_plausible(ns: np.ndarray, col: pd.Series, path: Path, name: str, loc) -> None:
    """Reject rows cut off from the bulk of the file (see the module docstring for the rule)."""
    n = ns.size
    if n < 3:
        return
    order = np.argsort(ns, kind="stable")
    ordered = ns[order].astype(np.float64)
    gaps = np.diff(ordered)
    steps = gaps[gaps > 0]
    if steps.size == 0:
        return
    step = float(np.median(steps))
    allowed = max(PLAUSIBLE_YEARS * _NS_PER_YEAR, PLAUSIBLE_SPAN_FACTOR * n * step)
    if not (gaps > allowed).any():
        return
    cluster = np.concatenate(([0], np.cumsum(gaps > allowed)))
    bulk = cluster == cluster[(n - 1) // 2]
    far = np.empty(n, dtype=bool)
    far[order] = ~bulk
    i = int(np.flatnonzero(far)[0])
    first, last = ordered[bulk][0], ordered[bulk][-1]
    years = min(abs(float(ns[i]) - first), abs(float(ns[i]) - last)) / _NS_PER_YEAR

    def when(value: float) -> str:
        return str(pd.Timestamp(int(value), tz="UTC"))

    raise DataError(
        f"{path}: column '{name}' has an implausible timestamp {_show(col.iloc[i])} "
        f"({when(ns[i])}) at {loc(i)}: {years:.0f} years away from the bulk of the file "
        f"({int(bulk.sum())} of {n} rows, {when(first)} to {when(last)}, median step "
        f"{pd.Timedelta(int(step), unit='ns')}). Fix or remove the row (a typo? an epoch in "
        "the wrong unit?)"
    )


def _show(value: object) -> str:
    """A cell for an error message: strings quoted, numpy numbers as plain numbers."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def count_out_of_order(ts: np.ndarray) -> int:
    """Rows whose timestamp is earlier than some row above them (``ts``: int64 times)."""
    if ts.size < 2:
        return 0
    running_max = np.maximum.accumulate(ts)
    return int(np.count_nonzero(ts[1:] < running_max[:-1]))


def validate_ohlcv(df: pd.DataFrame, *, what: str = "data") -> None:
    """Check that ``df`` is clean OHLCV that features can be computed on.

    Requirements: the five columns, a ``DatetimeIndex`` that is strictly
    increasing, finite values, positive prices, prices in ``[MIN_PRICE, MAX_VALUE]`` and
    volume up to ``MAX_VALUE`` (1e-30, 1e30), ``high >= max(open, close)``,
    ``low <= min(open, close)`` and non-negative volume. Run
    :func:`trademl.cleaning.clean_ohlcv_data` first to repair raw data.

    Raises
    ------
    DataError
        Naming the first offending column and row (its timestamp).
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{what}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in OHLCV_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{what}: missing column(s) {', '.join(missing)}; has {', '.join(map(str, df.columns))}"
        )
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataError(
            f"{what}: index must be a DatetimeIndex of candle times, got {type(df.index).__name__}"
        )
    if len(df) == 0:
        raise DataError(f"{what}: no rows")
    ts = df.index.asi8
    not_after = ts[1:] <= ts[:-1]  # compared, not subtracted: steps may exceed int64
    if not_after.any():
        i = int(np.flatnonzero(not_after)[0]) + 1
        kind = "duplicate" if ts[i] == ts[i - 1] else "unsorted"
        raise DataError(
            f"{what}: {kind} timestamp {df.index[i]} at row {i}; "
            "run clean_ohlcv_data() to sort and de-duplicate"
        )
    arrays = {c: np.asarray(df[c], dtype=np.float64) for c in OHLCV_COLUMNS}
    for c, values in arrays.items():
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{what}: column '{c}' is {values[i]} at {df.index[i]} (row {i}); "
                "run clean_ohlcv_data() to fill or drop missing values"
            )
    absurd = "absurd value"
    checks = [
        ("open", arrays["open"] <= 0, "non-positive price"),
        ("high", arrays["high"] <= 0, "non-positive price"),
        ("low", arrays["low"] <= 0, "non-positive price"),
        ("close", arrays["close"] <= 0, "non-positive price"),
        *(
            (
                c,
                (arrays[c] > MAX_VALUE) | (arrays[c] < MIN_PRICE if c != "volume" else False),
                absurd,
            )
            for c in OHLCV_COLUMNS
        ),
        (
            "high",
            arrays["high"] < np.maximum(arrays["open"], arrays["close"]),
            "high below max(open, close)",
        ),
        (
            "low",
            arrays["low"] > np.minimum(arrays["open"], arrays["close"]),
            "low above min(open, close)",
        ),
        ("volume", arrays["volume"] < 0, "negative volume"),
    ]
    for column, bad, reason in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{what}: {reason} in column '{column}' at {df.index[i]} (row {i}): "
                f"{arrays[column][i]}; run clean_ohlcv_data() to repair or drop it"
            )
