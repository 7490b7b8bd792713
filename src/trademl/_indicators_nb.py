"""Compiled kernels of the indicators (numba, imported on first use): the recursion of the
EMA and Wilder averages, their seed, and the trailing-window statistics.

The window functions (``window_mean`` ...) compute one window ``x[end-w+1 .. end]`` from its
values; the batch rolling functions of :mod:`trademl.indicators` apply them at every bar and
the streaming features (:mod:`trademl._streaming_nb`) at the newest one, so both give the same
floats. A window containing NaN gives NaN.

Kept out of :mod:`trademl.indicators` so that ``import trademl`` loads neither numba
nor scipy: :func:`trademl.indicators._recursive_mean` imports this module when it
first computes an EMA or a Wilder average.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "first_order_recursion_nb",
    "rolling_nb",
    "seed_mean_nb",
    "window_corr",
    "window_mean",
    "window_std",
    "window_sum",
]

# A window whose values span less than this fraction of their magnitude is flat: what is left
# is rounding (the returns of a geometric price path differ in their last bits), and a
# deviation or correlation computed from it would be noise, so it counts as constant.
FLAT_RTOL = 1e-12


@njit(cache=True)
def first_order_recursion_nb(x: np.ndarray, alpha: float, decay: float, z: float) -> np.ndarray:
    """``y[t] = alpha x[t] + decay y[t-1]`` with ``decay y[-1] = z``, in lfilter's order.

    The operations are those of ``scipy.signal.lfilter([alpha], [1, -decay], x, zi=[z])``
    (direct form II transposed: ``y = z + b0 x``, then ``z = b1 x - a1 y`` with
    ``b1 = 0``), so the output equals it exactly: the same floats, NaN where it
    gives NaN and infinities where it gives them (only a NaN's sign bit may differ).
    """
    out = np.empty(x.size)
    a1 = -decay
    for t in range(x.size):
        xt = x[t]
        y = z + alpha * xt
        out[t] = y
        z = 0.0 * xt - a1 * y
    return out


@njit(cache=True)
def seed_mean_nb(x: np.ndarray) -> float:
    """The seed of a recursion: the mean of ``x`` summed left to right (as TA-Lib's SMA does),
    and exactly the value when all of ``x`` are equal, so that flat prices give EMAs equal to
    the price rather than a last-bit difference whose sign would read as a crossing. The
    streaming features (:mod:`trademl._streaming_nb`) seed with this same function."""
    first = x[0]
    total = 0.0
    same = True
    for v in x:
        total += v
        same = same and v == first
    return first if same else total / x.size


@njit(cache=True)
def _scan(x: np.ndarray, end: int, w: int) -> tuple[bool, bool]:
    """(has NaN, flat) of the window ``x[end-w+1 .. end]``."""
    lo = hi = x[end - w + 1]
    for i in range(end - w + 1, end + 1):
        v = x[i]
        if np.isnan(v):
            return True, False
        lo, hi = min(lo, v), max(hi, v)
    return False, hi - lo <= FLAT_RTOL * max(abs(hi), abs(lo))


@njit(cache=True)
def window_sum(x: np.ndarray, end: int, w: int) -> float:
    total = 0.0
    for i in range(end - w + 1, end + 1):
        total += x[i]
    return total


@njit(cache=True)
def window_mean(x: np.ndarray, end: int, w: int) -> float:
    """The mean, exactly the value when all values are equal (as pandas gives it)."""
    first = x[end - w + 1]
    same = True
    total = 0.0
    for i in range(end - w + 1, end + 1):
        total += x[i]
        same = same and x[i] == first
    return first if same else total / w


@njit(cache=True)
def window_std(x: np.ndarray, end: int, w: int) -> float:
    """Sample standard deviation (ddof 1, two passes); 0 for a flat window."""
    has_nan, flat = _scan(x, end, w)
    if has_nan:
        return np.nan
    if flat:
        return 0.0
    m = window_mean(x, end, w)
    ss = 0.0
    for i in range(end - w + 1, end + 1):
        d = x[i] - m
        ss += d * d
    return np.sqrt(ss / (w - 1))


@njit(cache=True)
def window_corr(x: np.ndarray, y: np.ndarray, end: int, w: int) -> float:
    """Pearson correlation clipped to [-1, 1]; 0 when either window is flat."""
    nan_x, flat_x = _scan(x, end, w)
    nan_y, flat_y = _scan(y, end, w)
    if nan_x or nan_y:
        return np.nan
    if flat_x or flat_y:
        return 0.0
    mx, my = window_mean(x, end, w), window_mean(y, end, w)
    sxy = sxx = syy = 0.0
    for i in range(end - w + 1, end + 1):
        dx, dy = x[i] - mx, y[i] - my
        sxy += dx * dy
        sxx += dx * dx
        syy += dy * dy
    if sxx == 0.0 or syy == 0.0:
        return 0.0
    return min(1.0, max(-1.0, sxy / np.sqrt(sxx * syy)))


@njit(cache=True)
def rolling_nb(kind: int, x: np.ndarray, y: np.ndarray, w: int) -> np.ndarray:
    """A window statistic at every bar (NaN until the window is full): ``kind`` 0 sum,
    1 mean, 2 standard deviation, 3 correlation of ``x`` and ``y``."""
    n = x.size
    out = np.full(n, np.nan)
    for end in range(w - 1, n):
        if kind == 0:
            out[end] = window_sum(x, end, w)
        elif kind == 1:
            out[end] = window_mean(x, end, w)
        elif kind == 2:
            out[end] = window_std(x, end, w)
        else:
            out[end] = window_corr(x, y, end, w)
    return out
