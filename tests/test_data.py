"""Loading candles: formats, aliases, timestamps, and one clear error per bad input."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from trademl import DataError, load_ohlcv_data, validate_ohlcv
from trademl.data import OHLCV_COLUMNS

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
