"""Loading and validating OHLCV candles.

:func:`load_ohlcv_data` reads CSV (with or without a header, including Binance
kline dumps) and Parquet into one canonical frame: a UTC ``DatetimeIndex`` named
``timestamp`` and float64 columns ``open, high, low, close, volume``, sorted by
time. It does not repair anything; :func:`trademl.cleaning.clean_ohlcv_data`
does, and counts what it touched. :func:`validate_ohlcv` checks that a frame is
clean enough to compute features on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from trademl.errors import DataError

__all__ = [
    "OHLCV_COLUMNS",
    "canonical_frame",
    "count_out_of_order",
    "load_ohlcv_data",
    "validate_ohlcv",
]

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")

# Accepted column names (compared lower-case, with spaces, dashes and dots as "_").
_ALIASES: dict[str, tuple[str, ...]] = {
    "timestamp": (
        "timestamp",
        "open_time",
        "opentime",
        "datetime",
        "date_time",
        "date",
        "time",
        "ts",
        "unix",
        "time_utc",
        "timestamp_utc",
    ),
    "open": ("open", "o", "open_price", "opening_price"),
    "high": ("high", "h", "high_price", "max"),
    "low": ("low", "l", "low_price", "min"),
    "close": ("close", "c", "close_price", "closing_price", "last", "price"),
    "volume": ("volume", "v", "vol", "base_volume", "volume_base", "qty"),
}

# Binance kline files have no header and these 12 columns.
BINANCE_KLINE_COLUMNS: tuple[str, ...] = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
    "ignore",
)

_CSV_SUFFIXES = (".csv", ".txt", ".csv.gz", ".csv.zip", ".csv.bz2", ".csv.xz")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def load_ohlcv_data(path: str | Path) -> pd.DataFrame:
    """Load candles from a CSV or Parquet file.

    Parameters
    ----------
    path
        A ``.csv`` (optionally compressed) or ``.parquet`` file. Column names are
        matched case-insensitively with common aliases (``timestamp``, ``date``,
        ``time``, ``open_time``; ``o``/``h``/``l``/``c``/``v``, ...). A CSV with no
        header is read as Binance klines when it has 12 columns, otherwise as
        ``timestamp, open, high, low, close, volume``.

    Returns
    -------
    pandas.DataFrame
        float64 ``open, high, low, close, volume`` on a UTC ``DatetimeIndex``
        named ``timestamp``, sorted by time (stable). ``df.attrs`` records the
        ``source`` and how many ``unsorted_rows`` were moved by the sort.
        Missing values are kept as NaN for :func:`clean_ohlcv_data` to handle.

    Raises
    ------
    DataError
        The file is missing, empty or of an unknown type; a column is missing,
        all-NaN or holds a non-numeric value; a timestamp cannot be parsed. The
        message names the file, the column and the first bad line (CSV) or row.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a CSV or Parquet file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    name = path.name.lower()
    if name.endswith(_PARQUET_SUFFIXES):
        raw, line_offset, where = _read_parquet(path), 0, "row"
    elif name.endswith(_CSV_SUFFIXES):
        raw, line_offset = _read_csv(path)
        where = "line"
    else:
        raise DataError(
            f"{path}: unsupported file type; expected one of "
            f"{', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}"
        )
    if len(raw) == 0:
        raise DataError(f"{path}: file has a header but no data rows")
    return canonical_frame(raw, path, line_offset, where)


def _read_csv(path: Path) -> tuple[pd.DataFrame, int]:
    """Read a CSV, detecting a missing header. Returns the frame and the line offset."""
    try:
        first = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: file is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({_first_line(exc)})") from exc
    cells = [str(c).strip() for c in first.iloc[0].tolist()]
    headerless = bool(cells) and _is_number(cells[0])
    try:
        if headerless:
            ncols = len(cells)
            if ncols == len(BINANCE_KLINE_COLUMNS):
                names = list(BINANCE_KLINE_COLUMNS)
            elif ncols == 6:
                names = ["timestamp", *OHLCV_COLUMNS]
            else:
                raise DataError(
                    f"{path}: CSV has no header and {ncols} columns; expected 6 "
                    "(timestamp, open, high, low, close, volume) or 12 (Binance klines). "
                    "Add a header row naming the columns."
                )
            raw = pd.read_csv(path, header=None, names=names, low_memory=False)
            return raw, 1
        raw = pd.read_csv(path, low_memory=False)
        return raw, 2
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed CSV ({_first_line(exc)})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text CSV file ({exc.reason})") from exc


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        raw = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types
        raise DataError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from exc
    if isinstance(raw.index, pd.DatetimeIndex):
        raw = raw.reset_index(names="timestamp" if "timestamp" not in raw.columns else None)
    return raw


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _normalise_name(name: object) -> str:
    text = str(name).strip().lower()
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
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found columns "
            f"{', '.join(map(str, raw.columns))}. Accepted names: "
            + "; ".join(f"{c}: {'/'.join(_ALIASES[c][:4])}" for c in missing)
        )
    return found


def canonical_frame(raw: pd.DataFrame, path: Path, line_offset: int, where: str) -> pd.DataFrame:
    """A raw table (as read from a file) as canonical candles, with load_ohlcv_data's checks.

    ``line_offset`` and ``where`` ("line" or "row") turn a row position into the location
    the error messages name (for a CSV with a header, data row 0 is line 2).
    """
    columns = _match_columns(raw, path)

    def loc(i: int) -> str:
        return f"{where} {i + line_offset}"

    data: dict[str, np.ndarray] = {}
    for name in OHLCV_COLUMNS:
        col = raw[columns[name]]
        values = _to_float(col, path, columns[name], loc)
        if np.isnan(values).all():
            raise DataError(f"{path}: column '{columns[name]}' has no values (all empty/NaN)")
        data[name] = values
    index = _parse_timestamps(raw[columns["timestamp"]], path, columns["timestamp"], loc)
    df = pd.DataFrame(data, index=index)
    order = np.argsort(index.asi8, kind="stable")
    unsorted = count_out_of_order(index.asi8)
    if unsorted:
        df = df.iloc[order]
    df.attrs["source"] = str(path)
    df.attrs["unsorted_rows"] = int(unsorted)
    return df


def _to_float(col: pd.Series, path: Path, name: str, loc) -> np.ndarray:
    if pd.api.types.is_bool_dtype(col):
        raise DataError(f"{path}: column '{name}' holds booleans, expected numbers")
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    converted = pd.to_numeric(col, errors="coerce")
    text = col.astype("string").str.strip()
    bad = converted.isna() & col.notna() & (text != "").fillna(False)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{path}: column '{name}' has a non-numeric value {col.iloc[i]!r} at {loc(i)}"
        )
    return converted.to_numpy(dtype=np.float64, na_value=np.nan)


def _epoch_to_ns(values: np.ndarray) -> np.ndarray:
    """Epoch numbers to int64 nanoseconds, unit chosen per value by magnitude.

    seconds < 1e11 <= milliseconds < 1e14 <= microseconds < 1e17 <= nanoseconds.
    Per value, so files mixing milliseconds and microseconds (Binance changed
    its spot klines from ms to us in 2025) load correctly.
    """
    mag = np.abs(values)
    scale = np.select(
        [mag < 1e11, mag < 1e14, mag < 1e17], [1_000_000_000, 1_000_000, 1_000], default=1
    )
    if np.all(values == np.floor(values)):
        return values.astype(np.int64) * scale
    return np.round(values * scale).astype(np.int64)


def _parse_timestamps(col: pd.Series, path: Path, name: str, loc) -> pd.DatetimeIndex:
    missing = col.isna().to_numpy()
    if pd.api.types.is_datetime64_any_dtype(col):
        if missing.any():
            raise DataError(
                f"{path}: column '{name}' has a missing timestamp at "
                f"{loc(int(np.flatnonzero(missing)[0]))}"
            )
        idx = pd.DatetimeIndex(col)
        idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
        return idx.as_unit("ns").rename("timestamp")
    numeric = col if pd.api.types.is_numeric_dtype(col) else pd.to_numeric(col, errors="coerce")
    text = None if pd.api.types.is_numeric_dtype(col) else col.astype("string").str.strip()
    if text is not None:
        missing = missing | (text == "").fillna(True).to_numpy()
    if missing.any():
        raise DataError(
            f"{path}: column '{name}' has a missing timestamp at "
            f"{loc(int(np.flatnonzero(missing)[0]))}"
        )
    num = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isnan(num).any():
        if np.any(num < 0):
            i = int(np.flatnonzero(num < 0)[0])
            raise DataError(
                f"{path}: column '{name}' has a negative epoch {col.iloc[i]!r} at {loc(i)}"
            )
        ns = _epoch_to_ns(num)
        return pd.DatetimeIndex(pd.to_datetime(ns, unit="ns", utc=True), name="timestamp")
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: column '{name}' has an unparseable timestamp {col.iloc[i]!r} at {loc(i)}; "
            "expected ISO 8601 (2024-01-31T13:00:00Z) or epoch seconds/milliseconds"
        )
    return pd.DatetimeIndex(parsed, name="timestamp").as_unit("ns")


def count_out_of_order(ts: np.ndarray) -> int:
    """Rows whose timestamp is earlier than some row above them (``ts``: int64 times)."""
    if ts.size < 2:
        return 0
    running_max = np.maximum.accumulate(ts)
    return int(np.count_nonzero(ts[1:] < running_max[:-1]))


def validate_ohlcv(df: pd.DataFrame, *, what: str = "data") -> None:
    """Check that ``df`` is clean OHLCV that features can be computed on.

    Requirements: the five columns, a ``DatetimeIndex`` that is strictly
    increasing, finite values, positive prices, ``high >= max(open, close)``,
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
    steps = np.diff(ts)
    if steps.size and (steps <= 0).any():
        i = int(np.flatnonzero(steps <= 0)[0]) + 1
        kind = "duplicate" if steps[i - 1] == 0 else "unsorted"
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
    checks = [
        ("open", arrays["open"] <= 0, "non-positive price"),
        ("high", arrays["high"] <= 0, "non-positive price"),
        ("low", arrays["low"] <= 0, "non-positive price"),
        ("close", arrays["close"] <= 0, "non-positive price"),
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
