"""Several symbols: per-symbol books and one shared cash pool, in the backtester and live."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from trademl import ConfigError, DataError, generate_ohlcv
from trademl._hydra import compose_config
from trademl.backtest import S_BAR, Backtest
from trademl.cleaning import clean_ohlcv_data
from trademl.data import load_ohlcv_data
from trademl.live.app import build_runtime, run_live
from trademl.live.journal import Journal
from trademl.portfolio import PortfolioBacktest
from trademl.strategies import ScalpingEMARSI

TRADE_FIELDS = [
    "symbol",
    "entry_time",
    "exit_time",
    "side",
    "size",
    "entry_price",
    "exit_price",
    "fees",
    "pnl",
    "exit_reason",
]
NO_COSTS = {"fees_bps": 0.0, "slippage_bps": 0.0}


def _bars(opens, highs, lows, closes, start="2025-01-01") -> pd.DataFrame:
    index = pd.date_range(start, periods=len(opens), freq="h", tz="UTC", name="timestamp")
    return pd.DataFrame(
        {"open": opens, "high": highs, "low": lows, "close": closes, "volume": 1.0}, index=index
    )


def _signals(df: pd.DataFrame, entries: dict[int, tuple[int, float]]) -> pd.DataFrame:
    """side/sl/tp frame on ``df``: ``{row: (side, stop distance)}``, no target."""
    frame = pd.DataFrame({"side": 0, "sl_distance": 1.0, "tp_distance": 0.0}, index=df.index)
    for row, (side, sl) in entries.items():
        frame.iloc[row, 0], frame.iloc[row, 1] = side, sl
    return frame


@pytest.fixture(scope="module")
def three_symbols():
    """Different lengths and start dates; SOL misses a bar that the others have."""
    data = {
        "ETHUSDT": generate_ohlcv(500, seed=7, momentum=0.3, start="2025-01-01"),
        "BTCUSDT": generate_ohlcv(600, seed=42, momentum=0.3, start="2025-01-01"),
        "SOLUSDT": generate_ohlcv(450, seed=3, momentum=0.3, start="2025-01-02").drop(
            pd.Timestamp("2025-01-05 10:00", tz="UTC")
        ),
    }
    return data


# -- backtester --------------------------------------------------------------------------------


def test_per_symbol_equals_independent_backtests_of_cash_over_n(three_symbols):
    strategy = ScalpingEMARSI()
    result = PortfolioBacktest(three_symbols, strategy, portfolio="per_symbol", cash=9000).run()
    assert list(result.trades["symbol"].unique()) != []
    finals = 0.0
    for symbol, data in three_symbols.items():
        alone = Backtest(data, strategy, cash=3000).run()
        mine = result.trades[result.trades["symbol"] == symbol].drop(columns="symbol")
        assert len(alone.trades) > 0
        pd.testing.assert_frame_equal(mine.reset_index(drop=True), alone.trades)
        pd.testing.assert_series_equal(
            result.symbol_equity[symbol], alone.equity, check_names=False
        )
        finals += alone.equity.iloc[-1]
    assert result.equity.iloc[-1] == pytest.approx(finals, rel=1e-12)
    assert result.equity.index.is_monotonic_increasing and result.equity.index.is_unique
    # trades are listed in the order they closed, across symbols
    assert result.trades["exit_time"].is_monotonic_increasing
    assert result.metrics["orders_reduced"] == result.metrics["orders_rejected"] == 0


def test_shared_sizes_on_the_portfolio_equity_marked_at_the_latest_closes():
    # A goes long 10 units at 100 and is marked at 120 on bar 1; B (after A in the order at
    # bar 1) then sizes on 10,000 + 10 x 20 = 10,200, not on its own half of the cash.
    a = _bars(
        [100, 100, 120, 120], [100, 120, 120, 120], [100, 100, 120, 120], [100, 120, 120, 120]
    )
    b = _bars([50.0] * 4, [50.0] * 4, [50.0] * 4, [50.0] * 4)
    sig = {"A": _signals(a, {0: (1, 10.0)}), "B": _signals(b, {1: (1, 1.0)})}
    risk = {"risk_per_trade": 0.01, "max_position_fraction": 0.999}
    result = PortfolioBacktest(
        {"B": b, "A": a}, sig, portfolio="shared", cash=10_000, risk=risk, **NO_COSTS
    ).run()
    trades = result.trades.set_index("symbol")
    a_size = 0.01 * 10_000 / 10.0
    b_equity = 10_000 + a_size * (120 - 100)
    assert trades.loc["A", "size"] == pytest.approx(a_size, rel=1e-12)
    assert trades.loc["B", "size"] == pytest.approx(0.01 * b_equity / 1.0, rel=1e-12)
    assert trades.loc["B", "entry_time"] == b.index[2]  # decided on bar 1, filled at bar 2
    assert trades.loc["A", "pnl"] == pytest.approx(a_size * 20, rel=1e-12)
    assert result.equity.iloc[-1] == pytest.approx(10_000 + a_size * 20, rel=1e-12)
    assert result.symbol_equity["A"].iloc[-1] == pytest.approx(a_size * 20, rel=1e-12)
    # per_symbol sizes B on its own 5,000
    alone = PortfolioBacktest(
        {"B": b, "A": a}, sig, portfolio="per_symbol", cash=10_000, risk=risk, **NO_COSTS
    ).run()
    assert alone.trades.set_index("symbol").loc["B", "size"] == pytest.approx(0.01 * 5000)


def test_the_gross_exposure_cap_reduces_then_rejects_and_counts():
    # at bar 0, in the order A, B, C: A takes 60 % of the equity (max_position_fraction), B
    # wants as much but only 40 % is left (reduced to 80 units), C finds no room (rejected)
    flat = [100.0] * 4
    a = _bars(flat, [100.5] * 4, [99.5] * 4, flat)
    b = _bars([50.0] * 4, [50.2] * 4, [49.8] * 4, [50.0] * 4)
    c = _bars([20.0] * 4, [20.1] * 4, [19.9] * 4, [20.0] * 4)
    sig = {s: _signals(df, {0: (1, 1.0)}) for s, df in (("A", a), ("B", b), ("C", c))}
    risk = {"risk_per_trade": 0.5, "max_position_fraction": 0.6, "size_step": 1.0}
    result = PortfolioBacktest(
        {"C": c, "A": a, "B": b}, sig, portfolio="shared", cash=10_000, risk=risk, **NO_COSTS
    ).run()
    sizes = result.trades.set_index("symbol")["size"]
    assert sizes.to_dict() == {"A": 0.6 * 10_000 / 100, "B": (10_000 - 6_000) / 50}
    assert result.orders.to_dict("index") == {
        "A": {"reduced": 0, "rejected": 0},
        "B": {"reduced": 1, "rejected": 0},
        "C": {"reduced": 0, "rejected": 1},
    }
    assert (result.metrics["orders_reduced"], result.metrics["orders_rejected"]) == (1, 1)
    assert "orders reduced 1, rejected 1" in result.summary()
    # with room for all (2x gross: 3 x 6,000 <= 20,000), nothing is cut: the cap cut them
    risk2 = {**risk, "max_gross_exposure": 2.0}
    loose = PortfolioBacktest(
        {"C": c, "A": a, "B": b}, sig, portfolio="shared", cash=10_000, risk=risk2, **NO_COSTS
    ).run()
    assert loose.trades.set_index("symbol")["size"].to_dict() == {"A": 60, "B": 120, "C": 300}
    assert loose.metrics["orders_reduced"] == loose.metrics["orders_rejected"] == 0


def test_shared_positions_never_hold_more_than_the_equity(three_symbols):
    result = PortfolioBacktest(three_symbols, ScalpingEMARSI(), portfolio="shared").run()
    assert result.metrics["orders_reduced"] > 0
    trades = result.trades
    # notional held at each entry, at entry prices: never above the portfolio equity at the
    # decision plus the price moves of one bar (a generous 5 %)
    for _, t in trades.iterrows():
        open_ = trades[
            (trades["entry_time"] <= t["entry_time"]) & (trades["exit_time"] > t["entry_time"])
        ]
        notional = (open_["size"] * open_["entry_price"]).sum()
        equity = result.equity.loc[: t["entry_time"]].iloc[-2]
        assert notional <= 1.05 * equity


def test_bad_portfolio_arguments_are_refused(three_symbols):
    with pytest.raises(ConfigError, match="portfolio='both' is not valid; choose one of"):
        PortfolioBacktest(three_symbols, ScalpingEMARSI(), portfolio="both")
    with pytest.raises(ConfigError, match="non-empty"):
        PortfolioBacktest({}, ScalpingEMARSI())
    with pytest.raises(ConfigError, match="risk.max_gross_exposure=0"):
        PortfolioBacktest(three_symbols, ScalpingEMARSI(), risk={"max_gross_exposure": 0})
    with pytest.raises(ConfigError, match="give a timestamp"):
        PortfolioBacktest(three_symbols, ScalpingEMARSI(), start=10)
    frames = {"ETHUSDT": ScalpingEMARSI().generate_signals(three_symbols["ETHUSDT"])}
    with pytest.raises(DataError, match="no signal frame for symbol.*BTCUSDT"):
        PortfolioBacktest(three_symbols, frames)


# -- live ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def csvs(three_symbols, tmp_path_factory):
    folder = tmp_path_factory.mktemp("feeds")
    paths = {}
    for symbol, data in three_symbols.items():
        paths[symbol] = folder / f"{symbol}.csv"
        data.to_csv(paths[symbol], index_label="timestamp")
    return paths


def _feeds(paths) -> str:
    return "+feeds=[" + ",".join(f"{{symbol:{s},path:'{p}'}}" for s, p in paths.items()) + "]"


def _live_overrides(paths, journal, *extra):
    return [
        "strategy.type=scalping_ema_rsi",
        "strategy.params=null",
        _feeds(paths),
        f"live.journal={journal}",
        "live.window=null",
        "log_to_mlflow=false",
        *extra,
    ]


def _shared_backtest(paths):
    data = {s: clean_ohlcv_data(load_ohlcv_data(p))[0] for s, p in paths.items()}
    return PortfolioBacktest(data, ScalpingEMARSI(), portfolio="shared").run()


def _same_trades(live: pd.DataFrame, bt: pd.DataFrame) -> None:
    assert len(live) == len(bt) > 0
    pd.testing.assert_frame_equal(
        live[TRADE_FIELDS].reset_index(drop=True),
        bt[TRADE_FIELDS].reset_index(drop=True),
        check_dtype=False,
        rtol=1e-12,
    )


def test_shared_live_replay_of_three_symbols_equals_the_shared_backtest(csvs, tmp_path):
    journal = tmp_path / "j.db"
    cfg = compose_config(
        _live_overrides(csvs, journal, "live.portfolio=shared"), config_name="live"
    )
    summary = run_live(cfg)
    bt = _shared_backtest(csvs)
    assert bt.metrics["orders_reduced"] > 0  # the pool is binding: per_symbol would differ
    _same_trades(summary.trades, bt.trades)
    assert summary.equity["portfolio"] == pytest.approx(bt.equity.iloc[-1], rel=1e-12)
    done = Journal(journal)
    try:  # the cap's cuts are journaled
        assert len(done.events("order_reduced")) > 0
        assert json.loads(done.get_meta("portfolio"))["mode"] == "shared"
    finally:
        done.close()


def test_a_slow_feed_holds_the_others_back(csvs, tmp_path):
    """ETHUSDT's candles come 2 ms apart, the others' at once: the barrier still trades every
    candle of a timestamp (in symbol order) before any later one, so the journal's commits are
    in timestamp order and the trades are the shared backtest's."""
    journal = tmp_path / "j.db"
    slow = f"+feeds.{list(csvs).index('ETHUSDT')}.delay=0.002"
    cfg = compose_config(
        _live_overrides(csvs, journal, "live.portfolio=shared", slow), config_name="live"
    )
    summary = run_live(cfg)
    _same_trades(summary.trades, _shared_backtest(csvs).trades)
    done = Journal(journal)
    try:
        events = done.events()
    finally:
        done.close()
    stamps = pd.to_datetime(events["bar_ts"], utc=True)
    assert stamps.is_monotonic_increasing
    same = stamps.eq(stamps.shift())
    assert (events["symbol"][same] >= events["symbol"].shift()[same]).all()


def _run_cli(args):
    return subprocess.Popen(
        [sys.executable, "-m", "trademl.cli", "live", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _committed(journal) -> int:
    """Candles committed over all the books."""
    if not journal.exists():
        return 0
    try:
        with sqlite3.connect(journal, timeout=5) as db:
            rows = db.execute("SELECT state FROM books").fetchall()
    except sqlite3.OperationalError:
        return 0
    return sum(int(json.loads(r[0])[S_BAR]) + 1 for r in rows)


@pytest.mark.slow
def test_kill_9_of_a_shared_replay_resumes_to_the_same_trades(csvs, tmp_path):
    """Two kills at random points (each process start costs most of the time), then a run to
    the end: the trades are the shared backtest's, no order filled twice."""
    hydra = ["hydra/job_logging=none", "hydra/hydra_logging=none", f"hydra.run.dir={tmp_path}/o"]
    slow = [f"+feeds.{i}.delay=0.001" for i in range(3)]
    crashed = tmp_path / "crashed.db"
    args = [*_live_overrides(csvs, crashed, "live.portfolio=shared", *slow), *hydra]
    total = sum(len(pd.read_csv(p)) for p in csvs.values())
    rng = np.random.default_rng(12)
    kills = 0
    for target in sorted(rng.integers(100, total - 100, size=2)):  # candles before the kill
        proc = _run_cli(args)
        deadline = time.time() + 60
        while _committed(crashed) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
    assert kills >= 2
    proc = _run_cli(args)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert "; portfolio equity " in proc.stdout.read()  # the books hold each symbol's P&L
    done = Journal(crashed)
    try:
        trades, fills = done.trades(), done.events("fill")
    finally:
        done.close()
    _same_trades(trades, _shared_backtest(csvs).trades)
    assert not fills.duplicated(["symbol", "bar_ts"]).any()  # no order filled twice


def test_bad_live_portfolio_values_are_refused_before_anything_starts(csvs, tmp_path):
    journal = tmp_path / "j.db"
    cfg = compose_config(_live_overrides(csvs, journal, "live.portfolio=shard"), config_name="live")
    with pytest.raises(
        ConfigError, match=r"live.portfolio='shard' is not valid.*did you mean 'shared'"
    ):
        build_runtime(cfg)
    cfg = compose_config(
        _live_overrides(csvs, journal, "live.portfolio=shared", "risk.max_gross_exposure=-1"),
        config_name="live",
    )
    with pytest.raises(ConfigError, match="risk.max_gross_exposure=-1"):
        build_runtime(cfg)
    assert not journal.exists()  # refused before the journal was opened


def test_a_journal_is_resumed_only_with_its_portfolio_settings(csvs, tmp_path):
    journal = tmp_path / "j.db"
    two = dict(list(csvs.items())[:2])
    run_live(compose_config(_live_overrides(two, journal), config_name="live"))
    for extra in (["live.portfolio=shared"],):
        cfg = compose_config(_live_overrides(two, journal, *extra), config_name="live")
        with pytest.raises(ConfigError, match="was written with live.portfolio settings"):
            build_runtime(cfg)
    shared = tmp_path / "shared.db"
    run_live(
        compose_config(_live_overrides(two, shared, "live.portfolio=shared"), config_name="live")
    )
    for extra in (["live.portfolio=shared", "backtest.cash=5000"], ["live.portfolio=per_symbol"]):
        cfg = compose_config(_live_overrides(two, shared, *extra), config_name="live")
        with pytest.raises(ConfigError, match="resume it with the same settings"):
            build_runtime(cfg)
    cfg = compose_config(_live_overrides(csvs, shared, "live.portfolio=shared"), config_name="live")
    with pytest.raises(ConfigError, match="symbols"):  # a third symbol: another pool
        build_runtime(cfg)


# -- trademl backtest with several symbols -----------------------------------------------------


def _symbols_override(paths) -> str:
    return "backtest.symbols={" + ",".join(f"{s}:'{p}'" for s, p in paths.items()) + "}"


def test_trademl_backtest_with_several_symbols_is_the_portfolio_backtest(csvs, store):
    from trademl.backtest_run import run_backtest
    from trademl.portfolio_run import run_portfolio_backtest

    from .conftest import client_for

    overrides = [
        f"mlflow.tracking_uri={store['uri']}",
        f"mlflow.artifact_root={store['artifacts']}",
        "strategy=scalping_ema_rsi",
        "backtest.start=null",
        _symbols_override(csvs),
        "backtest.portfolio=shared",
    ]
    out = run_portfolio_backtest(compose_config(overrides, config_name="backtest"))
    _same_trades(out.result.trades, _shared_backtest(csvs).trades)
    assert out.notes == ["the statistical safeguards are not computed for a portfolio backtest"]
    run = client_for(store).get_run(out.run_id)
    assert run.data.tags["portfolio"] == "shared"
    assert run.data.tags["symbols"] == "BTCUSDT,ETHUSDT,SOLUSDT"
    assert run.data.metrics["orders_reduced"] == out.result.metrics["orders_reduced"] > 0
    arts = {a.path for a in client_for(store).list_artifacts(out.run_id, "portfolio")}
    assert arts == {
        f"portfolio/{f}" for f in ("trades.csv", "equity.csv", "orders.csv", "equity_curve.png")
    }
    # per_symbol: the books of cash / N
    cfg = compose_config(
        [*overrides[:-1], "backtest.portfolio=per_symbol", "log_to_mlflow=false"],
        config_name="backtest",
    )
    per = run_portfolio_backtest(cfg).result
    assert per.settings["portfolio"] == "per_symbol" and per.metrics["orders_reduced"] == 0
    # run_backtest does not ignore the symbols
    with pytest.raises(ConfigError, match="backtest.symbols is set"):
        run_backtest(cfg)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["backtest.portfolio=both"], "backtest.portfolio='both' is not valid"),
        (["backtest.symbols={A: /nonexistent.csv}"], "backtest.symbols.A=/nonexistent.csv"),
        (["backtest.symbols=[a.csv]"], "must map each symbol to its candle file"),
        (["data=csv", "data.path=x.csv", "backtest.symbols={A: x.csv}"], "not both"),
    ],
)
def test_bad_backtest_symbols_are_refused(extra, message, tmp_path, monkeypatch):
    from trademl.portfolio_run import run_portfolio_backtest

    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.csv").write_text("timestamp,open,high,low,close,volume\n")
    cfg = compose_config(
        ["strategy=scalping_ema_rsi", "log_to_mlflow=false", *extra], config_name="backtest"
    )
    with pytest.raises((ConfigError, DataError), match=message):
        run_portfolio_backtest(cfg)


def test_live_refuses_backtest_portfolio_keys(csvs, tmp_path):
    cfg = compose_config(
        _live_overrides(csvs, tmp_path / "j.db", "backtest.portfolio=shared"), config_name="live"
    )
    with pytest.raises(ConfigError, match="trademl live reads live.portfolio"):
        build_runtime(cfg)


def test_a_book_journaled_before_the_mark_slot_is_resumed(csvs, tmp_path):
    """Books written before S_MARK existed have 14 numbers: a resume appends the last close
    (the compiled step writes that slot) and trades on exactly as an uninterrupted session."""
    path = csvs["BTCUSDT"]
    half = tmp_path / "BTCUSDT.csv"
    pd.read_csv(path).head(300).to_csv(half, index=False)
    keep = ["live.close_at_end=false"]
    old = tmp_path / "old.db"
    run_live(compose_config(_live_overrides({"BTCUSDT": half}, old, *keep), config_name="live"))
    with sqlite3.connect(old) as db:
        (state,) = db.execute("SELECT state FROM books").fetchone()
        db.execute("UPDATE books SET state = ?", (json.dumps(json.loads(state)[:14]),))
        db.execute("DELETE FROM meta WHERE key = 'portfolio'")  # as an older trademl wrote it
    resumed = run_live(
        compose_config(_live_overrides({"BTCUSDT": path}, old, *keep), config_name="live")
    )
    whole = run_live(
        compose_config(
            _live_overrides({"BTCUSDT": path}, tmp_path / "whole.db", *keep), config_name="live"
        )
    )
    assert resumed.candles == 300  # the second half only
    pd.testing.assert_frame_equal(
        resumed.trades.drop(columns="id"), whole.trades.drop(columns="id")
    )
    done = Journal(old)
    try:
        assert len(json.loads(done.books()["state"][0])) == 15
    finally:
        done.close()
