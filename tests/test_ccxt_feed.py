"""The ccxt feed against a fake Binance on 127.0.0.1, through the real ccxt client.

Nothing here reaches a real exchange: every request goes to ``tests/_fake_exchange.py``.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from trademl import ConfigError, DataError, generate_ohlcv
from trademl._hydra import compose_config
from trademl.live.app import build_runtime
from trademl.live.ccxt_feed import CcxtFeed

from ._fake_exchange import FakeBinance

STEP = pd.Timedelta("1h")


@pytest.fixture(scope="module")
def series() -> pd.DataFrame:
    return generate_ohlcv(2600, seed=5, start="2025-01-01")


@pytest.fixture
def fake(series):
    with FakeBinance(series) as server:
        yield server


def make_feed(fake: FakeBinance, **kwargs) -> CcxtFeed:
    options = kwargs.pop("ccxt_options", None) or fake.ccxt_options()
    settings = {"poll_interval": 0.01, "backoff": 0.01, "max_backoff": 0.05, **kwargs}
    settings.setdefault("stream", "rest")  # the REST tests; the websocket ones say so
    return CcxtFeed("BTC/USDT", exchange="binance", ccxt_options=options, **settings)


def frame(candles) -> pd.DataFrame:
    index = pd.DatetimeIndex([c.timestamp for c in candles], name="timestamp")
    cols = ["open", "high", "low", "close", "volume"]
    return pd.DataFrame([[getattr(c, k) for k in cols] for c in candles], index=index, columns=cols)


async def collect(feed, until: pd.Timestamp, *, after=None, on_candle=None, timeout=30.0):
    """Candles from ``feed.candles(after)`` up to ``until``; ``on_candle(got)`` after each."""
    got = []

    async def run():
        agen = feed.candles(after)
        try:
            async for candle in agen:
                got.append(candle)
                if on_candle is not None:
                    on_candle(got)
                if candle.timestamp >= until:
                    return
        finally:
            await agen.aclose()

    await asyncio.wait_for(run(), timeout)
    return got


def test_history_equals_the_served_candles_across_pages(fake, series):
    feed = make_feed(fake, since=str(series.index[0]))
    history = feed.history(None)
    served = fake.closed()
    assert len(served) == 2600
    pd.testing.assert_frame_equal(history, served, check_freq=False)
    assert fake.klines_requests() == 3  # 1000 + 1000 + 600, with ccxt's rate limiter on
    assert feed._ex.enableRateLimit is True
    until = series.index[1234]
    pd.testing.assert_frame_equal(feed.history(until), served.loc[:until], check_freq=False)
    # without since: the last `warmup` closed candles
    recent = make_feed(fake, warmup=150).history(None)
    pd.testing.assert_frame_equal(recent, served.iloc[-150:], check_freq=False)


def test_history_leaves_out_the_forming_candle(fake, series):
    fake.set_clock(series.index[2000] + pd.Timedelta("30min"))  # candle 2000 is forming
    history = make_feed(fake, since=str(series.index[1500])).history(None)
    assert history.index[-1] == series.index[1999]
    pd.testing.assert_frame_equal(history, series.iloc[1500:2000], check_freq=False)


def test_candles_are_closed_only_and_in_order_as_the_clock_advances(fake, series):
    fake.set_clock(series.index[1100] + pd.Timedelta("20min"))
    feed = make_feed(fake, since=str(series.index[1000]))

    async def scenario():
        agen = feed.candles(None)
        got = [await agen.__anext__() for _ in range(100)]  # 1000..1099: closed by the clock
        # candle 1100 is forming: nothing comes while the clock stands still
        pending = asyncio.ensure_future(agen.__anext__())
        done, _ = await asyncio.wait({pending}, timeout=0.3)
        assert not done
        fake.advance(ms=30 * 60_000)  # 1100 has now closed (the clock is 10 min into 1101)
        got.append(await asyncio.wait_for(pending, 5))
        for _ in range(5):
            fake.advance(1)
            got.append(await asyncio.wait_for(agen.__anext__(), 5))
        await agen.aclose()
        return got

    got = asyncio.run(scenario())
    pd.testing.assert_frame_equal(frame(got), series.iloc[1000:1106], check_freq=False)
    assert all(c.symbol == "BTC/USDT" for c in got)


def test_twenty_forced_disconnects_lose_and_duplicate_no_candle(fake, series, caplog):
    fake.set_clock(series.index[200] + STEP)  # 0..200 closed
    feed = make_feed(fake, since=str(series.index[0]), ccxt_options=fake.ccxt_options(timeout=300))
    faults = iter(
        [lambda: fake.drop(1)] * 8
        + [lambda: fake.error(1, 503)] * 4
        + [lambda: fake.error(1, 500)] * 4
        + [lambda: fake.error(1, 429)] * 2
        + [lambda: fake.delay(1, 0.5)] * 2  # longer than ccxt's timeout: RequestTimeout
    )

    def on_candle(got):
        if len(got) > 200 and len(got) % 10 == 0:  # live: a fault, then 7 candles close
            fault = next(faults, None)
            if fault is not None:
                fault()
            fake.advance(7)
        elif len(got) > 200:
            fake.advance(1)

    with caplog.at_level(logging.WARNING, logger="trademl.live"):
        got = asyncio.run(collect(feed, series.index[450], on_candle=on_candle, timeout=60))
    served = fake.closed().loc[: series.index[450]]
    assert [c.timestamp for c in got] == list(served.index)  # none lost, none twice
    pd.testing.assert_frame_equal(frame(got), served, check_freq=False)
    assert fake.faults["dropped"] == 8 and fake.faults["errors"] == 10
    assert fake.faults["delayed"] == 2
    assert feed.stats["errors"] == 20
    assert sum("reconnecting" in r.getMessage() for r in caplog.records) == 20


def test_repeated_candles_are_delivered_once(fake, series):
    fake.set_clock(series.index[50] + STEP)
    feed = make_feed(fake, since=str(series.index[0]))

    def on_candle(got):
        if len(got) > 50:
            fake.repeat(1, k=5)  # the next answer repeats 5 served candles and its last one
            fake.advance(1)

    got = asyncio.run(collect(feed, series.index[80], on_candle=on_candle))
    pd.testing.assert_frame_equal(frame(got), series.iloc[:81], check_freq=False)
    # each repeated answer held its first candle twice (the forming last one is dropped)
    assert fake.faults["repeated"] >= 20
    assert feed.stats["duplicates"] >= fake.faults["repeated"]


def test_a_withheld_candle_is_waited_for_and_the_gap_filled_in_order(fake, series):
    fake.set_clock(series.index[30] + STEP)
    fake.withhold(series.index[20:22])  # served later
    feed = make_feed(fake, since=str(series.index[0]), gap_wait=1000)
    polls, seen = [], []

    def on_candle(got):
        if len(got) == 20:  # the candles before the hole came; later ones wait behind it
            polls.append(feed.stats["polls"])
            polls.append(asyncio.get_running_loop().create_task(release_after_5_polls(got)))

    async def release_after_5_polls(got):
        while feed.stats["polls"] < polls[0] + 5:
            await asyncio.sleep(0.005)
        seen.append(len(got))  # 5 polls on, still nothing past the hole
        fake.release()

    got = asyncio.run(collect(feed, series.index[30], on_candle=on_candle))
    assert seen == [20]
    pd.testing.assert_frame_equal(frame(got), series.iloc[:31], check_freq=False)
    assert feed.stats["gaps"] == 0


def test_a_candle_missing_for_good_is_skipped_after_gap_wait_and_counted(fake, series, caplog):
    fake.set_clock(series.index[30] + STEP)
    fake.withhold([series.index[10]])
    feed = make_feed(fake, since=str(series.index[0]), gap_wait=3)
    with caplog.at_level(logging.WARNING, logger="trademl.live"):
        got = asyncio.run(collect(feed, series.index[30]))
    expected = series.iloc[:31].drop(series.index[10])
    pd.testing.assert_frame_equal(frame(got), expected, check_freq=False)
    assert feed.stats["gaps"] == 1
    assert any("candles missing before" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("values", "problem"),
    [({"high": 1.0}, "high"), ({"volume": -5.0}, "volume"), ({"close": float("nan")}, "close")],
)
def test_a_bad_candle_is_refused_not_passed_on(fake, series, values, problem):
    fake.set_clock(series.index[40] + STEP)
    bad = series.index[25]
    fake.corrupt(bad, **values)
    feed = make_feed(fake, since=str(series.index[0]))
    got = []

    async def run():
        async for candle in feed.candles(None):
            got.append(candle)

    with pytest.raises(DataError, match=problem) as err:
        asyncio.run(asyncio.wait_for(run(), 10))
    assert str(bad.tz_convert(None)) in str(err.value) or str(bad) in str(err.value)
    # the candles before it, then the error: nothing at or after the bad candle
    pd.testing.assert_frame_equal(frame(got), series.iloc[:25], check_freq=False)
    with pytest.raises(DataError, match=problem):
        feed.history(None)


def test_history_gives_up_after_max_retries_with_one_line(fake, series):
    feed = make_feed(fake, since=str(series.index[0]), max_retries=3)
    fake.error(10, 503)
    with pytest.raises(DataError, match="failed fetching the time 3 times, last: ExchangeNot"):
        feed.history(None)


def live_cfg(tmp_path, *feed: str):
    spec = ",".join(feed)
    return compose_config(
        [
            "strategy.type=scalping_ema_rsi",
            "strategy.params=null",
            "log_to_mlflow=false",
            f"live.journal={tmp_path / 'j.db'}",
            f"feeds=[{{{spec}}}]",
        ],
        "live",
    )


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        (
            ["exchange: binanse"],
            "feed BTC/USDT: exchange='binanse' is not a ccxt exchange id; did you mean 'binance'",
        ),
        (["exchange: binance", "timeframe: 1x"], "timeframe='1x' is not a candle interval"),
        (["exchange: binance", "timeframe: 7m"], "timeframe='7m' is not offered by binance"),
        (["exchange: binance", "pol_interval: 1"], "pol_interval.*did you mean 'poll_interval'"),
        (["exchange: binance", "backoff: 0"], "backoff=0 must be > 0"),
        (["exchange: binance", "since: yesterday"], "since='yesterday' is not a time"),
        (["exchange: binance", "ccxt_options: {apiKey: k}"], "holds apiKey; a feed reads public"),
    ],
)
def test_config_errors_are_one_line_before_anything_runs(tmp_path, feed, message):
    cfg = live_cfg(tmp_path, "symbol: BTC/USDT", "type: ccxt", *feed)
    with pytest.raises(ConfigError, match=message) as err:
        build_runtime(cfg)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "j.db").exists()


def test_an_unknown_symbol_is_refused_after_loading_the_markets(fake, tmp_path):
    cfg = live_cfg(tmp_path, "symbol: ETH/USDT", "type: ccxt", "exchange: binance")
    OmegaConf.update(cfg, "feeds.0.ccxt_options", fake.ccxt_options(), force_add=True)
    with pytest.raises(ConfigError, match="'ETH/USDT' is not a market of binance; did you mean"):
        build_runtime(cfg)
    assert not (tmp_path / "j.db").exists()
    assert [path for path, _ in fake.requests] == ["/api/v3/exchangeInfo"]


def test_ccxt_is_imported_only_when_a_feed_is_built():
    # `import trademl` and `trademl --help` load no pandas (tests/test_imports.py), so no feed
    # module; the modules that name the feed type import ccxt inside functions only
    import ast
    import inspect

    import trademl.live.app
    import trademl.live.ccxt_feed
    import trademl.schemas

    for module in (trademl.live.ccxt_feed, trademl.live.app, trademl.schemas):
        tree = ast.parse(inspect.getsource(module))
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {a.name for n in top for a in n.names} | {
            n.module for n in top if isinstance(n, ast.ImportFrom)
        }
        assert not any(name and name.split(".")[0] == "ccxt" for name in names), module


def test_fake_exchange_serves_binance_semantics(fake, series):
    fake.set_clock(series.index[10] + pd.Timedelta("5min"))
    ex = make_feed(fake)._ex
    rows = ex.fetch_ohlcv("BTC/USDT", "1h", since=int(series.index[0].value // 1e6), limit=5)
    assert [r[0] for r in rows] == [int(t.value // 1e6) for t in series.index[:5]]
    rows = ex.fetch_ohlcv("BTC/USDT", "1h", limit=3)  # the latest, the forming one last
    assert rows[-1][0] == int(series.index[10].value // 1e6)
    assert rows[-1][4] != series["close"].iloc[10]  # partial values while forming
    assert np.isclose(rows[-2][4], series["close"].iloc[9])


def test_a_live_session_on_the_fake_exchange_trades_as_the_backtest(tmp_path):
    """`trademl live` with feeds.0.type=ccxt through 3 dropped connections and a 503: the
    same trades as `trademl backtest` on the served candles (the backtest also closes the
    last position at the end of its data, which a live session leaves open)."""
    from trademl.backtest_run import run_backtest

    candles = generate_ohlcv(600, seed=42, momentum=0.3, start="2025-01-01")
    csv = tmp_path / "served.csv"
    candles.to_csv(csv, index_label="timestamp")
    store = [f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db", "log_to_mlflow=false"]
    scalping = ["strategy.type=scalping_ema_rsi", "strategy.params=null"]
    with FakeBinance(candles, clock=candles.index[400] + STEP) as fake:
        cfg = compose_config(
            [
                *store,
                *scalping,
                f"live.journal={tmp_path / 'j.db'}",
                "live.window=null",
                "live.durable=false",
                "feeds=[{symbol: BTC/USDT, type: ccxt, exchange: binance, timeframe: 1h, "
                f"since: '{candles.index[0]}', poll_interval: 0.01, backoff: 0.01, "
                "stream: rest}]",
            ],
            "live",
        )
        options = fake.ccxt_options(rateLimit=5)  # ms between requests (Binance's is 50)
        OmegaConf.update(cfg, "feeds.0.ccxt_options", options, force_add=True)
        runtime, _ = build_runtime(cfg)
        trader = runtime.traders[0]

        async def session():
            async def exchange_moves():  # candles close one by one; faults on the way
                while trader.last_ts != candles.index[-1]:
                    await asyncio.sleep(0.002)
                    if trader.last_ts is not None and trader.last_ts >= fake.closed().index[-1]:
                        if len(fake.closed()) in (450, 500, 550):
                            fake.drop(1 if len(fake.closed()) != 500 else 2)
                            fake.error(1, 503)
                        fake.advance(1)
                runtime.request_stop()

            mover = asyncio.create_task(exchange_moves())
            summary = await asyncio.wait_for(runtime.run(), 120)
            await mover
            return summary

        try:
            summary = asyncio.run(session())
        finally:
            runtime.journal.close()
        assert fake.faults["dropped"] == 4 and fake.faults["errors"] == 3
    assert summary.candles == 600 and trader.last_ts == candles.index[-1]
    bt = run_backtest(
        compose_config(
            [
                *store,
                "data=csv",
                f"data.path={csv}",
                "backtest.start=null",
                "strategy=scalping_ema_rsi",
            ],
            "backtest",
        )
    ).result.trades
    bt = bt[bt["exit_time"] < candles.index[-1]].reset_index(drop=True)
    live = summary.trades.reset_index(drop=True)
    assert len(live) == len(bt) > 5
    cols = ["side", "entry_time", "exit_time", "exit_reason"]
    pd.testing.assert_frame_equal(live[cols], bt[cols], check_dtype=False)
    for col in ("size", "entry_price", "exit_price", "pnl", "fees"):
        np.testing.assert_allclose(live[col], bt[col], rtol=1e-9)


def test_websocket_candles_equal_the_served_ones_through_reconnects(fake, series):
    """stream=websocket: REST up to now, then the kline stream; 3 dropped connections are
    caught up over REST; every candle once, in order, with its final values."""
    fake.set_clock(series.index[1100] + pd.Timedelta("20min"))
    feed = make_feed(fake, stream="websocket")
    assert feed.websocket

    async def run():
        async def mover():
            for k in range(60):
                await asyncio.sleep(0.02)
                fake.advance(1)
                if k in (15, 30, 45):
                    fake.ws_drop()

        task = asyncio.create_task(mover())
        got = await collect(feed, series.index[1150], after=series.index[999])
        await task
        return got

    got = frame(asyncio.run(run()))
    expected = series.loc[series.index[1000] : series.index[1150]]
    pd.testing.assert_frame_equal(got, expected, check_freq=False)
    assert feed.stats["errors"] == 3 and fake.ws_stats["connections"] == 4
    # most candles came over the stream, not from polls (3 catch-ups, 1 per reconnect)
    assert fake.ws_stats["events"] > 50 and fake.klines_requests() <= 8


def test_stream_settings_are_checked_before_any_network(tmp_path):
    with pytest.raises(ConfigError, match="stream='ws' must be auto, websocket or rest"):
        CcxtFeed("BTC/USD", exchange="bitstamp", stream="ws")
    with pytest.raises(ConfigError, match="offers no watch_ohlcv for bitstamp"):
        CcxtFeed("BTC/USD", exchange="bitstamp", stream="websocket")
