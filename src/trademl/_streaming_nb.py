"""Compiled kernel of :class:`trademl.streaming.FeatureStream` (numba, imported on first use).

One call takes one closed candle and writes that bar's feature row in the catalogue's order
for all seven groups (the caller picks the configured groups' columns). The work per candle
does not depend on how much history came before: the recursive indicators (EMA, Wilder's RSI
and ATR) keep their last value, and the rolling windows read the last bars of a buffer that
holds the longest lookback plus one and slides down when full.

Layout (see ``FeatureStream`` for how the arrays are made):

* ``buf[series, i]``: the last bars of :data:`N_SERIES` series, oldest first; ``meta[0]`` is
  the number of bars in the buffer, ``meta[1]`` the number of bars seen in total.
* ``state``: the recursions' values, NaN until seeded, at the offsets ``FeatureStream``
  computes: per EMA period ``[ema, previous ema]``, per EMA pair the previous sign of their
  difference, per RSI period ``[average gain, average loss, rsi]``, per ATR period (the
  features' and extra ones) ``[atr]``.

The formulas are those of :mod:`trademl.features` and :mod:`trademl.indicators`: each
recursion is seeded with the same function as the batch version
(:func:`trademl._indicators_nb.seed_mean_nb`) at the same bar and then follows
``y = decay * y[t-1] + alpha * x[t]`` with the same operations, so EMA, RSI and ATR values are
the batch ones to the last bit; rolling windows use the batch version's
window functions (:mod:`trademl._indicators_nb`) on the buffer.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from trademl._indicators_nb import (
    seed_mean_nb,
    window_corr,
    window_mean,
    window_std,
    window_sum,
)

__all__ = ["N_SERIES", "update_nb"]

OPEN, HIGH, LOW, CLOSE, VOLUME, RET1, LHL2, STEP = range(8)
N_SERIES = 8


@njit(cache=True)
def _push(buf, meta, o, h, l, c, v):  # noqa: E741 - OHLC names
    n, cap = meta[0], buf.shape[1]
    if n == cap:  # slide the newest half down; the older half is past every lookback
        keep = cap // 2
        for s in range(N_SERIES):
            for i in range(keep):
                buf[s, i] = buf[s, cap - keep + i]
        n = keep
    buf[OPEN, n], buf[HIGH, n], buf[LOW, n], buf[CLOSE, n], buf[VOLUME, n] = o, h, l, c, v
    if meta[1] > 0:
        prev = buf[CLOSE, n - 1]
        buf[RET1, n] = c / prev - 1.0
        buf[STEP, n] = abs(c - prev)
    else:
        buf[RET1, n] = np.nan
        buf[STEP, n] = np.nan
    buf[LHL2, n] = math.log(h / l) ** 2
    meta[0] = n + 1
    meta[1] += 1
    return n


@njit(cache=True)
def _safe_div(num, den, fill):
    return fill if den == 0.0 else num / den


@njit(cache=True)
def _true_range(buf, i):
    h, lo, pc = buf[HIGH, i], buf[LOW, i], buf[CLOSE, i - 1]
    return max(h - lo, max(abs(h - pc), abs(lo - pc)))


@njit(cache=True)
def _recursions(buf, i, t, state, ema_p, rsi_p, atr_all, o_ema, o_rsi, o_atr):
    """Advance every EMA, RSI and ATR by bar ``t`` (buffer index ``i``)."""
    c = buf[CLOSE, i]
    for k in range(ema_p.size):
        p = ema_p[k]
        j = o_ema + 2 * k
        state[j + 1] = state[j]
        if t == p - 1:
            state[j] = seed_mean_nb(buf[CLOSE, i - p + 1 : i + 1])
        elif t >= p:
            alpha = 2.0 / (p + 1)
            state[j] = (1.0 - alpha) * state[j] + alpha * c
    for k in range(rsi_p.size):
        p = rsi_p[k]
        j = o_rsi + 3 * k
        if t == p:
            gains, losses = np.empty(p), np.empty(p)
            for m in range(p):
                ch = buf[CLOSE, i - p + 1 + m] - buf[CLOSE, i - p + m]
                gains[m], losses[m] = max(ch, 0.0), max(-ch, 0.0)
            state[j], state[j + 1] = seed_mean_nb(gains), seed_mean_nb(losses)
        elif t > p:
            alpha = 1.0 / p
            ch = c - buf[CLOSE, i - 1]
            state[j] = (1.0 - alpha) * state[j] + alpha * max(ch, 0.0)
            state[j + 1] = (1.0 - alpha) * state[j + 1] + alpha * max(-ch, 0.0)
        if t >= p:
            total = state[j] + state[j + 1]
            state[j + 2] = 100.0 * state[j] / total if total > 0 else 50.0
    for k in range(atr_all.size):
        p = atr_all[k]
        j = o_atr + k
        if t == p:
            ranges = np.empty(p)
            for m in range(p):
                ranges[m] = _true_range(buf, i - p + 1 + m)
            state[j] = seed_mean_nb(ranges)
        elif t > p:
            alpha = 1.0 / p
            state[j] = (1.0 - alpha) * state[j] + alpha * _true_range(buf, i)


@njit(cache=True)
def update_nb(
    buf,
    meta,
    state,
    o,
    h,
    l,  # noqa: E741 - OHLC names
    c,
    v,
    ema_p,
    rsi_p,
    atr_all,
    n_atr_features,
    lags,
    vol_w,
    volm_w,
    corr_w,
    mom_w,
    rsi_hi,
    rsi_lo,
    o_ema,
    o_cross,
    o_rsi,
    o_atr,
    out,
):
    """Take one candle; write its full feature row to ``out`` (valid once ``meta[1]`` bars
    exceed the warm-up, which the caller checks)."""
    i = _push(buf, meta, o, h, l, c, v)
    t = meta[1] - 1
    _recursions(buf, i, t, state, ema_p, rsi_p, atr_all, o_ema, o_rsi, o_atr)
    out[:] = np.nan  # what the bar's history cannot give yet stays NaN
    n_pairs = ema_p.size - 1
    close = buf[CLOSE]
    col = 0
    # price
    rng = h - l
    out[col] = o / c - 1.0
    out[col + 1] = h / c - 1.0
    out[col + 2] = l / c - 1.0
    out[col + 3] = rng / c
    out[col + 4] = _safe_div(c - o, rng, 0.0)
    out[col + 5] = _safe_div(h - max(o, c), rng, 0.0)
    out[col + 6] = _safe_div(min(o, c) - l, rng, 0.0)
    col += 7
    # returns
    for k in range(lags.size):
        if t >= lags[k]:
            out[col] = c / close[i - lags[k]] - 1.0
        col += 1
    if t >= 1:
        out[col] = math.log(c / close[i - 1])
    col += 1
    for k in range(vol_w.size):
        if t >= vol_w[k]:
            out[col] = window_std(buf[RET1], i, vol_w[k])
        col += 1
    # ema
    for k in range(ema_p.size):
        out[col] = c / state[o_ema + 2 * k] - 1.0
        col += 1
    for k in range(ema_p.size):
        out[col] = state[o_ema + 2 * k] / state[o_ema + 2 * k + 1] - 1.0
        col += 1
    for k in range(n_pairs):
        out[col] = state[o_ema + 2 * k] / state[o_ema + 2 * (k + 1)] - 1.0
        col += 1
    for k in range(n_pairs):
        diff = state[o_ema + 2 * k] - state[o_ema + 2 * (k + 1)]
        side = np.nan if math.isnan(diff) else (1.0 if diff > 0 else (-1.0 if diff < 0 else 0.0))
        out[col] = (side - state[o_cross + k]) / 2.0
        state[o_cross + k] = side
        col += 1
    # rsi
    for k in range(rsi_p.size):
        r = state[o_rsi + 3 * k + 2]
        out[col] = (r - 50.0) / 50.0
        out[col + 1] = np.nan if math.isnan(r) else (1.0 if r > rsi_hi else 0.0)
        out[col + 2] = np.nan if math.isnan(r) else (1.0 if r < rsi_lo else 0.0)
        col += 3
    # volume
    vol = buf[VOLUME]
    for k in range(volm_w.size):
        if t >= volm_w[k] - 1:
            out[col] = _safe_div(v, window_mean(vol, i, volm_w[k]), 1.0)
        col += 1
    z = volm_w[volm_w.size - 1]
    if t >= z - 1:
        out[col] = _safe_div(v - window_mean(vol, i, z), window_std(vol, i, z), 0.0)
    col += 1
    if volm_w.size > 1:
        s = volm_w[0]
        if t >= z - 1:
            out[col] = _safe_div(window_mean(vol, i, s), window_mean(vol, i, z), 1.0) - 1.0
        col += 1
    for k in range(corr_w.size):
        if t >= corr_w[k]:
            out[col] = window_corr(buf[RET1], vol, i, corr_w[k])
        col += 1
    # volatility
    for k in range(n_atr_features):
        out[col] = state[o_atr + k] / c
        col += 1
    for k in range(vol_w.size):
        w = vol_w[k]
        if t >= w - 1:
            out[col] = math.sqrt(window_mean(buf[LHL2], i, w) / (4.0 * math.log(2.0)))
        col += 1
    # momentum
    for k in range(mom_w.size):
        if t >= mom_w[k]:
            out[col] = c / close[i - mom_w[k]] - 1.0
        col += 1
    for k in range(mom_w.size):
        w = mom_w[k]
        if t >= w:
            out[col] = _safe_div(c - close[i - w], window_sum(buf[STEP], i, w), 0.0)
        col += 1
    for k in range(mom_w.size):
        w = mom_w[k]
        if t >= 2 * w:
            out[col] = (c / close[i - w] - 1.0) - (close[i - w] / close[i - 2 * w] - 1.0)
        col += 1
    return col
