"""What goes into an MLflow run: store set-up, params, dataset, figures, the model.

The tracking URI and artifact root always come from configuration
(:class:`MlflowSettings`, the ``mlflow`` config group); nothing here falls back
to a process-wide default.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.tracking import MlflowClient

from trademl._config import coerce_config
from trademl.errors import ConfigError
from trademl.evaluation import Evaluation
from trademl.labels import LABELS
from trademl.plots import plot_confusion_matrix, plot_feature_importance

__all__ = [
    "MlflowSettings",
    "config_params",
    "finite_metrics",
    "flatten",
    "log_dataset",
    "log_evaluation",
    "log_params",
    "setup_tracking",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MlflowSettings:
    """Where runs and models are stored (the ``mlflow`` config group).

    ``tracking_uri`` is also the registry URI. ``artifact_root`` is a directory
    (relative to the working directory) or URI under which each experiment gets
    ``<artifact_root>/<experiment_name>``; it applies when the experiment is created.
    """

    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_root: str = "mlruns"
    experiment_name: str = "trademl"
    registered_model_name: str | None = None
    run_name: str | None = None

    def __post_init__(self) -> None:
        if not self.tracking_uri or not isinstance(self.tracking_uri, str):
            raise ConfigError("mlflow.tracking_uri must be a non-empty string")
        scheme = self.tracking_uri.split(":", 1)[0] if ":" in self.tracking_uri else ""
        if scheme not in ("sqlite", "http", "https", "postgresql", "mysql", "databricks"):
            raise ConfigError(
                f"mlflow.tracking_uri={self.tracking_uri!r} is not supported; use "
                "sqlite:///path/to/mlflow.db or http://host:port (a plain ./mlruns file store is "
                "no longer supported by MLflow)"
            )

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def artifact_location(self) -> str:
        root = self.artifact_root
        if "://" in root:
            return f"{root.rstrip('/')}/{self.experiment_name}"
        return (Path(root).resolve() / self.experiment_name).as_uri()


def setup_tracking(settings: MlflowSettings | Mapping | None) -> tuple[MlflowSettings, str]:
    """Point MLflow at the configured store; create the experiment if needed.

    Returns the settings and the experiment id.
    """
    cfg = coerce_config(settings, MlflowSettings, name="mlflow")
    if cfg.tracking_uri.startswith("sqlite:///"):
        db = Path(cfg.tracking_uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_registry_uri(cfg.tracking_uri)
    client = cfg.client()
    exp = client.get_experiment_by_name(cfg.experiment_name)
    if exp is None:
        try:
            exp_id = client.create_experiment(
                cfg.experiment_name, artifact_location=cfg.artifact_location()
            )
        except mlflow.exceptions.MlflowException:  # created concurrently by a parallel job
            exp = client.get_experiment_by_name(cfg.experiment_name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
    return cfg, exp_id


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested mappings to dotted keys; lists and scalars as strings."""
    out: dict[str, str] = {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            out.update(flatten(value, name))
    else:
        out[prefix] = json.dumps(data) if isinstance(data, list | tuple) else str(data)
    return out


def config_params(cfg: Any) -> dict[str, str]:
    """Every resolved value of a config under its dotted key, without Hydra's ``_target_``."""
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    return {k: v for k, v in flatten(container).items() if not k.endswith("_target_")}


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics MLflow can store: numbers that are finite (no inf profit factor, no NaN)."""
    return {
        k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)
    }


def log_params(params: Mapping[str, Any]) -> None:
    """Log every (already flat) param, in batches under MLflow's limit of 100."""
    items = list(params.items())
    for start in range(0, len(items), 90):
        mlflow.log_params(dict(items[start : start + 90]))


def log_dataset(candles: pd.DataFrame, *, context: str = "training") -> None:
    """The candles as an MLflow dataset input: source, digest, rows, first/last timestamp."""
    source_name = str(candles.attrs.get("source", "data"))
    frame = candles.reset_index()
    if Path(source_name).exists():
        source: Any = str(Path(source_name).resolve())
        name = Path(source_name).name
    else:
        source = CodeDatasetSource(tags={"generator": source_name})
        name = source_name.split("(")[0] or "candles"
    with warnings.catch_warnings():  # MLflow registers its local-file source class twice
        warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways")
        dataset = mlflow.data.from_pandas(frame, source=source, name=name)
    tags = {
        "rows": str(len(candles)),
        "first_timestamp": str(candles.index[0]),
        "last_timestamp": str(candles.index[-1]),
        "source": source_name,
    }
    mlflow.log_input(dataset, context=context, tags=tags)
    mlflow.set_tags({f"data.{k}": v for k, v in tags.items()} | {"data.digest": dataset.digest})


def log_evaluation(evaluation: Evaluation, *, title: str = "", top: int = 20) -> None:
    """Metrics, confusion matrix (PNG and JSON), importances (CSV and PNG), report."""
    mlflow.log_metrics(evaluation.metrics)
    with _tempdir() as tmp:
        cm_json = {
            "labels": list(LABELS),
            "rows": "true",
            "columns": "predicted",
            "matrix": evaluation.confusion.tolist(),
        }
        (tmp / "confusion_matrix.json").write_text(json.dumps(cm_json, indent=2))
        plot_confusion_matrix(
            evaluation.confusion, list(LABELS), tmp / "confusion_matrix.png", title=title
        )
        evaluation.importance.to_csv(tmp / "feature_importance.csv", index=False)
        plot_feature_importance(
            evaluation.importance,
            tmp / "feature_importance.png",
            kind=evaluation.importance_kind,
            top=top,
            title=f"Top {top} features ({evaluation.importance_kind}) {title}".strip(),
        )
        (tmp / "classification_report.txt").write_text(evaluation.report_text)
        (tmp / "classification_report.json").write_text(json.dumps(evaluation.report, indent=2))
        mlflow.log_artifacts(str(tmp), artifact_path="evaluation")


def git_commit() -> str | None:
    """The current git commit of the source tree, if it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@contextmanager
def _tempdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="trademl-") as tmp:
        yield Path(tmp)
