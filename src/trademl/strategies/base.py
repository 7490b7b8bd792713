"""The strategy protocol and the shared single-bar / batch machinery."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from trademl.data import validate_ohlcv
from trademl.errors import InsufficientDataError

__all__ = ["SIDE", "SIGNAL_COLUMNS", "BaseStrategy", "Strategy"]

SIDE: dict[str, int] = {"SHORT": -1, "FLAT": 0, "LONG": 1}
SIDE_NAME: dict[int, str] = {v: k for k, v in SIDE.items()}
SIGNAL_COLUMNS = ("side", "confidence", "sl_distance", "tp_distance", "atr", "entry_price")


@runtime_checkable
class Strategy(Protocol):
    """What the backtester and the live runtime need from a strategy."""

    name: str
    strategy_type: str

    @property
    def min_bars(self) -> int: ...

    def generate_signal(self, df: pd.DataFrame) -> dict[str, Any]: ...

    def generate_signals(self, df: pd.DataFrame) -> pd.DataFrame: ...


class BaseStrategy:
    """Implements :meth:`generate_signal` on top of a causal batch :meth:`generate_signals`.

    Subclasses implement ``_signals(df)`` returning the :data:`SIGNAL_COLUMNS` for every bar
    (side -1/0/1; warm-up bars side 0) and ``_metadata()`` with their identifying keys.
    Because the batch is causal, the signal of bar ``t`` in ``generate_signals(df)`` equals
    ``generate_signal(df[:t+1])``.
    """

    name = "strategy"
    strategy_type = "unknown"

    @property
    def min_bars(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def _signals(self, df: pd.DataFrame) -> pd.DataFrame:  # pragma: no cover - overridden
        raise NotImplementedError

    def _metadata(self) -> dict[str, Any]:
        return {}

    def _check(self, df: pd.DataFrame) -> None:
        """Clean candles and enough of them, or a clear error."""
        what = df.attrs.get("source", "data") if isinstance(df, pd.DataFrame) else "data"
        validate_ohlcv(df, what=what)
        if len(df) < self.min_bars:
            raise InsufficientDataError(
                f"{self.name}: {len(df)} bars of history, but it needs at least {self.min_bars}; "
                "pass a longer window",
                needed=self.min_bars,
                got=len(df),
            )

    def generate_signals(self, df: pd.DataFrame) -> pd.DataFrame:
        """Signals for every bar of ``df`` (clean candles), decided on each bar's close."""
        self._check(df)
        out = self._signals(df)
        out["side"] = out["side"].fillna(0).astype(np.int8)
        return out

    def _latest(self, df: pd.DataFrame) -> pd.Series:
        """The signal row of the last bar (subclasses may compute only that row)."""
        return self.generate_signals(df).iloc[-1]

    def generate_signal(self, df: pd.DataFrame) -> dict[str, Any]:
        """The signal for the latest bar: ``{'signal': ..., 'metadata': {...}}``."""
        row = self._latest(df)
        metadata = {
            "entry_price": float(row["entry_price"]),
            "confidence": float(row["confidence"]),
            "sl_distance": float(row["sl_distance"]),
            "tp_distance": float(row["tp_distance"]),
            "atr": float(row["atr"]),
            **self._metadata(),
            "strategy_type": self.strategy_type,
        }
        return {"signal": SIDE_NAME[int(row["side"])], "metadata": metadata}
