"""A model trained into a throwaway store, for the benchmarks that time a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def train_throwaway(tmp: Path, n: int, model: str = "random_forest") -> tuple[str, Any]:
    """``(tracking URI, TrainResult)``: the default ``model`` trained and registered on ``n``
    synthetic candles in ``tmp`` (sqlite store), without permutation importance."""
    from hydra.core.global_hydra import GlobalHydra

    from trademl.train import compose_config, train

    uri = f"sqlite:///{tmp}/mlflow.db"
    GlobalHydra.instance().clear()
    result = train(
        compose_config(
            [
                f"mlflow.tracking_uri={uri}",
                f"mlflow.artifact_root={tmp}/mlruns",
                f"model={model}",
                f"data.n={n}",
                "progress=false",
                "evaluation.permutation_repeats=0",
            ]
        )
    )
    return uri, result
