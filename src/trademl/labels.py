"""Supervised labels: SHORT / FLAT / LONG, from the future of each bar.

Two labellers, chosen by :attr:`LabelConfig.method`:

``forward_return``
    ``r = close[t+h] / close[t] - 1``; LONG if ``r > thr``, SHORT if ``r < -thr``,
    FLAT otherwise. ``thr`` is ``threshold`` (a fraction) when
    ``threshold_type="fixed"``, or ``threshold * ATR[t] / close[t] * sqrt(h)``
    when ``threshold_type="atr"`` (volatility-scaled, so that the class balance
    does not drift with the market's volatility).

``triple_barrier``
    The trade the strategy takes, filled as the backtester fills it: decided at
    ``close[t]``, entry at ``open[t+1]``, stop ``sl_atr_mult * ATR[t]`` and target
    ``tp_atr_mult * ATR[t]`` away from ``close[t]`` (the levels a strategy sets). Over
    bars ``t+1 .. t+h``: LONG if the long trade's first exit is its target, SHORT for
    the mirror trade, FLAT if neither (the backtester's time exit at ``close[t+h]``
    with ``max_holding_bars=h``). An open beyond a barrier exits there; a bar touching
    both counts as stopped (the backtester's rules, tested trade by trade).

Both look at bars ``t+1 .. t+h`` only, so a chronological split must leave a
purge gap of at least ``h`` rows (:attr:`LabelConfig.horizon`). Rows whose future
is not fully known (the last ``h``) and rows without an ATR are dropped and
counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from trademl import indicators as ind
from trademl._config import check_choice, check_positive_int, coerce_config
from trademl.data import validate_ohlcv
from trademl.errors import ConfigError, InsufficientDataError

__all__ = [
    "INT_TO_LABEL",
    "LABELS",
    "LABEL_TO_INT",
    "LabelConfig",
    "LabelResult",
    "align_data_for_training",
]

LABELS: tuple[str, ...] = ("SHORT", "FLAT", "LONG")
LABEL_TO_INT: dict[str, int] = {"SHORT": 0, "FLAT": 1, "LONG": 2}
INT_TO_LABEL: dict[int, str] = {v: k for k, v in LABEL_TO_INT.items()}


@dataclass(frozen=True)
class LabelConfig:
    """How labels are made. See the module docstring for the formulas."""

    method: str = "forward_return"
    horizon: int = 1
    threshold_type: str = "atr"
    threshold: float = 0.3
    atr_period: int = 14
    sl_atr_mult: float = 1.5
    tp_atr_mult: float = 3.0

    def __post_init__(self) -> None:
        check_choice("labels.method", self.method, ("forward_return", "triple_barrier"))
        check_choice("labels.threshold_type", self.threshold_type, ("fixed", "atr"))
        check_positive_int("labels.horizon", self.horizon)
        check_positive_int("labels.atr_period", self.atr_period, minimum=2)
        for name in ("threshold", "sl_atr_mult", "tp_atr_mult"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"labels.{name}={value!r} must be a number >= 0")
        if self.method == "triple_barrier" and (self.sl_atr_mult <= 0 or self.tp_atr_mult <= 0):
            raise ConfigError(
                "labels.sl_atr_mult and labels.tp_atr_mult must be > 0 for the "
                "triple-barrier labeller"
            )

    @property
    def uses_atr(self) -> bool:
        return self.method == "triple_barrier" or self.threshold_type == "atr"


@dataclass
class LabelResult:
    """Labels and what was dropped to make them.

    Attributes
    ----------
    y
        Integer labels (see :data:`LABEL_TO_INT`) on the labelled rows' index.
    forward_return
        ``close[t+h] / close[t] - 1`` on the same index (for IC metrics).
    rows_dropped
        ``{"no_future": h, "no_atr": ...}``: rows that could not be labelled.
    """

    y: pd.Series
    forward_return: pd.Series
    config: LabelConfig
    rows_dropped: dict[str, int] = field(default_factory=dict)

    @property
    def mapping(self) -> dict[str, int]:
        return dict(LABEL_TO_INT)

    @property
    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.y.to_numpy(), minlength=len(LABELS))
        return {name: int(counts[code]) for name, code in LABEL_TO_INT.items()}

    @property
    def class_balance(self) -> dict[str, float]:
        total = max(len(self.y), 1)
        return {k: v / total for k, v in self.class_counts.items()}

    def report(self) -> dict[str, object]:
        return {
            "method": self.config.method,
            "horizon": self.config.horizon,
            "rows_labelled": len(self.y),
            "rows_dropped": dict(self.rows_dropped),
            "class_counts": self.class_counts,
            "class_balance": {k: round(v, 4) for k, v in self.class_balance.items()},
            "mapping": self.mapping,
        }


def align_data_for_training(
    df: pd.DataFrame,
    horizon: int | None = None,
    threshold: float | None = None,
    *,
    config: LabelConfig | dict | None = None,
) -> LabelResult:
    """Label every bar whose future is known.

    Parameters
    ----------
    df
        Clean OHLCV candles.
    horizon, threshold
        Shortcuts overriding ``config.horizon`` and ``config.threshold``.
    config
        A :class:`LabelConfig` or mapping (defaults: forward return over 1 bar,
        threshold 0.3 x ATR14/close).
    """
    cfg = coerce_config(config, LabelConfig, name="labels")
    overrides = {k: v for k, v in (("horizon", horizon), ("threshold", threshold)) if v is not None}
    if overrides:
        cfg = LabelConfig(**{**cfg.__dict__, **overrides})
    what = df.attrs.get("source", "data") if isinstance(df, pd.DataFrame) else "data"
    validate_ohlcv(df, what=what)
    h = cfg.horizon
    needed = h + 1 + (cfg.atr_period if cfg.uses_atr else 0)
    if len(df) < needed:
        raise InsufficientDataError(
            f"{what}: {len(df)} rows, but labels with horizon {h} need at least {needed}",
            needed=needed,
            got=len(df),
        )
    close = df["close"].to_numpy(dtype=np.float64)
    n = close.size
    fwd = np.full(n, np.nan)
    fwd[: n - h] = close[h:] / close[: n - h] - 1.0
    atr = (
        ind.atr(df["high"].to_numpy(), df["low"].to_numpy(), close, cfg.atr_period)
        if cfg.uses_atr
        else None
    )

    if cfg.method == "forward_return":
        thr = (
            np.full(n, float(cfg.threshold))
            if cfg.threshold_type == "fixed"
            else cfg.threshold * atr / close * np.sqrt(h)
        )
        codes = np.full(n, LABEL_TO_INT["FLAT"], dtype=np.int64)
        with np.errstate(invalid="ignore"):
            codes[fwd > thr] = LABEL_TO_INT["LONG"]
            codes[fwd < -thr] = LABEL_TO_INT["SHORT"]
    else:
        codes = _triple_barrier(df, atr, cfg)

    valid = np.ones(n, dtype=bool)
    valid[n - h :] = False
    no_atr = 0
    if atr is not None:
        missing_atr = np.isnan(atr) & valid
        no_atr = int(missing_atr.sum())
        valid &= ~missing_atr
    index = df.index[valid]
    return LabelResult(
        y=pd.Series(codes[valid], index=index, name="label"),
        forward_return=pd.Series(fwd[valid], index=index, name="forward_return"),
        config=cfg,
        rows_dropped={"no_future": h, "no_atr": no_atr},
    )


def _triple_barrier(df: pd.DataFrame, atr: np.ndarray, cfg: LabelConfig) -> np.ndarray:
    """First-exit labels of the trade the strategy takes, exactly as the backtester fills it.

    Decided at bar ``t``'s close: entry at the next open, stop and target at
    ``close[t] -/+ sl_atr_mult x ATR[t]`` and ``close[t] +/- tp_atr_mult x ATR[t]`` (the levels
    a strategy sets), looking at bars ``t+1 .. t+horizon``. Within a bar, the rules of
    :func:`trademl.fills.exit_in_bar`: an open beyond the stop, then an open beyond the target,
    then the stop, then the target (a bar touching both counts as stopped). LONG when the long
    trade's first exit is its target, SHORT for the short trade, FLAT otherwise.
    """
    close = df["close"].to_numpy(dtype=np.float64)
    tp, sl = cfg.tp_atr_mult * atr, cfg.sl_atr_mult * atr
    long_when, long_won = _first_exit(df, +1, close - sl, close + tp, cfg.horizon)
    short_when, short_won = _first_exit(df, -1, close + sl, close - tp, cfg.horizon)
    codes = np.full(close.size, LABEL_TO_INT["FLAT"], dtype=np.int64)
    both = long_won & short_won  # only possible when tp < sl: the earlier target wins
    codes[long_won & ~both] = LABEL_TO_INT["LONG"]
    codes[short_won & ~both] = LABEL_TO_INT["SHORT"]
    codes[both & (long_when < short_when)] = LABEL_TO_INT["LONG"]
    codes[both & (short_when < long_when)] = LABEL_TO_INT["SHORT"]
    return codes


def _first_exit(
    df: pd.DataFrame, side: int, stop: np.ndarray, target: np.ndarray, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(step of the first exit, exited at the target)`` per bar, vectorised over bars."""
    cols = [df[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low")]
    n = cols[0].size
    when = np.full(n, horizon + 1, dtype=np.int64)
    won = np.zeros(n, dtype=bool)
    with np.errstate(invalid="ignore"):
        for step in range(1, horizon + 1):
            o, hi, lo = (np.full(n, np.nan) for _ in range(3))
            o[: n - step], hi[: n - step], lo[: n - step] = (c[step:] for c in cols)
            if side > 0:
                stop_open, target_open = o <= stop, o >= target
                stop_in, target_in = lo <= stop, hi >= target
            else:
                stop_open, target_open = o >= stop, o <= target
                stop_in, target_in = hi >= stop, lo <= target
            stopped = stop_open | (~target_open & stop_in)
            hit = ~stop_open & (target_open | (~stop_in & target_in))
            now = (when > horizon) & (stopped | hit)
            when[now] = step
            won[now & hit] = True
    return when, won
