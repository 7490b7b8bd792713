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

from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from trademl.evaluation import class_probabilities, optimizable_metrics, probability_metrics
from trademl.prepare import PreparedData

__all__ = ["HEADLINE", "selection_metrics", "validation_backtest", "validation_metrics"]

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


def validation_metrics(data: PreparedData, model: Pipeline, spec: Any, seed: int) -> dict:
    """``val_*`` metrics of ``model`` (fit on ``data.X_train``) for the data's validation
    method; with cross-validation ``spec`` builds and fits one model per split (``{}``
    when the split has no validation)."""
    if data.validation == "holdout":
        proba = class_probabilities(model, data.X_val)
        return _scores(proba, data.y_val, data.fwd_val, data.y_train)
    if not data.cv_splits:
        return {}
    per_split = []
    X, y, fwd = data.X_train, data.y_train, data.fwd_train
    for split in data.cv_splits:
        fold = spec.build(seed)
        y_fit = y.iloc[split.train]
        fold.fit(X.iloc[split.train], y_fit.to_numpy(), **spec.fit_params(y_fit))
        proba = class_probabilities(fold, X.iloc[split.test])
        per_split.append(_scores(proba, y.iloc[split.test], fwd.iloc[split.test], y_fit))
    table = pd.DataFrame(per_split)
    out = {k: float(v) for k, v in table.mean().items()}
    out.update({f"{k}_std": float(table[k].std(ddof=1)) for k in HEADLINE if k in table})
    out["val_splits"] = float(len(per_split))
    return out


def validation_backtest(data: PreparedData, model: Pipeline, settings: Any) -> dict[str, float]:
    """The model's trade on the validation segment (``holdout`` only, else ``{}``).

    Signals as :class:`~trademl.strategies.MLStrategy` makes them with the labels' stop,
    target and horizon (:func:`~trademl.strategies.ml_strategy.learned_trade`) at
    ``settings.min_confidence``, backtested from the first validation bar to the last with
    ``settings.fees_bps`` / ``slippage_bps``. ``val_bt_sr``, ``val_bt_skew``, ``val_bt_kurt``
    and ``val_bt_bars`` are the per-bar Sharpe ratio and moments of its returns, which the
    sweep's parent deflates by the number of trials.
    """
    from trademl.backtest import Backtest
    from trademl.safeguards_stats import probabilistic_sharpe_ratio, return_moments
    from trademl.strategies.ml_strategy import learned_trade, model_signals

    if data.validation != "holdout" or not len(data.X_val) or not settings.validation_backtest:
        return {}
    trade = learned_trade(asdict(data.labels))
    candles = data.candles.loc[: data.X_val.index[-1]]
    signals = model_signals(
        model,
        candles,
        data.features,
        min_confidence=settings.min_confidence,
        sl_atr_mult=trade["sl_atr_mult"],
        tp_atr_mult=trade["tp_atr_mult"],
        confidence_sl_adjustment=trade["confidence_sl_adjustment"],
        atr_period=trade["atr_period"],
    )
    result = Backtest(
        candles,
        signals,
        fees_bps=settings.fees_bps,
        slippage_bps=settings.slippage_bps,
        max_holding_bars=trade["max_holding_bars"],
        start=data.X_val.index[0],
    ).run()
    m = result.metrics
    sr, n, skew, kurt = return_moments(result.equity.pct_change().dropna().to_numpy())
    return {
        "val_bt_total_return": m["total_return"],
        "val_bt_sharpe": m["sharpe"],
        "val_bt_trades": m["trades"],
        "val_bt_sr": sr,
        "val_bt_bars": float(n),
        "val_bt_skew": skew,
        "val_bt_kurt": kurt,
        "val_bt_psr": probabilistic_sharpe_ratio(sr, n, skew, kurt),
    }
