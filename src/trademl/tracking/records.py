"""What goes into a run besides the model: flattened config params, evaluation figures, code
version. Each takes a :class:`~trademl.tracking.runs.RunRecorder`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trademl.labels import LABELS
from trademl.tracking.runs import RunRecorder

if TYPE_CHECKING:  # evaluation (sklearn.metrics, scipy) and plots (matplotlib) cost seconds to
    from trademl.evaluation import Evaluation  # import: only a training needs them

__all__ = ["config_params", "flatten", "git_commit", "log_evaluation"]


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


def log_evaluation(
    recorder: RunRecorder, evaluation: Evaluation, *, title: str = "", top: int = 20
) -> None:
    """Metrics, confusion matrix (PNG and JSON), importances (CSV and PNG), report."""
    from trademl.plots import plot_confusion_matrix, plot_feature_importance

    recorder.log_metrics(evaluation.metrics)
    with recorder.artifact_dir("evaluation") as tmp:
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
