"""How much a Sharpe ratio or a total return can be trusted: block bootstrap, PSR, DSR.

* :func:`bootstrap_ci`: a percentile confidence interval of any statistic of a return series
  by the **circular block bootstrap** (Politis & Romano, 1992): each resample glues together
  blocks of ``block`` consecutive returns that start at uniformly drawn bars, wrapping round
  the end of the series, so that every bar is drawn equally often and the autocorrelation
  within a block is kept. The default block is ``round(n ** (1/3))`` bars, the usual order of
  the optimal block length for variances and distribution estimates (Hall, Horowitz & Jing,
  1995); on strongly autocorrelated returns give a longer one.
* :func:`probabilistic_sharpe_ratio` (Bailey & López de Prado, 2012): the probability that the
  true Sharpe ratio exceeds a benchmark, given the estimate, its sample length and the skew
  and kurtosis of the returns.
* :func:`deflated_sharpe_ratio` (Bailey & López de Prado, 2014): the PSR against the Sharpe
  ratio the best of ``n_trials`` unskilled trials would show (:func:`expected_max_sharpe`),
  for a Sharpe ratio that was selected as the best of a sweep.

All Sharpe ratios here are **per period** (per bar), not annualised, unless the function says
otherwise: annualise with ``* sqrt(periods_per_year)`` only for display.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = [
    "EULER_MASCHERONI",
    "Interval",
    "annualised_sharpe",
    "bootstrap_ci",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "probabilistic_sharpe_ratio",
    "return_moments",
    "total_return",
]

EULER_MASCHERONI = 0.5772156649015329
_NORMAL = NormalDist()
_CHUNK = 2_000_000  # resampled values held in memory at once


@dataclass(frozen=True)
class Interval:
    """A bootstrap confidence interval: the statistic on the data and its percentile bounds."""

    estimate: float
    low: float
    high: float
    level: float  # 0.95 for alpha = 0.05
    block: int  # bars per bootstrap block
    n_boot: int

    def contains(self, value: float) -> bool:
        """True when ``value`` lies within ``[low, high]`` (e.g. a Sharpe of 0)."""
        return bool(self.low <= value <= self.high)


def annualised_sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    """Mean over standard deviation (ddof 1) of per-bar returns, times ``sqrt(periods)``;
    0 when the returns do not vary, as in :func:`trademl.performance.performance_metrics`."""
    returns = np.asarray(returns, dtype=np.float64)
    if returns.size < 2:
        return 0.0
    sd = returns.std(ddof=1)
    return float(returns.mean() / sd * math.sqrt(periods_per_year)) if sd > 0 else 0.0


def total_return(returns: np.ndarray) -> float:
    """Compounded return of per-bar returns: ``prod(1 + r) - 1``."""
    return float(np.prod(1.0 + np.asarray(returns, dtype=np.float64)) - 1.0)


def bootstrap_ci(
    returns: np.ndarray,
    stat: Callable[[np.ndarray], float],
    *,
    n_boot: int = 1000,
    block: int | None = None,
    alpha: float = 0.05,
    seed: int = 0,
) -> Interval:
    """Percentile confidence interval of ``stat(returns)`` by the circular block bootstrap.

    Parameters
    ----------
    returns
        Per-bar returns, in time order (flat bars included: they are part of the strategy).
    stat
        A statistic of a 1-D return array, e.g. ``functools.partial(annualised_sharpe,
        periods_per_year=ppy)`` or :func:`total_return`.
    n_boot
        Number of resamples.
    block
        Bars per block; ``None`` for ``max(1, round(n ** (1/3)))``. ``1`` is the iid bootstrap,
        which ignores autocorrelation.
    alpha
        ``1 - alpha`` is the coverage: the bounds are the ``alpha/2`` and ``1 - alpha/2``
        quantiles of the resampled statistics.
    seed
        The resamples are a function of the seed only: the same seed gives the same resamples
        for any ``stat``, so intervals of several statistics come from the same draws.

    Returns
    -------
    Interval
        The statistic on ``returns`` and the bounds.
    """
    returns = np.asarray(returns, dtype=np.float64)
    n = returns.size
    if n < 2:
        raise ValueError(f"bootstrap_ci needs at least 2 returns, got {n}")
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot!r} must be >= 1")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} must be in (0, 1)")
    b = max(1, round(n ** (1 / 3))) if block is None else int(block)
    if not 1 <= b <= n:
        raise ValueError(f"block={block!r} must be between 1 and the {n} returns")
    per = -(-n // b)  # blocks per resample
    offsets = np.arange(b)
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    rows = max(1, _CHUNK // (per * b))
    for lo in range(0, n_boot, rows):
        m = min(rows, n_boot - lo)
        starts = rng.integers(0, n, size=(m, per))
        idx = (starts[:, :, None] + offsets).reshape(m, per * b)[:, :n] % n
        sample = returns[idx]
        for j in range(m):
            stats[lo + j] = stat(sample[j])
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return Interval(float(stat(returns)), float(low), float(high), 1 - alpha, b, n_boot)


def return_moments(returns: np.ndarray) -> tuple[float, int, float, float]:
    """``(sr, n, skew, kurt)`` of per-bar returns, as the PSR and DSR take them.

    ``sr`` is the per-period Sharpe ratio (mean / standard deviation with ddof 1), ``skew``
    and ``kurt`` the sample skewness and (Pearson, not excess: 3 for a normal) kurtosis.
    NaN moments when the returns do not vary.
    """
    r = np.asarray(returns, dtype=np.float64)
    n = r.size
    if n < 2 or not r.std() > 0:
        return float("nan"), n, float("nan"), float("nan")
    d = r - r.mean()
    m2 = np.mean(d**2)
    skew = np.mean(d**3) / m2**1.5
    kurt = np.mean(d**4) / m2**2
    return float(r.mean() / r.std(ddof=1)), n, float(skew), float(kurt)


def probabilistic_sharpe_ratio(
    sr: float, n: int, skew: float, kurt: float, sr_benchmark: float = 0.0
) -> float:
    """Probability that the true per-period Sharpe ratio exceeds ``sr_benchmark``.

    ``PSR = Phi((sr - sr_benchmark) * sqrt(n - 1) / sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2))``
    (Bailey & López de Prado, 2012, "The Sharpe ratio efficient frontier").

    Parameters
    ----------
    sr
        Estimated Sharpe ratio per period (not annualised).
    n
        Number of returns it was estimated on.
    skew, kurt
        Skewness and Pearson kurtosis (3 for normal returns) of the returns.
    sr_benchmark
        Per-period Sharpe ratio to beat (0: "is it positive at all?").

    Returns
    -------
    float
        A probability; NaN when an input is NaN or the variance term is not positive
        (impossible for real moments, where ``kurt >= 1 + skew**2``).
    """
    if n < 2:
        raise ValueError(f"probabilistic_sharpe_ratio needs n >= 2 returns, got {n}")
    var = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    if not var > 0 or math.isnan(sr_benchmark):
        return float("nan")
    return _NORMAL.cdf((sr - sr_benchmark) * math.sqrt(n - 1) / math.sqrt(var))


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """Expected largest of ``n_trials`` per-period Sharpe ratios whose true value is 0.

    ``sqrt(V) * ((1 - g) * Phi^-1(1 - 1/N) + g * Phi^-1(1 - 1/(N e)))`` with ``g`` the
    Euler-Mascheroni constant and ``V`` the variance of the trials' Sharpe ratios (Bailey &
    López de Prado, 2014). One trial selects nothing: 0.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials={n_trials!r} must be >= 1")
    if sr_variance < 0:
        raise ValueError(f"sr_variance={sr_variance!r} must be >= 0")
    if n_trials == 1:
        return 0.0
    g = EULER_MASCHERONI
    z = (1 - g) * _NORMAL.inv_cdf(1 - 1 / n_trials) + g * _NORMAL.inv_cdf(
        1 - 1 / (n_trials * math.e)
    )
    return math.sqrt(sr_variance) * z


def deflated_sharpe_ratio(
    sr: float, n: int, skew: float, kurt: float, n_trials: int, sr_variance: float
) -> float:
    """PSR of the best of ``n_trials`` against :func:`expected_max_sharpe` (the DSR).

    Parameters
    ----------
    sr, n, skew, kurt
        As for :func:`probabilistic_sharpe_ratio`: the selected trial's per-period Sharpe
        ratio, its number of returns, their skewness and Pearson kurtosis.
    n_trials
        Number of (roughly independent) configurations tried.
    sr_variance
        Variance of the per-period Sharpe ratios across the trials.
    """
    return probabilistic_sharpe_ratio(
        sr, n, skew, kurt, sr_benchmark=expected_max_sharpe(n_trials, sr_variance)
    )
