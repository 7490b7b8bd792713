"""Decision latency of MLStrategy: one signal for the last bar of a 1,000-bar window.

Trains the default random forest (100 trees) on synthetic candles into a throwaway store,
then times, in the same run:

* the reference: the forest's one-row ``predict_proba`` with ``n_jobs=-1`` (a thread pool per
  call, as the spec's pipeline and a forest stored with ``n_jobs=-1`` predict);
* the same one-row prediction on one thread (what ``MLStrategy`` does for a single bar);
* ``MLStrategy.generate_signal(window)`` end to end (features on the window, the prediction,
  ATR, stop and target), as ``trademl live`` calls it per candle.

Prints median, p95 and p99 in milliseconds over ``--decisions`` windows, the ratio of each
median to the reference's, and the load average.

Run: ``python benchmarks/bench_decision.py [--decisions 300] [--window 1000]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    ms = np.asarray(samples) * 1e3
    return tuple(float(np.percentile(ms, q)) for q in (50, 95, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=300)
    parser.add_argument("--window", type=int, default=1000)
    args = parser.parse_args()

    from hydra.core.global_hydra import GlobalHydra

    from trademl import generate_ohlcv
    from trademl.strategies import MLStrategy
    from trademl.train import compose_config, train

    tmp = Path(tempfile.mkdtemp(prefix="bench_decision_"))
    uri = f"sqlite:///{tmp}/mlflow.db"
    GlobalHydra.instance().clear()
    result = train(
        compose_config(
            [
                f"mlflow.tracking_uri={uri}",
                f"mlflow.artifact_root={tmp}/mlruns",
                "data.n=3000",
                "progress=false",
                "evaluation.permutation_repeats=0",
            ]
        )
    )
    strategy = MLStrategy(model_uri=result.model_uri, tracking_uri=uri)
    clf = strategy.load().model[-1]
    candles = generate_ohlcv(args.window + args.decisions, seed=7, start="2025-01-01")
    windows = [
        candles.iloc[i : i + args.window] for i in range(args.decisions)
    ]  # each ends on a new bar
    strategy.generate_signal(windows[0])  # warm caches (numba, sklearn)
    from trademl.features import build_feature_matrix

    rows = [build_feature_matrix(w, strategy._features).iloc[[-1]] for w in windows]

    def timed(call, items) -> list[float]:
        out = []
        for item in items:
            start = time.perf_counter()
            call(item)
            out.append(time.perf_counter() - start)
        return out

    load_before = os.getloadavg()
    clf.set_params(n_jobs=-1)
    pool = timed(strategy.load().model.predict_proba, rows)
    clf.set_params(n_jobs=1)
    single = timed(strategy.load().model.predict_proba, rows)
    clf.set_params(n_jobs=-1)  # as stored by a user who asked for all cores
    decision = timed(strategy.generate_signal, windows)
    load_after = os.getloadavg()

    table = [
        ("one-row predict_proba, n_jobs=-1 (reference)", _percentiles(pool)),
        ("one-row predict_proba, one thread", _percentiles(single)),
        ("MLStrategy.generate_signal (whole decision)", _percentiles(decision)),
    ]
    reference = table[0][1][0]
    header = f"{'what':<48} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for label, (p50, p95, p99) in table:
        print(f"{label:<48} {p50:>8.2f} {p95:>8.2f} {p99:>8.2f} {p50 / reference:>6.2f}")
    print(
        f"\n{args.decisions} decisions on {args.window}-bar windows, 100-tree forest; ratio = "
        "p50 / reference p50. Load average (1, 5, 15 min) before "
        f"{', '.join(f'{x:.2f}' for x in load_before)}, after "
        f"{', '.join(f'{x:.2f}' for x in load_after)}; {os.cpu_count()} CPUs."
    )


if __name__ == "__main__":
    main()
