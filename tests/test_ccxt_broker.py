"""The ccxt broker against a fake Binance USD-M futures exchange on 127.0.0.1, through the
real ccxt client: orders, protective orders, reconciliation, refusals.

Nothing here reaches a real exchange: every request goes to ``tests/_fake_futures.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from trademl import generate_ohlcv
from trademl._hydra import compose_config
from trademl.live.app import build_runtime

from . import _binance_errors as _binance_errors_module
from ._fake_futures import FakeBinanceFutures

STEP = pd.Timedelta("1h")
SYMBOL = "BTC/USDT:USDT"


@pytest.fixture(autouse=True)
def _binance_errors():
    """ccxt reads the fake's error codes as Binance's own (see tests/_binance_errors.py)."""
    _binance_errors_module.install()
    yield
    _binance_errors_module.uninstall()


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
            "broker.resend_grace=0.3",
            "risk.size_step=0.001",
            "risk.min_size=0.001",
            f"feeds=[{{symbol: '{SYMBOL}', type: ccxt, exchange: binanceusdm, timeframe: 1h, "
            f"since: '{first}', poll_interval: 0.002, backoff: 0.01, stream: rest}}]",
            *extra,
        ],
        "live",
    )
    options = fake.ccxt_options(rateLimit=1)
    if cfg.feeds[0].type == "ccxt":
        OmegaConf.update(cfg, "feeds.0.ccxt_options", options, force_add=True)
    given = cfg.broker.ccxt_options  # e.g. from an override
    given = OmegaConf.to_container(given) if given is not None else {}
    OmegaConf.update(cfg, "broker.ccxt_options", {**options, **given}, merge=False)
    return cfg


def run_session(cfg, until: pd.Timestamp, timeout: float = 120.0):
    """Run the session in this process until it has traded the candle ``until``."""
    runtime, tracker = build_runtime(cfg)
    trader = runtime.traders[0]

    async def session():
        async def watch():
            while trader.last_ts is None or trader.last_ts < until:
                await asyncio.sleep(0.005)
            runtime.request_stop()

        watcher = asyncio.create_task(watch())
        summary = await asyncio.wait_for(runtime.run(), timeout)
        await watcher
        if tracker is not None:
            tracker.finish(summary)
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


def assert_same_trades(live: pd.DataFrame, bt: pd.DataFrame, least: int = 4) -> None:
    live = live.reset_index(drop=True)
    assert len(live) == len(bt) >= least
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
        summary, _ = run_session(
            session_config(tmp_path, fake, candles.index[0]), candles.index[-1]
        )
        orders, executions = list(fake.orders), fake.executions()
    bt = backtest_trades(tmp_path, candles, first)
    assert_same_trades(summary.trades, bt)
    market = [o for o in orders if o["type"] == "MARKET"]
    stops = [o for o in orders if o.get("orderType") == "STOP_MARKET"]
    assert {o["algoStatus"] for o in stops} <= {"FINISHED", "CANCELED", "EXPIRED", "NEW"}
    assert sum(o["algoStatus"] == "FINISHED" for o in stops) == (bt["exit_reason"] == "stop").sum()
    # every order once: no client id executed twice
    assert set(executions.values()) == {1} and len(executions) == len(market) >= len(bt)
    # every decision journaled with its candle; the divergence report finds none
    from trademl.live.divergence import divergence_report
    from trademl.live.journal import Journal

    journal = Journal(tmp_path / "j.db", lock=False)
    try:
        assert len(journal.decisions()) == len(candles)
        assert journal.get_meta(f"trading_from:{SYMBOL}") == str(first)
    finally:
        journal.close()
    report = divergence_report(tmp_path / "j.db")
    assert not report.diverged and report.symbols[0].matched == len(bt), report.text()


def _hydra_value(value) -> str:
    """A Python value as a Hydra override value (dict keys bare, strings quoted)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value) + "'"


def _cli_args(tmp_path, fake, first, journal) -> list[str]:
    options = _hydra_value(fake.ccxt_options(rateLimit=1))
    return [
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        "log_to_mlflow=false",
        "strategy.type=scalping_ema_rsi",
        "strategy.params=null",
        f"live.journal={journal}",
        "live.window=null",
        "live.mode=real",
        "live.confirm_real=true",
        "broker.type=ccxt",
        "broker.exchange=binanceusdm",
        "broker.resend_grace=0.3",
        f"broker.ccxt_options={options}",
        "risk.size_step=0.001",
        "risk.min_size=0.001",
        f"feeds=[{{symbol: '{SYMBOL}', type: ccxt, exchange: binanceusdm, timeframe: 1h, "
        f"since: '{first}', poll_interval: 0.002, backoff: 0.01, stream: rest, "
        f"ccxt_options: {options}}}]",
        "hydra/job_logging=none",
        "hydra/hydra_logging=none",
        f"hydra.run.dir={tmp_path}/out",
    ]


# `trademl live` in a subprocess, with ccxt reading the fake's error codes as Binance's
_CHILD = (
    "import sys; from tests import _binance_errors; _binance_errors.install(); "
    "from trademl.cli import main; sys.exit(main(['live', *sys.argv[1:]]))"
)


def _last_bar(journal) -> pd.Timestamp | None:
    import sqlite3

    if not journal.exists():
        return None
    try:
        with sqlite3.connect(journal, timeout=5) as db:
            row = db.execute("SELECT bar_ts FROM books").fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None else pd.Timestamp(row[0])


@pytest.mark.slow
def test_kill_9_with_orders_in_flight_ends_with_the_same_trades_and_no_order_twice(tmp_path):
    """`trademl live` killed with -9 at orders on their way (before the exchange got them,
    and after it executed them but before the answer came back), market and protective:
    after each restart the journal is reconciled with the exchange, and the session ends with
    the uninterrupted session's trades (the backtest's), with every order on the exchange
    once."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    from trademl.live.journal import Journal

    candles = generate_ohlcv(420, seed=42, momentum=0.3, start="2025-01-01")
    first = candles.index[300]
    journal = tmp_path / "j.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    kills: list[tuple[str, str]] = []
    # the order requests to kill at (counted as the exchange receives them): the first target
    # before the exchange gets it, an entry once executed, an entry before, a stop once placed
    plan = [(3, "before"), (5, "after"), (8, "before"), (10, "after")]
    with FakeBinanceFutures(candles, clock=first + STEP) as fake:
        fake.autostep = True
        proc = None
        seen = {"n": 0}
        lock = threading.Lock()

        def hook(path, phase):
            with lock:
                if phase == "before":
                    seen["n"] += 1
                if plan and (seen["n"], phase) == plan[0] and proc is not None:
                    plan.pop(0)
                    kills.append((path, phase))
                    os.kill(proc.pid, signal.SIGKILL)
                    return phase == "before"
            return False

        fake.on_order(hook)
        args = _cli_args(tmp_path, fake, candles.index[0], journal)
        deadline = time.time() + 240
        while time.time() < deadline:
            proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, *args],
                cwd=Path(__file__).parents[1],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            while proc.poll() is None and _last_bar(journal) != candles.index[-1]:
                time.sleep(0.02)
            if proc.poll() is None:  # done: stop it
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=60)
                break
            _, err = proc.communicate()
            assert proc.returncode == -signal.SIGKILL, err[-3000:]
        executions = fake.executions()
    assert not plan, f"not all kills happened: {kills}, {plan} left"
    kinds = {(path.rsplit("/", 1)[-1], phase) for path, phase in kills}
    assert kinds == {(k, p) for k in ("order", "algoOrder") for p in ("before", "after")}, kinds
    done = Journal(journal, lock=False)
    try:
        live = done.trades()
        rows = done.orders()
    finally:
        done.close()
    assert_same_trades(live, backtest_trades(tmp_path, candles, first))
    twice = {cid: n for cid, n in executions.items() if n > 1}
    assert not twice, f"executed more than once: {twice}"
    journaled = {r["client_id"] for r in rows if r["kind"] in ("entry", "exit")}
    mine = {cid for cid in executions if not cid.startswith("fake")}  # not stop/target fills
    assert mine <= journaled and len(mine) >= len(live)


def short_session(tmp_path, *extra, setup=None, n=380, first=300):
    """A session on ``n`` candles trading from candle ``first``; ``setup(fake)`` before it."""
    candles = generate_ohlcv(n, seed=42, momentum=0.3, start="2025-01-01")
    with FakeBinanceFutures(candles, clock=candles.index[first] + STEP) as fake:
        fake.autostep = True
        if setup is not None:
            setup(fake)
        cfg = session_config(tmp_path, fake, candles.index[0], *extra)
        summary, _ = run_session(cfg, candles.index[-1])
        orders = list(fake.orders)
    from trademl.live.journal import Journal

    journal = Journal(tmp_path / "j.db", lock=False)
    try:
        return candles, summary, orders, journal.orders(), journal.events()
    finally:
        journal.close()


def test_a_lost_answer_is_looked_up_by_client_id_not_sent_twice(tmp_path):
    """The exchange executes the first entry and the answer is lost: the broker finds the
    order by its client id and books it; nothing is sent twice."""
    candles, summary, orders, rows, _ = short_session(
        tmp_path, setup=lambda fake: fake.lose_answer(1)
    )
    first = next(r for r in rows if r["kind"] == "entry")
    assert first["status"] == "filled" and first["filled"] > 0
    executed = [o for o in orders if o.get("clientOrderId") == first["client_id"]]
    assert len(executed) == 1
    assert_same_trades(summary.trades, backtest_trades(tmp_path, candles, candles.index[300]), 3)


def test_an_order_delayed_past_the_timeout_is_sent_again_and_executed_once(tmp_path):
    """The first entry reaches the exchange 2.5 s late, after the client's 2 s timeout: the
    broker looks it up, finds nothing once resend_grace has passed and sends it again; the
    late original is refused by the exchange (older than its receive window), so the order
    is executed once."""
    import time

    delayed, fakes = [], []

    def setup(fake):
        fakes.append(fake)

        def hook(path, phase):
            if phase == "before" and path.endswith("/order") and not delayed:
                delayed.append(path)
                time.sleep(2.5)
            return False

        fake.on_order(hook)

    candles, summary, orders, rows, _ = short_session(tmp_path, setup=setup)
    first = next(r for r in rows if r["kind"] == "entry")
    executed = [o for o in orders if o.get("clientOrderId") == first["client_id"]]
    assert delayed and first["status"] == "filled" and len(executed) == 1
    assert fakes[0].late == 1  # the original, refused when it finally arrived
    assert_same_trades(summary.trades, backtest_trades(tmp_path, candles, candles.index[300]), 3)


def test_a_refused_entry_and_a_partial_fill_are_booked_as_the_exchange_did(tmp_path):
    def setup(fake):
        fake.reject(-2019, "Margin is insufficient.")  # the first order: the first entry
        fake.partial(0.5)  # the next market order: the second entry

    _, summary, orders, rows, events = short_session(tmp_path, setup=setup)
    entries = [r for r in rows if r["kind"] == "entry"]
    assert entries[0]["status"] == "rejected" and entries[0]["filled"] == 0
    assert "Margin is insufficient" in entries[0]["detail"]["message"]
    assert "rejected" in set(events["kind"])
    part = entries[1]
    assert part["status"] == "partial"
    assert part["filled"] == pytest.approx(np.floor(part["amount"] * 0.5 / 0.001) * 0.001)
    assert "partial_fill" in set(events["kind"])
    trade = summary.trades.iloc[0]  # the position of the partial fill, at its size
    assert trade["size"] == pytest.approx(part["filled"])
    protective = [o for o in orders if o.get("algoType") == "CONDITIONAL"][:2]
    assert [float(o["quantity"]) for o in protective] == pytest.approx([part["filled"]] * 2)
    # the divergence report names the refusal as where live and backtest part
    from trademl.live.divergence import divergence_report

    symbol = divergence_report(tmp_path / "j.db").symbols[0]
    assert symbol.diverged and "rejected" in symbol.reason, symbol.summary()


def test_stops_managed_by_the_runtime_close_at_the_next_open(tmp_path):
    """broker.stops=runtime: no order rests on the exchange; a bar reaching the stop or
    target closes the position at the next bar's open, at market."""
    candles, summary, orders, _, _ = short_session(tmp_path, "broker.stops=runtime", n=450)
    assert not [o for o in orders if o.get("algoType")]
    exits = summary.trades[summary.trades["exit_reason"].isin(["stop", "target"])]
    assert len(exits) >= 2
    for _, trade in exits.iterrows():
        side = 1 if trade["side"] == "LONG" else -1
        expected = candles.loc[trade["exit_time"], "open"] * (1 - side * 2e-4)
        assert trade["exit_price"] == pytest.approx(expected, rel=1e-12)


def _refusal(tmp_path, *extra, env=None, monkeypatch=None, setup=None) -> str:
    candles = generate_ohlcv(320, seed=42, start="2025-01-01")
    with FakeBinanceFutures(candles, clock=candles.index[300] + STEP) as fake:
        if setup is not None:
            setup(fake)
        cfg = session_config(tmp_path, fake, candles.index[0], *extra)
        with pytest.raises(Exception) as err:
            runtime, _ = build_runtime(cfg)
            runtime.journal.close()
    return f"{type(err.value).__name__}: {err.value}"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["live.mode=paper"], "set live.mode=real and live.confirm_real=true"),
        (["live.confirm_real=false"], "set live.mode=real and live.confirm_real=true"),
        (["broker.type=paper"], "live.mode=real with broker.type=paper"),
        (["broker.exchange=null"], "broker.type=ccxt needs broker.exchange"),
        (["risk.size_step=0.0005"], "does not fit BTC/USDT:USDT's amount step 0.001"),
        (["risk.min_size=0.0"], "set risk.min_size >= 0.001"),
        (["+broker.ccxt_options.apiKey=abc"], "credentials are taken only from environment"),
        (["broker.stops=sometimes"], "broker.stops"),
    ],
)
def test_real_orders_are_refused_before_anything_starts(tmp_path, extra, message):
    text = _refusal(tmp_path, *extra)
    assert message in text, text
    assert "ConfigError" in text
    assert not (tmp_path / "j.db").exists()  # refused before the journal is created


def test_a_file_feed_cannot_drive_real_orders(tmp_path):
    csv = tmp_path / "c.csv"
    generate_ohlcv(50, seed=1).to_csv(csv, index_label="timestamp")
    text = _refusal(tmp_path, f"feeds=[{{symbol: X, type: replay, path: '{csv}'}}]")
    assert "feed(s) X are not ccxt feeds" in text


def test_missing_credentials_name_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("TRADEML_EXCHANGE_SECRET")
    text = _refusal(tmp_path)
    assert "TRADEML_EXCHANGE_SECRET" in text and "broker.secret_env" in text


def test_a_position_the_session_did_not_open_is_refused(tmp_path):
    def setup(fake):
        fake.position, fake.entry_price = 0.25, 50_000.0

    text = _refusal(tmp_path, setup=setup)
    assert "holds +0.25 but the journal's book holds +0" in text


def test_credentials_never_reach_the_journal_the_log_or_mlflow(tmp_path, monkeypatch, caplog):
    import logging

    monkeypatch.setenv("TRADEML_EXCHANGE_API_KEY", "KEY-5f1c0ffee")
    monkeypatch.setenv("TRADEML_EXCHANGE_SECRET", "SECRET-9a7b0ffee")
    caplog.set_level(logging.DEBUG)
    candles = generate_ohlcv(330, seed=42, momentum=0.3, start="2025-01-01")
    with FakeBinanceFutures(candles, clock=candles.index[300] + STEP) as fake:
        fake.autostep = True
        cfg = session_config(tmp_path, fake, candles.index[0], "log_to_mlflow=true")
        run_session(cfg, candles.index[-1])
        assert fake.orders and fake.api_keys == {"KEY-5f1c0ffee"}  # sent with every order
    files = [tmp_path / "j.db", tmp_path / "mlflow.db", *tmp_path.rglob("mlruns/**/*")]
    for path in files:
        if path.is_file():
            data = path.read_bytes()
            assert b"KEY-5f1c0ffee" not in data and b"SECRET-9a7b0ffee" not in data, path
    assert "5f1c0ffee" not in caplog.text and "9a7b0ffee" not in caplog.text
