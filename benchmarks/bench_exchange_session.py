"""A live session through the ccxt feed and the ccxt broker, end to end, on loopback.

``trademl live`` (ScalpingEMARSI, in this process) trades ``--traded`` candles after
``--warmup`` catch-up candles against the fake Binance USD-M futures exchange of the test suite
(``tests/_fake_futures.py``, the real ccxt ``binanceusdm`` client, a clock that moves one
candle each time the session waits for the next). Then it checks the session's trades against
``trademl backtest`` on the same candles (same bars, sides and sizes; prices, fees and P&L to
1e-9), that every client order id was executed once, and that ``trademl live report`` finds no
divergence. It prints the session's time per traded candle and the reference timed in the same
run: the backtest of the same candles, including its signals.

Run from the repository root: ``python benchmarks/bench_exchange_session.py [--traded 2000]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' fake exchange

os.environ.setdefault("TRADEML_EXCHANGE_API_KEY", "bench-key")
os.environ.setdefault("TRADEML_EXCHANGE_SECRET", "bench-secret")


def main(traded: int, warmup: int) -> None:
    from tests import _binance_errors
    from tests._fake_futures import FakeBinanceFutures
    from tests.test_ccxt_broker import (
        STEP,
        assert_same_trades,
        backtest_trades,
        run_session,
        session_config,
    )

    from trademl import generate_ohlcv
    from trademl.live.divergence import divergence_report

    _binance_errors.install()
    tmp = Path(tempfile.mkdtemp(prefix="bench-exchange-"))
    candles = generate_ohlcv(warmup + traded, seed=42, momentum=0.3, start="2025-01-01")
    first = candles.index[warmup]
    with FakeBinanceFutures(candles, clock=first + STEP) as fake:
        fake.autostep = True
        t0 = time.perf_counter()
        summary, _ = run_session(
            session_config(tmp, fake, candles.index[0]), candles.index[-1], timeout=3600
        )
        session = time.perf_counter() - t0
        executions = fake.executions()
        requests = len(fake.requests)
    t0 = time.perf_counter()
    bt = backtest_trades(tmp, candles, first)
    reference = time.perf_counter() - t0
    assert_same_trades(summary.trades, bt)
    assert set(executions.values()) == {1}, "a client order id was executed twice"
    report = divergence_report(tmp / "j.db")
    assert not report.diverged, report.text()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"{traded} traded candles after {warmup} catch-up; load average {load}")
    print(f"{'':36} {'seconds':>8} {'ms/candle':>10} {'ratio':>6}")
    print(f"{'backtest (reference)':36} {reference:8.2f} {1e3 * reference / traded:10.3f} {1:6.0f}")
    print(
        f"{'live session, ccxt feed and broker':36} {session:8.2f} "
        f"{1e3 * session / traded:10.2f} {session / reference:6.0f}"
    )
    print(
        f"trades: {len(summary.trades)} live = {len(bt)} backtest (prices, fees, P&L to 1e-9); "
        f"{len(executions)} orders executed once each; {requests} requests to the exchange; "
        "divergence report: none"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traded", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args()
    main(args.traded, args.warmup)
