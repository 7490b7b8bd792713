"""The spec's demo flow on embedded defaults, end to end and for real:

1. synthetic candles (2,000, seed 42, a weak planted momentum effect);
2. train the random forest; log it to MLflow; register ``baseline_rf``; promote it to
   Production (and ``@champion``);
3. MLStrategy loads ``models:/baseline_rf/Production`` and signals on the test period;
4. the RiskEngine sizes the latest actionable signal;
5. backtests of MLStrategy and ScalpingEMARSI on the test period, each an MLflow run.

Run: ``make demo`` (or ``python examples/demo_ml_pipeline.py [hydra overrides]``).
Everything goes to the store of conf/mlflow/local.yaml: ./mlflow.db and ./mlruns.
"""

from __future__ import annotations

import sys

from trademl._hydra import compose_config
from trademl.backtest_run import run_backtest
from trademl.cleaning import clean_ohlcv_data
from trademl.risk import RiskEngine
from trademl.strategies import MLStrategy
from trademl.tracking import MlflowSettings
from trademl.train import train

RULE = "=" * 64


def section(title: str) -> None:
    print(f"{RULE}\n{title}\n{RULE}")


def main(overrides: list[str]) -> None:
    data = ["data=synthetic", "data.n=2000"]
    cfg = compose_config([*data, "model=random_forest", "promote=Production", *overrides])
    uri = MlflowSettings(tracking_uri=cfg.mlflow.tracking_uri).tracking_uri  # null: resolved

    section(f"TRAINING RESULTS (synthetic candles: {cfg.data.n}, seed {cfg.seed})")
    result = train(cfg)
    m = result.metrics
    print(
        f"Model: {result.registered_name} version {result.registered_version} "
        f"({cfg.model.name}), promoted to {result.promoted_to} and @champion"
    )
    print(
        f"Test Accuracy: {m['test_accuracy']:.4f}   Balanced: {m['test_balanced_accuracy']:.4f}"
        f"   Macro F1: {m['test_f1_macro']:.4f}   IC: {m['test_ic']:+.4f}"
    )
    print(f"Top Features: {', '.join(result.importance['feature'].head(5))}")
    print(f"MLflow run: {result.run_id} (experiment '{cfg.mlflow.experiment_name}')")

    section(f"ML INFERENCE: MLStrategy('{result.registered_name}') on the test period")
    strategy = MLStrategy(result.registered_name, min_confidence=0.55, tracking_uri=uri)
    from hydra.utils import instantiate

    candles, _ = clean_ohlcv_data(instantiate(cfg.data))
    test_start = result.report["split"]["test_start"]
    signals = strategy.generate_signals(candles)
    in_test = signals.loc[test_start:]
    actionable = in_test.index[in_test["side"] != 0]
    print(
        f"{len(in_test)} test bars: {int((in_test['side'] > 0).sum())} LONG, "
        f"{int((in_test['side'] < 0).sum())} SHORT signals at min_confidence "
        f"{strategy.min_confidence}"
    )
    at = actionable[-1] if len(actionable) else in_test.index[-1]
    signal = strategy.generate_signal(candles.loc[:at])  # decided on that bar's close
    meta = signal["metadata"]
    print(f"Bar: {at}  Signal: {signal['signal']}  (model version {meta['model_version']})")
    print(f"Confidence: {meta['confidence']:.3f}")
    print(f"Entry: ${meta['entry_price']:.2f}")
    print(
        f"SL Distance: ${meta['sl_distance']:.2f}   TP Distance: ${meta['tp_distance']:.2f}"
        f"   ATR: ${meta['atr']:.2f}"
    )

    section("RISKENGINE INTEGRATION")
    side = 1 if signal["signal"] == "LONG" else -1
    entry = meta["entry_price"]
    order = RiskEngine().apply_risk_to_signal(
        signal=signal["signal"],
        equity=10_000,
        entry_price=entry,
        stop_loss_price=entry - side * meta["sl_distance"],
        take_profit_price=entry + side * meta["tp_distance"],
    )
    if order.approved:
        print("✓ Risk-Managed Order:")
        print(f"  Position Size: {order.size:.6f} units")
        print(f"  Position Value: ${order.position_value:.2f}")
        print(f"  Risk: ${order.risk_amount:.2f} ({order.risk_pct:.2f}% of equity)")
    else:
        print(f"✗ {order}")

    section("BACKTESTS on the test period (next-open fills, 10 bps fees, 2 bps slippage)")
    for choice in ("ml_strategy", "scalping_ema_rsi"):
        bt_cfg = compose_config(
            [*data, f"strategy={choice}", f"backtest.start={test_start}", *overrides],
            config_name="backtest",
        )
        run = run_backtest(bt_cfg)
        print(f"{choice:<17} {run.result.summary()}")
        print(f"{'':<17} MLflow run {run.run_id} (experiment '{bt_cfg.mlflow.experiment_name}')")

    section("See the runs and compare them")
    print(
        f"mlflow ui --backend-store-uri {uri} --port 5000   (or `make ui`), then open "
        "http://127.0.0.1:5000"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
