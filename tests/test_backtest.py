"""The backtester: hand-computed fills, stops, targets, fees and shorts; no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trademl import ConfigError, generate_ohlcv
from trademl.backtest import Backtest
from trademl.performance import performance_metrics

from .conftest import ohlcv_frames


def bars(rows):
    df = pd.DataFrame(rows, columns=["open", "high", "low", "close"])
    df["volume"] = 1.0
    df.index = pd.date_range("2024-01-01", periods=len(df), freq="h", tz="UTC")
    return df


def signals(df, at: dict[int, int], sl=2.0, tp=4.0):
    side = np.zeros(len(df), dtype=np.int8)
    for i, s in at.items():
        side[i] = s
    return pd.DataFrame({"side": side, "sl_distance": sl, "tp_distance": tp}, index=df.index)


FLAT = (100.0, 100.5, 99.5, 100.0)
NO_COSTS = {"fees_bps": 0.0, "slippage_bps": 0.0}


def run(rows, at, **kwargs):
    df = bars(rows)
    opts = {**NO_COSTS, **kwargs}
    sl, tp = opts.pop("sl", 2.0), opts.pop("tp", 4.0)
    return Backtest(df, signals(df, at, sl, tp), **opts).run()


def test_long_target_hit_exact_pnl():
    # signal on bar 0's close (100): stop 98, target 104; fill at bar 1's open 100.5
    rows = [FLAT, (100.5, 101.0, 100.0, 100.8), (100.8, 104.5, 100.6, 104.2), FLAT]
    r = run(rows, {0: 1})
    t = r.trades.iloc[0]
    size = 100.0 / 2.0  # 1% of 10,000 over the 2.0 stop distance (decided at the close)
    assert (t["side"], t["exit_reason"]) == ("LONG", "target")
    assert t["entry_price"] == 100.5 and t["exit_price"] == 104.0
    assert t["size"] == pytest.approx(size)
    assert t["pnl"] == pytest.approx(size * 3.5)
    assert (t["entry_time"], t["exit_time"]) == (r.equity.index[1], r.equity.index[2])
    assert r.metrics["final_equity"] == pytest.approx(10_000 + size * 3.5)


def test_stop_first_when_both_levels_are_in_one_bar():
    rows = [FLAT, (100.0, 100.2, 99.9, 100.0), (100.0, 105.0, 97.0, 103.0), FLAT]
    t = run(rows, {0: 1}).trades.iloc[0]
    assert t["exit_reason"] == "stop" and t["exit_price"] == 98.0


def test_gap_through_the_stop_fills_at_the_open_with_slippage():
    rows = [FLAT, (100.0, 100.2, 99.9, 100.0), (96.0, 97.0, 95.0, 96.5), FLAT]
    t = run(rows, {0: 1}, slippage_bps=10).trades.iloc[0]
    assert t["entry_price"] == pytest.approx(100.0 * 1.001)
    assert t["exit_reason"] == "stop" and t["exit_price"] == pytest.approx(96.0 * 0.999)


def test_short_with_fees_and_slippage():
    rows = [FLAT, (100.0, 100.3, 99.5, 99.6), (99.6, 99.8, 95.5, 96.0), FLAT]
    r = run(rows, {0: -1}, fees_bps=10, slippage_bps=5)
    t = r.trades.iloc[0]
    entry = 100.0 * (1 - 0.0005)  # a short sells: slippage lowers the fill
    # sizing counts round-trip fees at the decision close: 2.0 + 2 * 0.001 * 100
    size = 100.0 / 2.2
    assert t["side"] == "SHORT" and t["exit_reason"] == "target" and t["exit_price"] == 96.0
    assert t["entry_price"] == pytest.approx(entry)
    fees = 0.001 * size * (entry + 96.0)
    assert t["fees"] == pytest.approx(fees)
    assert t["pnl"] == pytest.approx(size * (entry - 96.0) - fees)
    assert r.metrics["final_equity"] == pytest.approx(10_000 + t["pnl"])


def test_opposite_signal_reverses_or_is_ignored():
    rows = [FLAT, FLAT, FLAT, FLAT, FLAT, FLAT]
    r = run(rows, {0: 1, 2: -1}, sl=5.0, tp=10.0)
    assert list(r.trades["side"]) == ["LONG", "SHORT"]
    assert list(r.trades["exit_reason"]) == ["signal", "end"]
    assert r.trades["entry_time"].iloc[1] == r.trades["exit_time"].iloc[0] == r.equity.index[3]
    r = run(rows, {0: 1, 2: -1}, sl=5.0, tp=10.0, on_opposite="ignore")
    assert list(r.trades["side"]) == ["LONG"] and r.trades["exit_reason"].iloc[0] == "end"


def test_time_stop_and_end_of_data():
    rows = [FLAT] * 8
    r = run(rows, {0: 1}, sl=5.0, tp=10.0, max_holding_bars=3)
    t = r.trades.iloc[0]
    assert t["exit_reason"] == "time" and t["bars_held"] == 3 and t["exit_price"] == 100.0
    r = run(rows, {5: 1}, sl=5.0, tp=10.0)
    assert r.trades["exit_reason"].tolist() == ["end"]
    assert r.trades["exit_time"].iloc[0] == r.equity.index[-1]


def test_signals_before_start_and_on_the_last_bar_are_not_traded():
    rows = [FLAT] * 6
    assert run(rows, {0: 1, 5: 1}, start=2).trades.empty
    r = run(rows, {1: 1, 3: -1}, start=2, sl=5.0, tp=10.0)
    assert r.trades["side"].tolist() == ["SHORT"]
    assert len(r.equity) == 4 and r.equity.index[0] == bars(rows).index[2]


def test_metrics_by_hand():
    idx = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC")
    equity = pd.Series([100.0, 110.0, 99.0, 121.0, 121.0], index=idx)
    trades = pd.DataFrame(
        {"pnl": [10.0, -11.0, 22.0], "return_pct": [1.0, -1.0, 2.0], "fees": [0.1, 0.1, 0.1]}
    )
    m = performance_metrics(equity, trades, pd.Series([0, 1, 1, 0, 0], index=idx))
    assert m["total_return"] == pytest.approx(0.21)
    assert m["max_drawdown"] == pytest.approx(99 / 110 - 1)
    assert m["win_rate"] == pytest.approx(2 / 3) and m["profit_factor"] == pytest.approx(32 / 11)
    assert m["exposure"] == pytest.approx(0.4) and m["trades"] == 3
    rets = np.diff(equity.to_numpy()) / equity.to_numpy()[:-1]
    assert m["sharpe"] == pytest.approx(rets.mean() / rets.std(ddof=1) * np.sqrt(365.25))


def test_bad_options():
    df = bars([FLAT] * 3)
    with pytest.raises(ConfigError):
        Backtest(df, signals(df, {}), on_opposite="double")
    with pytest.raises(ConfigError):
        Backtest(df, signals(df, {}), cash=0)


@given(
    df=ohlcv_frames(min_rows=30, max_rows=120), seed=st.integers(0, 10_000), k=st.integers(5, 110)
)
def test_no_look_ahead_in_the_engine(df, seed, k):
    """Trades closed before bar k are the same whether the data ends at k or runs on."""
    k = min(k, len(df) - 1)
    rng = np.random.default_rng(seed)
    sig = pd.DataFrame(
        {
            "side": rng.choice([-1, 0, 0, 1], size=len(df)).astype(np.int8),
            "sl_distance": df["close"].to_numpy() * rng.uniform(0.001, 0.03, len(df)),
            "tp_distance": df["close"].to_numpy() * rng.uniform(0.001, 0.05, len(df)),
        },
        index=df.index,
    )
    full = Backtest(df, sig, max_holding_bars=7).run().trades
    cut = Backtest(df.iloc[: k + 1], sig.iloc[: k + 1], max_holding_bars=7).run().trades
    before = df.index[k]
    pd.testing.assert_frame_equal(
        full[full["exit_time"] < before].reset_index(drop=True),
        cut[cut["exit_time"] < before].reset_index(drop=True),
    )


def test_the_trades_table_has_the_same_dtypes_with_and_without_trades():
    # found by test_no_look_ahead_in_the_engine: no trades gave object columns, trades str
    df = generate_ohlcv(100, seed=1)
    sig = pd.DataFrame({"side": np.int8(0), "sl_distance": 1.0, "tp_distance": 1.0}, df.index)
    none = Backtest(df, sig).run().trades
    some = Backtest(df, sig.assign(side=np.int8(1))).run().trades
    assert len(none) == 0 < len(some)
    assert none.dtypes.to_dict() == some.dtypes.to_dict()


def test_same_trades_as_backtesting_py_on_the_same_signals():
    """An independent engine agrees bar for bar on entries and exits (stops, targets, gaps)."""
    import warnings

    from backtesting import Backtest as ReferenceBacktest
    from backtesting import Strategy

    from trademl import generate_ohlcv
    from trademl.strategies import ScalpingEMARSI

    df = generate_ohlcv(6000, seed=21, momentum=0.3)
    sig = ScalpingEMARSI().generate_signals(df)
    ours = Backtest(df, sig, fees_bps=10, slippage_bps=0, on_opposite="ignore").run().trades
    side, sl, tp = (sig[c].to_numpy() for c in ("side", "sl_distance", "tp_distance"))

    class Signals(Strategy):
        def init(self):
            pass

        def next(self):
            i = len(self.data) - 1
            if side[i] == 0 or self.position or not np.isfinite(sl[i]):
                return
            price = self.data.Close[-1]
            size = min(0.01 * sl[i] ** -1 * price, 0.999)
            if side[i] > 0:
                self.buy(size=size, sl=price - sl[i], tp=price + tp[i])
            else:
                self.sell(size=size, sl=price + sl[i], tp=price - tp[i])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ReferenceBacktest(
            df.rename(columns=str.capitalize),
            Signals,
            cash=10_000_000,
            commission=0.001,
            finalize_trades=True,
        ).run()["_trades"]

    def key(a, b):
        return list(
            zip(
                pd.DatetimeIndex(a).tz_localize(None),
                pd.DatetimeIndex(b).tz_localize(None),
                strict=True,
            )
        )

    assert len(ours) == len(ref) > 50
    assert key(ours["entry_time"], ours["exit_time"]) == key(ref["EntryTime"], ref["ExitTime"])
