"""``trademl tune``: one worker of an Optuna study whose trials are trademl trainings.

Any number of ``trademl tune`` processes, on any number of machines, that name the same
study and storage share it: each claims a trial slot (:mod:`.coordination`), asks Optuna for
parameters, trains with them as Hydra overrides (a child run of the study's one MLflow parent
run, selected on validation like every sweep trial) and tells Optuna the score, until the
study has ``tune.n_trials`` trials. Cross-validated trials report their running score after
each split, and the pruner stops poor ones. The worker that finishes the study's last trial
records the best trial on the parent run and, with ``register: best``, registers its model.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trademl.errors import ConfigError, Interrupted, TrackingError
from trademl.tracking.runs import interrupt_seen
from trademl.tuning.settings import TuneSettings, masked_url
from trademl.tuning.space import parse_space, to_override
from trademl.tuning.storage import (
    check_same_search,
    create_parent,
    engine_kwargs,
    fail_stale_trials,
    open_storage,
    open_study,
    storage_url,
    unfinished,
)
from trademl.tuning.summary import maybe_summarise

__all__ = ["TuneResult", "tune"]

log = logging.getLogger(__name__)

MAX_FAILURES_IN_A_ROW = 3


@dataclass
class TuneResult:
    study_name: str
    parent_run_id: str
    trials_run: int  # by this worker
    trials_in_study: int
    summary: str | None  # written by this worker (the last to finish), else None


def tune(overrides: Sequence[str], *, echo=print) -> TuneResult:
    """Run trials of the study the config names until it has ``tune.n_trials`` of them."""
    import optuna

    from trademl._hydra import compose_config
    from trademl.schemas import validate_config
    from trademl.sweep import register_mode
    from trademl.tracking import setup_tracking

    overrides = list(overrides)
    cfg = compose_config(overrides)
    checked = validate_config(cfg, "train")
    settings: TuneSettings = checked["tune"]
    if checked["split"].validation == "none":
        raise ConfigError(
            "split.validation=none: trials would have nothing to be selected on but the test "
            "period; use split.validation=holdout, purged_kfold or cpcv"
        )
    space, fixed = parse_space(settings.params)
    metric = str(cfg.optimized_metric)
    direction = str(cfg.optimized_direction)
    mode = register_mode(cfg.get("register", "best"))
    study_name = settings.study_name or _default_study_name(overrides, cfg, checked)
    tracking, experiment_id = setup_tracking(checked["mlflow"])  # the store answers first

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(settings)
    study = open_study(storage, settings, study_name, direction, metric)
    from trademl.tuning.coordination import StudyCoordinator

    check_same_search(study, space, cfg)
    url = storage_url(settings.storage)
    key = f"{study_name}#{study._study_id}"  # a study deleted and created again starts afresh
    coordinator = StudyCoordinator(url, key, engine_kwargs=engine_kwargs(url))
    try:
        parent_run_id, parent_experiment = coordinator.parent_run(
            lambda: create_parent(tracking, experiment_id, study_name, settings, space, metric)
        )
        if parent_experiment != experiment_id:
            raise ConfigError(
                f"study {study_name} logs to MLflow experiment {parent_experiment}, this worker "
                f"to {experiment_id}: give every worker the same mlflow.experiment_name and store"
            )
        echo(
            f"tune: study {study_name} in {masked_url(settings.storage)}, {settings.n_trials} "
            f"trials in all; MLflow parent run {parent_run_id} ({tracking.describe()})"
        )
        worker = _Worker(
            study,
            coordinator,
            settings,
            space,
            fixed,
            overrides,
            echo,
            metric=metric,
            mode=mode,
            parent=parent_run_id,
            client=tracking.client(),
        )
        ran = worker.run()
        summary = maybe_summarise(
            study, coordinator, settings, tracking, parent_run_id, experiment_id, metric, mode
        )
    finally:
        coordinator.dispose()
    trials = len(study.get_trials(deepcopy=False))
    if summary is None:
        running = len(study.get_trials(deepcopy=False, states=unfinished()))
        echo(
            f"tune: this worker ran {ran} trials; the study has {trials} of {settings.n_trials}"
            + (
                f", {running} still running in other workers (the last to finish summarises)"
                if running
                else ""
            )
        )
    else:
        echo(summary)
    return TuneResult(study_name, parent_run_id, ran, trials, summary)


def _default_study_name(overrides: Sequence[str], cfg, checked) -> str:
    from trademl.train import data_label

    search = next((o.split("=", 1)[1] for o in overrides if o.startswith("hparams_search=")), "")
    data = data_label(cfg.data)[0]
    return f"{search}-{data}" if search else f"{checked['model'].name}-search-{data}"


class _Worker:
    def __init__(
        self,
        study,
        coordinator,
        settings,
        space,
        fixed,
        overrides,
        echo,
        *,
        metric: str,
        mode: str,  # register: best | all | none
        parent: str,  # the study's MLflow parent run
        client: Any,  # an MlflowClient on the study's store
    ) -> None:
        self.study, self.coordinator, self.settings = study, coordinator, settings
        self.space, self.fixed, self.overrides = space, fixed, list(overrides)
        self.echo, self.metric, self.mode = echo, metric, mode
        self.parent, self.client = parent, client

    def run(self) -> int:
        started, ran, failures = time.time(), 0, 0
        while True:
            if self.settings.timeout and time.time() - started > self.settings.timeout:
                self.echo(f"tune: tune.timeout={self.settings.timeout} s reached")
                break
            fail_stale_trials(self.study)  # trials of workers that died
            slot = self.coordinator.claim(
                self.settings.n_trials, stale_after=4 * self.settings.heartbeat_interval
            )
            if slot is None:
                break
            ran += 1
            ok = self._trial(slot)
            failures = 0 if ok else failures + 1
            if failures >= MAX_FAILURES_IN_A_ROW:
                raise TrackingError(
                    f"tune: {failures} trials in a row failed in this worker (see their runs' "
                    "error tag under the parent run); stopping it"
                )
        return ran

    def _trial(self, slot: int) -> bool:
        """One trial; False if it failed. Whatever happens after Optuna created it, the
        trial ends (FAIL if nothing else): a RUNNING trial would hold the summary back."""
        with warnings.catch_warnings():  # our own heartbeat thread records it (_Heartbeat)
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = self.study.ask(self.space)
        try:
            return self._run_trial(trial, slot)
        except BaseException as exc:
            if isinstance(exc, Interrupted):
                interrupt_seen()  # this is its unwinding: no redelivery while cleaning up
            _fail_quietly(self.study, trial)
            raise

    def _run_trial(self, trial, slot: int) -> bool:
        import optuna
        from optuna.trial import TrialState

        from trademl._hydra import compose_config
        from trademl.sweep import SweepJob
        from trademl.train import train

        self.study._storage.record_heartbeat(trial._trial_id)  # stale-able from now on
        if not self.coordinator.bind(slot, trial.number):
            self.study.tell(trial, state=TrialState.FAIL)
            self.echo(f"trial {trial.number}: slot {slot} was taken over while this worker waited")
            return False
        trial.set_user_attr("slot", slot)
        trial.set_user_attr("worker", self.coordinator.worker)
        sampled = [to_override(k, v) for k, v in {**self.fixed, **trial.params}.items()]
        run_ids: list[str] = []

        def on_run(run_id: str) -> None:
            run_ids.append(run_id)
            trial.set_user_attr("mlflow_run_id", run_id)

        def on_split(step: int, scores: dict[str, float]) -> None:
            value = scores.get(self.metric)
            if value is None or not math.isfinite(value):
                return
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after split {step}: {self.metric}={value:.4f}")

        job = SweepJob(
            number=trial.number,
            parent_run_id=self.parent,
            register=self.mode == "all",
            kind="trial",
            tags={
                "optuna_study": self.study.study_name,
                "optuna_trial": str(trial.number),
                "hydra_overrides": " ".join(sampled),
            },
            on_run=on_run,
            on_split=on_split,
        )
        t0 = time.time()
        beat = _Heartbeat(self.study, trial, self.settings.heartbeat_interval)
        try:
            with beat:
                result = train(compose_config([*self.overrides, *sampled, "progress=false"]), job)
        except optuna.TrialPruned as exc:
            self.study.tell(trial, state=TrialState.PRUNED)
            self._mark_pruned(run_ids, str(exc))
            self.echo(f"trial {trial.number} (slot {slot + 1}/{self.settings.n_trials}): {exc}")
            return True
        except Exception as exc:
            self.study.tell(trial, state=TrialState.FAIL)
            self.echo(f"trial {trial.number} failed: {type(exc).__name__}: {exc}")
            return False
        value = result.metrics.get(self.metric, math.nan)
        if not math.isfinite(value):
            self.study.tell(trial, state=TrialState.FAIL)
            self.echo(f"trial {trial.number}: {self.metric} is not finite; counted as failed")
            return False
        self.study.tell(trial, value)
        best = self.study.best_trial
        self.echo(
            f"trial {trial.number} (slot {slot + 1}/{self.settings.n_trials}): {self.metric}="
            f"{value:.4f} in {time.time() - t0:.1f} s [{' '.join(sampled)}]; best so far "
            f"{best.value:.4f} (trial {best.number})"
        )
        return True

    def _mark_pruned(self, run_ids: list[str], reason: str) -> None:
        """A pruned trial's run: KILLED (stopped early, on purpose), tagged PRUNED."""
        if not run_ids:
            return
        client = self.client
        client.set_tag(run_ids[0], "optuna_state", "PRUNED")
        client.set_tag(run_ids[0], "pruned", reason)
        client.set_terminated(run_ids[0], "KILLED")


def _fail_quietly(study, trial) -> None:
    """End ``trial`` as FAIL unless it has ended already (best effort, on the way out)."""
    from optuna.trial import TrialState

    try:
        if study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
            study.tell(trial, state=TrialState.FAIL)
    except Exception as exc:
        log.warning("could not mark trial %s failed: %s", trial.number, exc)


class _Heartbeat:
    """Records the trial's heartbeat while it trains (Optuna does this only inside
    ``study.optimize``): if this worker dies, another one fails the trial after the grace
    period, and the study can still be summarised."""

    def __init__(self, study, trial, interval: int) -> None:
        self.storage, self.trial_id, self.interval = study._storage, trial._trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.is_set():
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as exc:  # the storage may be briefly unavailable
                log.warning("could not record the trial's heartbeat: %s", exc)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
