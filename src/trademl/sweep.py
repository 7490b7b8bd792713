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
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from trademl.errors import TradeMLError
from trademl.tracking import RunRecorder, setup_tracking

__all__ = ["MlflowSweepCallback", "best_child"]

log = logging.getLogger(__name__)

PARENT_RUN_FILE = ".mlflow_parent_run_id"
SEALED_TEST_METRICS = "evaluation/test_metrics.json"  # a trial's test scores, not run metrics


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
    scored = [r for r in runs if metric in r.data.metrics]
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
        overrides = " ".join(config.hydra.overrides.task)
        self._parent = _SweepParent.start(
            settings,
            experiment_id,
            run_name=f"sweep-{Path(config.hydra.sweep.dir).name}",
            tags={
                "sweep": "parent",
                "hydra_overrides": overrides,
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
        client = parent.client
        metric = str(config.optimized_metric)
        direction = str(config.get("optimized_direction", "maximize"))
        best, runs = best_child(client, parent.run_id, parent.experiment_id, metric, direction)
        parent.log_metrics({"sweep_jobs": len(runs), "sweep_trials": len(runs)})
        if best is not None:
            test = _sealed_test_metrics(client, best.info.run_id)
            deflated = deflated_sharpe(best, runs)
            parent.log_metrics(
                {f"best_{metric}": best.data.metrics[metric]}
                | {f"best.{k}": v for k, v in best.data.metrics.items() if k.startswith("val_")}
                | {f"selected_{k}": v for k, v in test.items()}
                | deflated
            )
            parent.set_tags(
                {
                    "best_run_id": best.info.run_id,
                    "best_overrides": best.data.tags.get("hydra_overrides", ""),
                    "optimized_metric": f"{metric} ({direction})",
                    "selection": f"{metric} on validation, among {len(runs)} trials; the test "
                    "period scored once, for the selected trial only (selected_test_*)",
                }
            )
            shown = test.get("test_balanced_accuracy")
            dsr = deflated.get("selected_val_bt_dsr")
            print(
                f"sweep: {len(runs)} runs under parent {parent.run_id}; best {metric} = "
                f"{best.data.metrics[metric]:.4f} in run {best.info.run_id} "
                f"({best.data.tags.get('hydra_overrides', '')})"
                + (f"; its test balanced accuracy {shown:.4f}" if shown is not None else "")
                + (
                    f"; deflated Sharpe of its validation backtest over "
                    f"{int(deflated['trials_with_val_bt'])} trials "
                    f"{dsr:.3f}"
                    if dsr is not None and dsr == dsr
                    else ""
                )
            )
        failed = [r for r in runs if r.info.status != "FINISHED"]
        parent.end("FAILED" if failed or best is None else "FINISHED")


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
    # Every finished trial was a candidate: one whose validation backtest never traded (no
    # Sharpe ratio logged) counts with a Sharpe ratio of 0, so N is never undercounted.
    srs = [r.data.metrics.get("val_bt_sr", 0.0) for r in runs if r.info.status == "FINISHED"]
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
