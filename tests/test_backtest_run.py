"""`trademl backtest` and `trademl walkforward`: MLflow runs linked to the model."""

from __future__ import annotations

import pytest

from trademl._hydra import compose_config
from trademl.backtest_run import run_backtest
from trademl.cli import main as cli
from trademl.walkforward import walk_forward

from .conftest import client_for


def _overrides(store, *extra):
    """No data=: the backtest trades the data the model was trained on (data=model)."""
    return [
        f"mlflow.tracking_uri={store['uri']}",
        f"mlflow.artifact_root={store['artifacts']}",
        *extra,
    ]


SYNTHETIC = ["data=synthetic", "data.n=2000"]  # what the production model was trained on


def test_backtest_of_the_production_model_is_linked_to_its_version(production_model, compose):
    store = production_model["store"]
    cfg = compose(_overrides(store), config_name="backtest")
    out = run_backtest(cfg)
    client = client_for(store)
    run = client.get_run(out.run_id)
    tags = run.data.tags
    assert tags["model_name"] == "baseline_rf" and tags["model_version"] == "1"
    assert tags["model_run_id"] == production_model["result"].run_id
    # same synthetic data as training: `start: auto` trades the model's test period only
    assert tags["in_sample_overlap"] == "false"
    assert run.data.params["backtest.start"].startswith(
        str(production_model["result"].report["split"]["test_start"])[:10]
    )
    assert {
        "total_return",
        "sharpe",
        "sortino",
        "max_drawdown",
        "win_rate",
        "trades",
        "exposure",
        "cagr",
        "bh_total_return",
    } <= set(run.data.metrics)
    files = {a.path for a in client.list_artifacts(out.run_id, "backtest")}
    assert files == {"backtest/equity_curve.png", "backtest/trades.csv", "backtest/equity.csv"}
    version = client.get_model_version("baseline_rf", "1")
    assert version.tags["last_backtest_run"] == out.run_id


def test_in_sample_window_is_refused_unless_asked_for_then_shown(production_model, compose):
    from trademl import ConfigError

    store = production_model["store"]
    cfg = compose(
        _overrides(store, "backtest.start=null", "log_to_mlflow=false"), config_name="backtest"
    )
    with pytest.raises(ConfigError, match=r"IN-SAMPLE: the window starts at 2024-01-01.*allow_in"):
        run_backtest(cfg)
    cfg = compose(
        _overrides(store, "backtest.start=null", "backtest.allow_in_sample=true"),
        config_name="backtest",
    )
    out = run_backtest(cfg)
    assert out.in_sample_overlap is True and out.result.summary().startswith("[IN-SAMPLE: ")
    tags = client_for(store).get_run(out.run_id).data.tags
    assert tags["in_sample_overlap"] == "true" and tags["same_data_as_training"] == "true"


def test_the_same_data_by_any_name_trades_the_same_bars(
    production_model, tmp_path, compose, monkeypatch
):
    """By date, not by name: the model's own data (no data=), the same candles as a CSV by a
    relative and an absolute path, and a copy all trade only after the training period."""
    import shutil

    from trademl.synthetic import generate_ohlcv

    store = production_model["store"]
    csv = tmp_path / "candles.csv"
    generate_ohlcv(2000, seed=42, momentum=0.3).to_csv(csv, index_label="timestamp")
    shutil.copy(csv, tmp_path / "copy.csv")
    monkeypatch.chdir(tmp_path)
    windows = []
    for data in (
        [],
        ["data=csv", "data.path=candles.csv"],
        ["data=csv", f"data.path={csv}"],
        ["data=csv", "data.path=copy.csv"],
    ):
        cfg = compose(_overrides(store, *data, "log_to_mlflow=false"), config_name="backtest")
        result = run_backtest(cfg).result
        windows.append((result.settings["start"], result.settings["bars"], len(result.trades)))
    assert len(set(windows)) == 1, windows
    meta = production_model["result"]
    assert windows[0][0] > meta.report["split"]["train_end"]


def test_cli_backtest_model_uri_and_rule_based(production_model, capsys, tmp_path):
    store = production_model["store"]
    quiet = [
        f"hydra.run.dir={tmp_path}/out",
        "hydra/job_logging=none",
        "hydra/hydra_logging=none",
    ]
    assert cli(["backtest", "model=models:/baseline_rf@champion", *_overrides(store), *quiet]) == 0
    out = capsys.readouterr().out
    assert "ml_strategy[models:/baseline_rf@champion]" in out and "trades, total return" in out
    assert "random-signal baseline (200 runs" in out and "block-bootstrap CI" in out
    assert (
        cli(["backtest", "strategy=scalping_ema_rsi", *SYNTHETIC, *_overrides(store), *quiet]) == 0
    )
    assert "scalping_ema_rsi" in capsys.readouterr().out
    assert cli(["backtest", "model=models:/baseline_rf/7", *_overrides(store), *quiet]) == 2
    assert "has no version 7" in capsys.readouterr().err


def test_strategies_are_interchangeable_by_config(production_model):
    for choice, kind in (("ml_strategy", "ml_based"), ("scalping_ema_rsi", "rule_based")):
        cfg = compose_config(
            _overrides(
                production_model["store"], *SYNTHETIC, f"strategy={choice}", "log_to_mlflow=false"
            ),
            config_name="backtest",
        )
        out = run_backtest(cfg)
        assert out.strategy.strategy_type == kind and out.result.metrics["trades"] >= 0


@pytest.mark.slow
def test_walk_forward_parent_and_fold_runs(store, compose):
    cfg = compose(
        [
            f"mlflow.tracking_uri={store['uri']}",
            f"mlflow.artifact_root={store['artifacts']}",
            "data.n=3000",
            "model.n_estimators=20",
            "split.n_folds=3",
            "progress=false",
        ],
        config_name="walkforward",
    )
    result = walk_forward(cfg)
    client = client_for(store)
    children = client.search_runs(
        [client.get_run(result.parent_run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'",
    )
    assert len(children) == 3 and len(result.folds) == 3
    # test windows follow each other, each trained only on the past
    starts = result.folds["test_start"].tolist()
    assert starts == sorted(starts)
    assert (result.folds["train_end"] < result.folds["test_start"]).all()
    parent = client.get_run(result.parent_run_id)
    assert {"oos_balanced_accuracy", "oos_ic", "bt_total_return", "bt_sharpe"} <= set(
        parent.data.metrics
    )
    files = {a.path for a in client.list_artifacts(result.parent_run_id, "walkforward")}
    assert "walkforward/folds.csv" in files and "walkforward/equity_curve.png" in files
    # the out-of-sample backtest's safeguards, beside its bt_* metrics
    assert result.safeguards is not None and "walkforward/safeguards" in files
    assert {"random_p_value", "sharpe_ci_low", "cost_x2_total_return"} <= set(parent.data.metrics)
    # no registry versions from a walk-forward
    assert client.search_model_versions("name='baseline_rf'") == []


def test_crypto_costs_on_market_hours_data_are_flagged(tmp_path):
    """FX candles (closed at weekends) with the crypto preset's 10 bps: a warning names the
    preset that fits; with backtest/costs=fx_major there is none."""
    from trademl import generate_ohlcv
    from trademl.backtest_run import cost_mismatch

    from .conftest import write_csv

    candles = generate_ohlcv(1500, seed=3, start="2025-01-06")
    fx = candles[candles.index.day_of_week < 5]  # no weekend bars: inferred 24/5 or weekdays
    path = write_csv(fx, tmp_path / "fx.csv")
    base = [
        "strategy=scalping_ema_rsi",
        "data=csv",
        f"data.path={path}",
        "log_to_mlflow=false",
        "backtest.safeguards.enabled=false",
    ]
    out = run_backtest(compose_config(base, config_name="backtest"))
    assert out.result.settings["calendar"] in ("24/5", "weekdays")
    assert "(the crypto preset)" in out.costs_note and "backtest/costs=" in out.costs_note
    out = run_backtest(compose_config([*base, "backtest/costs=fx_major"], config_name="backtest"))
    assert out.costs_note == ""
    assert cost_mismatch("24/7", 10.0) == "" and "us_equity" in cost_mismatch("weekdays", 10)
