"""Strategies: one protocol, ``generate_signal(df) -> {'signal': ..., 'metadata': {...}}``.

:class:`MLStrategy` (a registered model) and :class:`ScalpingEMARSI` (rules) are
interchangeable wherever a strategy is accepted: the backtester, the live runtime and the
``strategy`` config group (``strategy=ml_strategy`` / ``strategy=scalping_ema_rsi``).
"""

from trademl.strategies.base import SIDE, BaseStrategy, Strategy
from trademl.strategies.ml_strategy import MLStrategy
from trademl.strategies.scalping import ScalpingEMARSI

__all__ = ["SIDE", "BaseStrategy", "MLStrategy", "ScalpingEMARSI", "Strategy"]
