"""The spec's ``run_live.py``: run a strategy on a live (paper) feed, configured by live.yaml.

The spec (Module 16 integration) swaps the live runtime's strategy in one line::

    # self.strategy = ScalpingEMARSI(config=params)  # Old
    self.strategy = MLStrategy(model_name='baseline_rf')  # New

Here the swap is a config change only (``conf/live.yaml``, the spec's shape)::

    strategy:
      type: ml_strategy            # or scalping_ema_rsi
      params:
        model_name: baseline_rf
        min_confidence: 0.60

Run (after ``make demo`` has registered ``baseline_rf`` in ./mlflow.db)::

    python examples/run_live.py feeds.0.path=candles.csv
    python examples/run_live.py feeds.0.path=candles.csv strategy.params.min_confidence=0.6
    python examples/run_live.py feeds.0.path=candles.csv strategy.type=scalping_ema_rsi \\
        strategy.params=null

Every argument is a Hydra override of ``conf/live.yaml``. The script composes the config,
builds the runtime (strategy, feeds, journal, MLflow session) and runs it to the end of the
feed or to SIGINT/SIGTERM, then prints what happened. ``trademl live`` does the same.
"""

from __future__ import annotations

import sys

from trademl.errors import exit_on_user_error
from trademl.live.app import run_live
from trademl.train import compose_config


def main(overrides: list[str]) -> None:
    with exit_on_user_error():
        cfg = compose_config(overrides, config_name="live")
        print(
            f"strategy {cfg.strategy.type} on "
            + ", ".join(f"{f.symbol} ({f.type}: {f.path})" for f in cfg.feeds)
            + f"; journal {cfg.live.journal}"
        )
        summary = run_live(cfg)
    print(f"candles processed: {summary.candles}")
    print(f"trades: {len(summary.trades)}")
    for symbol, equity in summary.equity.items():
        print(f"equity {symbol}: {equity:.2f}")
    if summary.latency_ms:
        lat = summary.latency_ms
        print(f"decision latency p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms")
    if summary.stopped_by_signal:
        print("stopped by signal; rerun with the same live.journal to resume")


if __name__ == "__main__":
    main(sys.argv[1:])
