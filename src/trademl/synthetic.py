"""Synthetic OHLCV candles with realistic structure and an optional planted edge.

The generator is a three-regime Markov chain (calm, trending, turbulent) on top
of GARCH(1, 1) volatility clustering. In the trending regime, returns follow an
AR(1) process with coefficient ``momentum``: a weak, short-horizon effect that
a model can learn from past returns only. With ``momentum=0`` the sign of the
next return is unpredictable, so any model that beats chance on it is leaking.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from trademl._config import check_positive_int
from trademl.errors import ConfigError

__all__ = ["generate_ohlcv"]

# calm, trending, turbulent
_REGIME_VOL = np.array([0.6, 1.0, 1.9])
_REGIME_VOLUME = np.array([0.7, 1.0, 1.8])


def generate_ohlcv(
    n: int = 2000,
    seed: int = 0,
    freq: str = "1h",
    *,
    start: str = "2024-01-01",
    start_price: float = 50_000.0,
    volatility: float = 0.006,
    momentum: float = 0.0,
    garch: bool = True,
    regimes: bool = True,
    regime_persistence: float = 0.985,
    base_volume: float = 100.0,
    return_regime: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, np.ndarray]:
    """Generate ``n`` candles, deterministic for a given ``seed``.

    Parameters
    ----------
    n, seed, freq
        Number of candles, random seed, bar interval (pandas alias: ``1h``, ``5min``).
    start, start_price
        First timestamp (UTC) and first open.
    volatility
        Long-run standard deviation of one bar's log return.
    momentum
        AR(1) coefficient of returns in the trending regime (0 = no effect;
        0.2-0.4 = weak but learnable). Must be in [0, 0.9].
    garch
        GARCH(1, 1) volatility clustering (alpha 0.08, beta 0.90).
    regimes
        Markov regime switching; with ``False`` every bar is "trending", so
        ``momentum`` applies throughout.
    regime_persistence
        Probability of staying in the current regime from one bar to the next.
    base_volume
        Median volume of a calm bar.
    return_regime
        Also return the regime of each bar (0 calm, 1 trending, 2 turbulent).

    Returns
    -------
    pandas.DataFrame
        ``open, high, low, close, volume`` (float64) on a UTC ``DatetimeIndex``
        (and the regime array when ``return_regime``).
    """
    check_positive_int("n", n, minimum=2)
    if not 0.0 <= momentum <= 0.9:
        raise ConfigError(f"momentum={momentum!r} must be in [0, 0.9]")
    if not 0.0 < volatility < 0.5:
        raise ConfigError(f"volatility={volatility!r} must be in (0, 0.5)")
    if not 0.0 < regime_persistence < 1.0:
        raise ConfigError(f"regime_persistence={regime_persistence!r} must be in (0, 1)")
    rng = np.random.default_rng(seed)
    try:
        index = pd.date_range(
            start=start, periods=n, freq=_pandas_freq(freq), tz="UTC", name="timestamp", unit="ns"
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"bad start={start!r} or freq={freq!r}: {exc}") from exc

    regime = _regimes(n, rng, regime_persistence) if regimes else np.ones(n, dtype=np.int64)
    z = rng.standard_normal(n)
    log_ret = _returns(z, regime, volatility, momentum, garch)

    close = start_price * np.exp(np.cumsum(log_ret))
    prev_close = np.concatenate(([start_price], close[:-1]))
    sigma = volatility * _REGIME_VOL[regime]
    gap = 0.05 * sigma * rng.standard_normal(n)
    open_ = prev_close * np.exp(gap)
    wick_hi = np.abs(rng.standard_normal(n)) * 0.5 * sigma
    wick_lo = np.abs(rng.standard_normal(n)) * 0.5 * sigma
    high = np.maximum(open_, close) * np.exp(wick_hi)
    low = np.minimum(open_, close) * np.exp(-wick_lo)
    activity = 1.0 + 1.5 * np.abs(log_ret) / sigma
    volume = base_volume * _REGIME_VOLUME[regime] * activity * np.exp(0.35 * rng.standard_normal(n))

    df = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )
    df.attrs["source"] = f"synthetic(n={n}, seed={seed}, momentum={momentum})"
    return (df, regime) if return_regime else df


def _pandas_freq(freq: str) -> str:
    text = str(freq).strip()
    if text.endswith("m") and text[:-1].isdigit():
        return text[:-1] + "min"
    return text


def _regimes(n: int, rng: np.random.Generator, stay: float) -> np.ndarray:
    """A 3-state Markov chain as run lengths: geometric durations, uniform next state."""
    out = np.empty(n, dtype=np.int64)
    pos, state = 0, int(rng.integers(3))
    while pos < n:
        length = int(rng.geometric(1.0 - stay))
        out[pos : pos + length] = state
        pos += length
        state = int((state + rng.integers(1, 3)) % 3)
    return out


def _returns(
    z: np.ndarray, regime: np.ndarray, vol: float, momentum: float, garch: bool
) -> np.ndarray:
    """GARCH(1, 1) shocks scaled per regime, AR(1) in the trending regime."""
    n = z.size
    alpha, beta = (0.08, 0.90) if garch else (0.0, 0.0)
    omega = vol * vol * (1.0 - alpha - beta)
    mult = _REGIME_VOL[regime].tolist()
    phi = np.where(regime == 1, momentum, 0.0).tolist()
    zl = z.tolist()
    out = [0.0] * n
    h = vol * vol
    prev_shock_sq = h
    prev_r = 0.0
    sqrt = math.sqrt
    for t in range(n):
        h = omega + alpha * prev_shock_sq + beta * h
        s = sqrt(h)
        shock = s * zl[t]
        prev_shock_sq = shock * shock
        r = phi[t] * prev_r + mult[t] * shock
        out[t] = r
        prev_r = r
    return np.asarray(out)
