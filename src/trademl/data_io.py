"""Reading candle files into raw tables: the file half of :func:`trademl.data.load_ohlcv_data`.

Everything between a path and a table of cells: the file itself (missing, a directory, a FIFO,
unreadable), its container (gzip, zip, bz2, xz; a corrupt or truncated one is a
:class:`~trademl.errors.DataError`), its text (UTF-8, or UTF-16 with a byte-order mark as
MetaTrader 5 writes it), its delimiter (comma, tab or semicolon, sniffed from the first line),
its header (present, or absent with 6, 7 or 12 columns), empty trailing columns left by a comma
at the end of every line, lines that hold only separators (skipped like blank lines), and
the file line of every data row, for error messages. :func:`cells_to_float` turns a column
of cells into numbers, naming the first cell that is not one.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import lzma
import re
import stat
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trademl.errors import DataError

__all__ = [
    "BINANCE_KLINE_COLUMNS",
    "CSV_SUFFIXES",
    "PARQUET_SUFFIXES",
    "RawTable",
    "cells_to_float",
    "parse_csv_text",
    "read_table",
]

CSV_SUFFIXES = (".csv", ".txt", ".csv.gz", ".csv.zip", ".csv.bz2", ".csv.xz")
PARQUET_SUFFIXES = (".parquet", ".pq")

# Binance kline files have no header and these 12 columns.
# fmt: off
BINANCE_KLINE_COLUMNS: tuple[str, ...] = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
    "trades", "taker_buy_base_volume", "taker_buy_quote_volume", "ignore",
)
# fmt: on
_PLAIN_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
# MetaTrader 4 "History Center" exports: 2024.01.02,13:00,open,high,low,close,volume
_METATRADER_COLUMNS = ("date", "time", "open", "high", "low", "close", "volume")

_DELIMITERS = (",", "\t", ";")
_SPARE = "__beyond_header__"  # catches one field more than the header names
_DATE_RE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}(?:[T ]\S.*)?$")
_CLOCK_RE = re.compile(r"^\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?$")
_FIELDS_RE = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_EOF_RE = re.compile(r"EOF inside string starting at row (\d+)")
_DECIMAL_COMMA = re.compile(r"^\s*[-+]?\d+,\d+\s*$")
_LINE_RE = re.compile(r"([^\r\n]*)(?:\r\n|\r|\n|$)")


@dataclass(frozen=True)
class RawTable:
    """A table as read from a file, before any column is interpreted.

    ``locate(i)`` is the 1-based file line of data row ``i`` (CSV, header on line 1) or
    its 0-based row number (Parquet); ``where`` says which ("line" or "row").
    """

    frame: pd.DataFrame
    where: str
    locate: Callable[[int], int]


def read_table(path: Path) -> RawTable:
    """Read a CSV (plain or compressed) or Parquet file into a :class:`RawTable`.

    Raises
    ------
    DataError
        The file is missing, not a regular file, unreadable, empty, of an unknown type, a
        corrupt or truncated archive, not text, or not a table; the message names the file.
    """
    data = _read_bytes(path)
    if path.name.lower().endswith(PARQUET_SUFFIXES):
        return RawTable(_parse_parquet(data, path), "row", lambda i: i)
    return _parse_csv(_decode(_decompress(data, path), path), path)


def parse_csv_text(text: str, path: Path) -> RawTable:
    """CSV text (e.g. a header and the lines appended to a followed file) as a RawTable, with
    the same delimiter, header and line rules as :func:`read_table`."""
    return _parse_csv(text, path)


def _read_bytes(path: Path) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the file ({_reason(exc)})") from exc
    if stat.S_ISDIR(info.st_mode):
        raise DataError(f"{path}: is a directory, expected a CSV or Parquet file")
    if not stat.S_ISREG(info.st_mode):
        raise DataError(
            f"{path}: not a regular file (a FIFO, socket or device); save the candles to a "
            "CSV or Parquet file and load that"
        )
    if info.st_size == 0:
        raise DataError(f"{path}: file is empty")
    if not path.name.lower().endswith(CSV_SUFFIXES + PARQUET_SUFFIXES):
        raise DataError(
            f"{path}: unsupported file type; expected one of "
            f"{', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(
            f"{path}: cannot read the file ({_reason(exc)}); check that it is readable"
        ) from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return first_line(exc)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


_CONTAINERS = {".gz": ("gzip", gzip.decompress), ".bz2": ("bz2", bz2.decompress)}
_CONTAINERS |= {".xz": ("xz", lzma.decompress), ".zip": ("zip", None)}


def _decompress(data: bytes, path: Path) -> bytes:
    name = path.name.lower()
    kind, expand = next((v for s, v in _CONTAINERS.items() if name.endswith(s)), (None, None))
    if kind is None:
        return data
    try:
        return _unzip(data, path) if expand is None else expand(data)
    except (DataError, MemoryError):
        raise
    except Exception as exc:  # each codec raises its own types: EOFError, OSError, LZMAError...
        raise DataError(
            f"{path}: corrupt or truncated {kind} file ({first_line(exc)}); "
            "download or compress it again"
        ) from exc


def _unzip(data: bytes, path: Path) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = [
            m
            for m in archive.infolist()
            if not m.is_dir() and not m.filename.startswith("__MACOSX/")
        ]
        if not members:
            raise DataError(f"{path}: zip archive holds no file; expected exactly one CSV")
        if len(members) > 1:
            names = ", ".join(m.filename for m in members[:5])
            more = ", ..." if len(members) > 5 else ""
            raise DataError(
                f"{path}: zip archive holds {len(members)} files ({names}{more}); expected "
                "exactly one CSV. Extract the one you want and load it"
            )
        return archive.read(members[0])


def _decode(data: bytes, path: Path) -> str:
    utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    encoding = "utf-16" if utf16 else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not a text CSV file ({encoding} cannot decode byte {exc.start}: "
            f"{exc.reason}); save it as UTF-8 text"
        ) from exc


def _parse_parquet(data: bytes, path: Path) -> pd.DataFrame:
    try:
        raw = pd.read_parquet(io.BytesIO(data))
    except MemoryError:
        raise
    except Exception as exc:  # pyarrow raises several unrelated types
        raise DataError(f"{path}: not a readable Parquet file ({first_line(exc)})") from exc
    if isinstance(raw.index, pd.DatetimeIndex):
        name = raw.index.name if "timestamp" in raw.columns else "timestamp"
        if name in raw.columns:
            raise DataError(
                f"{path}: the Parquet file has both an index and a column named '{name}'; "
                "keep one of them"
            )
        raw = raw.reset_index(names=name)
    if len(raw) == 0:
        raise DataError(f"{path}: the Parquet file has no rows")
    return raw


# What pandas reads as a missing value (a subset of its default na_values), lower-case.
_MISSING = {"", "na", "n/a", "nan", "-nan", "null", "none", "#n/a", "<na>"}


def is_number(text: str) -> bool:
    """Whether ``float()`` reads the text."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number_or_missing(text: str) -> bool:
    return text.lower() in _MISSING or is_number(text)


def looks_like_date(text: str) -> bool:
    """``2024-01-31``, ``2024.01.31`` or ``2024/01/31``, optionally with a time of day."""
    return bool(_DATE_RE.match(text))


def looks_like_clock(text: str) -> bool:
    """A time of day: ``13:00``, ``13:00:00`` or ``13:00:00.250``."""
    return bool(_CLOCK_RE.match(text))


def _sniff(line: str) -> str:
    """The delimiter (comma, tab, semicolon) the first line uses most; comma on a tie."""
    counts = [line.count(d) for d in _DELIMITERS]
    return _DELIMITERS[counts.index(max(counts))]


def _lines_of(text: str):
    """The text's lines, lazily; a line ends at \\r\\n, \\r or \\n, as pandas reads it."""
    return (match.group(1) for match in _LINE_RE.finditer(text))


def _first_nonblank(text: str) -> tuple[int, str] | None:
    """Number and text of the first line that is not blank."""
    for number, line in enumerate(_lines_of(text), start=1):
        if line.strip():
            return number, line
    return None


def _headerless_names(cells: list[str]) -> tuple[str, ...] | None:
    """Column names of a header-less file from its first row; None if the row is a header.

    The first row is data when its first cell is a number or a date. It must then have 6
    cells (timestamp and OHLCV), 7 with a time of day second (MetaTrader: date, time, OHLCV)
    or 12 (Binance klines), all numbers or missing after the timestamp; a comma at the end of
    the line may add empty cells. ``()`` means data of an unknown layout.
    """
    if not cells or not (is_number(cells[0]) or looks_like_date(cells[0])):
        return None
    widths = [len(cells)]  # an empty last cell may be a missing value or a trailing comma
    while widths[-1] > 1 and cells[widths[-1] - 1] == "":
        widths.append(widths[-1] - 1)
    layouts = {6: _PLAIN_COLUMNS, 12: BINANCE_KLINE_COLUMNS}
    for width in widths:
        if width == 7 and looks_like_clock(cells[1]):
            names, numbers = _METATRADER_COLUMNS, cells[2:7]
        elif width in layouts:
            names, numbers = layouts[width], cells[1:width]
        else:
            continue
        if all(_number_or_missing(c) for c in numbers):
            return names
    return ()


def _no_layout(path: Path, line: int, cells: list[str]) -> DataError:
    """Why a first line that starts with a timestamp does not read as header-less data."""
    start = 2 if len(cells) > 1 and looks_like_clock(cells[1]) else 1
    bad = next((k for k in range(start, len(cells)) if not _number_or_missing(cells[k])), None)
    if len(cells) in (6, 7, 12) and bad is not None:
        return DataError(
            f"{path}: line {line} starts with a timestamp, so the file is read as having no "
            f"header, but its cell {bad + 1} ({cells[bad]!r}) is not a number. Fix that cell, "
            "or add a header row naming the columns."
        )
    return DataError(
        f"{path}: CSV has no header and {len(cells)} columns; expected 6 "
        "(timestamp, open, high, low, close, volume), 7 (MetaTrader: date, time, open, "
        "high, low, close, volume) or 12 (Binance klines). Add a header row naming the columns."
    )


def _parse_csv(text: str, path: Path) -> RawTable:
    first = _first_nonblank(text)
    if first is None:
        raise DataError(f"{path}: file is empty (only blank lines)")
    first_line_no, line = first
    sep = _sniff(line)
    cells = next(csv.reader([line], delimiter=sep), [])
    cells = [c.strip() for c in cells]
    layout = _headerless_names(cells)
    if layout == ():
        raise _no_layout(path, first_line_no, cells)
    header = layout is None
    if header and not any(cells):
        raise DataError(
            f"{path}: line {first_line_no}, the header, names no column; write the column "
            "names (timestamp, open, high, low, close, volume) there"
        )
    if layout is None:
        named = max((k + 1 for k, c in enumerate(cells) if c), default=1)
        names = _unique([c or f"Unnamed: {k}" for k, c in enumerate(cells)])
        limit = f"the header names {named} column{'s' if named > 1 else ''}"
    else:
        named = len(layout)
        names = [*layout, *(f"Unnamed: {k}" for k in range(named, len(cells)))]
        limit = f"a header-less file of this layout has {named} columns ({', '.join(layout)})"
    lines = _Lines(text, sep, first_line_no, header)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            raw = pd.read_csv(
                io.BytesIO(text.encode()),
                sep=sep,
                header=None,
                skiprows=[first_line_no - 1] if header else None,
                names=[*names, _SPARE],
                index_col=False,
                low_memory=False,
            )
    except pd.errors.ParserWarning as exc:  # the first row has 2+ fields more than the header
        raise _too_wide(path, lines.longer_than(len(names) + 1), limit) from exc
    except pd.errors.ParserError as exc:
        match = _FIELDS_RE.search(str(exc))
        if match:
            found = int(match.group(2)), int(match.group(3))
            raise _too_wide(path, found, limit) from exc
        match = _EOF_RE.search(str(exc))
        if match:
            line = int(match.group(1)) + 1
            raise DataError(
                f"{path}: malformed CSV: line {line} opens a quoted field that is never "
                'closed; add the missing "'
            ) from exc
        raise DataError(f"{path}: malformed CSV ({first_line(exc)})") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: file is empty") from exc
    except MemoryError:
        raise
    except Exception as exc:  # the parser's other complaints about the text
        raise DataError(f"{path}: not a readable CSV file ({first_line(exc)})") from exc
    # Cells beyond the named columns must be empty: a comma at the end of every line.
    beyond = _rows_with_value(raw.iloc[:, named:])
    if beyond.any():
        row = int(beyond.argmax())
        last = max(
            k for k in range(named, raw.shape[1]) if _rows_with_value(raw.iloc[[row], [k]])[0]
        )
        raise _too_wide(path, (lines(row), last + 1), limit)
    raw = raw.iloc[:, :named]
    # Lines of separators only (",,,,," as spreadsheets export empty rows) hold no value.
    kept = np.flatnonzero(_rows_with_value(raw))
    if len(kept) == 0:
        raise DataError(f"{path}: file has a header but no data rows")
    if len(kept) < len(raw):
        raw = raw.iloc[kept].reset_index(drop=True)
        return RawTable(raw, "line", lambda i: lines(int(kept[i])))
    return RawTable(raw, "line", lines)


def _rows_with_value(frame: pd.DataFrame) -> np.ndarray:
    """Rows with a non-blank cell; text columns (slow) only for rows still without one."""
    has = np.zeros(len(frame), dtype=bool)
    columns = [frame.iloc[:, k] for k in range(frame.shape[1])]
    for col in sorted(columns, key=lambda c: not pd.api.types.is_numeric_dtype(c)):
        rest = ~has
        if not rest.any():
            break
        if pd.api.types.is_numeric_dtype(col):
            has |= col.notna().to_numpy()
        else:
            text = col[rest].astype("string").str.strip()
            has[rest] = (text != "").fillna(False).to_numpy(dtype=bool)
    return has


def _unique(names: list[str]) -> list[str]:
    """Duplicate names get a ``.1``, ``.2`` suffix, as pandas does."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}.{count}")
    return out


def _too_wide(path: Path, found: tuple[int, int] | None, limit: str) -> DataError:
    where = f"line {found[0]} has {found[1]} fields" if found else "a line has more fields"
    return DataError(
        f"{path}: {where} but {limit}; remove the extra field(s), or name every column "
        "in a header row"
    )


class _Lines:
    """Maps data row positions to 1-based file lines, counting blank lines (parsed lazily)."""

    def __init__(self, text: str, sep: str, first_line_no: int, header: bool) -> None:
        self._text, self._sep = text, sep
        self._skip = 1 if header else 0
        self._fallback = first_line_no + self._skip
        self._starts: list[int] | None = None

    def _records(self):
        """(start line, field count) of each non-blank record, as pandas reads them."""
        reader = csv.reader(_lines_of(self._text), delimiter=self._sep)
        previous = 0
        for record in reader:
            if record and not (len(record) == 1 and not record[0].strip()):
                yield previous + 1, len(record)
            previous = reader.line_num

    def __call__(self, row: int) -> int:
        if self._starts is None:
            try:
                self._starts = [start for start, _ in self._records()]
            except (csv.Error, ValueError):  # a field beyond csv's size limit: count lines only
                self._starts = []
        k = row + self._skip
        return self._starts[k] if k < len(self._starts) else row + self._fallback

    def longer_than(self, width: int) -> tuple[int, int] | None:
        """The first data line with more than ``width`` fields, and its field count."""
        try:
            for k, (start, count) in enumerate(self._records()):
                if k >= self._skip and count > width:
                    return start, count
        except (csv.Error, ValueError):
            pass
        return None


def cells_to_float(col: pd.Series, path: Path, name: str, loc: Callable[[int], str]) -> np.ndarray:
    """A column as float64 (empty cells NaN); a cell that is not a number is a DataError."""
    kind = col.dtype.kind
    if kind in "bcmM" or isinstance(col.dtype, pd.DatetimeTZDtype):
        what = {"b": "booleans", "c": "complex numbers"}.get(kind, "dates or durations")
        raise DataError(f"{path}: column '{name}' holds {what}, expected numbers")
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        converted = pd.to_numeric(col, errors="coerce")
        text = col.astype("string").str.strip()
    except (TypeError, ValueError, OverflowError):  # lists, dicts, huge ints in an object column
        converted = pd.Series([_float_or_nan(v) for v in col], index=col.index)
        text = pd.Series(["x" if v is not None else "" for v in col], col.index, "string")
    bad = converted.isna() & col.notna() & (text != "").fillna(False)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        hint = "; write decimals with a dot" if _DECIMAL_COMMA.match(str(col.iloc[i])) else ""
        raise DataError(
            f"{path}: column '{name}' has a non-numeric value {col.iloc[i]!r} at {loc(i)}{hint}"
        )
    return converted.to_numpy(dtype=np.float64, na_value=np.nan)


def _float_or_nan(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return np.nan
