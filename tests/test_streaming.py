"""Streaming features equal the batch feature matrix, bar by bar, for any data and config."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trademl import DataError, FeatureConfig, build_feature_matrix, generate_ohlcv
from trademl import indicators as ind
from trademl.features import FEATURE_GROUPS
from trademl.streaming import FeatureStream

from .conftest import ohlcv_frames

TOL = 1e-9


def periods(draw, low: int, high: int, max_size: int = 3) -> list[int]:
    values = draw(st.lists(st.integers(low, high), min_size=1, max_size=max_size, unique=True))
    return sorted(values)


@st.composite
def feature_configs(draw) -> FeatureConfig:
    groups = draw(st.lists(st.sampled_from(FEATURE_GROUPS), min_size=1, max_size=7, unique=True))
    return FeatureConfig(
        ema_periods=tuple(periods(draw, 2, 30, 4)),
        rsi_periods=tuple(periods(draw, 2, 20)),
        atr_periods=tuple(periods(draw, 2, 20)),
        return_lags=tuple(periods(draw, 1, 10)),
        volatility_windows=tuple(periods(draw, 2, 20)),
        volume_windows=tuple(periods(draw, 2, 20)),
        corr_windows=tuple(periods(draw, 2, 20)),
        momentum_windows=tuple(periods(draw, 1, 12)),
        rsi_overbought=draw(st.floats(55, 90)),
        rsi_oversold=draw(st.floats(10, 45)),
        groups=tuple(groups),
    )


def stream_rows(
    df: pd.DataFrame, cfg: FeatureConfig, seed_rows: int, fs: FeatureStream | None = None
) -> pd.DataFrame:
    """Rows of warm_up(df[:seed_rows]) (its last bar's) then of update() per later candle."""
    fs = fs or FeatureStream(cfg)
    rows, bars = [], []
    if seed_rows:
        last = fs.warm_up(df.iloc[:seed_rows])
        assert (last is None) == (seed_rows <= cfg.warmup)
        if last is not None:
            rows.append(last)
            bars.append(df.index[seed_rows - 1])
    values = df[["open", "high", "low", "close", "volume"]].to_numpy()
    for k in range(seed_rows, len(df)):
        row = fs.update(df.index[k], *values[k])
        assert (row is None) == (k < cfg.warmup)
        if row is not None:
            rows.append(row)
            bars.append(df.index[k])
    return pd.DataFrame(rows, index=pd.DatetimeIndex(bars), columns=fs.names)


def assert_close(streamed: pd.DataFrame, batch: pd.DataFrame) -> None:
    assert list(streamed.columns) == list(batch.columns)
    batch = batch.loc[streamed.index]
    expected, got = batch.to_numpy(), streamed.to_numpy()
    err = np.abs(got - expected) / np.maximum(1.0, np.abs(expected))
    worst = np.unravel_index(int(np.argmax(err)), err.shape)
    assert err.max() <= TOL, (
        f"{batch.columns[worst[1]]} at {batch.index[worst[0]]}: streamed {got[worst]}, "
        f"batch {expected[worst]}"
    )


@settings(max_examples=60, deadline=None)
@given(data=st.data(), cfg=feature_configs())
def test_streamed_rows_equal_the_batch_matrix_for_any_data_config_and_seed_length(data, cfg):
    df = data.draw(ohlcv_frames(min_rows=cfg.min_rows, max_rows=cfg.min_rows + 120))
    seed_rows = data.draw(st.integers(0, len(df) - 1))
    # every streamed row (one per bar after the warm-up) equals the batch row of that bar,
    # which depends only on the candles up to it
    fs = FeatureStream(cfg, extra_atr_periods=(3,))
    streamed = stream_rows(df, cfg, seed_rows, fs)
    batch = build_feature_matrix(df, cfg)
    assert len(streamed) == len(batch.loc[df.index[max(seed_rows - 1, 0)] :])
    assert_close(streamed, batch)
    # the indicator values a strategy reads, whichever groups are selected: the batch ones
    close, high, low = (df[c].to_numpy() for c in ("close", "high", "low"))
    # (NaN, both sides, while the history is shorter than the period)
    for p in cfg.ema_periods:
        np.testing.assert_array_equal(fs.ema(p), ind.ema(close, p)[-1])
    for p in cfg.rsi_periods:
        np.testing.assert_array_equal(fs.rsi(p), ind.rsi(close, p)[-1])
    for p in (*cfg.atr_periods, 3):
        np.testing.assert_array_equal(fs.atr(p), ind.atr(high, low, close, p)[-1])


def test_default_features_on_long_history_equal_batch_and_indicator_values():
    df = generate_ohlcv(n=3000, seed=3)
    cfg = FeatureConfig()
    fs = FeatureStream(cfg, extra_atr_periods=(21,))
    assert_close(stream_rows(df, cfg, 0), build_feature_matrix(df, cfg))
    fs.warm_up(df)
    # the recursions are the batch ones to the last bit (same seed function, same operations)
    close, high, low = (df[c].to_numpy() for c in ("close", "high", "low"))
    assert fs.ema(50) == ind.ema(close, 50)[-1]
    assert fs.rsi(14) == ind.rsi(close, 14)[-1]
    assert fs.atr(21) == ind.atr(high, low, close, 21)[-1]
    assert fs.last_timestamp == df.index[-1]
    with pytest.raises(KeyError, match="not kept"):
        fs.ema(13)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: {**c, "ts": c["ts"] - pd.Timedelta(hours=2)}, "is before the last one"),
        (lambda c: {**c, "ts": c["ts"] - pd.Timedelta(hours=1)}, "repeats the last one"),
        (lambda c: {**c, "high": c["close"] * 0.5}, "do not contain"),
        (lambda c: {**c, "volume": -1.0}, "negative volume"),
        (lambda c: {**c, "close": float("nan")}, "close is nan"),
        (lambda c: {**c, "low": 0.0}, "prices must be positive"),
    ],
)
def test_a_bad_candle_is_a_data_error_and_changes_nothing(change, message):
    df = generate_ohlcv(n=200, seed=5)
    fs = FeatureStream(what="BTCUSDT")
    fs.warm_up(df.iloc[:150])
    before = (fs.count, fs._state.copy(), fs._buf.copy())
    last = df.iloc[149]
    candle = {"ts": df.index[149] + pd.Timedelta(hours=1), **last.to_dict()}
    bad = change(candle)
    with pytest.raises(DataError, match=message) as info:
        fs.update(bad["ts"], bad["open"], bad["high"], bad["low"], bad["close"], bad["volume"])
    assert "BTCUSDT" in str(info.value)
    assert fs.count == before[0]
    np.testing.assert_array_equal(fs._state, before[1])
    np.testing.assert_array_equal(fs._buf, before[2])
    # and the stream goes on as if the bad candle had never come
    later = zip(df.index[150:], df.iloc[150:].to_numpy(), strict=True)
    rows = [fs.update(ts, *r) for ts, r in later]
    streamed = pd.DataFrame(rows, index=df.index[150:], columns=fs.names)
    assert_close(streamed, build_feature_matrix(df))


@pytest.mark.parametrize("timestamp", [None, pd.NaT, "not a time"])
def test_a_candle_without_a_time_is_refused(timestamp):
    fs = FeatureStream(what="BTCUSDT")
    with pytest.raises(DataError, match="BTCUSDT: candle timestamp .* is not a time"):
        fs.update(timestamp, 1.0, 1.0, 1.0, 1.0, 1.0)
    assert fs.count == 0


def test_indicators_outside_the_selected_groups_are_exact_with_a_short_buffer():
    """The buffer holds every group's lookback (the kernel computes them all), so an EMA, RSI
    or ATR read from a stream whose selected groups need few bars is still the batch's."""
    df = generate_ohlcv(300, seed=3, momentum=0.3)
    cfg = FeatureConfig(ema_periods=(5, 30), rsi_periods=(21,), atr_periods=(7,), groups=("price",))
    fs = FeatureStream(cfg)
    assert_close(stream_rows(df, cfg, 0, fs), build_feature_matrix(df, cfg))
    close, high, low = (df[c].to_numpy() for c in ("close", "high", "low"))
    assert fs.ema(30) == ind.ema(close, 30)[-1]
    assert fs.rsi(21) == ind.rsi(close, 21)[-1]
    assert fs.atr(7) == ind.atr(high, low, close, 7)[-1]
