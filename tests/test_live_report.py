"""Traceability of the live journal and `trademl live report` (live versus backtest)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest

from trademl import generate_ohlcv
from trademl.cli import main
from trademl.live.journal import Journal

from .conftest import client_for

SYMBOL = "BTCUSDT"


@pytest.fixture(scope="module")
def session(production_model, tmp_path_factory):
    """A finished replay of the Production model through `trademl live` (in-process)."""
    tmp = tmp_path_factory.mktemp("session")
    store = production_model["store"]
    csv = tmp / "BTCUSDT_1h.csv"
    generate_ohlcv(600, seed=42, momentum=0.3, start="2025-01-01").to_csv(
        csv, index_label="timestamp"
    )
    journal = tmp / "journal.db"
    code = main(
        [
            "live",
            f"mlflow.tracking_uri={store['uri']}",
            f"mlflow.artifact_root={store['artifacts']}",
            f"feeds.0.path={csv}",
            f"live.journal={journal}",
            "live.window=null",
            "mlflow.experiment_name=trademl-live-report",
            f"hydra.run.dir={tmp}/out",
            "hydra/job_logging=none",
            "hydra/hydra_logging=none",
        ]
    )
    assert code == 0
    return {"journal": journal, "csv": csv, "store": store}


@pytest.fixture
def journal(session, tmp_path):
    """A private copy of the session's journal (to doctor)."""
    path = tmp_path / "journal.db"
    shutil.copy(session["journal"], path)
    return path


def payloads(path, kind):
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT bar_ts, payload FROM events WHERE kind = ? ORDER BY seq", (kind,)
        ).fetchall()
    return [(pd.Timestamp(ts), json.loads(p)) for ts, p in rows]


def decisions_of(path):
    """The decision rows as (bar, row dict) pairs (NULL is None)."""
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM decisions ORDER BY rowid").fetchall()
    return [(pd.Timestamp(r["bar_ts"]), dict(r)) for r in rows]


def trades_of(path):
    journal = Journal(path, lock=False)
    try:
        return journal.trades()
    finally:
        journal.close()


def report(path, *args, capsys):
    code = main(["live", "report", str(path), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_row_carries_the_model_version_and_its_probabilities(session):
    path = session["journal"]
    candles = pd.read_csv(session["csv"], index_col="timestamp", parse_dates=True)
    decisions = decisions_of(path)
    assert len(decisions) == len(candles) == 600
    assert [ts for ts, _ in decisions] == list(candles.index)
    for (_, d), (_, row) in zip(decisions, candles.iterrows(), strict=True):
        assert (d["model"], d["model_version"], d["strategy"]) == ("baseline_rf", "1", "ml_based")
        assert [d[c] for c in ("open", "high", "low", "close", "volume")] == row.tolist()
    decided = [d for _, d in decisions if d["signal"] is not None]
    warming = [d for _, d in decisions if d["signal"] is None]
    assert len(warming) > 0 and len(decided) > 500
    for d in decided:
        probs = [d["p_SHORT"], d["p_FLAT"], d["p_LONG"]]
        assert sum(probs) == pytest.approx(1.0) and d["confidence"] == max(probs)
        best = ("SHORT", "FLAT", "LONG")[probs.index(max(probs))]
        assert d["signal"] == (best if d["confidence"] >= 0.55 else "FLAT")
        assert d["sl_distance"] > 0
    orders, fills, exits = (payloads(path, k) for k in ("order", "fill", "exit"))
    trades = trades_of(path)
    assert len(trades) > 3 and len(fills) == len(trades) and len(exits) == len(trades)
    for kind in (orders, fills, exits):
        assert all((p["model"], p["model_version"]) == ("baseline_rf", "1") for _, p in kind)
    assert all({"p_SHORT", "p_FLAT", "p_LONG"} <= set(p["signal"]) for _, p in orders)
    by_entry = trades.set_index("entry_time")
    for ts, fill in fills:  # the paper fill's price and fee are those the trade records
        trade = by_entry.loc[ts]
        assert fill["price"] == trade["entry_price"]
        assert fill["fee"] == pytest.approx(trade["entry_price"] * trade["size"] * 10 / 1e4)
    with sqlite3.connect(path) as db:
        settings = json.loads(
            db.execute("SELECT value FROM meta WHERE key='session'").fetchone()[0]
        )
    assert settings["symbols"] == [SYMBOL] and settings["strategy"]["type"] == "ml_strategy"
    assert settings["execution"]["fees_bps"] == 10.0 and settings["cash_per_symbol"] == 10_000


def test_secrets_are_masked_in_the_stored_session_settings():
    from trademl.live.app import _masked

    feeds = [
        {
            "symbol": "BTC/USDT",
            "type": "ccxt",
            "ccxt_options": {"apiKey": "AKIA123", "secret": "s3cr3t", "urls": {"api": "x"}},
            "password": "hunter2",
        }
    ]
    text = json.dumps(_masked(feeds)) + _masked("postgresql://bob:hunter2@db:5432/mlflow")
    assert "AKIA123" not in text and "s3cr3t" not in text and "hunter2" not in text
    assert _masked(feeds)[0]["ccxt_options"]["urls"] == {"api": "x"}


def test_an_honest_replay_reports_no_divergence_and_logs_to_the_session_run(
    session, journal, tmp_path, capsys
):
    out_dir = tmp_path / "out"
    code, out, err = report(journal, "--out", str(out_dir), capsys=capsys)
    assert code == 0, out + err
    n = len(trades_of(journal))
    assert out.splitlines()[0] == (
        f"{SYMBOL}: {n} matched, 0 only live, 0 only backtest; no divergence over 600 bars "
        "(models:/baseline_rf/1)"
    )
    table = pd.read_csv(out_dir / "divergence.csv")
    assert len(table) == n and set(table["status"]) == {"matched"}
    assert (table["entry_slippage_bps"] == 0).all() and (table["pnl_diff"] == 0).all()
    data = json.loads((out_dir / "divergence.json").read_text())
    assert data["diverged"] is False and data["metrics"]["divergence_matched"] == n
    client = client_for(session["store"])
    with sqlite3.connect(journal) as db:
        run_id = db.execute("SELECT value FROM meta WHERE key='mlflow_run_id'").fetchone()[0]
    arts = [a.path for a in client.list_artifacts(run_id, "live/divergence")]
    assert arts == ["live/divergence/divergence.csv", "live/divergence/divergence.json"]
    # logged twice: by the session's end and by this command
    assert len(client.get_metric_history(run_id, "divergence_matched")) == 2
    assert client.get_run(run_id).data.metrics["divergence_only_backtest"] == 0


def test_a_changed_exit_price_is_slippage_at_its_exit_bar(journal, capsys):
    trade = trades_of(journal).iloc[1]
    worse = trade["exit_price"] * (0.999 if trade["side"] == "LONG" else 1.001)  # 10 bps worse
    with sqlite3.connect(journal) as db:
        db.execute("UPDATE trades SET exit_price = ? WHERE id = ?", (worse, int(trade["id"])))
    code, out, _ = report(journal, "--no-mlflow", capsys=capsys)
    assert code == 1
    first = out.splitlines()[0]
    assert " matched (1 with differences), 0 only live, 0 only backtest" in first
    assert f"first divergence at {trade['exit_time']} (unknown; the signals agree" in first
    table = pd.read_csv(journal.parent / "divergence.csv")
    row = table[table["status"] == "differs"].iloc[0]
    assert row["exit_slippage_bps"] == pytest.approx(10.0, rel=1e-6)
    assert row["entry_slippage_bps"] == 0 and row["exit_bar_diff"] == 0


def _insert(db, kind, ts, payload):
    db.execute(
        "INSERT INTO events (symbol, bar_ts, kind, payload, created) VALUES (?,?,?,?,0)",
        (SYMBOL, str(ts), kind, json.dumps(payload)),
    )


def test_a_missing_trade_after_a_model_switch_is_named_with_its_reason(journal, capsys):
    trades = trades_of(journal)
    gone = trades.iloc[2]
    switch = gone["entry_time"] - pd.Timedelta(hours=5)
    with sqlite3.connect(journal) as db:
        db.execute("DELETE FROM trades WHERE id = ?", (int(gone["id"]),))
        _insert(db, "model_reloaded", switch, {"from": "1", "to": "2"})
    code, out, _ = report(journal, "--no-mlflow", capsys=capsys)
    assert code == 1
    assert out.splitlines()[0] == (
        f"{SYMBOL}: {len(trades) - 1} matched, 0 only live, 1 only backtest, first divergence "
        f"at {gone['entry_time']} (model version switch 1 -> 2 at {switch})"
    )


def test_a_rejected_order_is_the_reason_nearest_the_divergence(journal, capsys):
    trades = trades_of(journal)
    gone = trades.iloc[3]
    with sqlite3.connect(journal) as db:
        db.execute("DELETE FROM trades WHERE id = ?", (int(gone["id"]),))
        _insert(db, "model_reloaded", trades.iloc[0]["entry_time"], {"from": "1", "to": "2"})
        _insert(db, "rejected", gone["entry_time"], {"reason": "insufficient balance"})
    code, out, _ = report(journal, "--no-mlflow", capsys=capsys)
    assert code == 1
    assert out.splitlines()[0].endswith(
        f"first divergence at {gone['entry_time']} (rejected order at {gone['entry_time']}: "
        "insufficient balance)"
    )


def test_a_partial_fill_is_a_matched_trade_that_differs_at_its_entry(journal, capsys):
    trade = trades_of(journal).iloc[1]
    half = trade["size"] / 2
    with sqlite3.connect(journal) as db:
        db.execute(
            "UPDATE trades SET size = ?, pnl = pnl / 2, fees = fees / 2 WHERE id = ?",
            (half, int(trade["id"])),
        )
        _insert(db, "partial_fill", trade["entry_time"], {"filled": half, "size": trade["size"]})
    code, out, _ = report(journal, "--no-mlflow", capsys=capsys)
    assert code == 1
    assert out.splitlines()[0].endswith(
        f"first divergence at {trade['entry_time']} (partial fill at {trade['entry_time']}: "
        f"filled {half} of {trade['size']})"
    )


def test_decisions_rerun_pass_on_the_journal_and_catch_a_doctored_probability(journal, capsys):
    code, out, err = report(journal, "--no-mlflow", "--decisions", capsys=capsys)
    assert code == 0, out + err
    decided = [p for _, p in decisions_of(journal) if p["signal"] is not None]
    assert f"decisions: {len(decided)} re-run with their model version, 0 mismatch(es)" in out
    ts, target = next((ts, p) for ts, p in decisions_of(journal)[300:] if p["signal"])
    doctored = {**target, "p_LONG": target["p_LONG"] + 1e-6}
    with sqlite3.connect(journal) as db:
        db.execute(
            "UPDATE decisions SET p_LONG = ? WHERE bar_ts = ?", (doctored["p_LONG"], str(ts))
        )
    code, out, _ = report(journal, "--no-mlflow", "--decisions", capsys=capsys)
    assert code == 1
    assert f"decisions: {len(decided)} re-run with their model version, 1 mismatch(es)" in out
    assert f"{SYMBOL} {ts} (version 1): p_LONG live {doctored['p_LONG']!r}, recomputed" in out


def test_a_journal_from_before_traceability_is_one_clear_error(journal, tmp_path, capsys):
    resumed = tmp_path / "resumed.db"  # started by an older trademl, resumed by this one
    shutil.copy(journal, resumed)
    with sqlite3.connect(resumed) as db:
        first = db.execute("SELECT min(entry_time) FROM trades").fetchone()[0]
        db.execute("DELETE FROM decisions WHERE bar_ts <= ?", (first,))
    with sqlite3.connect(journal) as db:  # the tables of a journal written before
        db.execute("DROP TABLE decisions")
        db.execute("DELETE FROM meta WHERE key = 'session'")
    code, out, err = report(journal, capsys=capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"trademl: error: {journal}: the journal ")
    assert "before traceability" in lines[0]
    code, out, err = report(resumed, capsys=capsys)
    assert code == 2 and out == ""
    assert f"{SYMBOL} traded from " in err and "before traceability" in err
    code, _, err = report(journal.parent / "nope.db", capsys=capsys)
    assert code == 2 and "no such live journal" in err


def test_the_report_reads_a_journal_another_process_is_writing(journal, capsys):
    """The session's lock and an open write transaction do not stop the report (read-only)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from trademl.live.journal import Journal\n"
            f"j = Journal({str(journal)!r})\n"
            "j._db.execute('BEGIN IMMEDIATE')\n"
            "j._db.execute(\"INSERT INTO meta VALUES ('x', 'y')\")\n"
            "print('holding', flush=True)\n"
            "time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(Exception, match="in use by another trademl live session"):
            Journal(journal)
        start = time.monotonic()
        code, out, err = report(journal, "--no-mlflow", capsys=capsys)
        assert code == 0, out + err
        assert time.monotonic() - start < 60
    finally:
        holder.kill()
        holder.wait()


def test_a_candle_the_feed_revised_is_named_with_check_feed(session, journal, tmp_path, capsys):
    trade = trades_of(journal).iloc[1]
    csv = tmp_path / "revised.csv"
    candles = pd.read_csv(session["csv"], index_col="timestamp", parse_dates=True)
    candles.loc[trade["entry_time"], "close"] += 0.01
    candles.to_csv(csv, index_label="timestamp")
    with sqlite3.connect(journal) as db:
        settings = json.loads(
            db.execute("SELECT value FROM meta WHERE key='session'").fetchone()[0]
        )
        settings["feeds"][0]["path"] = str(csv)
        db.execute("UPDATE meta SET value = ? WHERE key = 'session'", (json.dumps(settings),))
        db.execute("DELETE FROM trades WHERE id = ?", (int(trade["id"]),))
    code, out, _ = report(journal, "--no-mlflow", "--check-feed", capsys=capsys)
    assert code == 1
    assert f"(a candle the feed revised at {trade['entry_time']} (close received" in out
    code, out, _ = report(journal, "--no-mlflow", capsys=capsys)  # without it: not known
    assert "feed revised" not in out


def test_a_resumed_session_matches_and_a_later_divergence_names_the_restart(
    session, tmp_path, capsys
):
    from trademl._hydra import compose_config
    from trademl.live.app import run_live

    store, csv = session["store"], session["csv"]
    first = tmp_path / "first.csv"
    pd.read_csv(csv).head(350).to_csv(first, index=False)
    journal = tmp_path / "resumed.db"

    def cfg(path, *extra):
        return compose_config(
            [
                f"mlflow.tracking_uri={store['uri']}",
                f"feeds.0.path={path}",
                f"live.journal={journal}",
                "live.window=null",
                "log_to_mlflow=false",
                *extra,
            ],
            config_name="live",
        )

    run_live(cfg(first, "live.close_at_end=false"))  # stopped with its book as it was
    run_live(cfg(csv))  # the restart trades the rest of the file
    resumed = payloads(journal, "resumed")
    assert len(resumed) == 1 and resumed[0][0] == pd.Timestamp(pd.read_csv(first).iloc[-1, 0])
    assert len(decisions_of(journal)) == 600
    fills = payloads(journal, "fill")  # a fill after the restart knows its order's version
    assert fills and all(p["model_version"] == "1" for _, p in fills)
    code, out, err = report(journal, "--no-mlflow", capsys=capsys)
    assert code == 0, out + err
    later = trades_of(journal)
    later = later[later["entry_time"] > resumed[0][0]].iloc[0]
    with sqlite3.connect(journal) as db:
        db.execute("DELETE FROM trades WHERE id = ?", (int(later["id"]),))
    code, out, _ = report(journal, "--no-mlflow", capsys=capsys)
    assert code == 1
    assert out.splitlines()[0].endswith(
        f"first divergence at {later['entry_time']} (session resumed after a stop or crash at "
        f"{resumed[0][0]})"
    )


def _scalping_session(store, tmp_path, *extra):
    from trademl._hydra import compose_config
    from trademl.live.app import run_live

    csv = tmp_path / "ETHUSDT.csv"
    generate_ohlcv(400, seed=5, start="2025-01-01").to_csv(csv, index_label="timestamp")
    journal = tmp_path / "scalping.db"
    run_live(
        compose_config(
            [
                f"mlflow.tracking_uri={store['uri']}",
                f"mlflow.artifact_root={store['artifacts']}",
                f"feeds.0.path={csv}",
                "feeds.0.symbol=ETHUSDT",
                f"live.journal={journal}",
                "strategy.type=scalping_ema_rsi",
                "strategy.params=null",
                *extra,
            ],
            config_name="live",
        )
    )
    return journal


def test_a_strategy_without_a_model_is_traced_by_its_type_and_reported(store, tmp_path, capsys):
    journal = _scalping_session(store, tmp_path, "log_to_mlflow=false")
    rows = [p for _, p in decisions_of(journal)]
    assert len(rows) == 400
    assert all(r["strategy"] == "rule_based" and r["model_version"] is None for r in rows)
    assert all(p["strategy"] == "rule_based" for _, p in payloads(journal, "fill"))
    code, out, err = report(journal, "--decisions", capsys=capsys)
    assert code == 0, out + err
    n = len(trades_of(journal))
    assert n > 0
    assert out.splitlines()[0] == (
        f"ETHUSDT: {n} matched, 0 only live, 0 only backtest; no divergence over 400 bars "
        "(scalping_ema_rsi)"
    )
    assert "0 mismatch(es)" in out
    assert "the session logged no MLflow run (log_to_mlflow=false): nothing logged" in out


def test_a_report_that_fails_at_the_sessions_end_does_not_fail_the_session(
    store, tmp_path, monkeypatch
):
    import trademl.live.divergence as divergence

    def broken(*args, **kwargs):
        raise RuntimeError("report blew up")

    monkeypatch.setattr(divergence, "divergence_report", broken)
    _scalping_session(store, tmp_path)
    client = client_for(store)
    run = client.search_runs([client.get_experiment_by_name("trademl-live").experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["divergence"] == "not computed: report blew up"


def test_a_trade_entered_a_bar_late_is_paired_with_its_entry_bar_difference(journal, capsys):
    trade = trades_of(journal).iloc[1]
    late = trade["entry_time"] + pd.Timedelta(hours=1)
    assert late < trade["exit_time"]  # still overlapping the backtest's trade
    with sqlite3.connect(journal) as db:
        db.execute("UPDATE trades SET entry_time = ? WHERE id = ?", (str(late), int(trade["id"])))
    code, out, _ = report(journal, "--no-mlflow", capsys=capsys)
    assert code == 1
    assert "(1 with differences), 0 only live, 0 only backtest, first divergence at " in out
    assert f"first divergence at {trade['entry_time']} (unknown" in out.splitlines()[0]
    table = pd.read_csv(journal.parent / "divergence.csv")
    row = table[table["status"] == "differs"].iloc[0]
    assert (row["entry_bar_diff"], row["exit_bar_diff"]) == (1, 0)


def test_a_recorded_version_missing_from_the_registry_is_one_clear_error(journal, capsys):
    with sqlite3.connect(journal) as db:
        db.execute("UPDATE decisions SET model_version = '7' WHERE rowid > 300")
    code, out, err = report(journal, "--no-mlflow", capsys=capsys)
    assert code == 0, out + err  # the trades were made by version 1, as the backtest's
    code, out, err = report(journal, "--no-mlflow", "--decisions", capsys=capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trademl: error:") and "7" in lines[0]
    assert "Traceback" not in err
