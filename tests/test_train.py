"""Training on Hydra configs into a real MLflow store: what each run holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trademl import ConfigError
from trademl.registry import load_model
from trademl.train import train, train_pipeline

from .conftest import client_for, fast_overrides, write_csv

METRICS = {
    "test_accuracy",
    "test_balanced_accuracy",
    "test_log_loss",
    "test_f1_macro",
    "test_precision_macro",
    "test_recall_macro",
    "test_ic",
    "test_rank_ic",
    *(f"test_{m}_{c}" for m in ("precision", "recall", "f1") for c in ("SHORT", "FLAT", "LONG")),
    *(f"{p}_frac_{c}" for p in ("train", "test") for c in ("SHORT", "FLAT", "LONG")),
}


@pytest.fixture
def trained(store, compose):
    return train(compose(fast_overrides(store)))


def test_run_holds_params_metrics_artifacts_dataset_and_tags(trained, store):
    client = client_for(store)
    run = client.get_run(trained.run_id)
    params = run.data.params
    assert params["model.max_depth"] == "10" and params["model.min_samples_split"] == "20"
    assert params["split.train_ratio"] == "0.8" and params["labels.horizon"] == "24"
    assert params["features.ema_periods"] == "[5, 9, 20, 50]"
    assert params["mlflow.registered_model_name"] == "baseline_rf"
    assert set(run.data.metrics) >= METRICS
    assert 0 <= run.data.metrics["test_balanced_accuracy"] <= 1
    tags = run.data.tags
    assert tags["model_type"] == "random_forest" and tags["feature_count"] == "49"
    assert len(tags["git_commit"]) in (7, 40) or tags["git_commit"] == "unknown"
    paths = {a.path for a in client.list_artifacts(trained.run_id)}
    assert {"config.yaml", "data_report.json", "evaluation"} <= paths
    evaluation = {
        a.path.split("/")[-1] for a in client.list_artifacts(trained.run_id, "evaluation")
    }
    assert evaluation == {
        "confusion_matrix.png",
        "confusion_matrix.json",
        "feature_importance.csv",
        "feature_importance.png",
        "classification_report.txt",
        "classification_report.json",
        "validation_thresholds.csv",
    }
    local = client.download_artifacts(trained.run_id, "evaluation/confusion_matrix.json")
    cm = json.loads(Path(local).read_text())
    assert cm["labels"] == ["SHORT", "FLAT", "LONG"]
    assert sum(map(sum, cm["matrix"])) == run.data.metrics["test_rows"]
    dataset = run.inputs.dataset_inputs[0]
    input_tags = {t.key: t.value for t in dataset.tags}
    assert input_tags["rows"] == "1200" and input_tags["first_timestamp"].startswith("2024-01-01")
    assert dataset.dataset.digest and "last_timestamp" in input_tags


def test_validation_scores_and_periods_are_recorded(trained, store):
    m = trained.metrics
    # the validation segment (holdout): val_* as the test metrics, and its backtest
    assert {k.replace("test_", "val_", 1) for k in METRICS if k.startswith("test_")} <= set(m)
    assert {"val_bt_sharpe", "val_bt_trades", "val_bt_sr", "val_bt_psr"} <= set(m)
    split = trained.report["split"]
    assert split["validation"] == "holdout" and split["validation_rows"] > 0
    meta = load_model(trained.model_uri, tracking_uri=store["uri"]).trademl
    assert meta["validation"] == "holdout"
    assert meta["train_end"] < meta["validation_start"] < meta["validation_end"]
    assert meta["validation_end"] < meta["train_labels_end"] < meta["test_start"]
    assert "validation (holdout, for selection)" in trained.summary()
    assert "test (scored once, never selected on)" in trained.summary()


def test_the_confidence_threshold_is_selected_on_validation(trained, store):
    import pandas as pd

    from trademl import ModelError
    from trademl.strategies import MLStrategy
    from trademl.validation import MIN_VALIDATED_TRADES

    client = client_for(store)
    path = client.download_artifacts(trained.run_id, "evaluation/validation_thresholds.csv")
    table = pd.read_csv(path)
    assert list(table.columns) == [
        "min_confidence",
        "signal_bars",
        "trades",
        "total_return",
        "sharpe",
    ]
    assert table["signal_bars"].is_monotonic_decreasing  # a higher threshold never adds signals
    meta = load_model(trained.model_uri, tracking_uri=store["uri"]).trademl
    enough = table[table["trades"] >= MIN_VALIDATED_TRADES]
    chosen = meta["validated_min_confidence"]
    row = table[table["min_confidence"] == 0.55].iloc[0]
    assert trained.metrics["val_bt_sharpe"] == pytest.approx(row["sharpe"])
    strategy = MLStrategy(
        model_uri=trained.model_uri, tracking_uri=store["uri"], min_confidence="validated"
    )
    if len(enough):
        assert chosen == enough.loc[enough["sharpe"].idxmax(), "min_confidence"]
        strategy.load()
        assert strategy.min_confidence == chosen
    else:
        assert chosen is None
        with pytest.raises(ModelError, match="no confidence threshold selected on validation"):
            strategy.load()


def test_cross_validated_training(store, compose):
    from trademl import ModelError
    from trademl.strategies import MLStrategy

    kfold = train(
        compose(fast_overrides(store, "split.validation=purged_kfold", "split.cv_folds=3"))
    )
    m = kfold.metrics
    assert m["val_splits"] == 3 and "val_balanced_accuracy_std" in m
    assert kfold.report["split"]["validation_rows"] == 0
    # each row before the test period is held out once: its out-of-fold signals are traded
    assert {"val_bt_sharpe", "val_bt_trades", "val_bt_sr"} <= set(m)
    assert m["val_bt_bars"] > kfold.report["split"]["train_rows"] * 0.9
    cpcv = train(
        compose(
            fast_overrides(store, "split.validation=cpcv", "split.cv_folds=4", "register=false")
        )
    )
    assert cpcv.metrics["val_splits"] == 6  # 4 choose 2
    assert not any(k.startswith("val_bt_") for k in cpcv.metrics)  # rows held out twice
    strategy = MLStrategy(
        model_uri=cpcv.model_uri, tracking_uri=store["uri"], min_confidence="validated"
    )
    with pytest.raises(ModelError, match="no confidence threshold selected on validation"):
        strategy.load()


def test_registered_version_loads_back_and_predicts_the_same(trained, store, compose):
    assert trained.model_uri == "models:/baseline_rf/1"
    loaded = load_model(trained.model_uri, tracking_uri=store["uri"])
    assert (loaded.name, loaded.version, loaded.run_id) == ("baseline_rf", "1", trained.run_id)
    meta = loaded.trademl
    assert meta["feature_names"] == trained.feature_names
    assert meta["features"]["ema_periods"] == [5, 9, 20, 50]
    assert meta["labels"]["horizon"] == 24 and meta["label_mapping"]["LONG"] == 2
    from trademl.prepare import prepare_data_for_ml
    from trademl.synthetic import generate_ohlcv

    data = prepare_data_for_ml(generate_ohlcv(1200, seed=42, momentum=0.3))
    # threaded tree averaging may round differently in the last bit
    np.testing.assert_allclose(
        loaded.model.predict_proba(data.X_test),
        trained.model.predict_proba(data.X_test),
        rtol=1e-12,
        atol=1e-15,
    )


def test_reproducible_for_a_seed(store, compose, tmp_path):
    a = train(compose(fast_overrides(store)))
    b = train(compose(fast_overrides(store)))
    quality = {k: v for k, v in a.metrics.items() if not k.startswith("time_")}
    assert quality == pytest.approx({k: b.metrics[k] for k in quality}, rel=1e-12, abs=1e-15)
    assert b.registered_version == "2"  # never overwritten: a new version each time


@pytest.mark.parametrize("model", ["logistic_regression", "hist_gradient_boosting", "lightgbm"])
def test_same_metric_names_for_every_model_type(store, compose, model):
    result = train(compose(fast_overrides(store, f"model={model}")))
    assert set(result.metrics) >= METRICS
    client = client_for(store)
    imp = client.download_artifacts(result.run_id, "evaluation/feature_importance.csv")
    import pandas as pd

    table = pd.read_csv(imp)
    assert len(table) == 49 and "permutation_mean" in table
    assert (
        result.registered_name
        == {
            "logistic_regression": "baseline_lr",
            "hist_gradient_boosting": "baseline_hgb",
            "lightgbm": "baseline_lgbm",
        }[model]
    )


def test_sweep_key_not_used_by_a_model_is_recorded(store, compose):
    result = train(compose(fast_overrides(store, "model=logistic_regression", "model.max_depth=5")))
    tags = client_for(store).get_run(result.run_id).data.tags
    assert "max_depth" in tags["ignored_params"]


def test_promote_option_and_no_register(store, compose):
    result = train(compose(fast_overrides(store, "promote=Production")))
    assert result.promoted_to == "Production"
    assert load_model("models:/baseline_rf@champion", tracking_uri=store["uri"]).version == "1"
    unregistered = train(compose(fast_overrides(store, "register=false")))
    assert unregistered.registered_version is None
    assert unregistered.model_uri == f"runs:/{unregistered.run_id}/model"
    assert (
        load_model(unregistered.model_uri, tracking_uri=store["uri"]).run_id == unregistered.run_id
    )


def test_spec_train_pipeline_wrapper(store, candles, tmp_path):
    path = write_csv(candles, tmp_path / "BTCUSDT_1h.csv")
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    result = train_pipeline(
        data_filepath=path,
        model_name="btc_1h_rf",
        model_type="random_forest",
        prediction_horizon=2,
        hyperparams={"n_estimators": 20, "max_depth": 6},
        overrides=[
            f"mlflow.tracking_uri={store['uri']}",
            f"mlflow.artifact_root={store['artifacts']}",
            "progress=false",
            "evaluation.permutation_repeats=0",
        ],
    )
    GlobalHydra.instance().clear()
    assert result["model_name"] == "btc_1h_rf" and result["version"] == "1"
    assert 0 <= result["metrics"]["accuracy" if False else "test_accuracy"] <= 1
    run = client_for(store).get_run(result["run_id"])
    assert run.data.params["labels.horizon"] == "2" and run.data.params["model.max_depth"] == "6"
    assert run.data.tags["data.source"] == path


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("labels.horizon=0", "labels.horizon=0"),
        ("model.balance=magic", "model.balance='magic'"),
        ("model.estimator=sklearn.nope.Model", "cannot be imported"),
        ("split.purge=0", "shorter than the label horizon"),
        ("seed=-1", "seed=-1"),
        ("mlflow.tracking_uri=./mlruns", "not supported"),
        ("data.momentum=2", "momentum=2"),
    ],
)
def test_bad_values_are_config_errors(store, compose, override, match):
    with pytest.raises(ConfigError, match=match):
        train(compose(fast_overrides(store, override)))


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("model=xgboost", "Could not find 'model/xgboost'.*random_forest"),
        ("model.max_dept=3", "model.max_dept is not a config key; did you mean 'model.max_depth'"),
        ("labels=oracle", "labels/oracle"),
    ],
)
def test_bad_overrides_are_config_errors(compose, override, match):
    with pytest.raises(ConfigError, match=match):
        compose([override])


def test_csv_data_requires_a_path(store, compose):
    overrides = [o for o in fast_overrides(store, "data=csv") if not o.startswith("data.n=")]
    with pytest.raises(ConfigError, match="data.path is required: give it on the command line"):
        train(compose(overrides))
