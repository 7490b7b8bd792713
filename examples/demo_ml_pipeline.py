"""The spec's demo flow on embedded defaults: synthetic candles -> trained, tracked,
registered and promoted model -> the Production model loaded back from the registry.

Run: ``make demo`` (or ``python examples/demo_ml_pipeline.py``). Everything goes to the
local store of conf/mlflow/local.yaml: ./mlflow.db and ./mlruns.
"""

from __future__ import annotations

import sys

from trademl.evaluation import class_probabilities
from trademl.features import build_feature_matrix
from trademl.labels import INT_TO_LABEL
from trademl.registry import load_model
from trademl.synthetic import generate_ohlcv
from trademl.train import compose_config, train


def main(overrides: list[str]) -> None:
    cfg = compose_config(["data.n=2000", "model=random_forest", "promote=Production", *overrides])
    rule = "=" * 64
    print(f"{rule}\nTRAINING (synthetic candles: {cfg.data.n}, seed {cfg.seed})\n{rule}")
    result = train(cfg)
    m = result.metrics
    top = result.importance["feature"].head(5).tolist()
    print(
        f"Model: {result.registered_name} version {result.registered_version} "
        f"({cfg.model.name}), promoted to {result.promoted_to} and @champion"
    )
    print(
        f"Test Accuracy: {m['test_accuracy']:.4f}   Balanced: {m['test_balanced_accuracy']:.4f}"
        f"   Macro F1: {m['test_f1_macro']:.4f}   IC: {m['test_ic']:+.4f}"
    )
    print(f"Top Features: {', '.join(top)}")
    print(f"MLflow run: {result.run_id} (experiment '{cfg.mlflow.experiment_name}')")

    print(f"{rule}\nREGISTRY: models:/{result.registered_name}/Production\n{rule}")
    uri = cfg.mlflow.tracking_uri
    loaded = load_model(f"models:/{result.registered_name}/Production", tracking_uri=uri)
    fresh = generate_ohlcv(300, seed=cfg.seed + 1, momentum=0.3, start="2025-01-01")
    X = build_feature_matrix(fresh, loaded.trademl["features"])
    proba = class_probabilities(loaded.model, X.iloc[[-1]])[0]
    label = INT_TO_LABEL[int(proba.argmax())]
    print(
        f"Loaded version {loaded.version} (run {loaded.run_id[:12]}), "
        f"{len(loaded.trademl['feature_names'])} features rebuilt from the stored config"
    )
    print(
        f"Latest bar {X.index[-1]}: {label} with P = "
        + ", ".join(f"{INT_TO_LABEL[i]} {p:.3f}" for i, p in enumerate(proba))
    )

    print(
        f"{rule}\nSee the runs: mlflow ui --backend-store-uri {uri} --port 5000  "
        f"(or `make ui`), then open http://127.0.0.1:5000\n{rule}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
