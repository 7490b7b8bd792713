"""Streaming features: one closed candle in, that bar's feature row out, in constant time.

:class:`FeatureStream` is the per-symbol state of the feature catalogue
(:mod:`trademl.features`): running EMAs and Wilder averages (RSI, ATR) keep their last value,
rolling windows read the last bars of a short buffer. Seeded from history
(:meth:`FeatureStream.warm_up`) and then fed one candle at a time (:meth:`FeatureStream.update`),
its row for a bar equals the row :func:`~trademl.features.build_feature_matrix` gives that bar
on all the candles seen so far (to 1e-9; a property test checks random data, configurations and
seed lengths). The work per candle is a compiled kernel (:mod:`trademl._streaming_nb`, a few
microseconds) that does not grow with the history.

It is what the strategies' :meth:`~trademl.strategies.base.BaseStrategy.stream` uses for live
decisions; ``generate_signal(window)`` recomputes the features on the whole window instead.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trademl._config import coerce_config
from trademl.data import MAX_VALUE, MIN_PRICE
from trademl.errors import DataError
from trademl.features import FEATURE_GROUPS, FeatureConfig, feature_names

__all__ = ["FeatureStream"]


class FeatureStream:
    """The feature state of one symbol.

    Parameters
    ----------
    config
        A :class:`~trademl.features.FeatureConfig`, a mapping of its fields, or ``None``.
    extra_atr_periods
        ATR periods to keep besides the features' (e.g. a strategy's stop distance ATR),
        readable with :meth:`atr`.
    what
        The symbol or source, for error messages.

    :meth:`update` returns ``None`` until ``config.min_rows`` candles have been seen, then the
    bar's row (float64, :attr:`names` order).
    """

    def __init__(
        self,
        config: FeatureConfig | dict | None = None,
        *,
        extra_atr_periods: tuple[int, ...] = (),
        what: str = "stream",
    ) -> None:
        from trademl._streaming_nb import N_SERIES

        cfg = coerce_config(config, FeatureConfig, name="features")
        self.config, self.what = cfg, what
        self.names = feature_names(cfg)
        self.warmup = cfg.warmup
        full_cfg = FeatureConfig(**{**cfg.to_dict(), "groups": FEATURE_GROUPS})
        full = feature_names(full_cfg)
        self._take = np.array([full.index(n) for n in self.names], dtype=np.int64)
        self._n_full = len(full)
        self._all_groups = self.names == full
        self._ema = np.asarray(cfg.ema_periods, dtype=np.int64)
        self._rsi = np.asarray(cfg.rsi_periods, dtype=np.int64)
        extra = tuple(int(p) for p in extra_atr_periods if int(p) not in cfg.atr_periods)
        if any(p < 2 for p in extra):
            raise ValueError(f"extra_atr_periods {extra_atr_periods} must be >= 2")
        self._atr = np.asarray(cfg.atr_periods + extra, dtype=np.int64)
        self._n_atr_features = len(cfg.atr_periods)
        self._ints = tuple(
            np.asarray(v, dtype=np.int64)
            for v in (
                cfg.return_lags,
                cfg.volatility_windows,
                cfg.volume_windows,
                cfg.corr_windows,
                cfg.momentum_windows,
            )
        )
        # state offsets: [ema, previous ema] per EMA period, a sign per EMA pair,
        # [gain, loss, rsi] per RSI period, one value per ATR period
        self._o_ema = 0
        self._o_cross = 2 * self._ema.size
        self._o_rsi = self._o_cross + max(self._ema.size - 1, 0)
        self._o_atr = self._o_rsi + 3 * self._rsi.size
        self._state = np.full(self._o_atr + self._atr.size, np.nan)
        # the kernel computes every group (the caller picks columns), so the buffer holds the
        # longest lookback of all of them, and of the extra ATRs, plus the bar before it
        keep = max(full_cfg.warmup, *(int(p) for p in self._atr)) + 2
        self._buf = np.full((N_SERIES, 2 * keep), np.nan)
        self._meta = np.zeros(2, dtype=np.int64)
        self._row = np.full(self._n_full, np.nan)
        self._last_ns: int | None = None
        self._positions: dict[tuple[str, int], int] = {}  # (kind, period): its index

    # -- feeding ------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Candles seen so far."""
        return int(self._meta[1])

    @property
    def ready(self) -> bool:
        """Whether the last candle gave a feature row (``count >= config.min_rows``)."""
        return self.count > self.warmup

    @property
    def last_timestamp(self) -> Any:
        """The last candle's timestamp (a ``pandas.Timestamp``), ``None`` before any."""
        import pandas as pd

        return None if self._last_ns is None else pd.Timestamp(self._last_ns, tz="UTC")

    def update(
        self,
        timestamp: Any,
        open: float,
        high: float,
        low: float,
        close: float,
        volume: float,
    ) -> np.ndarray | None:
        """Take one closed candle (after the last one); its feature row, or ``None`` while
        warming up. A candle the batch loader would refuse is a :class:`DataError` and leaves
        the state unchanged."""
        ns = _nanoseconds(timestamp, self.what)
        o, h, lo, c, v = float(open), float(high), float(low), float(close), float(volume)
        self._check(ns, timestamp, o, h, lo, c, v)
        from trademl._streaming_nb import update_nb

        update_nb(
            self._buf,
            self._meta,
            self._state,
            o,
            h,
            lo,
            c,
            v,
            self._ema,
            self._rsi,
            self._atr,
            self._n_atr_features,
            *self._ints,
            float(self.config.rsi_overbought),
            float(self.config.rsi_oversold),
            self._o_ema,
            self._o_cross,
            self._o_rsi,
            self._o_atr,
            self._row,
        )
        self._last_ns = ns
        if self._meta[1] <= self.warmup:
            return None
        return self._row.copy() if self._all_groups else self._row[self._take]

    def warm_up(self, history: Any) -> np.ndarray | None:
        """Feed every candle of ``history`` (clean OHLCV, a DataFrame) in order; returns the
        last bar's row (``None`` if still warming up)."""
        from trademl.data import validate_ohlcv

        validate_ohlcv(history, what=self.what)
        row = None
        index = history.index
        for k, (o, h, lo, c, v) in enumerate(
            zip(
                history["open"].to_numpy(dtype=np.float64),
                history["high"].to_numpy(dtype=np.float64),
                history["low"].to_numpy(dtype=np.float64),
                history["close"].to_numpy(dtype=np.float64),
                history["volume"].to_numpy(dtype=np.float64),
                strict=True,
            )
        ):
            row = self.update(index[k], o, h, lo, c, v)
        return row

    # -- indicator values ---------------------------------------------------------------------
    def ema(self, period: int) -> float:
        """The last EMA of ``period`` (one of ``config.ema_periods``); NaN before its seed."""
        return float(self._state[self._o_ema + 2 * self._index(self._ema, period, "ema")])

    def rsi(self, period: int) -> float:
        """The last RSI of ``period`` (one of ``config.rsi_periods``) in [0, 100]."""
        return float(self._state[self._o_rsi + 3 * self._index(self._rsi, period, "rsi") + 2])

    def atr(self, period: int) -> float:
        """The last ATR of ``period`` (a feature period or an ``extra_atr_periods`` one)."""
        return float(self._state[self._o_atr + self._index(self._atr, period, "atr")])

    def _index(self, periods: np.ndarray, period: int, kind: str) -> int:
        key = (kind, period)
        if key not in self._positions:
            hits = np.flatnonzero(periods == int(period))
            if hits.size == 0:
                raise KeyError(f"{kind} period {period} is not kept (kept: {periods.tolist()})")
            self._positions[key] = int(hits[0])
        return self._positions[key]

    def _check(self, ns: int, ts: Any, o: float, h: float, lo: float, c: float, v: float) -> None:
        # one comparison chain for the usual case (NaN fails it too), the details on failure
        if (
            (self._last_ns is None or ns > self._last_ns)
            and MIN_PRICE <= lo <= o <= h <= MAX_VALUE
            and lo <= c <= h
            and 0.0 <= v <= MAX_VALUE
        ):
            return
        where = f"{self.what}: candle {ts}"
        if self._last_ns is not None and ns <= self._last_ns:
            kind = "repeats" if ns == self._last_ns else "is before"
            raise DataError(
                f"{where} {kind} the last one ({self.last_timestamp}); "
                "candles must arrive in strictly increasing time"
            )
        for name, x in (("open", o), ("high", h), ("low", lo), ("close", c), ("volume", v)):
            if not math.isfinite(x) or x > MAX_VALUE:
                raise DataError(f"{where}: {name} is {x}; expected a finite value")
            if name != "volume" and x < MIN_PRICE:
                raise DataError(f"{where}: {name} is {x}; prices must be positive")
        if v < 0:
            raise DataError(f"{where}: negative volume {v}")
        if h < max(o, c) or lo > min(o, c):
            raise DataError(
                f"{where}: high {h} / low {lo} do not contain open {o} and close {c}; "
                "repair the candle (clean_ohlcv_data) before streaming it"
            )


def _nanoseconds(timestamp: Any, what: str) -> int:
    """Nanoseconds since the epoch (UTC) of a pandas/datetime timestamp or an integer."""
    value = getattr(timestamp, "value", None)  # pandas.Timestamp
    if isinstance(value, int) and value != _NAT:
        return value
    if isinstance(timestamp, int | np.integer) and timestamp != _NAT:
        return int(timestamp)
    import pandas as pd

    try:
        ns = pd.Timestamp(timestamp).value
    except (TypeError, ValueError):
        ns = _NAT
    if timestamp is None or ns == _NAT:
        raise DataError(f"{what}: candle timestamp {timestamp!r} is not a time")
    return int(ns)


_NAT = np.iinfo(np.int64).min  # NaT's integer value
