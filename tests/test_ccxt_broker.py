"""The ccxt broker against a fake Binance USD-M futures exchange on 127.0.0.1, through the
real ccxt client: orders, protective orders, reconciliation, refusals.

Nothing here reaches a real exchange: every request goes to ``tests/_fake_futures.py``.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from trademl import ConfigError, generate_ohlcv
from trademl._hydra import compose_config
from trademl.live.app import build_runtime

from ._fake_futures import FakeBinanceFutures

STEP = pd.Timedelta("1h")
SYMBOL = "BTC/USDT:USDT"


@pytest.fixture(autouse=True)
def _credentials(monkeypatch):
    monkeypatch.setenv("TRADEML_EXCHANGE_API_KEY", "test-key")
    monkeypatch.setenv("TRADEML_EXCHANGE_SECRET", "test-secret")


def session_config(tmp_path, fake: FakeBinanceFutures, first: pd.Timestamp, *extra: str):
    """``trademl live`` on the fake: a ccxt feed and the ccxt broker, ScalpingEMARSI."""
    cfg = compose_config(
        [
            f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
            "log_to_mlflow=false",
            "strategy.type=scalping_ema_rsi",
            "strategy.params=null",
            f"live.journal={tmp_path / 'j.db'}",
            "live.window=null",
            "live.durable=false",
            "live.mode=real",
            "live.confirm_real=true",
            "broker.type=ccxt",
            "broker.exchange=binanceusdm",
            "broker.resend_grace=0.05",
            "risk.size_step=0.001",
            "risk.min_size=0.001",
            f"feeds=[{{symbol: '{SYMBOL}', type: ccxt, exchange: binanceusdm, timeframe: 1h, "
            f"since: '{first}', poll_interval: 0.002, backoff: 0.01}}]",
            *extra,
        ],
        "live",
    )
    options = fake.ccxt_options(rateLimit=1)
    OmegaConf.update(cfg, "feeds.0.ccxt_options", options, force_add=True)
    OmegaConf.update(cfg, "broker.ccxt_options", options, merge=False)
    return cfg


def run_session(cfg, until: pd.Timestamp, timeout: float = 120.0):
    """Run the session in this process until it has traded the candle ``until``."""
    runtime, _ = build_runtime(cfg)
    trader = runtime.traders[0]

    async def session():
        async def watch():
            while trader.last_ts is None or trader.last_ts < until:
                await asyncio.sleep(0.005)
            runtime.request_stop()

        watcher = asyncio.create_task(watch())
        summary = await asyncio.wait_for(runtime.run(), timeout)
        await watcher
        return summary

    try:
        return asyncio.run(session()), trader
    finally:
        runtime.journal.close()


def backtest_trades(tmp_path, candles: pd.DataFrame, start: pd.Timestamp) -> pd.DataFrame:
    from trademl.backtest_run import run_backtest

    csv = tmp_path / "served.csv"
    candles.to_csv(csv, index_label="timestamp")
    result = run_backtest(
        compose_config(
            [
                f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                "data=csv",
                f"data.path={csv}",
                f"backtest.start='{start}'",
                "strategy=scalping_ema_rsi",
                "risk.size_step=0.001",
                "risk.min_size=0.001",
            ],
            "backtest",
        )
    ).result
    trades = result.trades
    return trades[trades["exit_time"] < candles.index[-1]].reset_index(drop=True)


def assert_same_trades(live: pd.DataFrame, bt: pd.DataFrame) -> None:
    live = live.reset_index(drop=True)
    assert len(live) == len(bt) > 5
    cols = ["side", "entry_time", "exit_time", "exit_reason"]
    pd.testing.assert_frame_equal(live[cols], bt[cols], check_dtype=False)
    for col in ("size", "entry_price", "exit_price", "pnl", "fees"):
        np.testing.assert_allclose(live[col], bt[col], rtol=1e-9, err_msg=col)


def test_a_session_through_the_ccxt_feed_and_broker_trades_as_the_backtest(tmp_path):
    """Orders on the fake exchange (market entries and exits, stop-market and take-profit
    orders resting there and triggered by its matching) make the backtest's trades: the
    same bars, sides and sizes, prices and fees from the exchange's fills."""
    candles = generate_ohlcv(700, seed=42, momentum=0.3, start="2025-01-01")
    first = candles.index[300]  # the first candle that may trade: 0..299 only warm up
    with FakeBinanceFutures(candles, clock=first + STEP) as fake:
        fake.autostep = True
        summary, trader = run_session(
            session_config(tmp_path, fake, candles.index[0]), candles.index[-1]
        )
        orders = list(fake.orders)
    bt = backtest_trades(tmp_path, candles, first)
    assert_same_trades(summary.trades, bt)
    market = [o for o in orders if o["type"] == "MARKET"]
    stops = [o for o in orders if o.get("orderType") == "STOP_MARKET"]
    assert {o["algoStatus"] for o in stops} <= {"FINISHED", "CANCELED", "EXPIRED", "NEW"}
    assert sum(o["algoStatus"] == "FINISHED" for o in stops) == (bt["exit_reason"] == "stop").sum()
    # every order once: one client id per order, none resent
    ids = [o.get("clientOrderId") or o.get("clientAlgoId") for o in orders]
    assert len(ids) == len(set(ids))
    assert len(market) >= len(bt)
