"""The spec's demo flow, as far as the pipeline exists: synthetic candles to train/test data.

Run: ``make demo`` (or ``python examples/demo_ml_pipeline.py``).
"""

from __future__ import annotations

from trademl import generate_ohlcv
from trademl.prepare import prepare_data_for_ml


def main() -> None:
    print("=" * 60)
    print("DATA")
    candles = generate_ohlcv(2000, seed=42, momentum=0.3)
    print(f"Synthetic candles: {len(candles)} ({candles.index[0]} .. {candles.index[-1]})")
    data = prepare_data_for_ml(candles, labels={"horizon": 1})
    rep = data.report
    print(
        f"Cleaning: {rep['cleaning']['rows_dropped']} dropped, "
        f"{rep['cleaning']['rows_modified']} modified"
    )
    print(
        f"Features: {rep['features']['n_features']} on {rep['features']['rows_out']} rows "
        f"({rep['features']['warmup_rows']} warm-up rows removed)"
    )
    print(f"Labels: {rep['labels']['class_counts']} (horizon {rep['labels']['horizon']})")
    sp = rep["split"]
    print(
        f"Split: {sp['train_rows']} train ({sp['train_start']} .. {sp['train_end']}), "
        f"{sp['purged_rows']} purged, {sp['test_rows']} test ({sp['test_start']} .. "
        f"{sp['test_end']})"
    )
    print("=" * 60)


if __name__ == "__main__":
    main()
