"""Feature-engineering speed and memory.

Times :func:`trademl.build_feature_matrix` on 10K, 100K and 1M synthetic candles
(best of several runs; peak memory as traced by ``tracemalloc`` during the call,
that is, what the call allocates on top of its input), and, in the same run, the
spec's per-candle approach: recompute the features on a trailing window of 500
bars for every new candle. Prints a table and the ratios.

Run: ``make bench`` or ``python benchmarks/bench_features.py [--quick]``.
Target (2-core machine): 1M candles in <= 2 s with peak memory < 1.5 GB.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

from trademl import build_feature_matrix, feature_names, generate_ohlcv

WINDOW = 500


def time_batch(n: int, repeats: int) -> tuple[float, float]:
    df = generate_ohlcv(n, seed=1)
    build_feature_matrix(df.iloc[:1000])  # warm caches and imports
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        X = build_feature_matrix(df)
        best = min(best, time.perf_counter() - t0)
        del X
    gc.collect()
    tracemalloc.start()
    X = build_feature_matrix(df)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del X
    return best, peak / 2**20


def time_per_candle(candles: int) -> float:
    """The spec's approach: features on the trailing 500 bars, once per new candle (ms)."""
    df = generate_ohlcv(WINDOW + candles, seed=2)
    t0 = time.perf_counter()
    for end in range(WINDOW, WINDOW + candles):
        build_feature_matrix(df.iloc[end - WINDOW : end]).iloc[-1]
    return (time.perf_counter() - t0) / candles * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the 1M-candle run")
    args = parser.parse_args()
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    n_feat = len(feature_names())
    print(f"build_feature_matrix: {n_feat} features, default configuration\n")
    print(f"{'candles':>10} {'seconds':>9} {'candles/s':>12} {'us/candle':>10} {'peak MB':>9}")
    results = {}
    for n in sizes:
        secs, peak = time_batch(n, repeats=5 if n <= 100_000 else 2)
        results[n] = secs
        print(f"{n:>10,} {secs:>9.3f} {n / secs:>12,.0f} {secs / n * 1e6:>10.2f} {peak:>9.0f}")
    if 1_000_000 in results:
        ratio = results[1_000_000] / results[100_000]
        print(f"\n1M / 100K time ratio: {ratio:.1f} (linear scaling = 10)")
        verdict = "meets" if results[1_000_000] <= 2.0 else "MISSES"
        print(f"1M candles in {results[1_000_000]:.2f} s: {verdict} the 2 s target")
    per_candle_ms = time_per_candle(300)
    batch_us = results[100_000] / 100_000 * 1e6
    print(
        f"\nspec's per-candle approach (trailing {WINDOW} bars, recomputed per candle): "
        f"{per_candle_ms:.2f} ms/candle (the spec reports ~20 ms)"
    )
    print(f"batch, amortised per candle (100K run): {batch_us:.2f} us/candle")
    print(
        f"batch is {per_candle_ms * 1e3 / batch_us:,.0f}x faster per candle than per-candle "
        f"recomputation"
    )


if __name__ == "__main__":
    main()
