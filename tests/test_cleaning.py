"""Cleaning: every policy, every count, and the row-accounting invariant."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trademl import CleaningConfig, ConfigError, DataError, clean_ohlcv_data, validate_ohlcv


def frame(rows, start="2024-01-01", freq="h", index=None):
    idx = (
        index if index is not None else pd.date_range(start, periods=len(rows), freq=freq, tz="UTC")
    )
    return pd.DataFrame(rows, columns=["open", "high", "low", "close", "volume"], index=idx)


OK = [100.0, 101.0, 99.0, 100.5, 10.0]


def invariant(report):
    assert report.rows_out == report.rows_in - report.rows_dropped + report.gap_rows_inserted


def test_clean_data_is_untouched(candles):
    out, report = clean_ohlcv_data(candles)
    pd.testing.assert_frame_equal(out, candles, check_freq=False)
    assert report.rows_dropped == report.rows_modified == 0
    assert report.freq == "0 days 01:00:00"


def test_input_not_modified(candles):
    raw = candles.copy()
    raw.iloc[5, 3] = np.nan
    before = raw.copy()
    clean_ohlcv_data(raw)
    pd.testing.assert_frame_equal(raw, before)


def test_unsorted_rows_sorted_and_counted():
    idx = pd.DatetimeIndex(["2024-01-01 02:00", "2024-01-01 00:00", "2024-01-01 01:00"], tz="UTC")
    out, report = clean_ohlcv_data(frame([OK] * 3, index=idx))
    assert out.index.is_monotonic_increasing
    assert report.unsorted_rows == 2
    with pytest.raises(DataError, match="out of time order"):
        clean_ohlcv_data(frame([OK] * 3, index=idx), {"unsorted": "error"})


@pytest.mark.parametrize(
    ("policy", "rows", "kept_close"), [("last", 2, 200.0), ("first", 2, 100.5), ("drop", 1, None)]
)
def test_duplicates(policy, rows, kept_close):
    idx = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 01:00"], tz="UTC")
    data = [OK, OK, [100.0, 201.0, 99.0, 200.0, 5.0]]
    out, report = clean_ohlcv_data(frame(data, index=idx), {"duplicates": policy})
    assert len(out) == rows
    assert report.duplicate_rows_dropped == 3 - rows
    if kept_close is not None:
        assert out["close"].iloc[-1] == kept_close
    invariant(report)


def test_duplicates_error_names_timestamp():
    idx = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 00:00"], tz="UTC")
    with pytest.raises(DataError, match=r"duplicate timestamps, first at 2024-01-01 00:00:00"):
        clean_ohlcv_data(frame([OK, OK], index=idx), {"duplicates": "error"})


def test_nonpositive_prices_dropped():
    data = [OK, [0.0, 1.0, 0.0, 1.0, 1.0], OK, [100.0, 101.0, -5.0, 100.0, 1.0]]
    out, report = clean_ohlcv_data(frame(data))
    assert len(out) == 2 and report.nonpositive_rows_dropped == 2
    invariant(report)
    with pytest.raises(DataError, match="price <= 0"):
        clean_ohlcv_data(frame(data), {"nonpositive_price": "error"})


def test_missing_values_filled_from_previous_close():
    data = [OK, [np.nan, np.nan, np.nan, np.nan, np.nan], [np.nan, 103.0, 100.0, 102.0, np.nan]]
    out, report = clean_ohlcv_data(frame(data))
    assert report.missing_rows_filled == 2 and report.rows_dropped == 0
    assert out.iloc[1].tolist() == [100.5, 100.5, 100.5, 100.5, 0.0]
    assert out.iloc[2].tolist() == [100.5, 103.0, 100.0, 102.0, 0.0]
    validate_ohlcv(out)
    invariant(report)


def test_leading_missing_row_without_price_is_dropped_and_counted():
    data = [[np.nan] * 5, OK]
    out, report = clean_ohlcv_data(frame(data))
    assert len(out) == 1 and report.missing_rows_dropped == 1
    invariant(report)


def test_missing_policies_drop_and_error():
    data = [OK, [np.nan, 101.0, 99.0, 100.0, 1.0], OK]
    out, report = clean_ohlcv_data(frame(data), {"missing": "drop"})
    assert len(out) == 2 and report.missing_rows_dropped == 1
    with pytest.raises(DataError, match="missing values, first at 2024-01-01 01:00"):
        clean_ohlcv_data(frame(data), {"missing": "error"})


def test_invalid_ohlc_repaired_or_dropped():
    data = [OK, [100.0, 99.0, 101.0, 100.5, 1.0], [100.0, 100.2, 99.0, 100.5, 1.0]]
    out, report = clean_ohlcv_data(frame(data))
    assert report.invalid_ohlc_repaired == 2
    assert out.iloc[1][["high", "low"]].tolist() == [101.0, 99.0]
    assert out.iloc[2]["high"] == 100.5
    validate_ohlcv(out)
    out, report = clean_ohlcv_data(frame(data), {"invalid_ohlc": "drop"})
    assert len(out) == 1 and report.invalid_ohlc_dropped == 2
    invariant(report)


def test_negative_volume():
    data = [OK, [100.0, 101.0, 99.0, 100.5, -3.0]]
    out, report = clean_ohlcv_data(frame(data))
    assert out["volume"].iloc[1] == 0.0 and report.negative_volume_zeroed == 1
    out, report = clean_ohlcv_data(frame(data), {"negative_volume": "drop"})
    assert len(out) == 1 and report.negative_volume_dropped == 1


def _spiky(candles, at=500, factor=3.0):
    raw = candles.copy()
    raw.iloc[at, :4] = raw.iloc[at, :4] * factor
    return raw


def test_outliers_are_kept_by_default_and_prices_never_changed(candles):
    # A real market event (an election-weekend gap, a central-bank move) must stay what it was:
    # by default an outlier is counted and reported, never rewritten.
    raw = _spiky(candles)
    out, report = clean_ohlcv_data(raw)
    assert report.outliers_kept >= 1 and report.outliers_clipped == 0
    pd.testing.assert_frame_equal(out, raw, check_freq=False)
    assert "outliers kept" in report.summary()


def test_outlier_spike_clipped_without_shifting_later_prices(candles):
    raw = _spiky(candles)
    out, report = clean_ohlcv_data(raw, {"outliers": "clip"})
    # The spike is clipped to the band; the reverting bar may sit just past the band's other
    # side and get clipped too, but the price path is back on the raw one right after.
    assert report.outliers_clipped in (1, 2)
    assert out["close"].iloc[500] < raw["close"].iloc[500] / 2
    assert out["close"].iloc[501] == pytest.approx(raw["close"].iloc[501], rel=0.02)
    pd.testing.assert_frame_equal(out.iloc[502:], raw.iloc[502:], check_freq=False)
    validate_ohlcv(out)


def test_outlier_policies(candles):
    raw = _spiky(candles)
    out, report = clean_ohlcv_data(raw, {"outliers": "drop"})
    assert report.outliers_dropped == 1 and len(out) == len(raw) - 1
    assert raw.index[500] not in out.index
    out, report = clean_ohlcv_data(raw, {"outliers": "keep"})
    assert report.outliers_kept >= 1 and len(out) == len(raw)
    with pytest.raises(DataError, match="return outliers"):
        clean_ohlcv_data(raw, {"outliers": "error"})


def test_gaps_reported_then_filled(candles):
    raw = candles.drop(candles.index[[100, 101, 102, 400]])
    out, report = clean_ohlcv_data(raw)
    assert (report.gaps, report.missing_bars) == (2, 4)
    assert report.largest_gap == "0 days 04:00:00"
    assert len(out) == len(raw)
    out, report = clean_ohlcv_data(raw, {"gaps": "fill"})
    assert report.gap_rows_inserted == 4 and len(out) == len(candles)
    filled = out.loc[candles.index[101]]
    prev_close = candles["close"].iloc[99]
    assert filled[["open", "high", "low", "close", "volume"]].tolist() == [prev_close] * 4 + [0.0]
    invariant(report)
    with pytest.raises(DataError, match="gap"):
        clean_ohlcv_data(raw, {"gaps": "error"})


def test_explicit_freq_and_bad_freq(candles):
    _, report = clean_ohlcv_data(candles, {"freq": "30min"})
    assert (report.gaps, report.missing_bars) == (1499, 1499)  # every 1h step skips a 30min bar
    _, report = clean_ohlcv_data(candles.iloc[::2], {"freq": "1h"})
    assert report.gaps == len(candles.iloc[::2]) - 1
    with pytest.raises(ConfigError, match="not understood"):
        CleaningConfig(freq="fortnightly-ish")


def test_bad_policy_and_unknown_key():
    with pytest.raises(ConfigError, match="cleaning.missing='guess'"):
        CleaningConfig(missing="guess")
    with pytest.raises(ConfigError, match="unknown key"):
        clean_ohlcv_data(frame([OK]), {"nope": 1})


def test_non_numeric_and_wrong_shape_rejected():
    df = frame([OK, OK]).astype({"close": object})
    df["close"] = ["a", "b"]
    with pytest.raises(DataError, match="column 'close' must be numeric"):
        clean_ohlcv_data(df)
    with pytest.raises(DataError, match="missing column"):
        clean_ohlcv_data(frame([OK]).drop(columns="volume"))


def test_report_summary_lists_counts():
    data = [OK, [np.nan] * 5, [100.0, 99.0, 101.0, 100.5, -1.0]]
    _, report = clean_ohlcv_data(frame(data))
    text = report.summary()
    assert "missing rows filled: 1" in text and "invalid ohlc repaired: 1" in text
    assert report.to_dict()["rows_modified"] == 3


_cell = st.one_of(st.floats(50.0, 150.0), st.just(np.nan), st.just(0.0), st.just(-1.0))


@given(
    rows=st.lists(st.lists(_cell, min_size=5, max_size=5), min_size=1, max_size=60),
    order=st.randoms(use_true_random=False),
    dup=st.integers(0, 5),
    missing=st.sampled_from(["fill", "drop"]),
    invalid=st.sampled_from(["repair", "drop"]),
    gaps=st.sampled_from(["report", "fill"]),
)
def test_any_input_cleans_to_valid_data_and_counts_add_up(rows, order, dup, missing, invalid, gaps):
    df = frame(rows)
    positions = list(range(len(df))) + [0] * min(dup, len(df))
    order.shuffle(positions)
    df = df.iloc[positions].iloc[:: 2 if len(df) > 20 else 1]
    out, report = clean_ohlcv_data(df, {"missing": missing, "invalid_ohlc": invalid, "gaps": gaps})
    invariant(report)
    assert report.rows_in == len(df)
    if len(out):
        validate_ohlcv(out)


# --- non-finite and absurd values (issue 8, deliverable 7) ---------------------------------


def _finite_and_squarable(out):
    values = out.to_numpy()
    assert np.isfinite(values).all()
    with np.errstate(over="raise", under="ignore"):
        assert np.isfinite(values**2).all()
        assert np.isfinite(values[:, :4] * values[:, 4:5]).all()
        assert np.isfinite(values[:, :4].prod(axis=1)).all()


def test_non_finite_values_are_dropped_and_counted():
    data = [OK, [100.0, np.inf, 99.0, 100.5, 1.0], OK, [100.0, 101.0, 99.0, 100.5, np.inf], OK]
    data.append([100.0, 101.0, 99.0, 100.5, -np.inf])
    out, report = clean_ohlcv_data(frame(data))
    assert report.nonfinite_rows_dropped == 3 and len(out) == 3
    assert "nonfinite rows dropped: 3" in report.summary()
    invariant(report)
    _finite_and_squarable(out)
    with pytest.raises(DataError, match=r"non-finite or absurd values, first at 2024-01-01 01:00"):
        clean_ohlcv_data(frame(data), {"absurd": "error"})


@pytest.mark.parametrize(
    "row",
    [
        [1e308, 1e308, 1e308, 1e308, 10.0],  # a price beyond any market
        [100.0, 101.0, 99.0, 100.5, 1e308],  # a volume beyond any market
        [100.0, 101.0, 1e-300, 100.5, 10.0],  # a price too small to square
        [100.0, 1e8, 99.0, 100.5, 10.0],  # a high 10^6 times the closes around it
        [1e8, 1e8, 1e8, 1e8, 10.0],  # a whole bar 10^6 times its neighbours
    ],
)
@pytest.mark.parametrize("outliers", ["clip", "keep", "drop"])
def test_absurd_values_are_dropped_and_counted(row, outliers):
    # early in the file, before the outlier test has the 20 bars of history it needs
    data = [OK, OK, OK, row, OK, OK, OK]
    out, report = clean_ohlcv_data(frame(data), {"outliers": outliers})
    assert report.absurd_rows_dropped == 1 and len(out) == 6
    assert frame(data).index[3] not in out.index
    invariant(report)
    _finite_and_squarable(out)
    validate_ohlcv(out)
    with pytest.raises(DataError, match=r"1 row\(s\) with non-finite or absurd values"):
        clean_ohlcv_data(frame(data), {"absurd": "error"})


def test_a_lasting_crash_is_not_absurd():
    # a price that falls a million-fold and stays there is a market, not a typo
    rows = [[100.0, 101.0, 99.0, 100.0, 1.0]] * 20 + [[1e-4, 1.1e-4, 0.9e-4, 1e-4, 1.0]] * 20
    out, report = clean_ohlcv_data(frame(rows))
    assert report.absurd_rows_dropped == 0 and len(out) == 40


def test_defaults_leave_normal_data_alone(candles):
    _, report = clean_ohlcv_data(candles * 1e-6)
    assert report.absurd_rows_dropped == report.nonfinite_rows_dropped == 0
    _, report = clean_ohlcv_data(candles * 1e6)
    assert report.absurd_rows_dropped == report.nonfinite_rows_dropped == 0


def test_inf_and_huge_values_in_a_file_never_reach_the_features(tmp_path, candles):
    from trademl.data import load_ohlcv_data
    from trademl.features import build_feature_matrix

    raw = candles.copy()
    raw.iloc[10, 3] = np.inf
    raw.iloc[200, 4] = 1e308
    raw.iloc[300, :4] = 1e308
    raw.iloc[400, 1] = raw.iloc[400, 1] * 1e6
    path = tmp_path / "bad.csv"
    raw.to_csv(path, index_label="timestamp")
    loaded = load_ohlcv_data(path)
    for outliers in ("clip", "keep", "drop"):
        out, report = clean_ohlcv_data(loaded, {"outliers": outliers})
        assert report.nonfinite_rows_dropped == 1 and report.absurd_rows_dropped == 3
        _finite_and_squarable(out)
        assert np.isfinite(build_feature_matrix(out).to_numpy()).all()


def test_gap_fill_refuses_to_insert_an_absurd_number_of_rows():
    idx = pd.DatetimeIndex(
        ["2024-01-01 00:00:00", "2024-01-01 00:00:01", "2024-01-01 00:00:02", "2030-01-01"],
        tz="UTC",
    )
    with pytest.raises(DataError, match=r"filling the gaps would insert 189\d+ rows"):
        clean_ohlcv_data(frame([OK] * 4, index=idx), {"gaps": "fill"})


def test_index_beyond_nanoseconds_and_duplicate_columns_are_data_errors():
    idx = pd.DatetimeIndex(np.array(["2024-01-01", "2900-01-01"], dtype="datetime64[s]"))
    with pytest.raises(DataError, match=r"timestamp 2900-01-01 00:00:00 at row 1 is out of range"):
        clean_ohlcv_data(frame([OK, OK], index=idx))
    df = pd.concat([frame([OK, OK]), frame([OK, OK])[["close"]]], axis=1)
    with pytest.raises(DataError, match=r"column 'close' appears 2 times"):
        clean_ohlcv_data(df)


def test_steps_beyond_292_years_do_not_overflow():
    idx = pd.DatetimeIndex(["1776-01-01", "2068-04-11"], tz="UTC").as_unit("ns")
    validate_ohlcv(frame([OK, OK], index=idx))  # np.diff of these times overflows int64
    with pytest.raises(DataError, match=r"more than 292 years apart"):
        clean_ohlcv_data(frame([OK, OK], index=idx))


def _hourly(start, end, keep):
    idx = pd.date_range(start, end, freq="h", tz="UTC", inclusive="left")
    idx = idx[keep(idx)].as_unit("ns").rename("timestamp")
    rows = [OK] * len(idx)
    return frame(rows, index=idx)


def _fx_open(idx):
    day, hour = idx.day_of_week, idx.hour
    return ~((day == 5) | ((day == 4) & (hour >= 22)) | ((day == 6) & (hour < 22)))


def test_fx_weekends_are_not_gaps_but_a_missing_weekday_hour_is():
    # FX trades from Sunday 22:00 to Friday 22:00 UTC: four weekends closed, no gap.
    raw = _hourly("2024-01-01", "2024-01-29", _fx_open)
    out, report = clean_ohlcv_data(raw, {"gaps": "fill"})
    assert report.calendar == "24/5"
    assert (report.gaps, report.missing_bars, report.gap_rows_inserted) == (0, 0, 0)
    pd.testing.assert_frame_equal(out, raw, check_freq=False)
    # A missing Wednesday hour is a gap, and filling inserts exactly that hour.
    holed = raw.drop(pd.Timestamp("2024-01-10 12:00", tz="UTC"))
    out, report = clean_ohlcv_data(holed, {"gaps": "fill"})
    assert (report.gaps, report.missing_bars, report.gap_rows_inserted) == (1, 1, 1)
    assert out.index.equals(raw.index)
    # A data hole over a weekend counts only the open hours: Friday 10:00 to Monday 10:00 UTC.
    hole = (raw.index > "2024-01-12 10:00") & (raw.index < "2024-01-15 10:00")
    _, report = clean_ohlcv_data(raw[~hole], {"gaps": "report"})
    assert report.missing_bars == int(hole.sum()) and report.gaps == 1


def test_fx_hours_follow_new_york_daylight_saving_time():
    # FX opens Sunday 17:00 and closes Friday 17:00 New York time: 22:00 UTC in winter,
    # 21:00 UTC in summer. A year of such bars has no gap; a missing Sunday open is one.
    idx = pd.date_range("2024-01-01", "2025-01-01", freq="h", tz="UTC", inclusive="left")
    ny = idx.tz_convert("America/New_York")
    day, hour = ny.day_of_week, ny.hour
    fx = idx[~((day == 5) | ((day == 4) & (hour >= 17)) | ((day == 6) & (hour < 17)))]
    raw = frame([OK] * len(fx), index=fx.as_unit("ns").rename("timestamp"))
    _, report = clean_ohlcv_data(raw)
    assert (report.calendar, report.gaps) == ("24/5", 0)
    summer_open = pd.Timestamp("2024-07-07 21:00", tz="UTC")  # Sunday 17:00 New York
    winter_open = pd.Timestamp("2024-01-07 22:00", tz="UTC")
    _, report = clean_ohlcv_data(raw.drop([summer_open, winter_open]))
    assert (report.gaps, report.missing_bars) == (2, 2)


def test_weekday_daily_data_reports_holidays_not_weekends():
    days = pd.bdate_range("2024-01-01", "2024-03-29", tz="UTC").as_unit("ns")
    holiday = pd.Timestamp("2024-01-15", tz="UTC")  # a Monday the exchange was closed
    raw = frame([OK] * (len(days) - 1), index=days.drop(holiday))
    out, report = clean_ohlcv_data(raw, {"gaps": "fill"})
    assert report.calendar == "weekdays"
    assert (report.gaps, report.missing_bars) == (1, 1)
    assert out.index.equals(days)
    # Told it is a 24/7 market, the same data has a gap at every weekend.
    _, report = clean_ohlcv_data(raw, {"calendar": "24/7"})
    assert report.gaps == 12  # twelve weekends (the holiday Monday extends one of them)


def test_calendar_inference_and_bad_calendar(candles):
    assert clean_ohlcv_data(candles)[1].calendar == "24/7"  # synthetic crypto has Saturdays
    short = _hourly("2024-01-01", "2024-01-08", _fx_open)  # under two weeks: no inference
    assert clean_ohlcv_data(short)[1].calendar == "24/7"
    with pytest.raises(ConfigError, match="cleaning.calendar"):
        CleaningConfig(calendar="nyse")


def test_daily_bars_stamped_east_of_utc_keep_their_own_weekdays():
    # Tokyo's Monday-Friday midnight bars are UTC Sunday-Thursday 15:00: weekends are not gaps
    days = pd.bdate_range("2024-01-01", "2024-06-28").tz_localize("Asia/Tokyo")
    idx = days.tz_convert("UTC").as_unit("ns").rename("timestamp")
    raw = frame([OK] * len(idx), index=idx)
    _, report = clean_ohlcv_data(raw, {"gaps": "fill"})
    assert report.calendar == "days:01236"
    assert (report.gaps, report.gap_rows_inserted) == (0, 0)
    _, report = clean_ohlcv_data(raw.drop(idx[40]))  # a missing trading day is still a gap
    assert (report.gaps, report.missing_bars) == (1, 1)
    assert CleaningConfig(calendar="days:01236").calendar == "days:01236"
    for bad in ("days:", "days:78", "days:0011"):
        with pytest.raises(ConfigError, match="days: and the UTC weekdays"):
            CleaningConfig(calendar=bad)
