"""Run lifecycle of every entrypoint: a signal or an error ends the MLflow run as KILLED or
FAILED, never RUNNING forever; a stopped training registers no version."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trademl import DataError
from trademl._hydra import compose_config
from trademl.backtest import Backtest
from trademl.backtest_run import run_backtest
from trademl.train import train
from trademl.walkforward import walk_forward

from .conftest import client_for, fast_overrides


def _runs(store, experiment="trademl"):
    client = client_for(store)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=100)


def _running_runs(db: Path) -> list[str]:
    """RUNNING run ids, read from the sqlite store without MLflow: an MlflowClient here would
    run MLflow's schema migrations on a store the other process is still creating."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            rows = con.execute("SELECT run_uuid FROM runs WHERE status = 'RUNNING'").fetchall()
    except sqlite3.Error:  # not created yet
        return []
    return [r[0] for r in rows]


def _csv_overrides(store, *extra):
    return [o for o in fast_overrides(store, "data=csv", *extra) if not o.startswith("data.n=")]


def _bad_csv(tmp_path: Path) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
        "2024-01-01T01:00:00Z,1,two,0.5,1.5,10\n"
    )
    return path


@pytest.mark.slow
def test_sigterm_during_training_ends_the_run_killed_and_registers_nothing(store, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trademl.cli",
            "train",
            *fast_overrides(store, "data.n=30000", "model.n_estimators=400"),
            f"hydra.run.dir={tmp_path}/out",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    running: list[str] = []
    while not running and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        running = _running_runs(Path(store["uri"].removeprefix("sqlite:///")))
    if not running:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the training run never started (exit {proc.returncode}): {err[-3000:]}")
    time.sleep(1.0)  # into the data/features/fit stages
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("trademl: interrupted by SIGTERM") and running[0] in last
    run = client_for(store).get_run(running[0])
    assert run.info.status == "KILLED" and "SIGTERM" in run.data.tags["error"]
    assert client_for(store).search_model_versions("name='baseline_rf'") == []


def test_a_sigterm_lost_in_a_weakref_callback_is_delivered_again():
    """A handler that runs inside a weakref callback (SQLAlchemy's, during garbage collection)
    raises where Python ignores exceptions: the interruption is delivered again, not lost."""
    import weakref

    from trademl.errors import Interrupted
    from trademl.tracking.runs import signals_raise

    class Thing:
        pass

    lost = []

    def callback(_ref):
        try:
            signal.raise_signal(signal.SIGTERM)  # the handler raises Interrupted in here ...
        except BaseException as exc:
            lost.append(exc)  # ... (recorded, as Python would drop it) and it goes no further

    start = time.time()
    with pytest.raises(Interrupted), signals_raise():
        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing  # the callback runs now
        assert ref() is None and len(lost) == 1
        time.sleep(10)  # the training would go on: the redelivered signal ends it
    assert time.time() - start < 5
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    # nested blocks (trademl tune around each training): a lost interruption that the inner
    # block ends on is not forgotten; the outer block raises it
    lost.clear()
    with pytest.raises(Interrupted), signals_raise():
        with signals_raise():
            thing = Thing()
            ref = weakref.ref(thing, callback)
            del thing
            assert len(lost) == 1
        time.sleep(10)
    assert time.time() - start < 10
    # a block that ends before the signal comes again raises it on its way out
    lost.clear()
    with pytest.raises(Interrupted), signals_raise():
        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing
        assert len(lost) == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_an_error_during_training_ends_the_run_failed(store, compose, tmp_path):
    cfg = compose(_csv_overrides(store, f"data.path={_bad_csv(tmp_path)}"))
    with pytest.raises(DataError, match="non-numeric value 'two'"):
        train(cfg)
    (run,) = _runs(store)
    assert run.info.status == "FAILED" and "bad.csv" in run.data.tags["error"]


def test_an_error_during_a_backtest_ends_its_run_failed(store, monkeypatch):
    def broken(self):
        raise RuntimeError("engine broke")

    monkeypatch.setattr(Backtest, "run", broken)
    cfg = compose_config(
        [
            f"mlflow.tracking_uri={store['uri']}",
            f"mlflow.artifact_root={store['artifacts']}",
            "strategy=scalping_ema_rsi",
            "data=synthetic",
            "data.n=600",
        ],
        config_name="backtest",
    )
    with pytest.raises(RuntimeError, match="engine broke"):
        run_backtest(cfg)
    (run,) = _runs(store, "trademl-backtests")
    assert run.info.status == "FAILED" and run.data.tags["error"] == "engine broke"


def test_an_error_during_walk_forward_fails_the_parent_and_leaves_nothing_running(
    store, monkeypatch
):
    import trademl.walkforward as wf

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the second fold broke")
        return original(*args, **kwargs)

    original = wf._backtest
    monkeypatch.setattr(wf, "_backtest", broken)
    cfg = compose_config(
        [*fast_overrides(store, "data.n=1500"), "split.n_folds=3"], config_name="walkforward"
    )
    with pytest.raises(RuntimeError, match="the second fold broke"):
        walk_forward(cfg)
    runs = _runs(store, "trademl-walkforward")
    status = {r.data.tags.get("fold", "parent"): r.info.status for r in runs}
    assert status == {"parent": "FAILED", "0": "FINISHED"}  # the 2nd fold broke before its run


@pytest.mark.slow
def test_a_failing_sweep_job_ends_the_parent_run_failed(store, tmp_path):
    bad = _bad_csv(tmp_path)
    good = tmp_path / "good.csv"
    from trademl import generate_ohlcv

    generate_ohlcv(1200, seed=1).to_csv(good, index_label="timestamp")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trademl.cli",
            "train",
            "-m",
            *_csv_overrides(store, f"data.path={good},{bad}"),
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr
    assert "non-numeric value 'two'" in proc.stderr.strip().splitlines()[-1]
    runs = _runs(store)
    statuses = {r.data.tags.get("sweep", "job"): r.info.status for r in runs if r.info}
    assert "RUNNING" not in {r.info.status for r in runs}
    assert statuses["parent"] == "FAILED"
