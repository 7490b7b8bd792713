"""The strategy protocol and the shared single-bar / batch / streaming machinery.

A strategy answers three ways, all equal for the same bar:

* ``generate_signals(df)``: every bar of a frame (the backtester);
* ``generate_signal(df)``: the last bar of a window (the spec's usage);
* ``stream()``: a :class:`SignalStream` with ``warm_up(history)`` then ``update(candle)`` per
  closed candle, in constant time per candle (the live runtime). The strategy's own
  ``warm_up``/``update`` use one default stream.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from trademl.data import validate_ohlcv
from trademl.errors import InsufficientDataError

__all__ = ["SIDE", "SIGNAL_COLUMNS", "BaseStrategy", "SignalStream", "Strategy", "candle_fields"]

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
        return self._signal_dict(
            int(row["side"]),
            entry_price=float(row["entry_price"]),
            confidence=float(row["confidence"]),
            sl_distance=float(row["sl_distance"]),
            tp_distance=float(row["tp_distance"]),
            atr=float(row["atr"]),
        )

    def _signal_dict(self, side: int, **values: float) -> dict[str, Any]:
        """The one output format of :meth:`generate_signal` and of the streams."""
        metadata = {**values, **self._metadata(), "strategy_type": self.strategy_type}
        return {"signal": SIDE_NAME[side], "metadata": metadata}

    # -- streaming ----------------------------------------------------------------------------
    def stream(self, *, what: str = "stream", keep: int = 1000) -> SignalStream:
        """A new per-symbol :class:`SignalStream` (``what`` names it in errors; ``keep`` is how
        many recent candles it holds to re-seed itself, e.g. after a model switch)."""
        raise NotImplementedError(f"{type(self).__name__} has no streaming implementation")

    def warm_up(self, history: pd.DataFrame) -> dict[str, Any] | None:
        """Start the strategy's default stream on ``history`` (clean candles); the signal of
        its last bar, or ``None`` if shorter than :attr:`min_bars`."""
        self._stream = self.stream()
        return self._stream.warm_up(history)

    def update(self, candle: Any) -> dict[str, Any] | None:
        """The signal of one more closed candle (see :class:`SignalStream`), equal to
        ``generate_signal`` on all the candles given so far; ``None`` before :attr:`min_bars`."""
        if getattr(self, "_stream", None) is None:
            self._stream = self.stream()
        return self._stream.update(candle)


class SignalStream:
    """The per-symbol state of a strategy: ``warm_up(history)``, then ``update(candle)``.

    ``update`` takes one closed candle (a :class:`trademl.live.feeds.Candle`, a mapping or a
    row ``Series`` named by its timestamp, with open, high, low, close, volume) and returns
    what ``strategy.generate_signal(candles_so_far)`` returns, or ``None`` while fewer than
    ``strategy.min_bars`` candles have been seen. Subclasses implement :meth:`_step`.
    """

    def __init__(self, strategy: BaseStrategy, *, what: str, keep: int) -> None:
        self.strategy, self.what = strategy, what
        self.recent: deque[tuple] = deque(maxlen=max(int(keep), 1))
        # values of the last decision beyond the signal's metadata (MLStream: the class
        # probabilities), journaled by the live runtime; empty for a strategy without any
        self.details: dict[str, float] = {}

    def warm_up(self, history: pd.DataFrame) -> dict[str, Any] | None:
        """Take every candle of ``history`` (clean OHLCV) in order; the signal of the last one
        (the others only advance the state: nothing is decided on them)."""
        validate_ohlcv(history, what=self.what)
        columns = [history[c].to_numpy(dtype=np.float64) for c in _OHLCV]
        last = len(history) - 1
        for k, ts in enumerate(history.index[:last]):
            fields = (ts, *(float(col[k]) for col in columns))
            self._absorb(fields)
            self.recent.append(fields)
        return self._feed((history.index[last], *(float(col[last]) for col in columns)))

    def update(self, candle: Any) -> dict[str, Any] | None:
        return self._feed(candle_fields(candle))

    def _feed(self, fields: tuple) -> dict[str, Any] | None:
        out = self._step(fields)  # raises before anything is kept if the candle is bad
        self.recent.append(fields)
        return out

    def recent_frame(self) -> pd.DataFrame:
        """The candles held (``keep`` most recent), as clean OHLCV."""
        rows = list(self.recent)
        return pd.DataFrame(
            [r[1:] for r in rows],
            columns=list(_OHLCV),
            index=pd.DatetimeIndex([r[0] for r in rows], name="timestamp"),
        )

    def _step(self, fields: tuple) -> dict[str, Any] | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _absorb(self, fields: tuple) -> None:
        """Advance the state by one candle of history without deciding on it (by default a
        step whose signal is dropped; a strategy whose decision is costly overrides it)."""
        self._step(fields)


_OHLCV = ("open", "high", "low", "close", "volume")


def candle_fields(candle: Any) -> tuple:
    """``(timestamp, open, high, low, close, volume)`` of a candle object, mapping or row."""
    if isinstance(candle, pd.Series):
        ts = candle.get("timestamp", candle.name)
        return (ts, *(float(candle[c]) for c in _OHLCV))
    if isinstance(candle, dict):
        return (candle["timestamp"], *(float(candle[c]) for c in _OHLCV))
    return (
        candle.timestamp,
        float(candle.open),
        float(candle.high),
        float(candle.low),
        float(candle.close),
        float(candle.volume),
    )
