"""MLStrategy: a registered model as a strategy (the spec's ``strategies/ml_based``)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from trademl import indicators as ind
from trademl._config import coerce_config
from trademl.errors import ConfigError, ModelError
from trademl.features import FeatureConfig, build_feature_matrix, feature_names
from trademl.inference import (
    calculate_signal_strength,
    predict_with_features,
    signals_from_probabilities,
)
from trademl.labels import LABEL_TO_INT
from trademl.registry import LoadedModel, load_model, resolve_version
from trademl.strategies.base import BaseStrategy

__all__ = ["MLStrategy", "model_signals"]

log = logging.getLogger(__name__)

_CODE_TO_SIDE = np.array([0, 0, 0], dtype=np.int8)
_CODE_TO_SIDE[LABEL_TO_INT["SHORT"]] = -1
_CODE_TO_SIDE[LABEL_TO_INT["LONG"]] = 1


class MLStrategy(BaseStrategy):
    """Signals from a model in the MLflow registry.

    Parameters
    ----------
    model_name
        Registered model name; the model loaded is ``models:/NAME/STAGE`` (default
        ``Production``), ``models:/NAME@ALIAS`` when ``alias`` is given, or ``model_uri``.
    min_confidence
        Below this probability of the best class the signal is FLAT.
    feature_config
        Overrides of the feature configuration stored with the model. Only the keys named
        are changed; if the result no longer gives the model's columns, loading fails.
    tracking_uri
        The store to load from (``mlflow.tracking_uri`` of the config).
    sl_atr_mult, tp_atr_mult, confidence_sl_adjustment, atr_period
        Stop and target distances in ATRs (the names the labels and the walk-forward signal
        use too; see :func:`trademl.inference.calculate_signal_strength`).

    The model is loaded on first use and cached; :meth:`refresh` reloads it when the
    reference now points to another version.
    """

    strategy_type = "ml_based"

    def __init__(
        self,
        model_name: str = "baseline_rf",
        min_confidence: float = 0.55,
        feature_config: dict | None = None,
        *,
        stage: str = "Production",
        alias: str | None = None,
        model_uri: str | None = None,
        tracking_uri: str | None = None,
        sl_atr_mult: float = 1.5,
        tp_atr_mult: float = 3.0,
        confidence_sl_adjustment: float = 0.3,
        atr_period: int = 14,
    ) -> None:
        if not 0.0 < float(min_confidence) <= 1.0:
            raise ConfigError(f"min_confidence={min_confidence!r} must be in (0, 1]")
        if sl_atr_mult <= 0 or tp_atr_mult <= 0 or not 0 <= confidence_sl_adjustment < 1:
            raise ConfigError(
                "strategy: ATR multiples must be > 0 and confidence_sl_adjustment in [0, 1)"
            )
        self.model_name = model_name
        self.min_confidence = float(min_confidence)
        self.feature_config = dict(feature_config or {})
        self.stage, self.alias = stage, alias
        self.model_uri = model_uri
        self.tracking_uri = tracking_uri
        self.sl_atr_mult = float(sl_atr_mult)
        self.tp_atr_mult = float(tp_atr_mult)
        self.confidence_sl_adjustment = float(confidence_sl_adjustment)
        self.atr_period = int(atr_period)
        self._loaded: LoadedModel | None = None
        self._features: FeatureConfig | None = None
        self.name = f"ml_strategy[{self.uri}]"

    @property
    def uri(self) -> str:
        if self.model_uri:
            return self.model_uri
        if self.alias:
            return f"models:/{self.model_name}@{self.alias}"
        return f"models:/{self.model_name}/{self.stage}"

    # -- loading ------------------------------------------------------------------------------
    def load(self) -> LoadedModel:
        """Load (once) the model and rebuild its feature configuration."""
        if self._loaded is None:
            loaded = load_model(self.uri, tracking_uri=self.tracking_uri)
            self._features = self._feature_config(loaded)
            self._loaded = loaded
            log.info("MLStrategy loaded %s (version %s)", self.uri, loaded.version)
        return self._loaded

    def refresh(self) -> bool:
        """Reload if the reference now resolves to another version; True if it changed."""
        current = resolve_version(self.uri, tracking_uri=self.tracking_uri)
        if self._loaded is not None and (
            current is None or str(current.version) == self._loaded.version
        ):
            return False
        previous = self._loaded.version if self._loaded else None
        self._loaded = None
        self.load()
        log.info("MLStrategy %s: version %s -> %s", self.uri, previous, self._loaded.version)
        return previous is not None

    def _feature_config(self, loaded: LoadedModel) -> FeatureConfig:
        meta = loaded.trademl
        if "features" not in meta or "feature_names" not in meta:
            raise ModelError(
                f"{self.uri} has no trademl feature metadata; it was not trained "
                "by trademl, so its features cannot be rebuilt"
            )
        stored = dict(meta["features"])
        unknown = sorted(set(self.feature_config) - set(stored))
        if unknown:
            raise ConfigError(
                f"feature_config: unknown key(s) {', '.join(unknown)}; "
                f"the model's feature config has {', '.join(sorted(stored))}"
            )
        merged = coerce_config({**stored, **self.feature_config}, FeatureConfig, name="features")
        names = feature_names(merged)
        expected = list(meta["feature_names"])
        if names != expected:
            missing = [n for n in expected if n not in names]
            extra = [n for n in names if n not in expected]
            raise ModelError(
                f"feature_config {self.feature_config} gives columns the model {self.uri} "
                f"(version {loaded.version}) was not trained on: missing {missing[:5]}, "
                f"unexpected {extra[:5]}; remove the override or retrain"
            )
        return merged

    # -- signals ------------------------------------------------------------------------------
    @property
    def min_bars(self) -> int:
        self.load()
        return max(self._features.min_rows, self.atr_period + 1)

    def _metadata(self) -> dict[str, Any]:
        loaded = self.load()
        return {
            "model_name": loaded.name or self.model_name,
            "model_version": loaded.version,
            "model_uri": self.uri,
        }

    def _signals(self, df: pd.DataFrame, *, last_only: bool = False) -> pd.DataFrame:
        return model_signals(
            self.load().model,
            df,
            self._features,
            min_confidence=self.min_confidence,
            sl_atr_mult=self.sl_atr_mult,
            tp_atr_mult=self.tp_atr_mult,
            confidence_sl_adjustment=self.confidence_sl_adjustment,
            atr_period=self.atr_period,
            last_only=last_only,
        )

    def _latest(self, df: pd.DataFrame) -> pd.Series:
        """Features on the whole window, a prediction for the last bar only (live latency)."""
        self._check(df)
        return self._signals(df, last_only=True).iloc[-1]


def model_signals(
    model: Any,
    df: pd.DataFrame,
    features: FeatureConfig,
    *,
    min_confidence: float = 0.55,
    sl_atr_mult: float = 1.5,
    tp_atr_mult: float = 3.0,
    confidence_sl_adjustment: float = 0.3,
    atr_period: int = 14,
    last_only: bool = False,
) -> pd.DataFrame:
    """Causal signals of a fitted classifier for every bar of ``df`` (warm-up bars: side 0).

    Columns: side (-1/0/1), confidence, p_SHORT, p_FLAT, p_LONG, sl_distance, tp_distance,
    atr, entry_price (the close the decision is taken on). ``last_only`` returns the last
    bar's row only (one prediction instead of one per bar).
    """
    X = build_feature_matrix(df, features)
    if last_only:
        X = X.iloc[-1:]
    proba = predict_with_features(model, X)
    codes, confidence = signals_from_probabilities(proba, min_confidence)
    close = df["close"].to_numpy(dtype=np.float64)
    atr = ind.atr(df["high"].to_numpy(), df["low"].to_numpy(), close, atr_period)
    out = pd.DataFrame(index=df.index)
    out["side"] = pd.Series(_CODE_TO_SIDE[codes], index=X.index).reindex(df.index)
    out["confidence"] = pd.Series(confidence, index=X.index).reindex(df.index)
    for name in proba.columns:
        out[f"p_{name}"] = proba[name].reindex(df.index)
    sl, tp = calculate_signal_strength(
        atr,
        out["confidence"].fillna(0.0).to_numpy(),
        min_confidence=min_confidence,
        base_sl_atr_mult=sl_atr_mult,
        base_tp_atr_mult=tp_atr_mult,
        confidence_sl_adjustment=confidence_sl_adjustment,
    )
    out["sl_distance"], out["tp_distance"], out["atr"] = sl, tp, atr
    out["entry_price"] = close
    out.loc[np.isnan(atr), "side"] = 0
    out["side"] = out["side"].fillna(0).astype(np.int8)
    return out.iloc[-1:] if last_only else out
