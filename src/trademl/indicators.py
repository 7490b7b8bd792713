"""Causal indicator primitives on numpy arrays.

Every function here is causal: the value at index ``t`` depends on inputs up to
``t`` only, and values before the indicator's lookback are NaN. The recursive
ones (EMA, Wilder smoothing, RSI, ATR) follow TA-Lib's definitions exactly:

* EMA: ``y[t] = a * x[t] + (1 - a) * y[t-1]`` with ``a = 2 / (period + 1)``
  (pandas ``ewm(adjust=False)`` recursion), seeded with the simple mean of the
  first ``period`` values (summed in order, exactly the value when they are all
  equal), so the first value is at index ``period - 1``.
* Wilder smoothing: the same recursion with ``a = 1 / period``.
* RSI: Wilder averages of gains and losses seeded with the mean of the first
  ``period`` changes; first value at index ``period``. A window with neither
  gains nor losses gives 50 (TA-Lib gives 0).
* ATR: Wilder average of the true range from index 1, seeded with the mean of
  the first ``period`` true ranges; first value at index ``period``.

Each recursion keeps one number of state, so a streaming implementation can
reproduce the batch values exactly. The rolling windows are computed from each
window's values (two passes for deviations) by the same compiled functions the
streaming features use; a window whose values span less than 1e-12 of their
magnitude is flat (standard deviation 0, correlation 0). The recursion runs in a numba kernel
(:mod:`trademl._indicators_nb`, loaded on the first EMA) whose floating-point
operations are those of ``scipy.signal.lfilter``, used before: the values are the
same, and ``import trademl`` loads neither scipy nor numba.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "atr",
    "ema",
    "rolling_corr",
    "rolling_mean",
    "rolling_std",
    "rolling_sum",
    "rsi",
    "safe_div",
    "shift",
    "true_range",
    "wilder",
]


def _recursive_mean(x: np.ndarray, period: int, alpha: float, start: int) -> np.ndarray:
    """``y[t] = alpha x[t] + (1-alpha) y[t-1]`` seeded with mean(x[start:start+period])."""
    n = x.size
    out = np.full(n, np.nan)
    first = start + period - 1
    if first >= n:
        return out
    from trademl._indicators_nb import first_order_recursion_nb, seed_mean_nb

    seed = seed_mean_nb(np.ascontiguousarray(x[start : start + period]))
    out[first] = seed
    if first + 1 < n:
        decay = 1.0 - alpha
        out[first + 1 :] = first_order_recursion_nb(
            np.ascontiguousarray(x[first + 1 :]), alpha, decay, decay * seed
        )
    return out


def ema(x: np.ndarray, period: int) -> np.ndarray:
    """Exponential moving average (TA-Lib ``EMA``); first value at ``period - 1``."""
    return _recursive_mean(np.asarray(x, dtype=np.float64), period, 2.0 / (period + 1), 0)


def wilder(x: np.ndarray, period: int, start: int = 0) -> np.ndarray:
    """Wilder smoothing (``alpha = 1/period``) of ``x[start:]``, seeded with an SMA."""
    return _recursive_mean(np.asarray(x, dtype=np.float64), period, 1.0 / period, start)


def rsi(close: np.ndarray, period: int) -> np.ndarray:
    """Relative strength index in [0, 100] (TA-Lib ``RSI``); first value at ``period``."""
    close = np.asarray(close, dtype=np.float64)
    change = np.empty_like(close)
    change[0] = 0.0
    np.subtract(close[1:], close[:-1], out=change[1:])
    gain = wilder(np.maximum(change, 0.0), period, start=1)
    loss = wilder(np.maximum(-change, 0.0), period, start=1)
    total = gain + loss
    out = np.full_like(close, np.nan)
    valid = ~np.isnan(total)
    np.divide(100.0 * gain, total, out=out, where=valid & (total > 0))
    out[valid & (total <= 0)] = 50.0
    return out


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """True range; index 0 is NaN (no previous close), as in TA-Lib ``TRANGE``."""
    high, low, close = (np.asarray(a, dtype=np.float64) for a in (high, low, close))
    tr = np.empty_like(close)
    tr[0] = np.nan
    prev = close[:-1]
    tr[1:] = np.maximum(
        high[1:] - low[1:], np.maximum(np.abs(high[1:] - prev), np.abs(low[1:] - prev))
    )
    return tr


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """Average true range (TA-Lib ``ATR``); first value at index ``period``."""
    return wilder(true_range(high, low, close), period, start=1)


def shift(x: np.ndarray, k: int) -> np.ndarray:
    """``x`` delayed by ``k >= 0`` bars (NaN-filled at the start)."""
    out = np.full_like(x, np.nan, dtype=np.float64)
    if k < x.size:
        out[k:] = x[: x.size - k]
    return out


def _rolling(kind: int, x: np.ndarray, window: int, y: np.ndarray | None = None) -> np.ndarray:
    from trademl._indicators_nb import rolling_nb

    x = np.ascontiguousarray(x, dtype=np.float64)
    y = x if y is None else np.ascontiguousarray(y, dtype=np.float64)
    return rolling_nb(kind, x, y, int(window))


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` values (NaN until the window is full)."""
    return _rolling(1, x, window)


def rolling_sum(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing sum over ``window`` values (NaN until the window is full)."""
    return _rolling(0, x, window)


def rolling_std(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing sample standard deviation (ddof=1) over ``window`` values; 0 on a flat window
    (its values span less than 1e-12 of their magnitude: rounding, not variation)."""
    return _rolling(2, x, window)


def rolling_corr(x: np.ndarray, y: np.ndarray, window: int) -> np.ndarray:
    """Trailing Pearson correlation in [-1, 1]; 0 where either side is flat in the window."""
    return _rolling(3, x, window, y)


def safe_div(num: np.ndarray, den: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """``num / den`` with ``fill`` where ``den == 0`` and ``num`` is a number (NaN stays NaN)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.true_divide(num, den)
    zero = den == 0
    if zero.any():
        out[zero & ~np.isnan(num)] = fill
    return out
