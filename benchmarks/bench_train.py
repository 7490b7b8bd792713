"""Training time per model type, and how much of a run is MLflow logging rather than fitting.

For 10K and 100K synthetic candles and each model config, runs the real
``trademl.train.train`` into a throw-away sqlite store and prints the wall time
of each stage: data, features (clean + features + labels + split), fit,
evaluate (metrics and permutation importance) and mlflow (params, dataset,
figures, model logging and registration). The reference in the same run is the
bare ``Pipeline.fit`` (the fit column): the other columns are what tracking adds.

Run: ``python benchmarks/bench_train.py [--quick]`` (``--quick``: 10K only).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import tempfile
import warnings

from hydra.core.global_hydra import GlobalHydra

from trademl.train import compose_config, train

MODELS = ("random_forest", "logistic_regression", "hist_gradient_boosting", "lightgbm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    sizes = [10_000] if args.quick else [10_000, 100_000]
    header = (
        f"{'candles':>8} {'model':<24} {'total s':>8} {'data':>6} {'features':>8} "
        f"{'fit':>7} {'evaluate':>8} {'mlflow':>7} {'mlflow %':>8} {'bal.acc':>7}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            for model in MODELS:
                GlobalHydra.instance().clear()
                cfg = compose_config(
                    [
                        f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db",
                        f"mlflow.artifact_root={tmp}/mlruns",
                        f"data.n={n}",
                        f"model={model}",
                        "progress=false",
                    ]
                )
                with (
                    contextlib.redirect_stdout(io.StringIO()),
                    contextlib.redirect_stderr(io.StringIO()),
                ):
                    result = train(cfg)
                s = result.seconds
                total = sum(s.values())
                print(
                    f"{n:>8,} {model:<24} {total:>8.2f} {s['data']:>6.2f} {s['features']:>8.2f} "
                    f"{s['fit']:>7.2f} {s['evaluate']:>8.2f} {s['mlflow']:>7.2f} "
                    f"{s['mlflow'] / total:>8.0%} "
                    f"{result.metrics['test_balanced_accuracy']:>7.3f}"
                )
    print(
        "\nfit = bare Pipeline.fit (the reference); mlflow = params, dataset, figures, model "
        "logging and registration; evaluate includes permutation importance (3 repeats, "
        "2,000 rows)."
    )


if __name__ == "__main__":
    main()
