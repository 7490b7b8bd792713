"""The feature catalogue: shape, definitions, and the no-look-ahead / invariance properties."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib
from hypothesis import given
from hypothesis import strategies as st

from trademl import (
    ConfigError,
    DataError,
    FeatureConfig,
    InsufficientDataError,
    build_feature_matrix,
    feature_catalogue,
    feature_names,
)
from trademl import indicators as ind
from trademl.cli import catalogue_markdown
from trademl.features import FEATURE_GROUPS

from .conftest import ohlcv_frames

DOCS = Path(__file__).resolve().parents[1] / "docs" / "features.md"


def test_default_is_the_spec_49_features_in_seven_groups(candles):
    X, report = build_feature_matrix(candles, return_report=True)
    assert X.shape == (len(candles) - 50, 49)
    assert report.warmup_rows == 50 == FeatureConfig().warmup
    assert report.rows_out == len(X)
    cat = feature_catalogue()
    assert list(cat["group"].unique()) == list(FEATURE_GROUPS)
    assert cat.groupby("group", sort=False).size().to_dict() == {
        "price": 7,
        "returns": 6,
        "ema": 14,
        "rsi": 6,
        "volume": 6,
        "volatility": 4,
        "momentum": 6,
    }
    for name in (
        "upper_shadow",
        "pv_corr_10",
        "volume_zscore_20",
        "ema_dist_50",
        "rsi_14_norm",
        "atr_7_norm",
        "parkinson_vol_20",
        "roc_10",
        "accel_20",
    ):
        assert name in X.columns


def test_output_is_finite_float_and_aligned(candles):
    X = build_feature_matrix(candles)
    assert (X.dtypes == np.float64).all()
    assert np.isfinite(X.to_numpy()).all()
    assert X.index.equals(candles.index[50:])
    assert list(X.columns) == feature_names()


def test_warmup_is_exact(candles):
    """Every feature has a value from the warm-up row on, and some feature lacks one before it."""
    cfg = FeatureConfig()
    short = candles.iloc[: cfg.min_rows]
    X = build_feature_matrix(short)
    assert len(X) == 1
    lookbacks = feature_catalogue()["lookback"]
    assert lookbacks.max() == cfg.warmup


def test_price_features_by_hand():
    df = pd.DataFrame(
        {
            "open": [100.0] * 60,
            "high": [110.0] * 60,
            "low": [95.0] * 60,
            "close": [105.0] * 60,
            "volume": [1.0] * 60,
        },
        index=pd.date_range("2024", periods=60, freq="h", tz="UTC"),
    )
    row = build_feature_matrix(df).iloc[-1]
    assert row["open_norm"] == pytest.approx(100 / 105 - 1)
    assert row["hl_range"] == pytest.approx(15 / 105)
    assert row["body_ratio"] == pytest.approx(5 / 15)
    assert row["upper_shadow"] == pytest.approx(5 / 15)
    assert row["lower_shadow"] == pytest.approx(5 / 15)
    # constant closes: no move, RSI neutral, no momentum, zero-variance volume windows
    assert row["return_1"] == 0 and row["rsi_14_norm"] == 0 and row["momentum_10"] == 0
    assert row["volume_zscore_20"] == 0 and row["volume_ratio_5"] == 1 and row["pv_corr_10"] == 0
    assert row["ema_dist_50"] == pytest.approx(0.0, abs=1e-15)
    assert row["atr_14_norm"] == pytest.approx(15 / 105)


def test_flat_candles_with_zero_volume_are_neutral():
    df = pd.DataFrame(
        {c: [7.0] * 60 for c in ("open", "high", "low", "close")} | {"volume": 0.0},
        index=pd.date_range("2024", periods=60, freq="h", tz="UTC"),
    )
    X = build_feature_matrix(df)
    assert np.isfinite(X.to_numpy()).all()
    assert (X["volume_ratio_20"] == 1).all() and (X["body_ratio"] == 0).all()


@pytest.mark.parametrize("period", [5, 9, 20, 50])
def test_ema_matches_talib_and_pandas_adjust_false(candles, period):
    close = candles["close"].to_numpy()
    ours = ind.ema(close, period)
    ref = talib.EMA(close, timeperiod=period)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    # the recursion is pandas' ewm(adjust=False) once seeded with the first SMA
    seeded = np.r_[close[:period].mean(), close[period:]]
    pandas_ref = pd.Series(seeded).ewm(span=period, adjust=False).mean().to_numpy()
    np.testing.assert_allclose(ours[period - 1 :], pandas_ref, rtol=1e-12)


@pytest.mark.parametrize("period", [7, 14])
def test_rsi_and_atr_match_talib_wilder(candles, period):
    h, lo, c = (candles[k].to_numpy() for k in ("high", "low", "close"))
    for ours, ref in (
        (ind.rsi(c, period), talib.RSI(c, timeperiod=period)),
        (ind.atr(h, lo, c, period), talib.ATR(h, lo, c, timeperiod=period)),
        (ind.true_range(h, lo, c), talib.TRANGE(h, lo, c)),
    ):
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


def test_features_equal_talib_based_recomputation(candles):
    X = build_feature_matrix(candles)
    c = candles["close"].to_numpy()
    h, lo = candles["high"].to_numpy(), candles["low"].to_numpy()
    sl = slice(50, None)
    np.testing.assert_allclose(X["ema_dist_20"], (c / talib.EMA(c, 20) - 1)[sl], rtol=1e-9)
    np.testing.assert_allclose(X["rsi_7_norm"], ((talib.RSI(c, 7) - 50) / 50)[sl], atol=1e-10)
    np.testing.assert_allclose(X["atr_14_norm"], (talib.ATR(h, lo, c, 14) / c)[sl], rtol=1e-9)
    np.testing.assert_allclose(X["roc_10"], (talib.ROCP(c, 10))[sl], rtol=1e-9, atol=1e-15)
    v = candles["volume"]
    np.testing.assert_allclose(
        X["volume_zscore_20"],
        ((v - v.rolling(20).mean()) / v.rolling(20).std()).iloc[sl],
        rtol=1e-9,
    )
    np.testing.assert_allclose(X["rsi_14_overbought"], (talib.RSI(c, 14) > 70)[sl])


def test_config_changes_the_catalogue(candles):
    cfg = {
        "ema_periods": [10, 30],
        "rsi_periods": [14],
        "atr_periods": [14],
        "groups": ["ema", "rsi", "volatility"],
    }
    X = build_feature_matrix(candles, cfg)
    assert list(X.columns) == [
        "ema_dist_10",
        "ema_dist_30",
        "ema_slope_10",
        "ema_slope_30",
        "ema_spread_10_30",
        "ema_cross_10_30",
        "rsi_14_norm",
        "rsi_14_overbought",
        "rsi_14_oversold",
        "atr_14_norm",
        "parkinson_vol_10",
        "parkinson_vol_20",
    ]
    assert len(X) == len(candles) - 30


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"ema_periods": [20, 5]}, "strictly increasing"),
        ({"rsi_periods": [1]}, "integer >= 2"),
        ({"atr_periods": "14"}, "list of integers"),
        ({"groups": ["price", "astrology"]}, "astrology"),
        ({"rsi_oversold": 80}, "oversold"),
        ({"ema_period": [5]}, "unknown key"),
    ],
)
def test_bad_feature_config(cfg, match):
    with pytest.raises(ConfigError, match=match):
        feature_names(cfg)


def test_too_few_rows_says_how_many(candles):
    with pytest.raises(
        InsufficientDataError, match=r"30 rows, but the features need at least 51"
    ) as info:
        build_feature_matrix(candles.iloc[:30])
    assert (info.value.needed, info.value.got) == (51, 30)


def test_unclean_input_is_rejected(candles):
    bad = candles.copy()
    bad.iloc[70, 3] = np.nan
    with pytest.raises(DataError, match=r"column 'close' is nan .* clean_ohlcv_data"):
        build_feature_matrix(bad)
    with pytest.raises(DataError, match="duplicate timestamp"):
        build_feature_matrix(pd.concat([candles.iloc[:60], candles.iloc[59:80]]))


def test_catalogue_doc_is_current():
    assert DOCS.exists(), "docs/features.md is missing; regenerate it (see its header)"
    assert catalogue_markdown(feature_catalogue()) in DOCS.read_text()


# --- properties ------------------------------------------------------------------------------


@given(df=ohlcv_frames(), cut=st.integers(50, 139))
def test_no_look_ahead(df, cut):
    """A feature at bar t computed on df[:t+1] equals the value computed on the full frame."""
    cut = min(cut, len(df) - 1)
    full = build_feature_matrix(df)
    prefix = build_feature_matrix(df.iloc[: cut + 1])
    np.testing.assert_allclose(
        prefix.to_numpy(), full.loc[prefix.index].to_numpy(), rtol=0, atol=1e-9
    )


@given(
    df=ohlcv_frames(),
    k=st.sampled_from([-10, -3, -1, 1, 2, 7, 20]),
    which=st.sampled_from(["price", "volume"]),
)
def test_scale_invariance_for_powers_of_two(df, k, which):
    """Scaling by 2**k is exact in floating point, so features agree to the last bits.

    (Not bitwise: pandas' rolling correlation can round one ulp differently.)
    """
    scaled = df.copy()
    cols = ["open", "high", "low", "close"] if which == "price" else ["volume"]
    scaled[cols] = scaled[cols] * 2.0**k
    np.testing.assert_allclose(
        build_feature_matrix(scaled).to_numpy(),
        build_feature_matrix(df).to_numpy(),
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("factor", [0.001, 3.7, 12345.6])
def test_scale_invariance_any_constant(candles, factor):
    base = build_feature_matrix(candles)
    for cols in (["open", "high", "low", "close"], ["volume"]):
        scaled = candles.copy()
        scaled[cols] = scaled[cols] * factor
        pd.testing.assert_frame_equal(build_feature_matrix(scaled), base, rtol=1e-7, atol=1e-9)


@given(df=ohlcv_frames())
def test_deterministic_bit_for_bit(df):
    a = build_feature_matrix(df).to_numpy()
    b = build_feature_matrix(df.copy()).to_numpy()
    assert a.tobytes() == b.tobytes()
