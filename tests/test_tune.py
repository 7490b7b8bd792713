"""`trademl tune`: Optuna studies in RDB storage shared by several worker processes, each trial
an MLflow child run of the study's one parent, the best trial registered once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from trademl import ConfigError
from trademl.cli import main as cli
from trademl.tuning.space import parse_space, to_override

from .conftest import client_for, fast_overrides


def _runs(store):
    client = client_for(store)
    exp = client.get_experiment_by_name("trademl")
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def _worker(args, cwd) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trademl.cli", "tune", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _check_study(store, storage: str, study_name: str, n: int) -> tuple:
    """Exactly n trials, n child runs (one per trial, none lost or duplicated), one parent
    holding the best, one registered version: that of the best trial."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials()
    assert len(trials) == n
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.user_attrs["slot"] for t in trials) == list(range(n))
    client, runs = _runs(store)
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == n == len(runs) - 1
    assert sorted(t.user_attrs["mlflow_run_id"] for t in trials) == sorted(
        c.info.run_id for c in children
    )
    assert parent.info.run_name == f"tune {study_name}"
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep_trials"] == n
    best_trial = study.best_trial
    assert parent.data.tags["best_run_id"] == best_trial.user_attrs["mlflow_run_id"]
    assert parent.data.tags["optuna_best_trial"] == str(best_trial.number)
    assert parent.data.metrics["best_val_balanced_accuracy"] == pytest.approx(best_trial.value)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "tune")}
    assert logged == {"tune/trials.csv", "tune/search_history.png"}
    versions = client.search_model_versions("name='baseline_rf'")
    assert [(str(v.version), v.run_id) for v in versions] == [
        ("1", parent.data.tags["best_run_id"])
    ]
    for child in children:  # the sampled parameters are what the child trained with
        trial = next(t for t in trials if t.user_attrs["mlflow_run_id"] == child.info.run_id)
        assert child.data.params["model.max_depth"] == str(trial.params["model.max_depth"])
        assert child.info.run_name.endswith(f"-trial{trial.number}")
        assert not any(k.startswith("test_") for k in child.data.metrics)  # sealed
    return study, parent, children


@pytest.mark.slow
def test_three_workers_on_one_sqlite_study_make_exactly_n_trials(store, tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    args = [
        "hparams_search=random_forest_optuna",
        "tune.n_trials=4",
        f"tune.storage={storage}",
        "tune.params.model.n_estimators='choice(10, 20)'",
        *fast_overrides(store),
    ]
    workers = [_worker(args, tmp_path) for _ in range(3)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    name = "random_forest_optuna-synthetic1200"
    _check_study(store, storage, name, 4)
    summaries = [out for out, _ in outputs if f"tune: study {name}: 4 trials" in out]
    assert len(summaries) == 1  # written once, by the worker that finished last
    assert "registered baseline_rf version 1" in summaries[0]
    # the same command again: the study is complete, nothing runs, nothing is registered
    assert cli(["tune", *args]) == 0
    assert "this worker ran 0 trials; the study has 4 of 4" in capsys.readouterr().out
    _check_study(store, storage, name, 4)


class _PruneAfterFirst(optuna.pruners.BasePruner):
    """Prunes every trial but the first at its first report: a pruner that certainly acts."""

    def prune(self, study, trial) -> bool:
        return trial.number >= 1


def test_cross_validated_trials_are_pruned_and_recorded(store, tmp_path, monkeypatch, capsys):
    from trademl.tuning.study import tune

    monkeypatch.setattr(optuna.pruners, "MedianPruner", lambda **_: _PruneAfterFirst())
    storage = f"sqlite:///{tmp_path}/optuna.db"
    result = tune(
        [
            "hparams_search=random_forest_optuna",
            "tune.n_trials=2",
            f"tune.storage={storage}",
            "split.validation=purged_kfold",
            "split.cv_folds=3",
            *fast_overrides(store, "model.n_estimators=10", "evaluation.validation_backtest=false"),
        ]
    )
    assert result.trials_run == 2 and result.summary
    study = optuna.load_study(study_name=result.study_name, storage=storage)
    states = [t.state.name for t in study.get_trials()]
    assert states == ["COMPLETE", "PRUNED"]
    pruned = study.get_trials()[1]
    assert list(pruned.intermediate_values) == [1]  # stopped after its first split
    _, runs = _runs(store)
    by_id = {r.info.run_id: r for r in runs}
    run = by_id[pruned.user_attrs["mlflow_run_id"]]
    assert run.info.status == "KILLED" and run.data.tags["optuna_state"] == "PRUNED"
    assert "pruned after split 1" in run.data.tags["pruned"]
    parent = by_id[result.parent_run_id]
    assert parent.data.metrics["sweep_pruned"] == 1 and parent.info.status == "FINISHED"
    assert "(1 pruned)" in capsys.readouterr().out


def test_search_spaces_in_hydra_sweep_syntax():
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    space, fixed = parse_space(
        {
            "model.n_estimators": "choice(50, 100, 200)",
            "model.max_depth": "int(range(3, 16))",
            "model.learning_rate": "tag(log, interval(0.01, 0.3))",
            "model.min_samples_leaf": "int(interval(1, 50))",
            "model.max_features": "choice(sqrt, log2)",
            "model.step": "range(2, 11, 4)",
            "model.criterion": "gini",
        }
    )
    assert space["model.n_estimators"] == CategoricalDistribution([50, 100, 200])
    assert space["model.max_depth"] == IntDistribution(3, 15)
    assert space["model.learning_rate"] == FloatDistribution(0.01, 0.3, log=True)
    assert space["model.min_samples_leaf"] == IntDistribution(1, 50)
    assert space["model.max_features"] == CategoricalDistribution(["sqrt", "log2"])
    assert space["model.step"] == IntDistribution(2, 10, step=4)
    assert fixed == {"model.criterion": "gini"}
    assert to_override("a", "sqrt") == "a=sqrt"
    assert to_override("a", "has space") == "a='has space'"
    assert to_override("a", None) == "a=null"
    assert to_override("a", 0.1) == "a=0.1"
    for bad, why in [
        ("range(5, 5)", "empty"),
        ("tag(log, interval(0, 1))", "low > 0"),
        ("interval(2, 1)", "low < high"),
        ("choice(", "tune.params.k"),
    ]:
        with pytest.raises(ConfigError, match=why):
            parse_space({"k": bad})
    with pytest.raises(ConfigError, match="nothing to search"):
        parse_space({"k": "3"})


def test_tune_refuses_bad_settings_before_any_work(store, tmp_path, capsys):
    search = "hparams_search=random_forest_optuna"
    cases = [
        ([search, "tune.n_trials=0"], "tune.n_trials=0 must be an integer >= 1"),
        ([search, "tune.storage=redis://x"], "must be an Optuna RDB URL"),
        ([search, "split.validation=none"], "split.validation=none"),
        ([search, "-m"], "key=value overrides only"),
        ([], "nothing to search"),
        ([search, "optimized_metric=val_log_loss"], "would select (and register) the worst"),
    ]
    for extra, message in cases:
        assert cli(["tune", *fast_overrides(store), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not Path(store["uri"].removeprefix("sqlite:///")).exists()  # nothing was written
    assert cli(["train", "hparams_search=random_forest_optuna"]) == 2
    assert "run by `trademl tune" in capsys.readouterr().err


@pytest.fixture(scope="module")
def pg():
    from ._servers import postgres_server

    with postgres_server() as server:
        yield server


@pytest.mark.slow
def test_workers_share_a_study_in_postgresql(pg, store, tmp_path):
    pg.create_database("optuna")
    plain = pg.uri("optuna", driver=None)  # as a team writes it: postgresql://user@host/db
    assert plain.startswith("postgresql://")
    args = [
        "hparams_search=random_forest_optuna",
        "tune.n_trials=3",
        f"tune.storage={plain}",
        "tune.study_name=team-study",
        "tune.params.model.n_estimators='choice(10, 20)'",
        *fast_overrides(store),
    ]
    workers = [_worker(args, tmp_path) for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    _check_study(store, pg.uri("optuna"), "team-study", 3)
    slots = pg.query(
        "optuna",
        "SELECT count(*), count(trial_number) FROM trademl_tune_slots WHERE study_name LIKE %s",
        "team-study#%",
    )
    assert slots == [(3, 3)]  # every slot bound to its trial


def test_coordination_slots_parent_and_summary_hold_under_failures(tmp_path):
    """What makes "exactly N trials, summarised once" hold when workers die or fail: a slot
    whose worker died before asking is claimed again, a failed parent creation lets the next
    worker create it, a summary that failed can be written again, and the study is not
    summarised while a claimed slot has no trial yet."""
    from trademl.tuning.coordination import StudyCoordinator
    from trademl.tuning.settings import TuneSettings
    from trademl.tuning.summary import maybe_summarise

    url = f"sqlite:///{tmp_path}/optuna.db"
    a, b = StudyCoordinator(url, "s#1"), StudyCoordinator(url, "s#1")
    b.worker = "other-host:1"
    assert a.claim(1, stale_after=60) == 0
    assert b.claim(1, stale_after=60) is None  # taken, and not stale
    # B must not summarise the study while A's slot has no trial (A is still asking for it)
    study = optuna.create_study(storage=url, study_name="s")
    settings = TuneSettings(storage=url, n_trials=1)
    assert maybe_summarise(study, b, settings, None, "p", "0", "m", "best") is None
    # A dies before asking: after the grace period B takes the slot over; A cannot bind it
    assert b.claim(1, stale_after=0) == 0
    assert a.bind(0, 7) is False and b.bind(0, 7) is True and a.bound() == 1
    assert b.claim(1, stale_after=0) is None  # bound slots are never taken over
    # the parent: a creation that fails leaves the way free for the next worker
    with pytest.raises(RuntimeError):
        a.parent_run(lambda: (_ for _ in ()).throw(RuntimeError("store down")))
    assert b.parent_run(lambda: ("run-1", "0")) == ("run-1", "0")
    assert a.parent_run(lambda: pytest.fail("created twice"), timeout=1) == ("run-1", "0")
    # the summary: taken once; released after a failure, taken again
    taken, before = a.take_summary(1)
    assert taken and before is None and b.take_summary(1) == (False, None)
    a.release_summary(before)
    assert b.take_summary(1) == (True, None) and a.take_summary(1) == (False, None)
    assert a.take_summary(2)[0]  # a study extended with more trials is summarised again
    a.dispose()
    b.dispose()


def test_a_worker_joins_a_study_only_with_the_same_config_and_space(store, tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    base = [
        "hparams_search=random_forest_optuna",
        "tune.n_trials=1",
        f"tune.storage={storage}",
        "tune.study_name=s",
        *fast_overrides(store, "model.n_estimators=10"),
    ]
    assert cli(["tune", *base]) == 0
    capsys.readouterr()
    cases = [
        (["labels.horizon=10"], "was started with another training config"),
        (["tune.params.model.max_depth='interval(3.0, 9.0)'"], "tune.params.model.max_depth"),
    ]
    for extra, message in cases:
        assert cli(["tune", *base, "tune.n_trials=2", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    study = optuna.load_study(study_name="s", storage=storage)
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"]  # nothing left RUNNING


def test_a_password_in_a_url_never_reaches_a_run(store, compose):
    from trademl.train import train

    secret = "postgresql://optuna:s3cr3t@db.internal/optuna"
    result = train(compose(fast_overrides(store, f"tune.storage={secret}")))
    client = client_for(store)
    run = client.get_run(result.run_id)
    assert not [k for k in run.data.params if k.startswith("tune.")]
    path = client.download_artifacts(result.run_id, "config.yaml", str(Path(store["artifacts"])))
    assert "s3cr3t" not in Path(path).read_text()
    assert "s3cr3t" not in str(run.data.params) + str(run.data.tags)
