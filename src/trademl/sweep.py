"""Hydra multirun <-> MLflow: one parent run per sweep, one child run per job.

:class:`MlflowSweepCallback` (registered in ``conf/train.yaml`` under
``hydra.callbacks``) creates the parent run before the first job and writes its
id into the sweep directory, where every job (also in other processes, with the
joblib launcher) finds it. After the last job it records the best child by
``optimized_metric`` / ``optimized_direction`` (a validation metric) on the parent: the
metric, the child's run id, its overrides, its validation metrics, and its test metrics
(``selected_test_*``), which trials keep sealed in an artifact rather than as run metrics so
that no sort or sweeper can select on them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from trademl.errors import ConfigError, TradeMLError
from trademl.tracking import RunRecorder, setup_tracking

__all__ = [
    "MlflowSweepCallback",
    "SweepJob",
    "best_child",
    "hydra_job",
    "register_mode",
    "summarise_sweep",
    "swept_overrides",
]

log = logging.getLogger(__name__)

PARENT_RUN_FILE = ".mlflow_parent_run_id"
SEALED_TEST_METRICS = "evaluation/test_metrics.json"  # a trial's test scores, not run metrics


REGISTER_MODES = ("best", "all", "none")


def register_mode(value: Any) -> str:
    """``register`` as one of :data:`REGISTER_MODES` (``true``: best, ``false``: none).

    A single training registers its model unless ``none``; a sweep registers its best trial's
    model (``best``, the default: one version per sweep), every trial's (``all``) or none.
    """
    if value is True:
        return "best"
    if value is False or value is None:
        return "none"
    mode = str(value).lower()
    if mode not in REGISTER_MODES:
        raise ConfigError(
            f"register={value!r} must be best (a sweep registers its best trial's model; a "
            "single training its model), all (every trial's) or none"
        )
    return mode


@dataclass
class SweepJob:
    """One trial of a sweep: a Hydra multirun job, or a trial of ``trademl tune``'s study.

    A trial's run is a child of the sweep's parent run; its test metrics are sealed (see the
    module's doc) and its evaluation artifacts describe the validation segment.
    """

    number: int
    parent_run_id: str | None
    register: bool = False  # this trial registers its own model (register=all)
    kind: str = "job"  # in the run name: <model>-...-job3, -trial3
    tags: dict[str, str] = field(default_factory=dict)
    on_run: Callable[[str], None] | None = None  # told the trial's run id once it exists
    # told the running mean of the validation scores after each cross-validation split (a
    # pruner stops the trial by raising from it)
    on_split: Callable[[int, dict[str, float]], None] | None = None


def hydra_job(config: DictConfig) -> SweepJob | None:
    """This training as a job of a Hydra multirun sweep (``None`` outside one)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        return None
    hydra_cfg = HydraConfig.get()
    marker = Path(hydra_cfg.sweep.dir) / PARENT_RUN_FILE
    return SweepJob(
        number=int(hydra_cfg.job.num),
        parent_run_id=marker.read_text().strip() if marker.exists() else None,
        register=register_mode(config.get("register", "best")) == "all",
    )


def swept_overrides(overrides: list[str]) -> list[str]:
    """The overrides that sweep (``model=a,b``, ``seed=range(3)``, ``x=choice(...)``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for text in overrides:
        try:
            if parser.parse_override(text).is_sweep_override():
                out.append(text)
        except Exception:  # Hydra has already refused it, or will
            continue
    return out


def _settings(config: DictConfig):
    from trademl._hydra import instantiate_node

    return setup_tracking(instantiate_node(config.mlflow, "mlflow"))


def best_child(client, parent_run_id: str, experiment_id: str, metric: str, direction: str):
    """The finished child run with the best ``metric`` (``None`` if there is none)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=5000,
    )
    # finished runs only: one that failed after logging its metrics (say, in writing its model)
    # or that a killed worker left RUNNING has no model to stand for
    scored = [r for r in runs if metric in r.data.metrics and r.info.status == "FINISHED"]
    if not scored:
        return None, runs
    pick = max if direction == "maximize" else min
    return pick(scored, key=lambda r: r.data.metrics[metric]), runs


class MlflowSweepCallback(Callback):
    """Create the sweep's parent run and summarise the best child into it.

    The parent run is a :class:`~trademl.tracking.RunRecorder` registered as open: if the
    sweep stops early (a failed job, SIGINT/SIGTERM), the ``trademl`` command ends it as
    FAILED or KILLED, and with it any child run that a killed worker left RUNNING.
    """

    def __init__(self) -> None:
        self._parent = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            settings, experiment_id = _settings(config)
        except TradeMLError as exc:
            log.error("MLflow sweep parent not created: %s", exc)
            return
        task = list(config.hydra.overrides.task)
        swept = swept_overrides(task) or task
        self._parent = _SweepParent.start(
            settings,
            experiment_id,
            run_name=f"sweep {' '.join(swept)}"[:250],
            tags={
                "sweep": "parent",
                "hydra_overrides": " ".join(task),
                "swept": " ".join(swept),
                "sweep_dir": str(config.hydra.sweep.dir),
            },
        )
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_RUN_FILE).write_text(self._parent.run_id)
        log.info("MLflow parent run %s for the sweep in %s", self._parent.run_id, sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        marker = Path(config.hydra.sweep.dir) / PARENT_RUN_FILE
        if self._parent is None or not marker.exists():
            return
        parent = self._parent
        summary = summarise_sweep(
            parent.client,
            parent.run_id,
            parent.experiment_id,
            metric=str(config.optimized_metric),
            direction=str(config.get("optimized_direction", "maximize")),
            register=register_mode(config.get("register", "best")),
            registered_name=parent.settings.registered_model_name,
        )
        print(summary.text)
        parent.end("FINISHED" if summary.ok else "FAILED")


@dataclass
class SweepSummary:
    """What :func:`summarise_sweep` wrote on a parent run."""

    trials: int
    best_run_id: str | None
    best_value: float | None
    registered_version: str | None
    ok: bool  # every trial finished (a pruned one counts) and one has the metric
    text: str


def summarise_sweep(
    client,
    parent_run_id: str,
    experiment_id: str,
    *,
    metric: str,
    direction: str,
    register: str = "best",
    registered_name: str | None = None,
    trials: int | None = None,
) -> SweepSummary:
    """Record a sweep's best child on its parent run (see the module's doc) and, with
    ``register="best"``, register that child's model as a new version of ``registered_name``.

    Shared by Hydra multiruns and ``trademl tune``; ``trials`` is the number of trials when
    the caller knows better than the child runs (an Optuna study)."""
    best, runs = best_child(client, parent_run_id, experiment_id, metric, direction)
    n = len(runs) if trials is None else trials
    metrics: dict[str, float] = {"sweep_jobs": float(len(runs)), "sweep_trials": float(n)}
    pruned = [r for r in runs if r.data.tags.get("optuna_state") == "PRUNED"]
    failed = [r for r in runs if r.info.status != "FINISHED" and r not in pruned]
    metrics["sweep_pruned"] = float(len(pruned))
    metrics["sweep_failed"] = float(len(failed))
    version = None
    if best is None:
        client.log_batch(parent_run_id, metrics=_metrics(metrics))
        text = f"sweep: {n} trials under parent {parent_run_id}; none has {metric}"
        return SweepSummary(n, None, None, None, False, text)
    test = _sealed_test_metrics(client, best.info.run_id)
    deflated = deflated_sharpe(best, runs)
    value = best.data.metrics[metric]
    metrics |= (
        {f"best_{metric}": value}
        | {f"best.{k}": v for k, v in best.data.metrics.items() if k.startswith("val_")}
        | {f"selected_{k}": v for k, v in test.items()}
        | deflated
    )
    tags = {
        "best_run_id": best.info.run_id,
        "best_run_name": best.info.run_name or "",
        "best_overrides": best.data.tags.get("hydra_overrides", ""),
        "optimized_metric": f"{metric} ({direction})",
        "selection": f"{metric} on validation, among {n} trials; the test period scored once, "
        "for the selected trial only (selected_test_*)",
    }
    previous = client.get_run(parent_run_id).data.tags
    if previous.get("best_run_id") == best.info.run_id and previous.get("registered_version"):
        register = "none"  # a study extended with more trials, and the best is the same one
        tags["registered_version"] = previous["registered_version"]
    registered_name = best.data.tags.get("registered_model_name") or registered_name
    if register == "best" and registered_name:
        from trademl.tracking.model_files import register_run_model

        version = register_run_model(
            client,
            registered_name,
            best.info.run_id,
            experiment_id,
            description=f"best of {n} trials by {metric} ({direction}) on validation: "
            f"{value:.4f} (run {best.info.run_id}, sweep {parent_run_id})",
        )
        tags["registered_version"] = f"{registered_name} version {version}"
    client.log_batch(parent_run_id, metrics=_metrics(metrics), tags=_tags(tags))
    shown = test.get("test_balanced_accuracy")
    dsr = deflated.get("selected_val_bt_dsr")
    text = (
        f"sweep: {n} trials under parent {parent_run_id}"
        + (f" ({len(pruned)} pruned)" if pruned else "")
        + (f" ({len(failed)} failed)" if failed else "")
        + f"; best {metric} = {value:.4f} in run {best.info.run_id} "
        f"({best.info.run_name}: {best.data.tags.get('hydra_overrides', '')})"
        + (f"; its test balanced accuracy {shown:.4f}" if shown is not None else "")
        + (
            f"; deflated Sharpe of its validation backtest over "
            f"{int(deflated['trials_with_val_bt'])} trials {dsr:.3f}"
            if dsr is not None and dsr == dsr
            else ""
        )
        + (f"; registered {registered_name} version {version}" if version else "")
    )
    return SweepSummary(n, best.info.run_id, value, version, not failed, text)


def _metrics(values: dict[str, float]):
    import math
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, 0) for k, v in values.items() if math.isfinite(float(v))]


def _tags(values: dict[str, str]):
    from mlflow.entities import RunTag

    return [RunTag(k, str(v)[:5000]) for k, v in values.items()]


def deflated_sharpe(best, runs) -> dict[str, float]:
    """The selected trial's validation-backtest Sharpe ratio deflated by the number of trials
    (Bailey & López de Prado): the probability that its true Sharpe ratio beats the best of
    that many trials with no skill, given the spread of the trials' Sharpe ratios."""
    import math

    import numpy as np

    from trademl.safeguards_stats import deflated_sharpe_ratio

    m = best.data.metrics
    needed = ("val_bt_sr", "val_bt_bars", "val_bt_skew", "val_bt_kurt")
    if not all(math.isfinite(m.get(k, math.nan)) for k in needed):
        return {}  # no validation backtest (cross-validation), or its equity never moved
    # Every trial was a candidate: one whose validation backtest never traded (no Sharpe ratio
    # logged), a pruned one and a failed one count with a Sharpe ratio of 0, so N is never
    # undercounted (an undercounted N deflates too little).
    srs = [r.data.metrics.get("val_bt_sr", 0.0) for r in runs]
    variance = float(np.var(srs, ddof=1)) if len(srs) > 1 else 0.0
    dsr = deflated_sharpe_ratio(
        m["val_bt_sr"],
        int(m["val_bt_bars"]),
        m["val_bt_skew"],
        m["val_bt_kurt"],
        len(srs),
        variance,
    )
    return {
        "selected_val_bt_dsr": dsr,
        "selected_val_bt_psr": m.get("val_bt_psr", math.nan),
        "trials_val_bt_sr_variance": variance,
        "trials_with_val_bt": float(len(srs)),
    }


def _sealed_test_metrics(client, run_id: str) -> dict[str, float]:
    """The selected trial's test metrics, unsealed (``{}`` if it has none)."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, SEALED_TEST_METRICS, tmp)
        except Exception as exc:  # an older run, or the artifact store failed
            log.warning("no sealed test metrics in run %s: %s", run_id, exc)
            return {}
        return {k: float(v) for k, v in json.loads(Path(path).read_text()).items()}


def _end_children(client, parent_run_id: str, experiment_id: str, status: str) -> None:
    """Children still RUNNING when the sweep ends early (a killed worker): mark them too."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' AND attributes.status = "
        "'RUNNING'",
        max_results=5000,
    )
    for run in runs:
        client.set_terminated(run.info.run_id, status)


class _SweepParent(RunRecorder):
    """A sweep's parent run: ending it early also ends its children left RUNNING."""

    def end(self, status: str = "FINISHED", *, error: BaseException | None = None) -> None:
        if self.status is None and status != "FINISHED":
            try:
                _end_children(self.client, self.run_id, self.experiment_id, status)
            except Exception as exc:  # the store may be what failed
                log.error("could not end the sweep's child runs: %s", exc)
        super().end(status, error=error)
