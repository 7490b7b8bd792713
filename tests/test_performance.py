"""Annualisation from the data: Sharpe and Sortino use the bars per year the market has."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trademl.backtest import Backtest
from trademl.performance import observed_periods_per_year, performance_metrics


def _fx_hourly(years: int = 2) -> pd.DatetimeIndex:
    """24/5: every hour of every weekday, no weekend bars (FX)."""
    hours = pd.date_range("2022-01-03", periods=years * 366 * 24, freq="h", tz="UTC")
    return hours[hours.day_of_week < 5][: years * 52 * 120]


def _trading_days(years: int = 3) -> pd.DatetimeIndex:
    """252 trading days a calendar year: weekdays less nine holidays spread over the year."""
    days = pd.bdate_range("2021-01-01", "2023-12-31", tz="UTC")
    keep = [
        g.iloc[np.linspace(0, len(g) - 1, 252).round().astype(int)]
        for _, g in pd.Series(days).groupby(days.year)
    ]
    return pd.DatetimeIndex(pd.concat(keep))


def _independent_sharpe(equity: pd.Series, per_year: float) -> float:
    r = equity.pct_change().dropna().to_numpy()
    return r.mean() / r.std(ddof=1) * np.sqrt(per_year)


@pytest.mark.parametrize(
    ("index", "per_year"),
    [
        (_fx_hourly(), 52 * 120),
        (_trading_days(), 252),
        (pd.date_range("2023-01-01", periods=20000, freq="h", tz="UTC"), 8766),
    ],
    ids=["fx-24x5-hourly", "stocks-252-daily", "crypto-24x7-hourly"],
)
def test_sharpe_and_sortino_use_the_observed_bars_per_year(index, per_year):
    rng = np.random.default_rng(1)
    equity = pd.Series(1e4 * np.exp(np.cumsum(rng.normal(2e-4, 4e-3, len(index)))), index=index)
    assert observed_periods_per_year(index) == pytest.approx(per_year, rel=0.01)
    metrics = performance_metrics(equity, None, pd.Series(1, index=index))
    assert metrics["sharpe"] == pytest.approx(_independent_sharpe(equity, per_year), rel=0.01)
    # the bar-interval rule (1 year / median step) overstated the non-24/7 markets by ~20 %
    step = pd.Series(index).diff().median().total_seconds()
    naive = _independent_sharpe(equity, 365.25 * 86400 / step)
    if per_year != 8766:
        assert naive / metrics["sharpe"] > 1.15


def test_a_backtest_annualises_with_the_whole_data_and_says_so(candles):
    weekdays = candles[candles.index.day_of_week < 5]  # an hourly market closed at weekends
    signals = pd.DataFrame(
        {"side": np.tile([1, 0, -1, 0], len(weekdays) // 4 + 1)[: len(weekdays)]},
        index=weekdays.index,
    ).assign(sl_distance=1e9, tp_distance=1e9)
    result = Backtest(weekdays, signals, start=len(weekdays) - 200).run()
    assert result.settings["periods_per_year"] == pytest.approx(
        observed_periods_per_year(weekdays.index)
    )
    assert 5500 < result.settings["periods_per_year"] < 6700  # 24/5, not 8,766
    fixed = Backtest(weekdays, signals, start=len(weekdays) - 200, periods_per_year=8766).run()
    ratio = fixed.metrics["sharpe"] / result.metrics["sharpe"]
    assert ratio == pytest.approx(np.sqrt(8766 / result.settings["periods_per_year"]))


def test_zero_trades_have_no_trade_statistics(candles):
    """No trade: win rate and profit factor are not available (NaN, shown as n/a, not logged),
    never the "profit factor 0.00, win rate 0.0 %" of a strategy that lost every trade."""
    flat = pd.DataFrame({"side": 0, "sl_distance": 1.0, "tp_distance": 1.0}, index=candles.index)
    result = Backtest(candles, flat).run()
    m = result.metrics
    assert m["trades"] == 0 and np.isnan(m["win_rate"]) and np.isnan(m["profit_factor"])
    assert "win rate n/a, profit factor n/a" in result.summary()
    assert np.isnan(m["sharpe"]) and "Sharpe n/a" in result.summary()  # a flat curve has none
    from trademl.tracking import finite_metrics

    assert "win_rate" not in finite_metrics(m) and finite_metrics(m)["trades"] == 0
