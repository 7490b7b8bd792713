"""``trademl backtest backtest.symbols={A: a.csv, B: b.csv}``: a portfolio backtest.

Each symbol's file is loaded and cleaned as ``data=csv`` would be (``cleaning``), cut at
``backtest.end``, and traded from ``backtest.start`` (``auto``: per symbol, the first bar
after the model's training period; an in-sample window is refused unless
``backtest.allow_in_sample``). :class:`~trademl.portfolio.PortfolioBacktest` runs them with
``backtest.portfolio`` (``per_symbol`` or ``shared``). The MLflow run holds the settings,
the portfolio's metrics (with ``orders_reduced`` and ``orders_rejected``), and
``portfolio/trades.csv``, ``portfolio/equity.csv`` (the portfolio and each symbol),
``portfolio/orders.csv`` and ``portfolio/equity_curve.png``. The statistical safeguards of a
single backtest are not computed for a portfolio (said in the output and tagged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from trademl.cleaning import clean_ohlcv_data
from trademl.data import load_ohlcv_data
from trademl.errors import ConfigError
from trademl.performance import plot_equity
from trademl.portfolio import PortfolioBacktest, PortfolioResult
from trademl.schemas import validate_config
from trademl.strategies import MLStrategy
from trademl.tracking import config_params, flatten, setup_tracking, signals_raise

__all__ = ["PortfolioRun", "run_portfolio_backtest"]

SAFEGUARDS_NOTE = "the statistical safeguards are not computed for a portfolio backtest"


@dataclass
class PortfolioRun:
    result: PortfolioResult
    run_id: str | None
    strategy: Any
    notes: list[str]  # in-sample windows (allowed by backtest.allow_in_sample), skipped parts
    in_sample_overlap: bool = False


def run_portfolio_backtest(cfg: DictConfig) -> PortfolioRun:
    """Load every ``backtest.symbols`` file, backtest them as one portfolio, log the run."""
    from trademl.backtest_run import _open_run, _window

    checked = validate_config(cfg, "backtest")  # before MLflow or data are touched
    bt_cfg = OmegaConf.to_container(cfg.backtest, resolve=True)
    files = bt_cfg.get("symbols")
    if not files:
        raise ConfigError(
            "backtest.symbols is not set: give 'backtest.symbols={BTCUSDT: btc.csv, ...}' "
            "(one symbol: data=csv data.path=...)"
        )
    cleaning, risk, strategy = checked["cleaning"], checked["risk"], checked["strategy"]
    model = strategy.load() if isinstance(strategy, MLStrategy) else None
    log_run = bool(cfg.get("log_to_mlflow", True))
    settings, experiment_id = setup_tracking(checked["mlflow"]) if log_run else (None, None)
    notes = [SAFEGUARDS_NOTE] if checked["backtest"].safeguards.enabled else []
    with signals_raise(), _open_run(settings, experiment_id, strategy, model) as rec:
        data, starts, overlap = {}, {}, False
        for symbol, path in files.items():
            candles, _ = clean_ohlcv_data(load_ohlcv_data(path), cleaning)
            candles.attrs["source"] = str(path)
            if bt_cfg.get("end"):
                candles = candles.loc[: pd.Timestamp(bt_cfg["end"])]
            starts[symbol], check = _window(bt_cfg, model, candles)
            if check is not None and check.overlap:
                overlap = True
                notes.append(f"{symbol}: {check.note()}")
            data[symbol] = candles
        result = PortfolioBacktest(
            data,
            strategy,
            portfolio=bt_cfg["portfolio"],
            cash=bt_cfg["cash"],
            risk=risk,
            fees_bps=bt_cfg["fees_bps"],
            slippage_bps=bt_cfg["slippage_bps"],
            on_opposite=bt_cfg["on_opposite"],
            max_holding_bars=bt_cfg.get("max_holding_bars"),
            start=starts,
            periods_per_year=bt_cfg.get("periods_per_year"),
        ).run()
        if rec is not None:
            _log(rec, result, cfg, notes, overlap)
    run_id = rec.run_id if rec is not None else None
    return PortfolioRun(result, run_id, strategy, notes, overlap)


def _log(
    rec: Any, result: PortfolioResult, cfg: DictConfig, notes: list[str], overlap: bool
) -> None:
    rec.set_tags(
        {
            "portfolio": result.settings["portfolio"],
            "symbols": result.settings["symbols"],
            "in_sample_overlap": str(overlap).lower(),
            "safeguards": "not computed (portfolio)" if SAFEGUARDS_NOTE in notes else "disabled",
        }
    )
    params = config_params(cfg)
    params.update(flatten({"backtest": result.settings}))
    rec.log_params(params)
    rec.log_metrics(result.metrics)
    title = rec.client.get_run(rec.run_id).info.run_name
    with rec.artifact_dir("portfolio") as tmp:
        plot_equity(result.equity, None, tmp / "equity_curve.png", title=title)
        result.trades.to_csv(tmp / "trades.csv", index=False)
        symbols = pd.DataFrame(result.symbol_equity).reindex(result.equity.index).ffill()
        symbols.insert(0, "portfolio", result.equity)
        symbols.to_csv(tmp / "equity.csv", index_label="timestamp")
        result.orders.to_csv(tmp / "orders.csv")
