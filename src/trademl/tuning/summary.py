"""The end of a study: once all its trials exist and have finished, one worker records the
best trial on the parent run (:func:`trademl.sweep.summarise_sweep`), registers its model,
and logs the trials as a table and a plot."""

from __future__ import annotations

from pathlib import Path

from trademl.tuning.storage import fail_stale_trials, unfinished

__all__ = ["maybe_summarise"]


def maybe_summarise(study, coordinator, settings, tracking, parent, experiment_id, metric, mode):
    """The summary, if the study is complete and this worker is the one to write it."""

    fail_stale_trials(study)
    if coordinator.bound() < settings.n_trials:  # a trial is still to be asked for
        return None
    if study.get_trials(deepcopy=False, states=unfinished()):
        return None
    taken, before = coordinator.take_summary(settings.n_trials)
    if not taken:
        return None
    try:
        return _summarise(study, tracking, parent, experiment_id, metric, mode)
    except BaseException:
        coordinator.release_summary(before)  # the next worker, or a re-run, writes it
        raise


def _summarise(study, tracking, parent, experiment_id, metric, mode) -> str:
    from trademl.sweep import summarise_sweep

    client = tracking.client()
    trials = study.get_trials(deepcopy=False)
    summary = summarise_sweep(
        client,
        parent,
        experiment_id,
        metric=metric,
        direction=study.direction.name.lower(),
        register=mode,
        registered_name=tracking.registered_model_name,
        trials=len(trials),
    )
    states = {s.name: sum(t.state == s for t in trials) for s in {t.state for t in trials}}
    tags = {f"optuna_{k.lower()}_trials": str(v) for k, v in states.items()}
    if any(t.state.name == "COMPLETE" for t in trials):
        tags["optuna_best_trial"] = str(study.best_trial.number)
    for key, value in tags.items():
        client.set_tag(parent, key, value)
    _log_history(client, parent, trials, metric, study.direction.name.lower() == "maximize")
    client.set_terminated(parent, "FINISHED" if summary.best_run_id else "FAILED")
    return summary.text.replace("sweep:", f"tune: study {study.study_name}:", 1)


def _log_history(client, parent: str, trials, metric: str, maximize: bool) -> None:
    """The trials as a table and a plot on the parent run (``tune/``)."""
    import csv
    import tempfile

    from trademl.plots import plot_search_history

    keys = sorted({k for t in trials for k in t.params})
    with tempfile.TemporaryDirectory() as tmp:
        with open(Path(tmp) / "trials.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["trial", "state", "value", "run_id", *keys])
            for t in trials:
                writer.writerow(
                    [
                        t.number,
                        t.state.name,
                        "" if t.value is None else t.value,
                        t.user_attrs.get("mlflow_run_id", ""),
                        *(t.params.get(k, "") for k in keys),
                    ]
                )
        plot_search_history(
            [t.number for t in trials],
            [t.value for t in trials],
            [t.state.name for t in trials],
            Path(tmp) / "search_history.png",
            metric=metric,
            maximize=maximize,
        )
        client.log_artifacts(parent, tmp, "tune")
