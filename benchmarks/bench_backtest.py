"""Backtest speed: trademl's compiled engine against backtesting.py on the same signals.

Both engines trade the same precomputed signal series (ScalpingEMARSI on synthetic candles:
entries on the next open, ATR stop and target, 10 bps commission) in the same run. trademl
is timed on 100K and 1M bars (the whole ``Backtest.run``: signals check, loop, trades table
and metrics); backtesting.py on 100K bars (its per-bar Python loop). Prints bars per second
and the ratio. Targets: >= 1M bars/s and >= 5x backtesting.py.

Run: ``python benchmarks/bench_backtest.py``.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd

from trademl import generate_ohlcv
from trademl.backtest import Backtest
from trademl.strategies import ScalpingEMARSI


def _trademl(df: pd.DataFrame, sig: pd.DataFrame, repeats: int = 3) -> tuple[float, pd.DataFrame]:
    Backtest(df.iloc[:1000], sig.iloc[:1000]).run()  # compile (cached on disk afterwards)
    best, trades = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        # backtesting.py's strategy below ignores signals while a position is open
        result = Backtest(df, sig, fees_bps=10, slippage_bps=0, on_opposite="ignore").run()
        best = min(best, time.perf_counter() - t0)
        trades = result.trades
    return best, trades


def _backtesting_py(df: pd.DataFrame, sig: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    from backtesting import Backtest as BT
    from backtesting import Strategy

    side = sig["side"].to_numpy()
    sl = sig["sl_distance"].to_numpy()
    tp = sig["tp_distance"].to_numpy()

    class Signals(Strategy):
        def init(self):
            pass

        def next(self):
            i = len(self.data) - 1
            s = side[i]
            if s == 0 or self.position or not np.isfinite(sl[i]):
                return
            price = self.data.Close[-1]
            risk_units = 0.01 * self.equity / sl[i]
            fraction = min(risk_units * price / self.equity, 0.999)
            if s > 0:
                self.buy(size=fraction, sl=price - sl[i], tp=price + tp[i])
            else:
                self.sell(size=fraction, sl=price + sl[i], tp=price - tp[i])

    data = df.rename(columns=str.capitalize)
    bt = BT(data, Signals, cash=10_000_000, commission=0.001, finalize_trades=True)
    t0 = time.perf_counter()
    stats = bt.run()
    return time.perf_counter() - t0, stats["_trades"]


def main() -> None:
    warnings.simplefilter("ignore")
    big = generate_ohlcv(1_000_000, seed=3, momentum=0.3)
    sig_big = ScalpingEMARSI().generate_signals(big)
    df, sig = big.iloc[:100_000], sig_big.iloc[:100_000]
    print(
        f"signals: ScalpingEMARSI, {int((sig_big['side'] != 0).sum()):,} entry signals on 1M bars\n"
    )
    rows = []
    secs, trades = _trademl(df, sig)
    rows.append(("trademl", len(df), secs, trades))
    secs_1m, trades_1m = _trademl(big, sig_big)
    rows.append(("trademl", len(big), secs_1m, trades_1m))
    ref_secs, ref_trades = _backtesting_py(df, sig)
    rows.append(("backtesting.py 0.6", len(df), ref_secs, ref_trades))
    print(f"{'engine':<20} {'bars':>10} {'seconds':>9} {'bars/s':>14} {'trades':>8}")
    for name, n, s, t in rows:
        print(f"{name:<20} {n:>10,} {s:>9.3f} {n / s:>14,.0f} {len(t):>8,}")
    ours = len(df) / rows[0][2]
    ref = len(df) / ref_secs
    print(f"\ntrademl / backtesting.py on the same 100K bars: {ours / ref:,.0f}x")
    print(
        f"trademl on 1M bars: {len(big) / secs_1m:,.0f} bars/s "
        f"({'meets' if len(big) / secs_1m >= 1e6 else 'MISSES'} the 1M bars/s target)"
    )
    ours_t, ref_t = rows[0][3], ref_trades
    ref_keys = set(
        zip(
            pd.DatetimeIndex(ref_t["EntryTime"]).tz_localize(None),
            pd.DatetimeIndex(ref_t["ExitTime"]).tz_localize(None),
            strict=True,
        )
    )
    our_keys = set(
        zip(
            ours_t["entry_time"].dt.tz_localize(None),
            ours_t["exit_time"].dt.tz_localize(None),
            strict=True,
        )
    )
    print(
        f"cross-check: {len(ref_keys & our_keys):,} of {len(ref_keys):,} backtesting.py trades "
        "have the same entry and exit bar in trademl"
    )


if __name__ == "__main__":
    main()
