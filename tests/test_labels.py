"""Labels: forward-return and triple-barrier labellers, hand-checked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trademl import ConfigError, InsufficientDataError
from trademl.indicators import atr
from trademl.labels import LABEL_TO_INT, LabelConfig, align_data_for_training

S, F, L = LABEL_TO_INT["SHORT"], LABEL_TO_INT["FLAT"], LABEL_TO_INT["LONG"]


def closes(values, spread=0.0):
    c = np.asarray(values, dtype=float)
    return pd.DataFrame(
        {"open": c, "high": c * (1 + spread), "low": c * (1 - spread), "close": c, "volume": 1.0},
        index=pd.date_range("2024", periods=len(c), freq="h", tz="UTC"),
    )


def test_mapping_is_stable():
    assert LABEL_TO_INT == {"SHORT": 0, "FLAT": 1, "LONG": 2}


def test_forward_return_fixed_threshold_by_hand():
    df = closes([100, 101, 100.95, 99, 99.05, 99.05])
    res = align_data_for_training(
        df, horizon=1, config={"threshold_type": "fixed", "threshold": 0.005}
    )
    assert res.y.tolist() == [L, F, S, F, F]
    assert res.rows_dropped == {"no_future": 1, "no_atr": 0}
    np.testing.assert_allclose(res.forward_return.iloc[0], 0.01)
    assert res.class_counts == {"SHORT": 1, "FLAT": 3, "LONG": 1}
    assert res.y.index.equals(df.index[:-1])


def test_horizon_drops_the_unknown_future():
    df = closes(np.linspace(100, 120, 30))
    res = align_data_for_training(
        df, config={"threshold_type": "fixed", "threshold": 0.0, "horizon": 4}
    )
    assert len(res.y) == 26 and (res.y == L).all()
    np.testing.assert_allclose(
        res.forward_return, df["close"].shift(-4).iloc[:26] / df["close"].iloc[:26] - 1
    )


def test_atr_threshold_scales_with_volatility(candles):
    res = align_data_for_training(candles, config={"threshold": 0.3, "horizon": 2})
    a = atr(candles["high"].to_numpy(), candles["low"].to_numpy(), candles["close"].to_numpy(), 14)
    thr = 0.3 * a / candles["close"].to_numpy() * np.sqrt(2)
    fwd = candles["close"].shift(-2) / candles["close"] - 1
    expected = np.where(fwd > thr, L, np.where(fwd < -thr, S, F))
    keep = ~np.isnan(a) & fwd.notna().to_numpy()
    np.testing.assert_array_equal(res.y.to_numpy(), expected[keep])
    assert res.rows_dropped == {"no_future": 2, "no_atr": 14}
    assert set(res.class_balance) == {"SHORT", "FLAT", "LONG"}
    assert 0.15 < res.class_balance["FLAT"] < 0.6


def _barrier_frame(path):
    """Bars with a fixed 1.0 true range from the start, so ATR(2) is 1.0 when the path begins."""
    base = [(100.0, 100.5, 99.5, 100.0)] * 4
    rows = base + path
    df = pd.DataFrame(rows, columns=["open", "high", "low", "close"])
    df["volume"] = 1.0
    df.index = pd.date_range("2024", periods=len(df), freq="h", tz="UTC")
    return df


TB = {
    "method": "triple_barrier",
    "horizon": 3,
    "atr_period": 2,
    "sl_atr_mult": 1.0,
    "tp_atr_mult": 2.0,
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # entry = next open 100; long target 102, long stop 99; short target 98, short stop 101
        ([(100, 102.5, 99.8, 102)], L),  # long target first bar
        ([(100, 100.4, 97.5, 98)], S),  # short target
        ([(100, 100.4, 99.6, 100)] * 3, F),  # neither within the horizon
        ([(100, 102.5, 98.5, 101)], F),  # long: both in one bar -> stop first
        ([(100, 100.9, 99.2, 100.5), (100.5, 102.2, 100.1, 102)], L),  # target on the 2nd bar
        ([(100, 101.2, 99.5, 101), (101, 102.5, 100.5, 102)], L),  # short stopped, long wins later
        ([(100, 101.2, 99.5, 101), (101, 101.1, 98.5, 99)], F),  # short stopped, then long stopped
    ],
)
def test_triple_barrier_by_hand(path, expected):
    filler = [(100.0, 100.2, 99.8, 100.0)] * 4
    df = _barrier_frame(list(path) + filler)
    res = align_data_for_training(df, config=TB)
    # the label of the bar before the path (index 3): entry at the path's first open
    assert res.y.loc[df.index[3]] == expected


def test_triple_barrier_on_real_data_matches_a_direct_loop(candles):
    cfg = {"method": "triple_barrier", "horizon": 12, "sl_atr_mult": 1.5, "tp_atr_mult": 3.0}
    res = align_data_for_training(candles, config=cfg)
    h, lo, o = candles["high"].to_numpy(), candles["low"].to_numpy(), candles["open"].to_numpy()
    a = atr(h, lo, candles["close"].to_numpy(), 14)
    for t in range(14, len(candles) - 12, 37):
        entry, label = o[t + 1], F
        for j in range(t + 1, t + 13):
            long_sl, long_tp = lo[j] <= entry - 1.5 * a[t], h[j] >= entry + 3 * a[t]
            short_sl, short_tp = h[j] >= entry + 1.5 * a[t], lo[j] <= entry - 3 * a[t]
            if long_tp and not long_sl:
                label = L
                break
            if short_tp and not short_sl:
                label = S
                break
            if long_sl and short_sl:
                break
            if long_sl:  # long lost; a short can still win later unless its stop was hit
                entry_short_alive = not short_sl
                label = _continue_short(h, lo, entry, a[t], j, t + 12) if entry_short_alive else F
                break
            if short_sl:
                label = _continue_long(h, lo, entry, a[t], j, t + 12)
                break
        assert res.y.loc[candles.index[t]] == label, t


def _continue_short(h, lo, entry, a, j, last):
    for k in range(j, last + 1):
        if h[k] >= entry + 1.5 * a:
            return F
        if lo[k] <= entry - 3 * a:
            return S
    return F


def _continue_long(h, lo, entry, a, j, last):
    for k in range(j, last + 1):
        if lo[k] <= entry - 1.5 * a:
            return F
        if h[k] >= entry + 3 * a:
            return L
    return F


def test_bad_label_config_and_too_few_rows(candles):
    with pytest.raises(ConfigError, match="labels.method='oracle'"):
        LabelConfig(method="oracle")
    with pytest.raises(ConfigError, match="labels.horizon=0"):
        LabelConfig(horizon=0)
    with pytest.raises(ConfigError, match="threshold"):
        LabelConfig(threshold=-1)
    with pytest.raises(InsufficientDataError, match="need at least 16"):
        align_data_for_training(candles.iloc[:10])


@pytest.mark.parametrize("gap", [0.0, 0.003])
def test_triple_barrier_label_is_the_backtester_s_trade(gap):
    """LONG (SHORT) exactly when the backtester's long (short) trade, decided on that bar with
    the label's stop, target and horizon, exits at its target: opening gaps included."""
    from trademl import generate_ohlcv, indicators
    from trademl.backtest import Backtest

    df = generate_ohlcv(1500, seed=5)
    rng = np.random.default_rng(5)
    shift = 1 + gap * rng.standard_normal(len(df))  # the open jumps away from the last close
    df["open"] = df["open"] * shift
    df["high"] = df[["high", "open"]].max(axis=1)
    df["low"] = df[["low", "open"]].min(axis=1)
    cfg = LabelConfig(method="triple_barrier", horizon=12, sl_atr_mult=1.5, tp_atr_mult=3.0)
    labels = align_data_for_training(df, config=cfg).y
    atr = indicators.atr(df["high"].to_numpy(), df["low"].to_numpy(), df["close"].to_numpy(), 14)
    checked = 0
    for t in range(60, len(df) - 20, 9):
        if df.index[t] not in labels.index:
            continue
        for side, name in ((1, "LONG"), (-1, "SHORT")):
            signals = pd.DataFrame(
                0.0, index=df.index, columns=["side", "sl_distance", "tp_distance"]
            )
            signals.iloc[t] = [side, 1.5 * atr[t], 3.0 * atr[t]]
            result = Backtest(df, signals, fees_bps=0, slippage_bps=0, max_holding_bars=12).run()
            trade = result.trades.iloc[0]
            assert (trade["exit_reason"] == "target") == (
                labels.iloc[labels.index.get_loc(df.index[t])] == LABEL_TO_INT[name]
            ), (t, side, trade["exit_reason"])
            checked += 1
    assert checked > 200
