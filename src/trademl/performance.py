"""Performance metrics of an equity curve and its trades, and the equity/drawdown figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["observed_periods_per_year", "performance_metrics", "plot_equity"]

_YEAR_SECONDS = 365.25 * 24 * 3600


def observed_periods_per_year(index: pd.DatetimeIndex) -> float:
    """Bars per year as the data has them: bar-to-bar steps per elapsed 365.25-day year.

    A market that trades around the clock gives 8,766 hourly bars a year, FX (24/5) about
    6,260, an equity exchange about 252 daily bars: weekends, nights and holidays that have no
    bars are not counted as periods, unlike ``1 year / bar interval``, which overstates
    annualised Sharpe and Sortino by about 20 % on such markets. Measure it on a long span (the
    whole data set): a week of daily bars says nothing about a year.
    """
    if len(index) < 2:
        return 1.0
    years = (index[-1] - index[0]).total_seconds() / _YEAR_SECONDS
    return (len(index) - 1) / years if years > 0 else 1.0


def performance_metrics(
    equity: pd.Series,
    trades: pd.DataFrame | None,
    position: pd.Series,
    *,
    periods_per_year: float | None = None,
) -> dict[str, float]:
    """Total return, CAGR, annualised Sharpe and Sortino (per-bar returns, risk-free 0), max
    drawdown, and for trades: count, win rate, profit factor, average trade; exposure.
    Without a trade, win rate, profit factor and the averages are NaN (not available; not
    logged to MLflow), never 0; so are Sharpe and Sortino of a curve that never moved (and
    Sortino without a losing bar).

    ``periods_per_year`` annualises Sharpe and Sortino; by default the rate observed on the
    curve itself (:func:`observed_periods_per_year`).
    """
    values = equity.to_numpy(dtype=np.float64)
    ppy = periods_per_year or observed_periods_per_year(equity.index)
    rets = np.diff(values) / values[:-1] if values.size > 1 else np.zeros(0)
    total = values[-1] / values[0] - 1.0
    years = (equity.index[-1] - equity.index[0]).total_seconds() / _YEAR_SECONDS
    cagr = (
        (values[-1] / values[0]) ** (1.0 / years) - 1.0
        if years > 0 and values[-1] > 0
        else float("nan")
    )
    sd = rets.std(ddof=1) if rets.size > 1 else 0.0
    downside = np.sqrt(np.mean(np.minimum(rets, 0.0) ** 2)) if rets.size else 0.0
    mean = rets.mean() if rets.size else 0.0
    peak = np.maximum.accumulate(values)
    out = {
        "total_return": float(total),
        "cagr": float(cagr),
        # an equity curve that never moved (no trade) has no Sharpe ratio: NaN, shown as n/a
        "sharpe": float(mean / sd * np.sqrt(ppy)) if sd > 0 else float("nan"),
        "sortino": float(mean / downside * np.sqrt(ppy)) if downside > 0 else float("nan"),
        "max_drawdown": float((values / peak - 1.0).min()),
        "final_equity": float(values[-1]),
        "exposure": float(np.mean(position.to_numpy() != 0)) if len(position) else 0.0,
    }
    if trades is not None:
        pnl = trades["pnl"].to_numpy(dtype=np.float64)
        wins, losses = pnl[pnl > 0].sum(), -pnl[pnl < 0].sum()
        none = float("nan")  # no trade: the trade statistics are not available, not 0 %
        out.update(
            trades=float(pnl.size),
            win_rate=float(np.mean(pnl > 0)) if pnl.size else none,
            profit_factor=float(wins / losses)
            if losses > 0
            else (float("inf") if wins > 0 else none),
            avg_trade_pnl=float(pnl.mean()) if pnl.size else none,
            avg_trade_return_pct=float(trades["return_pct"].mean()) if pnl.size else none,
            total_fees=float(trades["fees"].sum()),
        )
    return out


def plot_equity(
    equity: pd.Series, benchmark: pd.Series | None, path: str | Path, *, title: str = ""
) -> Path:
    """Equity curve (with buy-and-hold) over a drawdown panel, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 6), dpi=110, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot(equity.index, equity.to_numpy(), label="strategy", color="#3b6ea8", lw=1.2)
    if benchmark is not None:
        top.plot(
            benchmark.index,
            benchmark.to_numpy(),
            label="buy & hold",
            color="grey",
            lw=0.9,
            alpha=0.8,
        )
    top.set_ylabel("equity")
    top.legend(loc="upper left")
    top.set_title(title or "Equity curve")
    dd = equity / equity.cummax() - 1.0
    bottom.fill_between(dd.index, dd.to_numpy() * 100, 0, color="#c0392b", alpha=0.5)
    bottom.set_ylabel("drawdown %")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
