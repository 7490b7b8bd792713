"""One-row prediction latency of the compiled predictor against scikit-learn on one thread.

Trains the default random forest (conf/model/random_forest.yaml: 100 trees, depth 10) on
``--candles`` synthetic candles into a throwaway store, loads the registered version and
times, one feature row (49 features) per call:

* ``fast_predictor(loaded)``: the ONNX form in ONNX Runtime on one thread, checked at load;
* the same predictor's fallback: the scikit-learn pipeline with ``n_jobs=1`` (what a version
  without a usable compiled form gets);
* for reference, the forest as stored (``n_jobs=-1``: a thread pool per call).

Each is timed ``--repeats`` times over ``--rows`` fresh rows (``--rows // 10`` for the
scikit-learn ones, which are 100 times slower); the table shows the median over repeats of
each repeat's p50 and p99 in milliseconds, the ratio of the scikit-learn one-thread p50 to the
compiled p50, the time compiling took at training and the load-time check, and the load
average before and after.

Run: ``python benchmarks/bench_predictor.py [--candles 10000] [--rows 2000] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(call, rows: np.ndarray) -> tuple[float, float]:
    out = []
    for row in rows:
        start = time.perf_counter()
        call(row)
        out.append(time.perf_counter() - start)
    ms = np.asarray(out) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candles", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import pandas as pd
    from _throwaway import train_throwaway

    from trademl import generate_ohlcv
    from trademl._config import coerce_config
    from trademl.compiled import fast_predictor
    from trademl.features import FeatureConfig, build_feature_matrix
    from trademl.registry import load_model

    tmp = Path(tempfile.mkdtemp(prefix="bench_predictor_"))
    uri, result = train_throwaway(tmp, args.candles)
    loaded = load_model(result.model_uri, tracking_uri=uri)
    compiled = loaded.trademl["compiled"]
    start = time.perf_counter()
    fast = fast_predictor(loaded, min_confidence=0.55)
    check_s = time.perf_counter() - start
    slow = fast_predictor(dataclasses.replace(loaded, extras={}), min_confidence=0.55)
    assert fast.kind == "onnx" and slow.kind == "sklearn", (fast, slow)

    names = loaded.trademl["feature_names"]
    config = coerce_config(dict(loaded.trademl["features"]), FeatureConfig)
    fresh = generate_ohlcv(args.rows + 500, seed=99, start="2026-01-01")
    X = build_feature_matrix(fresh, config).dropna()[names].to_numpy()[: args.rows]
    stored = loaded.model  # n_jobs=-1 as trained

    def as_stored(row: np.ndarray) -> np.ndarray:
        return stored.predict_proba(pd.DataFrame(row[None, :], columns=names))

    few = X[: max(args.rows // 10, 20)]
    for call, rows in ((fast.predict_proba, X[:50]), (slow.predict_proba, few[:5])):
        _timed(call, rows)  # warm up
    runs: dict[str, list[tuple[float, float]]] = {"onnx": [], "sklearn": [], "stored": []}
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        runs["onnx"].append(_timed(fast.predict_proba, X))
        runs["sklearn"].append(_timed(slow.predict_proba, few))
        runs["stored"].append(_timed(as_stored, few))
    load_after = os.getloadavg()

    med = {k: np.median(np.asarray(v), axis=0) for k, v in runs.items()}
    table = [
        ("compiled (ONNX Runtime, one thread)", "onnx", len(X)),
        ("scikit-learn n_jobs=1 (the fallback)", "sklearn", len(few)),
        ("scikit-learn as stored, n_jobs=-1", "stored", len(few)),
    ]
    header = f"{'one-row predict_proba':<40} {'rows':>6} {'p50 ms':>8} {'p99 ms':>8} {'x onnx':>7}"
    print(header)
    print("-" * len(header))
    for label, key, n in table:
        p50, p99 = med[key]
        print(f"{label:<40} {n:>6} {p50:>8.3f} {p99:>8.3f} {p50 / med['onnx'][0]:>7.1f}")
    print(
        f"\nscikit-learn one thread / compiled at the median: "
        f"{med['sklearn'][0] / med['onnx'][0]:.0f}x. Medians over {args.repeats} repeats; "
        f"default forest ({len(names)} features) trained on {args.candles} candles; "
        f"compiling at training {compiled['seconds']:.2f} s (the fit "
        f"{result.metrics['time_fit_s']:.2f} s; {len(loaded.extras['model.onnx'])} bytes), "
        f"load-time check {check_s:.2f} s (largest difference "
        f"{fast.max_abs_diff:.2g} on {compiled['check_rows']} rows).\nLoad average (1, 5, 15 "
        f"min) before {', '.join(f'{x:.2f}' for x in load_before)}, after "
        f"{', '.join(f'{x:.2f}' for x in load_after)}; {os.cpu_count()} CPUs."
    )


if __name__ == "__main__":
    main()
