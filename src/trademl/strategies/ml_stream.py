"""MLStrategy one candle at a time (:meth:`MLStrategy.stream`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trademl.inference import calculate_signal_strength, signals_from_probabilities
from trademl.labels import LABELS
from trademl.strategies.base import SignalStream
from trademl.strategies.ml_strategy import _CODE_TO_SIDE

if TYPE_CHECKING:
    from trademl.strategies.ml_strategy import MLStrategy

__all__ = ["MLStream"]

_P_KEYS = tuple(f"p_{label}" for label in LABELS)


class MLStream(SignalStream):
    """Streamed features, the version's fast predictor, and :func:`probability_signals`' rules
    for one row. When the strategy switches to another version (:meth:`MLStrategy.refresh`),
    it re-seeds from the ``keep`` candles it holds. History given to :meth:`warm_up` only
    advances the features; the model predicts the last candle only."""

    def __init__(self, strategy: MLStrategy, *, what: str, keep: int) -> None:
        super().__init__(strategy, what=what, keep=keep)
        self._build()

    def _build(self) -> None:
        """The features and predictor of the strategy's loaded version (assigned together, so
        that a failure leaves the stream as it was)."""
        from trademl.streaming import FeatureStream

        s = self.strategy
        loaded = s.load()
        features = FeatureStream(s._features, extra_atr_periods=(s.atr_period,), what=self.what)
        predict = s.predictor().predict_proba
        for previous in self.recent:
            features.update(*previous)
        self.loaded, self.features, self.predict = loaded, features, predict
        self.min_bars = s.min_bars

    def _current(self) -> None:
        if self.strategy._loaded is not self.loaded:  # another version: its own features
            self._build()

    def _absorb(self, fields: tuple) -> None:
        self._current()
        self.features.update(*fields)

    def _step(self, fields: tuple) -> dict[str, Any] | None:
        self._current()
        s = self.strategy
        row = self.features.update(*fields)
        if self.features.count < self.min_bars:
            return None
        proba = self.predict(row[None, :])
        codes, confidence = signals_from_probabilities(proba, s.min_confidence)
        # the class probabilities (p_SHORT, p_FLAT, p_LONG as in MLStrategy's batch signals),
        # for the live journal's decision rows; not part of the spec's signal metadata
        self.details = dict(zip(_P_KEYS, proba[0].tolist(), strict=True))
        atr = self.features.atr(s.atr_period)
        side = 0 if atr != atr else int(_CODE_TO_SIDE[codes[0]])  # NaN ATR: no trade
        conf = float(confidence[0])
        sl, tp = calculate_signal_strength(
            atr,
            conf,
            min_confidence=s.min_confidence,
            base_sl_atr_mult=s.sl_atr_mult,
            base_tp_atr_mult=s.tp_atr_mult,
            confidence_sl_adjustment=s.confidence_sl_adjustment,
        )
        return s._signal_dict(
            side, entry_price=fields[4], confidence=conf, sl_distance=sl, tp_distance=tp, atr=atr
        )
