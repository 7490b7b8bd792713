"""Portfolio backtest speed: 3 symbols x 20,000 bars, shared and per_symbol, against the
reference measured in the same run: three single-symbol ``Backtest.run`` on the same signals.

All on precomputed signals (ScalpingEMARSI on synthetic candles), so only the engines are
timed: the whole ``run`` (signals check, the compiled loop, trades tables and metrics), best of
5 after a compiling run. Prints milliseconds and bars per second.

Run: ``python benchmarks/bench_portfolio.py``.
"""

from __future__ import annotations

import time

from trademl import generate_ohlcv
from trademl.backtest import Backtest
from trademl.portfolio import PortfolioBacktest
from trademl.strategies import ScalpingEMARSI


def _best(run, repeats: int = 5) -> float:
    run()  # compile (cached on disk afterwards)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def main(symbols: int = 3, bars: int = 20_000) -> None:
    data = {
        f"S{i}": generate_ohlcv(bars, seed=i, momentum=0.3, start="2020-01-01")
        for i in range(symbols)
    }
    strategy = ScalpingEMARSI()
    signals = {s: strategy.generate_signals(df) for s, df in data.items()}
    total = symbols * bars
    rows = [
        (
            f"{symbols} x Backtest (reference)",
            _best(lambda: [Backtest(data[s], signals[s]).run() for s in data]),
        ),
        (
            "PortfolioBacktest per_symbol",
            _best(lambda: PortfolioBacktest(data, signals, portfolio="per_symbol").run()),
        ),
        (
            "PortfolioBacktest shared",
            _best(lambda: PortfolioBacktest(data, signals, portfolio="shared").run()),
        ),
    ]
    print(f"{symbols} symbols x {bars:,} bars")
    print(f"{'engine':34} {'ms':>8} {'bars/s':>12} {'vs ref':>7}")
    for name, sec in rows:
        print(f"{name:34} {1e3 * sec:8.1f} {total / sec:12,.0f} {sec / rows[0][1]:6.2f}x")


if __name__ == "__main__":
    main()
