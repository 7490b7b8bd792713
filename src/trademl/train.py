"""Training: a pure :func:`train` on a composed config, and the thin Hydra entrypoint.

``trademl train model=logistic_regression data=csv data.path=...`` and
``python -m trademl.train ...`` both run :func:`main`. One training is one
MLflow run holding the resolved config, the dataset, the test metrics, the
figures and the model, registered as a new version.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hydra
import mlflow
import numpy as np
import sklearn
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from trademl import __version__
from trademl._hydra import CONFIG_DIR, compose_config, instantiate_node
from trademl._process import command_start_time
from trademl.compiled import compile_model
from trademl.errors import ConfigError, exit_on_user_error
from trademl.evaluation import class_probabilities, evaluate, probability_metrics
from trademl.labels import LABEL_TO_INT
from trademl.models import ModelSpec, check_trusted_types
from trademl.periods import training_periods
from trademl.prepare import PreparedData, prepare_data_for_ml
from trademl.registry import promote_model
from trademl.schemas import validate_config
from trademl.sweep import SEALED_TEST_METRICS, SweepJob, hydra_job, register_mode
from trademl.tracking import (
    RunRecorder,
    config_params,
    git_commit,
    log_evaluation,
    setup_tracking,
    signals_raise,
)
from trademl.tracking.model_files import log_model, register_version
from trademl.tracking.server_store import mask_secrets
from trademl.validation import validation_backtest, validation_metrics

__all__ = ["CONFIG_DIR", "TrainResult", "compose_config", "main", "train", "train_pipeline"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What one training produced."""

    run_id: str
    experiment_id: str
    metrics: dict[str, float]
    model_uri: str
    registered_name: str | None
    registered_version: str | None
    feature_names: list[str]
    report: dict[str, Any] = field(default_factory=dict)
    promoted_to: str | None = None
    model: Any = field(default=None, repr=False)  # the fitted pipeline (not re-loaded)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage
    importance: Any = field(default=None, repr=False)  # feature importance table (DataFrame)

    def summary(self) -> str:
        m = self.metrics
        lines = [f"run {self.run_id}  model {self.model_uri}"]
        if "val_balanced_accuracy" in m:
            lines.append(
                f"validation ({self.report.get('split', {}).get('validation', '')}, for "
                f"selection): balanced accuracy {m['val_balanced_accuracy']:.4f}  log loss "
                f"{m['val_log_loss']:.4f}  IC {m['val_ic']:+.4f}"
            )
        if "test_balanced_accuracy" in m:
            lines.append(
                f"test (scored once, never selected on): accuracy {m['test_accuracy']:.4f}  "
                f"balanced accuracy {m['test_balanced_accuracy']:.4f}  macro F1 "
                f"{m['test_f1_macro']:.4f}  log loss {m['test_log_loss']:.4f}  IC "
                f"{m['test_ic']:+.4f}"
            )
        else:
            lines.append(
                "test metrics sealed (a sweep trial): the sweep's parent run reports the "
                "selected trial's"
            )
        if self.registered_version:
            where = f" -> {self.promoted_to}" if self.promoted_to else ""
            lines.append(
                f"registered {self.registered_name} version {self.registered_version}{where}"
            )
        return "\n".join(lines)


def test_scores(model: Any, data: PreparedData) -> dict[str, float]:
    """The test-period metrics of :func:`trademl.evaluation.evaluate`, without its artifacts."""
    proba = class_probabilities(model, data.X_test)
    return probability_metrics(proba, data.y_test, data.fwd_test, data.y_train)[0]


def data_label(node: DictConfig | dict) -> tuple[str, str]:
    """A data config in short (for run names) and in full (the ``data`` tag): a file's stem
    and path, ``synthetic5000`` and its size and seed, ``model-data``."""
    values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    if values.get("path"):
        path = Path(str(values["path"]))
        return path.stem, str(path.resolve())
    if values.get("from_model"):
        return "model-data", "the candles the model was trained on"
    target = str(values.get("_target_", "data")).rsplit(".", 1)[-1]
    if target == "generate_ohlcv":
        n, seed = values.get("n"), values.get("seed")
        return f"synthetic{n}", f"synthetic n={n} seed={seed} freq={values.get('freq')}"
    return target, target


def _model_metadata(
    data: PreparedData,
    spec: ModelSpec,
    freq: str | None,
    data_config: dict[str, Any],
    *,
    validated_min_confidence: float | None = None,
    compiled: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a strategy needs to rebuild the features from the registry URI alone, and what a
    backtest needs to know which bars the model learned from (:mod:`trademl.periods`)."""
    return {
        "trademl": {
            "version": __version__,
            "model_type": spec.name,
            "estimator": spec.estimator,
            "features": data.features.to_dict(),
            "feature_names": list(data.feature_names),
            "warmup_rows": data.features.warmup,
            "labels": asdict(data.labels),
            "label_mapping": dict(LABEL_TO_INT),
            "bar_interval": freq,
            "data_source": data.report["source"],
            "data_config": data_config,
            "validation": data.validation,
            "validated_min_confidence": (
                None
                if validated_min_confidence is None or np.isnan(validated_min_confidence)
                else float(validated_min_confidence)
            ),
            "compiled": compiled,  # trademl.compiled: the ONNX form, or why there is none
            **training_periods(
                data.candles,
                data.X_train.index,
                data.X_test.index,
                data.labels.horizon,
                validation_index=data.X_val.index if len(data.X_val) else None,
            ),
        }
    }


def _data_config(node: DictConfig) -> dict[str, Any]:
    """The data config as trained on, a file path made absolute (so `data: model` finds it)."""
    values = OmegaConf.to_container(node, resolve=True)
    if "path" in values and values["path"] is not None:
        values["path"] = str(Path(values["path"]).resolve())
    return values


def train(cfg: DictConfig, job: SweepJob | None = None) -> TrainResult:
    """Train, evaluate, log and register one model as configured.

    One MLflow run holds it all, from the first data row to the registered version: it
    ends FINISHED, FAILED (any exception, recorded as the run's ``error`` tag) or KILLED
    (SIGINT/SIGTERM). The model version is registered last, in one call, so a failure
    leaves no version behind.

    Parameters
    ----------
    cfg
        A composed ``train`` config (see ``conf/train.yaml``).
    job
        When this training is one trial of a sweep (``trademl tune``); a Hydra multirun job
        is found by itself.

    Returns
    -------
    TrainResult
        Run id, test metrics, model URI and registered version.
    """
    started = time.time()
    checked = validate_config(cfg, "train")  # before MLflow or data are touched
    job = job or hydra_job(cfg)
    if job is not None and checked["split"].validation == "none":
        raise ConfigError(
            "split.validation=none in a sweep: trials would have nothing to be selected on but "
            "the test period; use split.validation=holdout, purged_kfold or cpcv"
        )
    seed = int(cfg.seed)
    spec: ModelSpec = checked["model"]
    steps = {name: checked[name] for name in ("cleaning", "features", "labels", "split")}
    ev_cfg = checked["evaluation"]
    settings, experiment_id = setup_tracking(checked["mlflow"])
    stage = _Stages(total=7 if cfg.get("promote") else 6, enabled=bool(cfg.get("progress", True)))
    try:
        run = _start_run(cfg, settings, experiment_id, spec, steps, job, started)
        with signals_raise(), run as rec:
            if job is not None and job.on_run is not None:
                job.on_run(rec.run_id)
            with stage("data"):
                raw = instantiate_node(cfg.data, "data")
            with stage("features"):
                data = prepare_data_for_ml(raw, **steps)
            with stage("fit"):
                model = spec.build(seed)
                model.fit(data.X_train, data.y_train.to_numpy(), **spec.fit_params(data.y_train))
                check_trusted_types(model, spec.trusted_types)
            with stage("validate"):
                validation, val_proba = validation_metrics(
                    data, model, spec, seed, on_split=job.on_split if job else None
                )
                val_bt, thresholds = validation_backtest(data, val_proba, ev_cfg)
                validation.update(val_bt)
            with stage("evaluate"):
                # A sweep trial's confusion matrix, report and importances describe its
                # validation segment: nothing of the test period is readable in a trial but its
                # sealed test scores (train.SEALED_TEST_METRICS).
                on_validation = job is not None and len(data.X_val) > 0
                segment = "val" if on_validation else "test"
                evaluation = evaluate(
                    model,
                    getattr(data, f"X_{segment}"),
                    getattr(data, f"y_{segment}"),
                    getattr(data, f"fwd_{segment}"),
                    data.y_train,
                    permutation_repeats=ev_cfg.permutation_repeats,
                    permutation_max_rows=ev_cfg.permutation_max_rows,
                    seed=seed,
                )
                if on_validation:
                    evaluation.metrics = test_scores(model, data)
                    evaluation.segment = "validation"
                train_pred = model.predict(data.X_train)
                evaluation.metrics["train_accuracy"] = float(np.mean(train_pred == data.y_train))
                evaluation.metrics.update(validation)
            with stage("mlflow"):
                evaluation.metrics.update(
                    {f"time_{k}_s": round(v, 4) for k, v in stage.seconds.items()}
                )
                result = _log_run(
                    rec,
                    cfg,
                    settings,
                    data,
                    spec,
                    model,
                    evaluation,
                    top=ev_cfg.top_features_plot,
                    thresholds=thresholds,
                    job=job,
                )
            if cfg.get("promote") and result.registered_version:
                with stage("promote"):
                    promote_model(
                        result.registered_name,
                        result.registered_version,
                        stage=str(cfg.promote),
                        tracking_uri=settings.tracking_uri,
                    )
                result.promoted_to = str(cfg.promote)
    finally:
        stage.close()
    result.model = model
    result.importance = evaluation.importance
    result.seconds = dict(stage.seconds)
    return result


def _start_run(cfg, settings, experiment_id, spec, steps, job, started) -> RunRecorder:
    """The training's run: a new one (a sweep trial's is a child of the sweep's parent run),
    or the one ``mlflow run`` created (``MLFLOW_RUN_ID``). A new run starts when the command
    did (a single training) or when the trial did, so its duration is the whole training."""
    labels = steps["labels"]
    short, full = data_label(cfg.data)
    suffix = "" if job is None else f"-{job.kind}{job.number}"
    tags = {
        "model_type": spec.name,
        "estimator": spec.estimator,
        "label_method": labels.method,
        "horizon": str(labels.horizon),
        "data": full,
        "registered_model_name": settings.registered_model_name or "",
        "trademl_version": __version__,
        "git_commit": git_commit() or "unknown",
        **(job.tags if job else {}),
    }
    if spec.ignored_params:
        tags["ignored_params"] = ", ".join(sorted(spec.ignored_params))
    if HydraConfig.initialized():
        tags["hydra_overrides"] = " ".join(HydraConfig.get().overrides.task)
    return RunRecorder.start(
        settings,
        experiment_id,
        run_name=settings.run_name
        or f"{spec.name}-{labels.method}-h{labels.horizon}-{short}{suffix}",
        tags=tags,
        parent_run_id=job.parent_run_id if job else None,
        resume_run_id=None if job else os.environ.get("MLFLOW_RUN_ID"),  # set by `mlflow run`
        start_time=started if job else command_start_time(started),
    )


class _Stages:
    """A progress bar over the training stages that also times each one."""

    def __init__(self, *, total: int, enabled: bool) -> None:
        self.seconds: dict[str, float] = {}
        self._bar = tqdm(
            total=total, desc="train", unit="stage", disable=not enabled, file=sys.stderr
        )

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._bar.set_postfix_str(name)
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        self._bar.update()

    def close(self) -> None:
        self._bar.close()


def _log_run(
    rec, cfg, settings, data, spec, model, evaluation, *, top, thresholds=None, job=None
) -> TrainResult:
    container = OmegaConf.to_container(cfg, resolve=True)
    # the search settings are the study's (the parent run's tags), not the training's; a
    # password in a URL (tune.storage, mlflow.tracking_uri) is never written to a run
    container.pop("tune", None)
    container = json.loads(mask_secrets(json.dumps(container)))
    params = config_params(container)
    registers = register_mode(cfg.get("register", "best")) != "none"
    if job is not None:  # a sweep registers its best trial's at the end (or each trial's)
        registers = job.register
    name = settings.registered_model_name if registers else None
    rec.set_tags({"feature_count": str(len(data.feature_names))})
    existing = rec.client.get_run(rec.run_id).data.params  # `mlflow run` logs its -P first
    rec.log_params(
        {
            (f"config.{k}" if k in existing and existing[k] != v else k): v
            for k, v in params.items()
            if existing.get(k) != v
        }
    )
    rec.log_text(OmegaConf.to_yaml(container), "config.yaml")
    rec.log_dict(data.report, "data_report.json")
    if thresholds is not None:  # the validation backtest at each confidence threshold
        rec.log_text(thresholds.to_csv(index=False), "evaluation/validation_thresholds.csv")
    rec.log_dataset(data.candles)
    if job is not None:
        # A trial's test score is sealed: not a run metric, so nothing (the sweeper, a sort in
        # the UI) can select on it; the sweep's parent reports the selected trial's.
        sealed = {k: v for k, v in evaluation.metrics.items() if k.startswith("test_")}
        evaluation.metrics = {k: v for k, v in evaluation.metrics.items() if k not in sealed}
        rec.log_dict(sealed, SEALED_TEST_METRICS)
    rec.set_tags({"evaluation_artifacts": f"{evaluation.segment} period"})
    log_evaluation(rec, evaluation, title=spec.name, top=top)
    compiled = compile_model(model, data.X_test)  # never raises: a failure is its reason
    logged = log_model(
        rec,
        model,
        example_candles=data.candles,
        metadata=_model_metadata(
            data,
            spec,
            data.report["cleaning"].get("freq"),
            _data_config(cfg.data),
            validated_min_confidence=evaluation.metrics.get("val_bt_best_min_confidence"),
            compiled=compiled.metadata,
        ),
        trusted_types=spec.trusted_types,
        pip_requirements=[
            f"scikit-learn=={sklearn.__version__}",
            f"mlflow=={mlflow.__version__}",
            "skops",
            *spec.pip_requirements,
        ],
        extra_files=compiled.files,
    )
    version = None
    if name:
        version = register_version(
            rec,
            name,
            logged,
            description=_description(spec, data, evaluation.metrics, rec.run_id),
        )
    return TrainResult(
        run_id=rec.run_id,
        experiment_id=rec.experiment_id,
        metrics=dict(evaluation.metrics),
        model_uri=f"models:/{name}/{version}" if version else f"runs:/{rec.run_id}/model",
        registered_name=name if version else None,
        registered_version=version,
        feature_names=list(data.feature_names),
        report=data.report,
    )


def _description(spec, data, metrics, run_id) -> str:
    scores = [
        f"{name} balanced accuracy {metrics[key]:.4f}"
        for name, key in (
            ("validation", "val_balanced_accuracy"),
            ("test", "test_balanced_accuracy"),
        )
        if key in metrics
    ]
    return f"{spec.name} on {data.report['source']}: {', '.join(scores)} (run {run_id})"


def train_pipeline(
    data_filepath: str | Path | None = None,
    model_name: str | None = None,
    model_type: str = "random_forest",
    prediction_horizon: int = 1,
    hyperparams: dict[str, Any] | None = None,
    *,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """The spec's ``train_pipeline(...)``: a thin wrapper over :func:`train`.

    Returns ``{"metrics", "run_id", "model_uri", "model_name", "version", "feature_names"}``.
    Without ``data_filepath`` the synthetic data config is used.
    """
    args = [f"model={model_type}", f"labels.horizon={int(prediction_horizon)}"]
    if data_filepath is not None:
        args += ["data=csv", f"data.path={Path(data_filepath)}"]
    if model_name:
        args.append(f"mlflow.registered_model_name={model_name}")
    args += [f"model.{k}={_override_value(v)}" for k, v in (hyperparams or {}).items()]
    args += list(overrides)
    result = train(compose_config(args))
    return {
        "metrics": result.metrics,
        "run_id": result.run_id,
        "model_uri": result.model_uri,
        "model_name": result.registered_name,
        "version": result.registered_version,
        "feature_names": result.feature_names,
    }


def _override_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    return str(value)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entrypoint; returns the optimised metric (for sweepers)."""
    with exit_on_user_error():
        result = train(cfg)
    print(result.summary())
    return float(result.metrics.get(str(cfg.optimized_metric), float("nan")))


if __name__ == "__main__":  # pragma: no cover
    main()
