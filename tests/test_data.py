"""Loading candles: formats, aliases, timestamps, and one clear error per bad input."""

from __future__ import annotations

import builtins
import gzip
import os
import pathlib
import zipfile

import numpy as np
import pandas as pd
import pytest

from trademl import DataError, load_ohlcv_data, validate_ohlcv
from trademl.data import OHLCV_COLUMNS

from ._data_helpers import HEADER, candle_rows, compress
from .conftest import write_csv


def _canonical(df: pd.DataFrame) -> None:
    assert list(df.columns) == list(OHLCV_COLUMNS)
    assert all(df[c].dtype == np.float64 for c in OHLCV_COLUMNS)
    assert isinstance(df.index, pd.DatetimeIndex)
    assert str(df.index.tz) == "UTC"
    assert df.index.name == "timestamp"
    assert df.index.is_monotonic_increasing


def test_csv_round_trip(tmp_path, candles):
    path = write_csv(candles, tmp_path / "c.csv")
    df = load_ohlcv_data(path)
    _canonical(df)
    pd.testing.assert_frame_equal(
        df, candles, check_freq=False, check_index_type=False, check_exact=False, rtol=1e-12
    )
    assert df.attrs["source"] == path
    assert df.attrs["unsorted_rows"] == 0


def test_aliases_and_case(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(
        "Date,O,H,L,C,Vol\n2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
        "2024-01-01T01:00:00Z,1.5,2.5,1,2,20\n"
    )
    df = load_ohlcv_data(path)
    _canonical(df)
    assert df["close"].tolist() == [1.5, 2.0]
    assert df.index[1] == pd.Timestamp("2024-01-01T01:00:00Z")


@pytest.mark.parametrize("scale", [1, 1_000, 1_000_000])
def test_epoch_units(tmp_path, scale):
    base = 1_700_000_000
    path = tmp_path / "e.csv"
    path.write_text(
        f"open_time,open,high,low,close,volume\n{base * scale},1,2,0.5,1.5,10\n"
        f"{(base + 3600) * scale},1,2,0.5,1.5,10\n"
    )
    df = load_ohlcv_data(path)
    assert df.index[0] == pd.Timestamp(base, unit="s", tz="UTC")
    assert df.index[1] - df.index[0] == pd.Timedelta("1h")


def test_timezone_offsets_convert_to_utc(tmp_path):
    path = tmp_path / "tz.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n2024-01-01T02:00:00+02:00,1,2,0.5,1.5,1\n"
    )
    assert load_ohlcv_data(path).index[0] == pd.Timestamp("2024-01-01T00:00:00Z")


def test_binance_klines_headerless_mixed_ms_us(tmp_path):
    # Binance switched spot klines from milliseconds to microseconds in 2025.
    rows = [
        [1735689540000, 1, 2, 0.5, 1.5, 10, 1735689599999, 15, 3, 5, 7, 0],
        [1735689600000000, 1.5, 2.5, 1, 2, 20, 1735689659999999, 40, 4, 9, 18, 0],
    ]
    path = tmp_path / "BTCUSDT-1m.csv"
    path.write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")
    df = load_ohlcv_data(path)
    _canonical(df)
    assert df.index[0] == pd.Timestamp("2024-12-31T23:59:00Z")
    assert df.index[1] == pd.Timestamp("2025-01-01T00:00:00Z")
    assert df["volume"].tolist() == [10.0, 20.0]


def test_headerless_six_columns(tmp_path):
    path = tmp_path / "six.csv"
    path.write_text("1700000000,1,2,0.5,1.5,10\n1700003600,1.5,2.5,1,2,20\n")
    assert load_ohlcv_data(path)["high"].tolist() == [2.0, 2.5]


def test_parquet_with_datetime_index_and_compressed_csv(tmp_path, candles):
    pq = tmp_path / "c.parquet"
    candles.to_parquet(pq)
    df = load_ohlcv_data(pq)
    _canonical(df)
    np.testing.assert_array_equal(df["close"].to_numpy(), candles["close"].to_numpy())
    gz = tmp_path / "c.csv.gz"
    with gzip.open(gz, "wt") as fh:
        candles.head(10).to_csv(fh, index_label="time")
    assert len(load_ohlcv_data(gz)) == 10


def test_unsorted_rows_are_sorted_and_counted(tmp_path, candles):
    shuffled = candles.iloc[[2, 0, 1, *range(3, 100)]]
    df = load_ohlcv_data(write_csv(shuffled, tmp_path / "u.csv"))
    assert df.index.is_monotonic_increasing
    assert df.attrs["unsorted_rows"] == 2


def test_missing_values_are_kept_for_cleaning(tmp_path):
    path = tmp_path / "nan.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n2024-01-01,1,2,0.5,1.5,\n"
        "2024-01-01T01:00,1,2,0.5,,3\n"
    )
    df = load_ohlcv_data(path)
    assert np.isnan(df["volume"].iloc[0]) and np.isnan(df["close"].iloc[1])


# --- one test per bad input ---------------------------------------------------------------


def _error(path, match):
    with pytest.raises(DataError, match=match) as info:
        load_ohlcv_data(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    _error(tmp_path / "nope.csv", "file not found")


def test_empty_file(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    _error(tmp_path / "empty.csv", "file is empty")


def test_header_only(tmp_path):
    (tmp_path / "h.csv").write_text("timestamp,open,high,low,close,volume\n")
    _error(tmp_path / "h.csv", "no data rows")


def test_unsupported_suffix(tmp_path):
    (tmp_path / "c.json").write_text("{}")
    _error(tmp_path / "c.json", "unsupported file type")


def test_missing_columns_named(tmp_path):
    (tmp_path / "m.csv").write_text("timestamp,open,high,close\n2024-01-01,1,2,1\n")
    _error(tmp_path / "m.csv", r"missing column\(s\) low, volume")


def test_non_numeric_value_names_column_and_line(tmp_path):
    (tmp_path / "n.csv").write_text(
        "timestamp,open,high,low,close,volume\n"
        "2024-01-01,1,2,0.5,1.5,1\n2024-01-02,1,2,0.5,oops,1\n"
    )
    _error(tmp_path / "n.csv", r"column 'close' has a non-numeric value 'oops' at line 3")


def test_unparseable_timestamp(tmp_path):
    (tmp_path / "t.csv").write_text(
        "timestamp,open,high,low,close,volume\n2024-01-01,1,2,0.5,1.5,1\nyesterday,1,2,0.5,1.5,1\n"
    )
    _error(tmp_path / "t.csv", r"unparseable timestamp 'yesterday' at line 3")


def test_missing_timestamp(tmp_path):
    (tmp_path / "t.csv").write_text(
        "timestamp,open,high,low,close,volume\n2024-01-01,1,2,0.5,1.5,1\n,1,2,0.5,1.5,1\n"
    )
    _error(tmp_path / "t.csv", r"missing timestamp at line 3")


def test_all_nan_column(tmp_path):
    (tmp_path / "v.csv").write_text(
        "timestamp,open,high,low,close,volume\n2024-01-01,1,2,0.5,1.5,\n2024-01-02,1,2,0.5,1.5,\n"
    )
    _error(tmp_path / "v.csv", r"column 'volume' has no values")


def test_malformed_csv(tmp_path):
    (tmp_path / "x.csv").write_text('timestamp,open,high,low,close,volume\n"2024-01-01,1,2\n')
    _error(tmp_path / "x.csv", "malformed CSV|non-numeric|unparseable")


def test_headerless_wrong_width(tmp_path):
    (tmp_path / "w.csv").write_text("1700000000,1,2,0.5\n")
    _error(tmp_path / "w.csv", "no header and 4 columns")


def test_binary_garbage_parquet(tmp_path):
    (tmp_path / "g.parquet").write_bytes(b"\x00\x01garbage")
    _error(tmp_path / "g.parquet", "not a readable Parquet file")


# --- validate_ohlcv ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.drop(columns="volume"), "missing column"),
        (lambda d: d.reset_index(drop=True), "DatetimeIndex"),
        (lambda d: d.iloc[[1, 0, 2]], "unsorted timestamp"),
        (lambda d: d.iloc[[0, 1, 1, 2]], "duplicate timestamp"),
        (lambda d: d.assign(close=[1.5, np.nan, 1.5]), "column 'close' is nan"),
        (lambda d: d.assign(low=[0.5, -1.0, 0.5]), "non-positive price in column 'low'"),
        (lambda d: d.assign(high=[1.2, 2.0, 2.0]), "high below max"),
        (lambda d: d.assign(low=[1.2, 0.5, 0.5]), "low above min"),
        (lambda d: d.assign(volume=[1.0, -1.0, 1.0]), "negative volume"),
    ],
)
def test_validate_ohlcv_names_the_problem(mutate, match):
    df = pd.DataFrame(
        {
            "open": [1.0] * 3,
            "high": [2.0] * 3,
            "low": [0.5] * 3,
            "close": [1.5] * 3,
            "volume": [1.0] * 3,
        },
        index=pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC"),
    )
    validate_ohlcv(df)
    with pytest.raises(DataError, match=match):
        validate_ohlcv(mutate(df))


# --- hard inputs (issue 8, deliverable 7) --------------------------------------------------


def _csv(tmp_path, text, name="h.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("value", "unit"),
    [
        ("61492596000", "seconds"),  # year 3918: used to wrap around int64 to 2165
        ("9300000000000000000", "nanoseconds"),  # just past int64 nanoseconds
        ("99999999999999999999", "nanoseconds"),  # past uint64 too
    ],
)
def test_epoch_beyond_2262_is_an_error_not_a_wrap_around(tmp_path, value, unit):
    path = _csv(tmp_path, f"{HEADER}\n1700000000,1,2,0.5,1.5,1\n{value},1,2,0.5,1.5,1\n")
    _error(path, rf"column 'timestamp' has an epoch '?{value}'? at line 3 that is out of range")
    with pytest.raises(DataError, match=unit):
        load_ohlcv_data(path)


def test_non_finite_epoch_is_an_error(tmp_path):
    path = _csv(tmp_path, f"{HEADER}\n1700000000,1,2,0.5,1.5,1\ninf,1,2,0.5,1.5,1\n")
    _error(path, r"column 'timestamp' has a non-finite epoch '?inf'? at line 3")


@pytest.mark.parametrize("when", ["3000-01-01T00:00:00Z", "1500-06-01", "1677-01-01 00:00"])
def test_iso_timestamp_out_of_range_is_an_error(tmp_path, when):
    path = _csv(
        tmp_path, f"{HEADER}\n2024-01-01T00:00:00.000000001Z,1,2,0.5,1.5,1\n{when},1,2,0.5,1.5,1\n"
    )
    _error(path, rf"column 'timestamp' has a timestamp '{when}' at line 3 that is out of range")


def test_datetime_parquet_out_of_ns_range_is_an_error(tmp_path):
    raw = pd.DataFrame(
        {"timestamp": np.array(["2024-01-01", "2900-01-01"], dtype="datetime64[s]")}
        | {c: [1.0, 1.0] for c in OHLCV_COLUMNS}
    )
    raw.to_parquet(tmp_path / "far.parquet")
    _error(tmp_path / "far.parquet", r"column 'timestamp' has a timestamp .*2900.* at row 1")


def _hourly(n, start="2024-01-01"):
    return candle_rows(n, start=start)


def test_one_row_centuries_away_is_an_error_naming_the_line(tmp_path):
    rows = _hourly(1000)
    rows[497] = "2165-03-01T00:00:00+00:00" + rows[497][25:]
    path = _csv(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n")
    _error(path, r"column 'timestamp' has an implausible timestamp '2165-03-01T00:00:00\+00:00'")
    with pytest.raises(DataError, match=r"at line 499: 141 years away from the bulk of the file"):
        load_ohlcv_data(path)


def test_epoch_with_a_dropped_digit_is_an_error(tmp_path):
    # 1704067200000 ms (2024) with one digit lost is 170406720000: read as ms it is 1975.
    start = 1_704_067_200_000
    lines = [f"{start + k * 3_600_000},1,2,0.5,1.5,1" for k in range(200)]
    lines[50] = "170406720000,1,2,0.5,1.5,1"
    path = _csv(tmp_path, HEADER + "\n" + "\n".join(lines) + "\n")
    _error(path, r"implausible timestamp '?170406720000'? .*at line 52")


def test_long_histories_still_load(tmp_path):
    days = pd.date_range("1950-01-03", "2024-12-31", freq="B")
    text = "date,open,high,low,close,volume\n" + "".join(
        f"{d.date()},1,2,0.5,1.5,10\n" for d in days
    )
    assert len(load_ohlcv_data(_csv(tmp_path, text, "daily.csv"))) == len(days)
    # a sparse record: yearly closes since 1900, then recent daily ones
    stamps = [*pd.date_range("1900-01-01", "2020-01-01", freq="YS"), *days[-300:]]
    text = "date,open,high,low,close,volume\n" + "".join(
        f"{d.date()},1,2,0.5,1.5,10\n" for d in stamps
    )
    assert len(load_ohlcv_data(_csv(tmp_path, text, "sparse.csv"))) == len(stamps)


def test_non_finite_prices_are_kept_for_the_cleaner(tmp_path):
    path = _csv(
        tmp_path, f"{HEADER}\n2024-01-01,1,2,0.5,1.5,1\n2024-01-01T01:00,1,inf,0.5,1.5,-inf\n"
    )
    df = load_ohlcv_data(path)
    assert df["high"].iloc[1] == np.inf and df["volume"].iloc[1] == -np.inf


@pytest.mark.parametrize("suffix", [".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zip"])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_or_truncated_archive_is_a_data_error(tmp_path, suffix, damage):
    data = compress(("\n".join([HEADER, *candle_rows(300)]) + "\n").encode(), suffix)
    data = data[: len(data) // 2] if damage == "truncated" else data[:8] + b"\x13" * 200
    path = tmp_path / f"c{suffix}"
    path.write_bytes(data)
    kind = {".csv.gz": "gzip", ".csv.bz2": "bz2", ".csv.xz": "xz", ".csv.zip": "zip"}[suffix]
    _error(path, rf"corrupt or truncated {kind} file \(.+\)")


def test_zip_with_several_members_or_none(tmp_path):
    path = tmp_path / "two.csv.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.csv", HEADER + "\n")
        zf.writestr("b.csv", HEADER + "\n")
    _error(path, r"zip archive holds 2 files \(a.csv, b.csv\); expected exactly one")
    path = tmp_path / "none.csv.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("folder/", b"")
    _error(path, r"zip archive holds no file")
    # macOS adds resource forks under __MACOSX/: they are not candles
    path = tmp_path / "mac.csv.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("c.csv", "\n".join([HEADER, *candle_rows(3)]) + "\n")
        zf.writestr("__MACOSX/._c.csv", b"\x00\x05\x16\x07")
    assert len(load_ohlcv_data(path)) == 3


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read mode 000")
def test_unreadable_file_mode_000(tmp_path):
    path = _csv(tmp_path, HEADER + "\n" + candle_rows(2)[0] + "\n")
    path.chmod(0)
    try:
        _error(path, r"cannot read the file \(Permission denied\)")
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
@pytest.mark.parametrize(
    "exc",
    [PermissionError(13, "Permission denied"), OSError(5, "Input/output error")],
    ids=["permission", "io"],
)
def test_read_error_is_a_data_error(tmp_path, monkeypatch, suffix, exc):
    path = tmp_path / f"c{suffix}"
    path.write_bytes(b"anything")

    def fail(self, *args, **kwargs):
        raise exc

    monkeypatch.setattr(pathlib.Path, "read_bytes", fail)
    monkeypatch.setattr(pathlib.Path, "open", fail)
    monkeypatch.setattr(builtins, "open", fail)
    _error(path, rf"cannot read the file \({exc.strerror}\)")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_and_directory_are_data_errors(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    _error(fifo, "not a regular file")  # and it does not block waiting for a writer
    (tmp_path / "dir.csv").mkdir()
    _error(tmp_path / "dir.csv", "is a directory")


def _metatrader(n, date_fmt, time_fmt, sep=",", header="Date,Time,Open,High,Low,Close,Volume"):
    index = pd.date_range("2024-01-02 13:00", periods=n, freq="h")
    lines = [header] if header else []
    for k, t in enumerate(index):
        cells = [t.strftime(date_fmt), t.strftime(time_fmt), "1.1", "1.2", "1.0", "1.15", str(k)]
        lines.append(sep.join(cells))
    return "\n".join(lines) + "\n", index.tz_localize("UTC")


@pytest.mark.parametrize(
    ("date_fmt", "time_fmt"), [("%Y.%m.%d", "%H:%M"), ("%Y-%m-%d", "%H:%M:%S")]
)
def test_separate_date_and_time_columns_are_combined(tmp_path, date_fmt, time_fmt):
    text, index = _metatrader(1000, date_fmt, time_fmt)
    df = load_ohlcv_data(_csv(tmp_path, text))
    _canonical(df)
    assert len(df) == 1000
    pd.testing.assert_index_equal(
        df.index, pd.DatetimeIndex(index, name="timestamp").as_unit("ns"), check_freq=False
    )
    assert df["volume"].tolist() == [float(k) for k in range(1000)]


def test_separate_date_and_time_bad_time_names_both_columns(tmp_path):
    text, _ = _metatrader(3, "%Y.%m.%d", "%H:%M")
    text = text.replace("2024.01.02,14:00", "2024.01.02,25:00")
    _error(
        _csv(tmp_path, text),
        r"column 'Date\+Time' has an unparseable timestamp "
        r"'2024.01.02 25:00' at line 3",
    )


def test_metatrader5_export_tabs_angle_brackets_utf16(tmp_path):
    header = "<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>"
    lines = [header]
    for k, t in enumerate(pd.date_range("2024-01-02", periods=48, freq="h")):
        lines.append(f"{t:%Y.%m.%d}\t{t:%H:%M:%S}\t1.1\t1.2\t1.0\t1.15\t{k + 5}\t0\t12")
    text = "\r\n".join(lines) + "\r\n"
    path = tmp_path / "EURUSD_H1.csv"
    path.write_bytes(text.encode("utf-16"))  # MT5 writes UTF-16 with a byte-order mark
    df = load_ohlcv_data(path)
    _canonical(df)
    assert len(df) == 48 and df.index[1] == pd.Timestamp("2024-01-02T01:00Z")
    # VOL (real volume) is all zero on forex: the tick volume is used instead
    assert df["volume"].tolist() == [float(k + 5) for k in range(48)]


def test_metatrader4_history_export_without_header(tmp_path):
    text, index = _metatrader(24, "%Y.%m.%d", "%H:%M", header="")
    df = load_ohlcv_data(_csv(tmp_path, text))
    pd.testing.assert_index_equal(
        df.index, pd.DatetimeIndex(index, name="timestamp").as_unit("ns"), check_freq=False
    )


def test_semicolon_separated(tmp_path):
    rows = [r.replace(",", ";") for r in candle_rows(5)]
    df = load_ohlcv_data(_csv(tmp_path, HEADER.replace(",", ";") + "\n" + "\n".join(rows)))
    _canonical(df)
    assert len(df) == 5


def test_headerless_iso_timestamps(tmp_path):
    path = _csv(
        tmp_path, "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n2024-01-01T01:00:00Z,1,2,0.5,1.5,11\n"
    )
    df = load_ohlcv_data(path)
    _canonical(df)
    assert df.index[1] == pd.Timestamp("2024-01-01T01:00Z")
    assert df["volume"].tolist() == [10.0, 11.0]


def test_headerless_row_with_missing_last_value(tmp_path):
    df = load_ohlcv_data(_csv(tmp_path, "1700000000,1,2,0.5,1.5,\n1700003600,1,2,0.5,1.5,3\n"))
    assert np.isnan(df["volume"].iloc[0]) and df["volume"].iloc[1] == 3.0


@pytest.mark.parametrize("header_comma", [",", ""])
def test_trailing_comma_on_every_line(tmp_path, header_comma):
    rows = [r + "," for r in candle_rows(4)]
    df = load_ohlcv_data(_csv(tmp_path, HEADER + header_comma + "\n" + "\n".join(rows) + "\n"))
    _canonical(df)
    assert len(df) == 4 and not df.isna().any().any()


def test_headerless_trailing_comma(tmp_path):
    df = load_ohlcv_data(_csv(tmp_path, "1700000000,1,2,0.5,1.5,10,\n1700003600,1,2,0.5,1.5,3,\n"))
    assert df["volume"].tolist() == [10.0, 3.0]


def test_extra_field_beyond_the_header_is_an_error(tmp_path):
    rows = candle_rows(4)
    rows[2] += ",7"
    _error(
        _csv(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n"),
        r"line 4 has 7 fields but the header names 6 columns",
    )
    rows = candle_rows(4)
    rows[0] += ",7"
    _error(
        _csv(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n"),
        r"line 2 has 7 fields but the header names 6 columns",
    )


def test_line_numbers_count_blank_lines(tmp_path):
    rows = candle_rows(4)
    rows[2] = rows[2].replace(rows[2].split(",")[4], "oops")
    text = "\n" + HEADER + "\n" + rows[0] + "\n\n" + "\n".join(rows[1:]) + "\n"
    _error(_csv(tmp_path, text), r"column 'close' has a non-numeric value 'oops' at line 6")


def test_yyyymmdd_integer_dates(tmp_path):
    df = load_ohlcv_data(
        _csv(
            tmp_path,
            "date,open,high,low,close,volume\n20240102,1,2,0.5,1.5,1\n20240103,1,2,0.5,1.5,1\n",
        )
    )
    assert df.index[0] == pd.Timestamp("2024-01-02", tz="UTC")


def test_validate_rejects_absurd_values():
    df = pd.DataFrame(
        {
            "open": [1.0, 1e308],
            "high": [2.0, 1e308],
            "low": [0.5, 1e308],
            "close": [1.5, 1e308],
            "volume": [1.0, 1.0],
        },
        index=pd.date_range("2024-01-01", periods=2, freq="h", tz="UTC"),
    )
    with pytest.raises(DataError, match=r"absurd value in column 'open'.*run clean_ohlcv_data"):
        validate_ohlcv(df)


def test_lines_of_separators_only_are_skipped_like_blank_lines(tmp_path):
    rows = candle_rows(3)
    text = HEADER + "\n" + rows[0] + "\n,,,,,\n" + rows[1] + "\n,\n" + rows[2] + "\n,,,,,\n"
    df = load_ohlcv_data(_csv(tmp_path, text))
    assert len(df) == 3
    bad = text.replace(rows[2], rows[2].replace(rows[2].split(",")[1], "x", 1))
    _error(_csv(tmp_path, bad), r"column 'open' has a non-numeric value 'x' at line 6")


def test_headerless_first_line_with_a_missing_marker_or_a_bad_cell(tmp_path):
    df = load_ohlcv_data(_csv(tmp_path, "1700000000,1,2,0.5,NULL,10\n1700003600,1,2,0.5,1.5,3\n"))
    assert np.isnan(df["close"].iloc[0])
    _error(
        _csv(tmp_path, "2024-01-01T00:00:00Z,1,2,0.5,1.5x,10\n"),
        r"line 1 starts with a timestamp, so the file is read as having no header, but its "
        r"cell 5 \('1.5x'\) is not a number",
    )


def test_header_naming_nothing(tmp_path):
    _error(_csv(tmp_path, "\n;;\n1;2;3\n"), r"line 2, the header, names no column")


def test_whole_years_are_not_read_as_1970_epochs(tmp_path):
    """A `date` column of years (1950, 1951, ...) once loaded as one-second bars of 1970."""
    path = tmp_path / "years.csv"
    rows = "".join(f"{y},1,2,0.5,1.5,10\n" for y in range(1950, 2025))
    path.write_text("date,open,high,low,close,volume\n" + rows)
    with pytest.raises(DataError, match=r"column 'date' .* every value of the column falls in"):
        load_ohlcv_data(path)


def test_a_repeated_price_column_is_an_error(tmp_path):
    path = tmp_path / "twice.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume,close\n"
        "2024-01-01T00:00:00Z,1,2,0.5,1.5,10,9\n2024-01-01T01:00:00Z,1,2,0.5,1.5,10,9\n"
    )
    with pytest.raises(DataError, match=r"twice.csv: column 'close' appears 2 times"):
        load_ohlcv_data(path)
