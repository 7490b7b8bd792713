"""MLStrategy: a registered model as a strategy (the spec's ``strategies/ml_based``)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
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
from trademl.strategies.base import BaseStrategy, SignalStream

__all__ = ["MLStrategy", "model_signals", "probability_signals", "single_threaded"]

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
        Below this probability of the best class the signal is FLAT; ``"validated"`` takes
        the threshold selected on the model's validation segment (the best validation-backtest
        Sharpe ratio among thresholds with at least 10 trades, stored with the version).
    feature_config
        Overrides of the feature configuration stored with the model. Only the keys named
        are changed; if the result no longer gives the model's columns, loading fails.
    tracking_uri
        The store to load from (``mlflow.tracking_uri`` of the config).
    sl_atr_mult, tp_atr_mult, confidence_sl_adjustment, atr_period, max_holding_bars
        Stop and target distances in ATRs (the names the labels and the walk-forward signal
        use too; see :func:`trademl.inference.calculate_signal_strength`) and the holding
        limit in bars. ``None`` (the default) trades what the model learned: the ATR
        multiples, ATR period and horizon of the labels stored with the model (a triple
        barrier's exact barriers; a forward return's horizon, with its label config's stop
        and target as protection), and no confidence adjustment of the stop (the labels'
        barriers are fixed). A value that differs from the model's is used, with a warning.

    The model is loaded on first use and cached; :meth:`refresh` reloads it when the
    reference now points to another version.
    """

    strategy_type = "ml_based"

    def __init__(
        self,
        model_name: str = "baseline_rf",
        min_confidence: float | str = 0.55,
        feature_config: dict | None = None,
        *,
        stage: str = "Production",
        alias: str | None = None,
        model_uri: str | None = None,
        tracking_uri: str | None = None,
        sl_atr_mult: float | None = None,
        tp_atr_mult: float | None = None,
        confidence_sl_adjustment: float | None = None,
        atr_period: int | None = None,
        max_holding_bars: int | None = None,
    ) -> None:
        if min_confidence != "validated" and not _is_probability(min_confidence):
            raise ConfigError(
                f"min_confidence={min_confidence!r} must be in (0, 1], or 'validated' (the "
                "threshold selected on the model's validation segment)"
            )
        _check_trade_settings(
            {
                "sl_atr_mult": sl_atr_mult,
                "tp_atr_mult": tp_atr_mult,
                "confidence_sl_adjustment": confidence_sl_adjustment,
                "atr_period": atr_period,
                "max_holding_bars": max_holding_bars,
            }
        )
        self.model_name = model_name
        self._min_confidence_asked = min_confidence
        self.min_confidence = None if min_confidence == "validated" else float(min_confidence)
        self.feature_config = dict(feature_config or {})
        self.stage, self.alias = stage, alias
        self.model_uri = model_uri
        self.tracking_uri = tracking_uri
        self._asked = {
            "sl_atr_mult": sl_atr_mult,
            "tp_atr_mult": tp_atr_mult,
            "confidence_sl_adjustment": confidence_sl_adjustment,
            "atr_period": atr_period,
            "max_holding_bars": max_holding_bars,
        }
        self.trade: dict[str, Any] = {}  # the settings traded with, once the model is loaded
        self._loaded: LoadedModel | None = None
        self._features: FeatureConfig | None = None
        self._predictor: tuple[LoadedModel, Any] | None = None
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
            self.trade = self._trade_settings(loaded)
            if self._min_confidence_asked == "validated":
                self.min_confidence = self._validated_threshold(loaded)
            self._loaded = loaded
            log.info("MLStrategy loaded %s (version %s)", self.uri, loaded.version)
        return self._loaded

    def refresh(self, accept: Any = None) -> bool:
        """Reload if the reference now resolves to another version; True if it changed.

        ``accept(loaded)`` may vet the new version before it is traded: a returned message
        keeps the current version and raises a :class:`ModelError` with it.
        """
        current = resolve_version(self.uri, tracking_uri=self.tracking_uri)
        if self._loaded is not None and (
            current is None or str(current.version) == self._loaded.version
        ):
            return False
        kept = (self._loaded, self._features, self.trade, self.min_confidence)
        previous = self._loaded.version if self._loaded else None
        self._loaded = None
        self.load()
        problem = accept(self._loaded) if accept is not None and previous is not None else None
        if problem:
            new = self._loaded.version
            self._loaded, self._features, self.trade, self.min_confidence = kept
            raise ModelError(f"{self.uri}: version {new} not taken, {previous} kept: {problem}")
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

    def _validated_threshold(self, loaded: LoadedModel) -> float:
        value = loaded.trademl.get("validated_min_confidence")
        if value is None:
            raise ModelError(
                f"{self.uri} (version {loaded.version}) has no confidence threshold selected on "
                "validation (trained with split.validation=cpcv or none, without "
                "evaluation.validation_backtest, with fewer than 10 validation trades at every "
                "threshold, or by an older trademl); give min_confidence a number, e.g. 0.55"
            )
        log.info("%s: min_confidence %.2f, selected on validation", self.uri, value)
        return float(value)

    def _trade_settings(self, loaded: LoadedModel) -> dict[str, Any]:
        """Stops, target, ATR period and holding limit: the model's labels', or the ones
        asked for (with a warning where they differ from what the model learned)."""
        learned = learned_trade(loaded.trademl.get("labels"))
        out = {}
        for key, asked in self._asked.items():
            model_value = learned.get(key) if learned else None
            if asked is None:
                out[key] = model_value if learned else _LEGACY[key]
                continue
            out[key] = asked
            if learned and asked != model_value:
                log.warning(
                    "%s: %s=%s differs from the model's %s (%s labels): the strategy does not "
                    "trade what the model learned",
                    self.uri,
                    key,
                    asked,
                    model_value,
                    learned["method"],
                )
        if not learned:
            log.warning(
                "%s stores no label settings (an older trademl); trading with stops %s/%s ATR",
                self.uri,
                out["sl_atr_mult"],
                out["tp_atr_mult"],
            )
        return out

    def __getattr__(self, name: str) -> Any:
        if name in _TRADE_KEYS:  # sl_atr_mult, ..., max_holding_bars: known once loaded
            self.load()
            return self.trade[name]
        raise AttributeError(name)

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

    # -- streaming ----------------------------------------------------------------------------
    def predictor(self) -> Any:
        """The fast one-row predictor of the loaded version, built once per version
        (:func:`trademl.compiled.fast_predictor`: the compiled model if it matches
        scikit-learn's on the stored check rows, else scikit-learn on one thread)."""
        loaded = self.load()
        if self._predictor is None or self._predictor[0] is not loaded:
            from trademl.compiled import fast_predictor

            self._predictor = (loaded, fast_predictor(loaded, min_confidence=self.min_confidence))
        return self._predictor[1]

    def stream(self, *, what: str = "stream", keep: int = 1000) -> SignalStream:
        from trademl.strategies.ml_stream import MLStream

        return MLStream(self, what=what, keep=keep)


_TRADE_KEYS = (
    "sl_atr_mult",
    "tp_atr_mult",
    "confidence_sl_adjustment",
    "atr_period",
    "max_holding_bars",
)
# A model without stored labels (trained before they were stored): the old defaults.
_LEGACY = {
    "sl_atr_mult": 1.5,
    "tp_atr_mult": 3.0,
    "confidence_sl_adjustment": 0.3,
    "atr_period": 14,
    "max_holding_bars": None,
}


def learned_trade(labels: dict[str, Any] | None) -> dict[str, Any] | None:
    """The trade a model's labels describe: entry at the next open, the label's stop and
    target in ATRs of its ATR period, exit after ``horizon`` bars (``None`` without labels).
    """
    if not isinstance(labels, dict) or "horizon" not in labels:
        return None
    return {
        "method": labels.get("method", "forward_return"),
        "sl_atr_mult": float(labels.get("sl_atr_mult", 1.5)),
        "tp_atr_mult": float(labels.get("tp_atr_mult", 3.0)),
        "confidence_sl_adjustment": 0.0,
        "atr_period": int(labels.get("atr_period", 14)),
        "max_holding_bars": int(labels["horizon"]),
    }


def _is_probability(value: Any) -> bool:
    try:
        return 0.0 < float(value) <= 1.0
    except (TypeError, ValueError):
        return False


def _check_trade_settings(values: dict[str, Any]) -> None:
    for key in ("sl_atr_mult", "tp_atr_mult"):
        if values[key] is not None and not float(values[key]) > 0:
            raise ConfigError(f"strategy.{key}={values[key]!r} must be > 0")
    adj = values["confidence_sl_adjustment"]
    if adj is not None and not 0 <= float(adj) < 1:
        raise ConfigError(f"strategy.confidence_sl_adjustment={adj!r} must be in [0, 1)")
    for key, low in (("atr_period", 2), ("max_holding_bars", 1)):
        if values[key] is not None and int(values[key]) < low:
            raise ConfigError(f"strategy.{key}={values[key]!r} must be >= {low}")


@contextmanager
def single_threaded(model: Any) -> Iterator[None]:
    """Run ``model``'s predictions on one thread (its classifier's ``n_jobs`` set to 1 for the
    block, then put back, and OpenMP limited to one thread, which HistGradientBoosting uses
    on every core): starting a thread pool for one row costs more than the trees. ``n_jobs``
    None is changed too: LightGBM reads it as all cores."""
    clf = model[-1] if hasattr(model, "steps") else model
    params = clf.get_params() if hasattr(clf, "get_params") else {}
    jobs = params.get("n_jobs", 1)
    with _openmp().limit(limits=1, user_api="openmp"):
        if jobs == 1:
            yield
            return
        clf.set_params(n_jobs=1)
        try:
            yield
        finally:
            clf.set_params(n_jobs=jobs)


@functools.cache
def _openmp() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # the OpenMP runtimes loaded (scikit-learn's, LightGBM's)


def probability_signals(
    df: pd.DataFrame,
    proba: pd.DataFrame,
    *,
    min_confidence: float = 0.55,
    sl_atr_mult: float = 1.5,
    tp_atr_mult: float = 3.0,
    confidence_sl_adjustment: float = 0.3,
    atr_period: int = 14,
) -> pd.DataFrame:
    """:func:`model_signals`' frame from class probabilities (columns SHORT, FLAT, LONG) on
    some or all of ``df``'s bars; bars without probabilities or ATR have side 0."""
    codes, confidence = signals_from_probabilities(proba, min_confidence)
    close = df["close"].to_numpy(dtype=np.float64)
    atr = ind.atr(df["high"].to_numpy(), df["low"].to_numpy(), close, atr_period)
    out = pd.DataFrame(index=df.index)
    out["side"] = pd.Series(_CODE_TO_SIDE[codes], index=proba.index).reindex(df.index)
    out["confidence"] = pd.Series(confidence, index=proba.index).reindex(df.index)
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
    probs = out[["p_SHORT", "p_FLAT", "p_LONG"]].fillna(0.0).to_numpy()
    best_side = _CODE_TO_SIDE[probs.argmax(axis=1)]
    out["suppressed"] = (best_side != 0) & (out["side"].to_numpy() == 0) & ~np.isnan(atr)
    out.loc[out["confidence"].isna(), "suppressed"] = False
    return out


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
    atr, entry_price (the close the decision is taken on), suppressed (the most likely class
    was LONG or SHORT but below ``min_confidence``, so the side is 0). ``last_only`` returns
    the last bar's row only (one prediction instead of one per bar).
    """
    X = build_feature_matrix(df, features)
    if last_only:
        X = X.iloc[-1:]
        with single_threaded(model):  # one row: a thread pool costs more than the trees
            proba = predict_with_features(model, X)
    else:
        proba = predict_with_features(model, X)
    out = probability_signals(
        df,
        proba,
        min_confidence=min_confidence,
        sl_atr_mult=sl_atr_mult,
        tp_atr_mult=tp_atr_mult,
        confidence_sl_adjustment=confidence_sl_adjustment,
        atr_period=atr_period,
    )
    return out.iloc[-1:] if last_only else out
