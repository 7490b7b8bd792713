"""The live runtime: backtest parity, crash-and-restart equivalence, shutdown, hot reload."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from trademl import ConfigError, DataError, ModelError, generate_ohlcv
from trademl._hydra import compose_config
from trademl.backtest import S_BAR
from trademl.backtest_run import run_backtest
from trademl.live.app import build_runtime, run_live
from trademl.live.journal import Journal
from trademl.registry import promote_model
from trademl.train import train

from .conftest import client_for, fast_overrides

SCALPING = ["strategy.type=scalping_ema_rsi", "strategy.params=null"]
COLS = ["side", "entry_time", "exit_time", "exit_reason"]


@pytest.fixture(scope="module")
def candles_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("feed") / "BTCUSDT_1h.csv"
    # after the production model's training data (2024): live trading is out of sample
    generate_ohlcv(700, seed=42, momentum=0.3, start="2025-01-01").to_csv(
        path, index_label="timestamp"
    )
    return path


def live_cfg(store, journal, csv, *extra):
    return compose_config(
        [
            f"mlflow.tracking_uri={store['uri']}",
            f"mlflow.artifact_root={store['artifacts']}",
            f"feeds.0.path={csv}",
            f"live.journal={journal}",
            "live.window=null",
            *extra,
        ],
        config_name="live",
    )


def backtest_trades(store, csv, *extra):
    cfg = compose_config(
        [
            f"mlflow.tracking_uri={store['uri']}",
            "data=csv",
            f"data.path={csv}",
            "backtest.start=null",
            "log_to_mlflow=false",
            *extra,
        ],
        config_name="backtest",
    )
    return run_backtest(cfg).result.trades


def assert_same_trades(live: pd.DataFrame, bt: pd.DataFrame) -> None:
    assert len(live) == len(bt) > 0
    pd.testing.assert_frame_equal(
        live[COLS].reset_index(drop=True), bt[COLS].reset_index(drop=True), check_dtype=False
    )
    for col in ("size", "entry_price", "exit_price", "pnl", "fees"):
        pd.testing.assert_series_equal(
            live[col].reset_index(drop=True),
            bt[col].reset_index(drop=True),
            rtol=1e-9,
            check_names=False,
        )


def test_ml_replay_equals_the_backtest_and_is_an_mlflow_session(
    production_model, candles_csv, tmp_path
):
    store = production_model["store"]
    # every candle's equity point (live.metrics_interval=0), as a real-time feed gets them
    summary = run_live(live_cfg(store, tmp_path / "j.db", candles_csv, "live.metrics_interval=0"))
    assert summary.candles == 700 and not summary.stopped_by_signal
    assert_same_trades(summary.trades, backtest_trades(store, candles_csv))
    assert set(summary.latency_ms) == {"p50", "p95", "p99"}
    client = client_for(store)
    exp = client.get_experiment_by_name("trademl-live")
    run = client.search_runs([exp.experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["model_version"] == "1" and run.data.tags["symbols"] == "BTCUSDT"
    assert run.data.params["strategy.type"] == "ml_strategy"
    assert {
        "decision_latency_p50_ms",
        "decision_latency_p99_ms",
        "final_equity_BTCUSDT",
        "equity_BTCUSDT",
        "position_BTCUSDT",
        "realised_pnl_BTCUSDT",
    } <= set(run.data.metrics)
    history = client.get_metric_history(run.info.run_id, "equity_BTCUSDT")
    assert len(history) == 700
    assert [a.path for a in client.list_artifacts(run.info.run_id, "live")] == [
        "live/divergence",
        "live/trades.csv",
    ]
    # the session's end logs the divergence report: a finished replay equals its backtest
    assert run.data.metrics["divergence_matched"] == len(summary.trades)
    assert run.data.metrics["divergence_only_live"] == 0
    assert run.data.metrics["divergence_only_backtest"] == 0
    assert run.data.metrics["divergence_differs"] == 0
    assert run.data.tags["divergence"] == "none"


def test_rule_based_replay_equals_the_backtest_with_two_symbols(store, candles_csv, tmp_path):
    other = tmp_path / "ETHUSDT_1h.csv"
    generate_ohlcv(500, seed=7).to_csv(other, index_label="timestamp")
    cfg = live_cfg(
        store,
        tmp_path / "j.db",
        candles_csv,
        *SCALPING,
        f"+feeds=[{{symbol:BTCUSDT,path:'{candles_csv}'}},{{symbol:ETHUSDT,path:'{other}'}}]",
    )
    summary = run_live(cfg)
    trades = summary.trades
    # a fast replay logs at most one point per second per symbol, and always the last candle
    client = client_for(store)
    run = client.search_runs([client.get_experiment_by_name("trademl-live").experiment_id])[0]
    for symbol, n in (("BTCUSDT", 700), ("ETHUSDT", 500)):
        points = client.get_metric_history(run.info.run_id, f"equity_{symbol}")
        assert 1 <= len(points) < n and max(p.step for p in points) == n - 1
    for symbol, csv in (("BTCUSDT", candles_csv), ("ETHUSDT", other)):
        # each symbol trades half of the cash: the backtest with that cash is identical
        bt = backtest_trades(store, csv, "strategy=scalping_ema_rsi", "backtest.cash=5000")
        assert_same_trades(trades[trades["symbol"] == symbol], bt)
    # the session's divergence report pairs every trade of both symbols
    assert run.data.metrics["divergence_matched"] == len(trades)
    assert run.data.metrics["divergence_symbols"] == 0 and run.data.tags["divergence"] == "none"


@pytest.mark.parametrize(
    ("extra", "durable"),
    [((), False), (("+feeds.0.speed=1000",), True), (("live.durable=true",), True)],
)
def test_the_journal_fsyncs_each_candle_unless_a_file_is_replayed_at_full_speed(
    store, candles_csv, tmp_path, extra, durable
):
    runtime, _ = build_runtime(
        live_cfg(store, tmp_path / "j.db", candles_csv, *SCALPING, "log_to_mlflow=false", *extra)
    )
    try:
        assert runtime.journal.durable is durable
        sync = runtime.journal._db.execute("PRAGMA synchronous").fetchone()[0]
        assert sync == (2 if durable else 1)  # FULL, NORMAL
    finally:
        runtime.journal.close()


def test_a_strategy_without_a_stream_trades_on_a_window(store, candles_csv, tmp_path, monkeypatch):
    """A user strategy that implements generate_signal only (no stream) is asked for it on
    the trailing window, and trades as the backtest does."""
    from trademl.strategies import ScalpingEMARSI
    from trademl.strategies.base import BaseStrategy

    monkeypatch.setattr(ScalpingEMARSI, "stream", BaseStrategy.stream)
    calls = []
    original = ScalpingEMARSI.generate_signal

    def counted(self, df):
        calls.append(len(df))
        return original(self, df)

    monkeypatch.setattr(ScalpingEMARSI, "generate_signal", counted)
    summary = run_live(
        live_cfg(store, tmp_path / "j.db", candles_csv, *SCALPING, "live.window=400")
    )
    assert max(calls) == 400  # the trailing window, not a stream (long enough to equal)
    bt = backtest_trades(store, candles_csv, "strategy=scalping_ema_rsi")
    assert_same_trades(summary.trades, bt)


def test_a_resumed_book_whose_feed_has_no_history_starts_the_strategy_again(
    store, candles_csv, tmp_path, caplog
):
    journal = tmp_path / "j.db"
    run_live(live_cfg(store, journal, candles_csv, *SCALPING, "log_to_mlflow=false"))
    later = tmp_path / "later.csv"  # only candles after the journal's last one
    generate_ohlcv(300, seed=8, start="2026-01-01").to_csv(later, index_label="timestamp")
    summary = run_live(live_cfg(store, journal, later, *SCALPING, "log_to_mlflow=false"))
    assert summary.candles == 300
    assert "the feed has no history up to" in caplog.text


def _run_cli(args, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "trademl.cli", "live", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _committed(journal: Path) -> int:
    if not journal.exists():
        return 0
    try:
        with sqlite3.connect(journal, timeout=5) as db:
            row = db.execute("SELECT state FROM books").fetchone()
    except sqlite3.OperationalError:
        return 0
    return 0 if row is None else int(json.loads(row[0])[S_BAR]) + 1


@pytest.mark.slow
def test_kill_9_at_several_points_changes_nothing(store, candles_csv, tmp_path):
    common = [
        f"mlflow.tracking_uri={store['uri']}",
        f"mlflow.artifact_root={store['artifacts']}",
        f"feeds.0.path={candles_csv}",
        "live.window=null",
        *SCALPING,
        "hydra/job_logging=none",
        "hydra/hydra_logging=none",
        f"hydra.run.dir={tmp_path}/out",
    ]
    reference = tmp_path / "reference.db"
    proc = _run_cli([*common, f"live.journal={reference}"])
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    crashed = tmp_path / "crashed.db"
    slow = [*common, f"live.journal={crashed}", "+feeds.0.delay=0.004"]
    kills = 0
    for target in (60, 250, 251, 480):  # candles committed before each kill -9
        proc = _run_cli(slow)
        deadline = time.time() + 120
        while _committed(crashed) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
    assert kills >= 3
    proc = _run_cli(slow)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    done, ref = Journal(crashed), Journal(reference)
    pd.testing.assert_frame_equal(done.trades().drop(columns="id"), ref.trades().drop(columns="id"))
    assert done.books()["state"].tolist() == ref.books()["state"].tolist()
    fills = done.events("fill")
    assert fills["bar_ts"].is_unique  # no order filled twice
    assert len(fills) == len(ref.events("fill"))


def test_sigterm_stops_cleanly_and_flushes_the_journal(store, candles_csv, tmp_path):
    follow = tmp_path / "follow.csv"
    pd.read_csv(candles_csv).head(300).to_csv(follow, index=False)
    journal = tmp_path / "j.db"
    proc = _run_cli(
        [
            f"mlflow.tracking_uri={store['uri']}",
            f"mlflow.artifact_root={store['artifacts']}",
            "feeds.0.type=follow",
            f"feeds.0.path={follow}",
            "+feeds.0.poll_interval=0.05",
            f"live.journal={journal}",
            *SCALPING,
            f"hydra.run.dir={tmp_path}/out",
        ]
    )
    deadline = time.time() + 60
    while _committed(journal) < 300 and time.time() < deadline:
        time.sleep(0.05)
    with follow.open("a") as fh:  # another process appends two closed candles
        for ts in ("2025-01-13T12:00:00Z", "2025-01-13T13:00:00Z"):
            fh.write(f"{ts},100,101,99,100.5,10\n")
    while _committed(journal) < 302 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "302 candles" in out and "stopped by signal" in out
    assert not Path(f"{journal}-wal").exists() or Path(f"{journal}-wal").stat().st_size == 0
    client = client_for(store)
    run = client.search_runs([client.get_experiment_by_name("trademl-live").experiment_id])[0]
    assert run.info.status == "KILLED"  # stopped by a signal; a restart resumes this run


def test_hot_reload_of_a_newly_promoted_version(production_model, tmp_path):
    store = production_model["store"]
    follow = tmp_path / "follow.csv"
    generate_ohlcv(200, seed=3, start="2025-01-01").to_csv(follow, index_label="timestamp")
    cfg = live_cfg(
        store,
        tmp_path / "j.db",
        follow,
        "feeds.0.type=follow",
        "+feeds.0.poll_interval=0.1",
        "+feeds.0.idle_timeout=3",
        "live.reload_interval=0.2",
    )
    runtime, tracker = build_runtime(cfg)
    new = train(compose_config(fast_overrides(store, "seed=11")))

    async def scenario():
        async def promote_later():
            await asyncio.sleep(0.6)
            promote_model("baseline_rf", new.registered_version, tracking_uri=store["uri"])

        summary, _ = await asyncio.gather(runtime.run(), promote_later())
        return summary

    try:
        summary = asyncio.run(scenario())
        tracker.finish(summary)
    finally:
        runtime.journal.close()
        promote_model("baseline_rf", 1, tracking_uri=store["uri"])
    assert summary.model_switches == [
        f"models:/baseline_rf/Production: version 1 -> {new.registered_version}"
    ]
    reloads = Journal(tmp_path / "j.db").events("model_reloaded")
    assert len(reloads) == 1
    run = client_for(store).get_run(tracker.run_id)
    assert run.data.tags["model_version"] == new.registered_version


@pytest.mark.parametrize("allow", [False, True])
def test_a_new_version_that_learned_from_later_bars_is_not_switched_to(
    production_model, tmp_path, allow
):
    """A promoted version trained on bars after the ones this session trades would make the
    next trades in-sample: kept out unless live.allow_in_sample; once taken, its label
    horizon is the holding limit."""
    store = production_model["store"]
    csv = tmp_path / "c.csv"
    generate_ohlcv(300, seed=3, start="2025-01-01").to_csv(csv, index_label="timestamp")
    extra = ["live.allow_in_sample=true"] if allow else []
    runtime, _ = build_runtime(
        live_cfg(store, tmp_path / "j.db", csv, "log_to_mlflow=false", *extra)
    )
    trader = runtime.traders[0]
    trader.last_ts = pd.Timestamp("2025-01-05", tz="UTC")  # traded up to here
    later = train(
        compose_config(
            fast_overrides(store, "data.start=2025-01-01", "labels.horizon=6", "register=true")
        )
    )
    promote_model("baseline_rf", later.registered_version, tracking_uri=store["uri"])
    try:
        switched = runtime.check_model()
        version = runtime.strategy.load().version
        holding = trader._params[-1]
    finally:
        runtime.journal.close()
        promote_model("baseline_rf", 1, tracking_uri=store["uri"])
    if allow:
        assert switched and version == later.registered_version and holding == 6
    else:
        assert not switched and version == "1" and holding == 24


def test_clear_errors(production_model, candles_csv, tmp_path):
    store = production_model["store"]
    j = tmp_path / "j.db"
    with pytest.raises(ModelError, match="no registered model 'nope'"):
        build_runtime(live_cfg(store, j, candles_csv, "strategy.params.model_name=nope"))
    with pytest.raises(DataError, match="file not found"):
        build_runtime(live_cfg(store, j, tmp_path / "missing.csv", *SCALPING))
    garbage = tmp_path / "garbage.csv"
    garbage.write_text("when,price\nyesterday,12\n")
    with pytest.raises(DataError, match="missing column"):
        build_runtime(live_cfg(store, j, garbage, *SCALPING))
    with pytest.raises(ConfigError, match="strategy.type='magic'"):
        build_runtime(live_cfg(store, j, candles_csv, "strategy.type=magic"))
    with pytest.raises(ConfigError, match="feeds must be a list of at least one"):
        build_runtime(live_cfg(store, j, candles_csv, *SCALPING, "feeds=[]"))
    with pytest.raises(ConfigError, match="neither replay, follow"):
        build_runtime(live_cfg(store, j, candles_csv, *SCALPING, "feeds.0.type=websocket"))
    proc = _run_cli(
        [
            f"mlflow.tracking_uri={store['uri']}",
            f"feeds.0.path={tmp_path}/no.csv",
            f"live.journal={j}",
            *SCALPING,
        ]
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().splitlines()[-1] == (
        f"trademl: error: feeds.0.path={tmp_path}/no.csv: file not found"
    )
    assert "Traceback" not in err


def test_two_sessions_on_one_journal_one_is_refused_and_a_crash_does_not_block(
    store, candles_csv, tmp_path
):
    """Two `trademl live` on the same journal started at once: exactly one trades, the other
    is one line naming the journal and the holder. After the holder is killed with -9, a new
    session takes the journal over."""
    follow = tmp_path / "follow.csv"
    pd.read_csv(candles_csv).head(200).to_csv(follow, index=False)
    journal = tmp_path / "j.db"
    args = [
        f"mlflow.tracking_uri={store['uri']}",
        f"mlflow.artifact_root={store['artifacts']}",
        "feeds.0.type=follow",
        f"feeds.0.path={follow}",
        "+feeds.0.poll_interval=0.05",
        f"live.journal={journal}",
        *SCALPING,
        f"hydra.run.dir={tmp_path}/out",
    ]
    first, second = _run_cli(args), _run_cli(args)
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None and second.poll() is None:
        time.sleep(0.05)
    refused, holder = (first, second) if first.poll() is not None else (second, first)
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trademl: error:"), err
    assert str(journal) in lines[0] and f"pid {holder.pid}" in lines[0]
    while _committed(journal) < 200 and time.time() < deadline:
        time.sleep(0.05)
    assert holder.poll() is None  # still following the file
    holder.kill()  # kill -9: the OS releases the lock
    holder.wait()
    rerun = _run_cli([*args[:-1], "+feeds.0.idle_timeout=1", f"hydra.run.dir={tmp_path}/out2"])
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
    fills = Journal(journal).events("fill")
    assert len(fills) > 0 and fills["bar_ts"].is_unique  # nothing traded twice


def test_a_non_project_error_fails_the_session_run_and_frees_the_journal(
    store, candles_csv, tmp_path, monkeypatch
):
    from trademl.strategies import scalping

    def broken(self, candle):
        raise RuntimeError("strategy blew up")

    monkeypatch.setattr(scalping._ScalpingStream, "_step", broken)  # the live decision
    cfg = live_cfg(store, tmp_path / "j.db", candles_csv, *SCALPING)
    with pytest.raises(RuntimeError, match="blew up"):
        run_live(cfg)
    client = client_for(store)
    run = client.search_runs([client.get_experiment_by_name("trademl-live").experiment_id])[0]
    assert run.info.status == "FAILED" and "strategy blew up" in run.data.tags["error"]
    Journal(tmp_path / "j.db").close()  # the lock was released


def test_a_journal_written_before_the_format_row_is_resumed(tmp_path):
    """Journals of earlier trademl versions have the same tables but no format row."""
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as db:
        db.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE books (symbol TEXT PRIMARY KEY, bar_ts TEXT NOT NULL, state TEXT NOT "
            "NULL, entry_ts TEXT, updated REAL NOT NULL);"
            "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, symbol TEXT NOT NULL, "
            "bar_ts TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL, created REAL);"
            "CREATE TABLE trades (id INTEGER PRIMARY KEY AUTOINCREMENT, symbol TEXT);"
            "INSERT INTO meta VALUES ('mlflow_run_id', 'abc');"
        )
    journal = Journal(old)
    assert journal.get_meta("mlflow_run_id") == "abc"
    assert journal.get_meta("format") == "trademl-live-journal/1"
    journal.close()


def test_the_runtime_gives_back_the_signal_handlers_it_borrowed(store, candles_csv, tmp_path):
    """After the feed loop, SIGTERM raises again (the run can still end KILLED while the
    trades are written), instead of the default action asyncio would leave behind."""
    from trademl.tracking import signals_raise

    with signals_raise():
        ours = signal.getsignal(signal.SIGTERM)
        run_live(live_cfg(store, tmp_path / "j.db", candles_csv, *SCALPING, "log_to_mlflow=false"))
        assert signal.getsignal(signal.SIGTERM) is ours


def test_an_empty_or_foreign_journal_is_refused(store, candles_csv, tmp_path):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty \(0 bytes\)"):
        build_runtime(live_cfg(store, empty, candles_csv, *SCALPING))
    foreign = tmp_path / "mlflow.db"  # say, the MLflow database by mistake
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE experiments (id INTEGER)")
    with pytest.raises(DataError, match=r"not a trademl live journal \(found tables exp"):
        Journal(foreign)
    with sqlite3.connect(foreign) as db:  # left as it was
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert tables == {"experiments"}


def test_follow_feed_reads_appended_lines_like_the_loader(tmp_path):
    """Appended lines go through the loader's own reader: semicolons and trailing separators
    work, and a bad appended line is named by its line in the file."""
    from trademl.live.feeds import FollowFeed

    path = tmp_path / "follow.csv"
    path.write_text("timestamp;open;high;low;close;volume;\n2024-01-01T00:00:00Z;1;2;0.5;1.5;10;\n")
    feed = FollowFeed(path, "X", poll_interval=0.01, idle_timeout=0.05)

    async def collect():
        return [c async for c in feed.candles()]

    got = asyncio.run(collect())
    assert [(c.open, c.close) for c in got] == [(1.0, 1.5)]
    with path.open("a") as fh:
        fh.write("\n2024-01-01T01:00:00Z;1;2;0.5;1.7;10;\n2024-01-01T02:00:00Z;1;2;0.5;oops;10;\n")
    with pytest.raises(DataError, match=r"follow.csv: column 'close' .*'oops' at line 5"):
        asyncio.run(collect())


def test_live_refuses_to_trade_bars_the_model_learned_from(production_model, tmp_path):
    """trademl live had no overlap check: replaying the training period is refused by date,
    unless live.allow_in_sample=true; a feed after the training period trades."""
    store = production_model["store"]
    old = tmp_path / "2024.csv"  # the production model was trained on 2024-01-01 onwards
    generate_ohlcv(300, seed=5, start="2024-02-01").to_csv(old, index_label="timestamp")
    with pytest.raises(
        ConfigError, match=r"IN-SAMPLE: the window starts at 2024-02-01.*live.allow"
    ):
        build_runtime(live_cfg(store, tmp_path / "j1.db", old))
    runtime, _ = build_runtime(
        live_cfg(store, tmp_path / "j2.db", old, "live.allow_in_sample=true", "log_to_mlflow=false")
    )
    runtime.journal.close()
