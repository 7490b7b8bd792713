"""Model selection without the test period: validation metrics.

A sweep picks its best run, and a user compares runs, by ``val_*`` metrics; the test period
(``test_*``) is scored once, on the model that was kept, and never used to choose.

* ``holdout``: the model fit on the training rows scores the validation segment
  (:func:`trademl.splits.split_train_test`), which is purged on both sides.
* ``purged_kfold`` / ``cpcv``: a fresh model per split (:func:`trademl.splits.purged_cv_splits`)
  fit on the split's training rows scores its held-out rows; ``val_*`` is the mean over the
  splits and ``val_<metric>_std`` their standard deviation for the headline metrics. The
  registered model is then fit on all rows before the test period.

Metric names are the test metrics' with ``val_`` for ``test_`` (:func:`selection_metrics`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from trademl.evaluation import class_probabilities, optimizable_metrics, probability_metrics
from trademl.labels import LABELS
from trademl.prepare import PreparedData

__all__ = [
    "HEADLINE",
    "MIN_VALIDATED_TRADES",
    "THRESHOLDS",
    "selection_metrics",
    "validation_backtest",
    "validation_metrics",
]

HEADLINE = ("val_balanced_accuracy", "val_log_loss", "val_ic", "val_rank_ic")


def selection_metrics() -> list[str]:
    """The metrics a sweep may optimise: validation scores (and ``train_accuracy``)."""
    return [
        m.replace("test_", "val_", 1) if m.startswith("test_") else m for m in optimizable_metrics()
    ]


def _scores(proba: np.ndarray, y: pd.Series, fwd: pd.Series, y_train: pd.Series) -> dict:
    metrics, *_ = probability_metrics(proba, y, fwd, y_train)
    return {
        "val_" + k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")
    }


def validation_metrics(
    data: PreparedData,
    model: Pipeline,
    spec: Any,
    seed: int,
    *,
    on_split: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[dict[str, float], pd.DataFrame | None]:
    """``val_*`` metrics of ``model`` (fit on ``data.X_train``) for the data's validation
    method, and the validation predictions a backtest can trade: the class probabilities
    (columns SHORT, FLAT, LONG) of the validation segment (``holdout``) or the out-of-fold
    ones of every row before the test period (``purged_kfold``: each row held out once);
    ``None`` for ``cpcv`` (rows are held out several times) and without validation. With
    cross-validation ``spec`` builds and fits one model per split, and ``on_split`` (if given)
    is told the mean scores so far after each split: a tuner's pruner stops a poor trial
    early by raising from it."""
    if data.validation == "holdout":
        proba = class_probabilities(model, data.X_val)
        scores = _scores(proba, data.y_val, data.fwd_val, data.y_train)
        return scores, pd.DataFrame(proba, index=data.X_val.index, columns=list(LABELS))
    if not data.cv_splits:
        return {}, None
    per_split = []
    X, y, fwd = data.X_train, data.y_train, data.fwd_train
    oof = np.full((len(X), len(LABELS)), np.nan)
    for split in data.cv_splits:
        fold = spec.build(seed)
        y_fit = y.iloc[split.train]
        fold.fit(X.iloc[split.train], y_fit.to_numpy(), **spec.fit_params(y_fit))
        proba = class_probabilities(fold, X.iloc[split.test])
        oof[split.test] = proba
        per_split.append(_scores(proba, y.iloc[split.test], fwd.iloc[split.test], y_fit))
        if on_split is not None:
            running = pd.DataFrame(per_split).mean()
            on_split(len(per_split), {k: float(v) for k, v in running.items()})
    table = pd.DataFrame(per_split)
    out = {k: float(v) for k, v in table.mean().items()}
    out.update({f"{k}_std": float(table[k].std(ddof=1)) for k in HEADLINE if k in table})
    out["val_splits"] = float(len(per_split))
    if data.validation != "purged_kfold":
        return out, None
    return out, pd.DataFrame(oof, index=X.index, columns=list(LABELS))


THRESHOLDS = (0.34, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8)
MIN_VALIDATED_TRADES = 10  # fewer trades than this say nothing about a threshold


def validation_backtest(
    data: PreparedData, proba: pd.DataFrame | None, settings: Any
) -> tuple[dict[str, float], pd.DataFrame | None]:
    """The model's trade over its validation predictions ``proba`` (from
    :func:`validation_metrics`; ``({}, None)`` without them).

    Signals as :class:`~trademl.strategies.MLStrategy` makes them with the labels' stop,
    target and horizon (:func:`~trademl.strategies.ml_strategy.learned_trade`), backtested from
    the first validation row to the last with ``settings.fees_bps`` / ``slippage_bps``:

    * at ``settings.min_confidence``: ``val_bt_*`` metrics; ``val_bt_sr``, ``val_bt_skew``,
      ``val_bt_kurt`` and ``val_bt_bars`` are the per-bar Sharpe ratio and moments of its
      returns, which the sweep's parent deflates by the number of trials;
    * at every threshold of :data:`THRESHOLDS`: a table (threshold, signal bars, trades,
      total return, Sharpe), and ``val_bt_best_min_confidence``, the threshold with the best
      validation Sharpe among those with at least :data:`MIN_VALIDATED_TRADES` trades (NaN if
      none): the threshold selected on validation, which ``MLStrategy(min_confidence=
      "validated")`` trades with.
    """
    from trademl.backtest import Backtest
    from trademl.safeguards_stats import probabilistic_sharpe_ratio, return_moments
    from trademl.strategies.ml_strategy import learned_trade, probability_signals

    if proba is None or not len(proba) or not settings.validation_backtest:
        return {}, None
    trade = learned_trade(asdict(data.labels))
    candles = data.candles.loc[: proba.index[-1]]
    signals = probability_signals(  # every LONG/SHORT prediction; thresholds applied below
        candles,
        proba,
        min_confidence=1e-9,
        sl_atr_mult=trade["sl_atr_mult"],
        tp_atr_mult=trade["tp_atr_mult"],
        confidence_sl_adjustment=0.0,  # the labels' fixed barriers, whatever the threshold
        atr_period=trade["atr_period"],
    )
    side, confidence = signals["side"].to_numpy(), signals["confidence"].to_numpy()

    def run(threshold: float):
        return Backtest(
            candles,
            signals.assign(side=np.where(confidence >= threshold, side, 0).astype(np.int8)),
            fees_bps=settings.fees_bps,
            slippage_bps=settings.slippage_bps,
            max_holding_bars=trade["max_holding_bars"],
            start=proba.index[0],
        ).run()

    results = {t: run(t) for t in sorted({*THRESHOLDS, float(settings.min_confidence)})}
    table = pd.DataFrame(
        [
            {
                "min_confidence": threshold,
                **{k: r.metrics[k] for k in ("signal_bars", "trades", "total_return", "sharpe")},
            }
            for threshold, r in results.items()
        ]
    )
    enough = table[(table["trades"] >= MIN_VALIDATED_TRADES) & table["sharpe"].notna()]
    chosen = (
        float(enough.loc[enough["sharpe"].idxmax(), "min_confidence"]) if len(enough) else np.nan
    )

    result = results[float(settings.min_confidence)]  # the configured threshold's backtest
    m = result.metrics
    sr, n, skew, kurt = return_moments(result.equity.pct_change().dropna().to_numpy())
    metrics = {
        "val_bt_total_return": m["total_return"],
        "val_bt_sharpe": m["sharpe"],
        "val_bt_trades": m["trades"],
        "val_bt_sr": sr,
        "val_bt_bars": float(n),
        "val_bt_skew": skew,
        "val_bt_kurt": kurt,
        "val_bt_psr": probabilistic_sharpe_ratio(sr, n, skew, kurt),
        "val_bt_best_min_confidence": chosen,
    }
    return metrics, table
