"""Entry points as users type them: the trademl command, Hydra multirun, Optuna, mlflow run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trademl.cli import main as cli
from trademl.safeguards_stats import deflated_sharpe_ratio
from trademl.sweep import SEALED_TEST_METRICS

from .conftest import client_for, fast_overrides

ROOT = Path(__file__).resolve().parents[1]


def _runs(store):
    client = client_for(store)
    exp = client.get_experiment_by_name("trademl")
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def _trademl(args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "trademl.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_trademl_train_refuses_an_unknown_group_option(capsys):
    assert cli(["train", "model=xgboost"]) == 2
    err = capsys.readouterr().err
    assert "Could not find 'model/xgboost'" in err and err.count("\n") == 1


def test_a_training_run_lasts_from_the_command_start_and_its_experiment_opens_on_runs(
    store, tmp_path
):
    import time

    launched = time.time()
    proc = _trademl(["train", *fast_overrides(store), f"hydra.run.dir={tmp_path}/out"], tmp_path)
    finished = time.time()
    assert proc.returncode == 0, proc.stderr
    assert "registered baseline_rf version 1" in proc.stdout
    client, (run,) = _runs(store)
    start, end = run.info.start_time / 1000, run.info.end_time / 1000
    # the run starts when the process did (imports and opening the store included) ...
    assert launched - 0.5 <= start <= launched + 1.0
    # ... so its duration is nearly the whole command's (after the run: the summary and the
    # interpreter's exit, seconds on a loaded machine)
    assert end - start >= 0.5 * (finished - launched)
    stages = sum(v for k, v in run.data.metrics.items() if k.startswith("time_"))
    assert end - start > stages
    assert run.data.tags["data"].startswith("synthetic n=1200")
    # the MLflow UI opens a model-training experiment on its runs, not the GenAI overview
    exp = client.get_experiment_by_name("trademl")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_multirun_gives_child_runs_under_one_parent_holding_the_best(store, tmp_path):
    proc = _trademl(
        [
            "train",
            "-m",
            "model=random_forest,logistic_regression",
            *fast_overrides(store),
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    _, runs = _runs(store)
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    # selected on validation; a trial's test metrics are sealed (not run metrics) ...
    assert not any(k.startswith("test_") for c in children for k in c.data.metrics)
    best = max(children, key=lambda r: r.data.metrics["val_balanced_accuracy"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert (
        parent.data.metrics["best_val_balanced_accuracy"]
        == best.data.metrics["val_balanced_accuracy"]
    )
    assert parent.data.metrics["sweep_trials"] == 2
    # ... and the parent reports the selected trial's test score, and only that one
    client = client_for(store)
    sealed = json.loads(
        Path(
            client.download_artifacts(best.info.run_id, SEALED_TEST_METRICS, str(tmp_path))
        ).read_text()
    )
    assert parent.data.metrics["selected_test_balanced_accuracy"] == pytest.approx(
        sealed["test_balanced_accuracy"]
    )
    assert "its test balanced accuracy" in proc.stdout
    # nothing of the test period is readable in a trial: its artifacts describe validation
    assert best.data.tags["evaluation_artifacts"] == "validation period"
    cm = json.loads(
        Path(
            client.download_artifacts(
                best.info.run_id, "evaluation/confusion_matrix.json", str(tmp_path)
            )
        ).read_text()
    )
    val_rows = sum(map(sum, cm["matrix"]))
    assert val_rows != sealed["test_rows"] and val_rows == best.data.metrics["val_rows"]
    # the deflated Sharpe ratio of the selected trial's validation backtest, over 2 trials
    srs = [c.data.metrics.get("val_bt_sr", 0.0) for c in children]
    m = best.data.metrics
    expected = deflated_sharpe_ratio(
        m["val_bt_sr"],
        int(m["val_bt_bars"]),
        m["val_bt_skew"],
        m["val_bt_kurt"],
        2,
        float(np.var(srs, ddof=1)),
    )
    assert parent.data.metrics["selected_val_bt_dsr"] == pytest.approx(expected)
    assert 0 <= expected <= m["val_bt_psr"] <= 1  # deflating never helps
    assert "deflated Sharpe of its validation backtest over 2 trials" in proc.stdout
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["model_type"] for c in children} == {"random_forest", "logistic_regression"}
    # named after what was swept; the children after model, labels, horizon and data
    assert parent.info.run_name == "sweep model=random_forest,logistic_regression"
    assert {c.info.run_name for c in children} == {
        "random_forest-triple_barrier-h24-synthetic1200-job0",
        "logistic_regression-triple_barrier-h24-synthetic1200-job1",
    }
    # register: best (the default) registers the best trial's model once, under its own name
    name = best.data.tags["registered_model_name"]
    assert (
        name
        == {"random_forest": "baseline_rf", "logistic_regression": "baseline_lr"}[
            best.data.tags["model_type"]
        ]
    )
    versions = [
        v
        for n in ("baseline_rf", "baseline_lr")
        for v in client.search_model_versions(f"name='{n}'")
    ]
    assert [(v.name, str(v.version), v.run_id) for v in versions] == [(name, "1", best.info.run_id)]
    assert parent.data.tags["registered_version"] == f"{name} version 1"
    assert f"registered {name} version 1" in proc.stdout


@pytest.mark.slow
def test_parallel_jobs_on_sqlite_lose_no_runs_or_versions(store, tmp_path):
    proc = _trademl(
        [
            "train",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "seed=1,2,3,4",
            "register=all",  # every trial's model: none lost by parallel writes
            *fast_overrides(store),
            f"hydra.sweep.dir={tmp_path}/par",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    client, runs = _runs(store)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    versions = client.search_model_versions("name='baseline_rf'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]
    assert {v.run_id for v in versions} == {r.info.run_id for r in children}


@pytest.mark.slow
def test_mlflow_run_of_the_project(store, tmp_path):
    # `python` in the MLproject command must be this interpreter, as in an activated venv
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = dict(os.environ, MLFLOW_TRACKING_URI=store["uri"], PATH=path)
    env.pop("MLFLOW_REGISTRY_URI", None)
    extra = [o for o in fast_overrides(store) if "tracking_uri" not in o]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "run",
            str(ROOT),
            "--env-manager",
            "local",
            "-P",
            "model=random_forest",
            *[arg for o in extra for arg in ("-P", o)],  # any key: a Hydra override
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, runs = _runs(store)
    assert len(runs) == 1  # the training, in the trademl experiment beside `trademl train`'s
    run = runs[0]
    assert run.info.run_name == "random_forest-triple_barrier-h24-synthetic1200"
    assert run.data.params["model.max_depth"] == "10"  # the composed config
    assert run.data.params["model.n_estimators"] == "25"  # a -P key
    assert "test_balanced_accuracy" in run.data.metrics
    assert client.get_model_version("baseline_rf", "1").run_id == run.info.run_id
    # the run `mlflow run` made in Default (no --experiment-name) points to the training, and
    # its parameters are logged without shell quotes
    (stub,) = client.search_runs(["0"])
    assert stub.data.tags["mlflow.source.type"] == "PROJECT"
    assert stub.data.tags["trademl.training_run_id"] == run.info.run_id
    assert stub.data.params["data_path"] == "none" and stub.data.params["model"] == "random_forest"
    assert stub.data.params["model.n_estimators"] == "25"
    for r in (run, stub):
        assert not [v for v in r.data.params.values() if v.startswith("'")], r.data.params
    # the checkout's src/ runs, and nothing is installed into the environment
    command = (ROOT / "MLproject").read_text()
    assert "pip" not in command.split("command:")[1] and 'PYTHONPATH="$PWD/src' in command


def test_mlproject_parameters_become_overrides():
    import argparse

    from trademl.mlproject import to_overrides

    args = argparse.Namespace(
        model="lightgbm",
        data="csv",
        data_path="/data/btc.csv",
        horizon="none",
        promote="none",
        overrides="labels=forward_return 'model.max_depth=6'",
    )
    assert to_overrides(args, ["--seed", "3", "--split.validation", "purged_kfold"]) == [
        "model=lightgbm",
        "data=csv",
        "data.path=/data/btc.csv",
        "labels=forward_return",
        "model.max_depth=6",
        "seed=3",
        "split.validation=purged_kfold",
    ]


def test_deflation_counts_every_trial_even_those_that_never_traded():
    from types import SimpleNamespace

    from trademl.sweep import deflated_sharpe

    def run(**metrics):
        return SimpleNamespace(
            data=SimpleNamespace(metrics=metrics), info=SimpleNamespace(status="FINISHED")
        )

    best = run(val_bt_sr=0.08, val_bt_bars=500.0, val_bt_skew=0.0, val_bt_kurt=3.0, val_bt_psr=0.96)
    idle = [run(val_bt_bars=500.0, val_bt_trades=0.0) for _ in range(49)]  # no Sharpe logged
    out = deflated_sharpe(best, [best, *idle])
    assert out["trials_with_val_bt"] == 50
    expected = deflated_sharpe_ratio(
        0.08, 500, 0.0, 3.0, 50, float(np.var([0.08] + [0.0] * 49, ddof=1))
    )
    assert out["selected_val_bt_dsr"] == pytest.approx(expected)
    assert out["selected_val_bt_dsr"] < deflated_sharpe(best, [best])["selected_val_bt_dsr"]
    assert deflated_sharpe(run(val_balanced_accuracy=0.4), [best]) == {}  # no validation backtest
