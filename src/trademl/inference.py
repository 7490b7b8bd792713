"""Inference utilities: class probabilities, signals, ATR-based stop and target distances.

Stop and target (:func:`calculate_signal_strength`)::

    strength = clip((confidence - min_confidence) / (1 - min_confidence), 0, 1)
    sl_distance = ATR * base_sl_atr_mult * (1 - confidence_sl_adjustment * strength)
    tp_distance = ATR * base_tp_atr_mult

A signal at the confidence threshold keeps the base stop (1.5 ATR); the most confident one
tightens it by ``confidence_sl_adjustment`` (30 %: 1.05 ATR). With the RiskEngine's fixed risk
per trade a tighter stop means a larger position, so conviction is expressed through size,
while the target (3 ATR) and therefore the reward-to-risk ratio grow with confidence.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trademl.features import build_feature_matrix
from trademl.labels import INT_TO_LABEL, LABEL_TO_INT, LABELS


def class_probabilities(model, X: pd.DataFrame) -> np.ndarray:
    """``predict_proba`` with one column per label code 0..2, zeros for unseen classes.

    (Here rather than in :mod:`trademl.evaluation`, which imports sklearn.metrics and scipy:
    a live session's start-up needs only this.)"""
    proba = model.predict_proba(X)
    out = np.zeros((len(X), len(LABELS)))
    for j, cls in enumerate(model.classes_):
        out[:, int(cls)] = proba[:, j]
    return out


__all__ = [
    "calculate_signal_strength",
    "predict_signal",
    "predict_with_features",
    "signals_from_probabilities",
]


def predict_with_features(model, X: pd.DataFrame) -> pd.DataFrame:
    """Class probabilities for a feature frame: columns SHORT, FLAT, LONG on X's index."""
    return pd.DataFrame(class_probabilities(model, X), index=X.index, columns=list(LABELS))


def signals_from_probabilities(
    proba: pd.DataFrame | np.ndarray, min_confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, confidence)``: the most likely class, FLAT when below ``min_confidence``.

    ``proba`` is a frame with the label columns, or an array of rows in label order."""
    values = proba[list(LABELS)].to_numpy() if isinstance(proba, pd.DataFrame) else proba
    best = values.argmax(axis=1)
    confidence = values.max(axis=1)  # the value at ``best``
    codes = np.where(confidence >= min_confidence, best, LABEL_TO_INT["FLAT"])
    return codes, confidence


def predict_signal(
    model, df: pd.DataFrame, min_confidence: float = 0.55, feature_config=None
) -> dict:
    """The signal for the latest bar of ``df`` (clean candles).

    Returns ``{"signal": "LONG"|"SHORT"|"FLAT", "confidence": p, "probabilities": {...}}``;
    FLAT when the most likely class is FLAT or its probability is below ``min_confidence``.
    """
    X = build_feature_matrix(df, feature_config)
    proba = predict_with_features(model, X.iloc[[-1]])
    codes, confidence = signals_from_probabilities(proba, min_confidence)
    return {
        "signal": INT_TO_LABEL[int(codes[0])],
        "confidence": float(confidence[0]),
        "probabilities": {k: float(v) for k, v in proba.iloc[0].items()},
    }


def calculate_signal_strength(
    atr: float | np.ndarray,
    confidence: float | np.ndarray,
    *,
    min_confidence: float = 0.55,
    base_sl_atr_mult: float = 1.5,
    base_tp_atr_mult: float = 3.0,
    confidence_sl_adjustment: float = 0.3,
) -> tuple:
    """``(sl_distance, tp_distance)`` in price units (see the module docstring)."""
    span = max(1.0 - min_confidence, 1e-12)
    if type(atr) is float and type(confidence) is float:  # one decision: the same arithmetic
        strength = min(max((confidence - min_confidence) / span, 0.0), 1.0)
        sl = atr * base_sl_atr_mult * (1.0 - confidence_sl_adjustment * strength)
        return sl, atr * base_tp_atr_mult
    strength = np.clip((np.asarray(confidence, dtype=float) - min_confidence) / span, 0.0, 1.0)
    sl = (
        np.asarray(atr, dtype=float)
        * base_sl_atr_mult
        * (1.0 - confidence_sl_adjustment * strength)
    )
    tp = np.asarray(atr, dtype=float) * base_tp_atr_mult
    if np.ndim(sl) == 0:
        return float(sl), float(tp)
    return sl, tp
