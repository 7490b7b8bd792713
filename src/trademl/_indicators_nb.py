"""Compiled kernel of the recursive indicators (numba, imported on first use).

Kept out of :mod:`trademl.indicators` so that ``import trademl`` loads neither numba
nor scipy: :func:`trademl.indicators._recursive_mean` imports this module when it
first computes an EMA or a Wilder average.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["first_order_recursion_nb"]


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
