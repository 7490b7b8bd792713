"""ScalpingEMARSI (the spec's Module 15): EMA crossover filtered by RSI zones, ATR stops."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from trademl import indicators as ind
from trademl.errors import ConfigError
from trademl.strategies.base import BaseStrategy, SignalStream

__all__ = ["ScalpingEMARSI"]


class ScalpingEMARSI(BaseStrategy):
    """LONG when EMA(fast) crosses above EMA(slow) with RSI in ``rsi_long_zone``; SHORT on the
    mirror cross with RSI in ``rsi_short_zone``; FLAT otherwise. Stop and target at
    ``sl_atr_mult`` and ``tp_atr_mult`` times ATR; confidence is 1 on a signal, 0 otherwise.
    """

    name = "scalping_ema_rsi"
    strategy_type = "rule_based"

    def __init__(
        self,
        fast_period: int = 9,
        slow_period: int = 21,
        rsi_period: int = 14,
        rsi_long_zone: tuple[float, float] = (50.0, 70.0),
        rsi_short_zone: tuple[float, float] = (30.0, 50.0),
        atr_period: int = 14,
        sl_atr_mult: float = 1.5,
        tp_atr_mult: float = 3.0,
    ) -> None:
        if not 1 < fast_period < slow_period:
            raise ConfigError(
                f"strategy: need 1 < fast_period ({fast_period}) < slow_period ({slow_period})"
            )
        for name, zone in (("rsi_long_zone", rsi_long_zone), ("rsi_short_zone", rsi_short_zone)):
            if len(zone) != 2 or not 0 <= zone[0] < zone[1] <= 100:
                raise ConfigError(f"strategy.{name}={list(zone)} must be [low, high] in 0..100")
        if sl_atr_mult <= 0 or tp_atr_mult <= 0 or rsi_period < 2 or atr_period < 2:
            raise ConfigError("strategy: periods must be >= 2 and ATR multiples > 0")
        self.fast_period, self.slow_period = int(fast_period), int(slow_period)
        self.rsi_period, self.atr_period = int(rsi_period), int(atr_period)
        self.rsi_long_zone = tuple(float(x) for x in rsi_long_zone)
        self.rsi_short_zone = tuple(float(x) for x in rsi_short_zone)
        self.sl_atr_mult, self.tp_atr_mult = float(sl_atr_mult), float(tp_atr_mult)

    @property
    def min_bars(self) -> int:
        return max(self.slow_period, self.rsi_period, self.atr_period) + 1

    def _metadata(self) -> dict[str, Any]:
        return {"strategy_name": self.name, "model_name": None}

    def _signals(self, df: pd.DataFrame) -> pd.DataFrame:
        close = df["close"].to_numpy(dtype=np.float64)
        spread = ind.ema(close, self.fast_period) - ind.ema(close, self.slow_period)
        prev = ind.shift(spread, 1)
        rsi = ind.rsi(close, self.rsi_period)
        atr = ind.atr(df["high"].to_numpy(), df["low"].to_numpy(), close, self.atr_period)
        with np.errstate(invalid="ignore"):
            up = (
                (spread > 0)
                & (prev <= 0)
                & (rsi > self.rsi_long_zone[0])
                & (rsi < self.rsi_long_zone[1])
            )
            down = (
                (spread < 0)
                & (prev >= 0)
                & (rsi > self.rsi_short_zone[0])
                & (rsi < self.rsi_short_zone[1])
            )
        side = np.where(up, 1, np.where(down, -1, 0))
        side[np.isnan(atr)] = 0
        return pd.DataFrame(
            {
                "side": side,
                "confidence": np.where(side != 0, 1.0, 0.0),
                "sl_distance": self.sl_atr_mult * atr,
                "tp_distance": self.tp_atr_mult * atr,
                "atr": atr,
                "entry_price": close,
            },
            index=df.index,
        )

    def stream(self, *, what: str = "stream", keep: int = 1000) -> SignalStream:
        return _ScalpingStream(self, what=what, keep=keep)


class _ScalpingStream(SignalStream):
    """:meth:`ScalpingEMARSI._signals` for one candle at a time, on a feature stream's EMAs,
    RSI and ATR (the batch indicators' values to the last bit)."""

    def __init__(self, strategy: ScalpingEMARSI, *, what: str, keep: int) -> None:
        from trademl.streaming import FeatureStream

        super().__init__(strategy, what=what, keep=keep)
        s = strategy
        self.features = FeatureStream(
            {
                "ema_periods": (s.fast_period, s.slow_period),
                "rsi_periods": (s.rsi_period,),
                "atr_periods": (s.atr_period,),
                "groups": ("ema",),
            },
            what=what,
        )
        self.previous = float("nan")  # the spread on the bar before

    def _step(self, fields: tuple) -> dict[str, Any] | None:
        s, fs = self.strategy, self.features
        fs.update(*fields)
        spread = fs.ema(s.fast_period) - fs.ema(s.slow_period)
        prev, self.previous = self.previous, spread
        rsi, atr = fs.rsi(s.rsi_period), fs.atr(s.atr_period)
        side = 0
        if spread > 0 and prev <= 0 and s.rsi_long_zone[0] < rsi < s.rsi_long_zone[1]:
            side = 1
        elif spread < 0 and prev >= 0 and s.rsi_short_zone[0] < rsi < s.rsi_short_zone[1]:
            side = -1
        if atr != atr:  # NaN: no ATR yet
            side = 0
        if fs.count < s.min_bars:
            return None
        return s._signal_dict(
            side,
            entry_price=fields[4],
            confidence=1.0 if side else 0.0,
            sl_distance=s.sl_atr_mult * atr,
            tp_distance=s.tp_atr_mult * atr,
            atr=atr,
        )
