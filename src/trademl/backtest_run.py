"""``trademl backtest``: a strategy over candles, logged as an MLflow run linked to the model.

``run_backtest(cfg)`` is pure (returns the result and the run id); :func:`main` is the thin
Hydra entrypoint (``conf/backtest.yaml``). The run holds the strategy, risk and backtest
settings as params, the metrics (and buy-and-hold's as ``bh_*``), the equity curve and
drawdown as PNG, the trades as CSV, and tags linking it to the model version (the model
version gets a ``last_backtest_run`` tag back).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import mlflow
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from trademl._hydra import CONFIG_DIR, instantiate_node
from trademl.backtest import Backtest, BacktestResult
from trademl.cleaning import clean_ohlcv_data
from trademl.errors import exit_on_user_error
from trademl.performance import plot_equity
from trademl.strategies import MLStrategy
from trademl.tracking import (
    config_params,
    finite_metrics,
    flatten,
    log_dataset,
    log_params,
    setup_tracking,
)

__all__ = ["BacktestRun", "log_backtest", "main", "run_backtest"]

log = logging.getLogger(__name__)


@dataclass
class BacktestRun:
    result: BacktestResult
    run_id: str | None
    strategy: Any
    in_sample_overlap: bool


def _start(cfg_start: Any, strategy: Any, candles: pd.DataFrame) -> tuple[Any, bool]:
    """Resolve ``backtest.start``; also tell whether the window overlaps the model's training."""
    meta = strategy.load().trademl if isinstance(strategy, MLStrategy) else {}
    same_data = bool(meta) and meta.get("data_source") == candles.attrs.get("source")
    start = cfg_start
    if cfg_start == "auto":
        start = meta.get("test_start") if same_data else None
    if not same_data or "train_end" not in meta:
        return start, False
    first = candles.index[0] if start is None else pd.Timestamp(start)
    return start, bool(first <= pd.Timestamp(meta["train_end"]))


def run_backtest(cfg: DictConfig) -> BacktestRun:
    """Load data, build the strategy, backtest it, and log the run (``log_to_mlflow``)."""
    settings, experiment_id = setup_tracking(instantiate_node(cfg.mlflow, "mlflow"))
    raw = instantiate_node(cfg.data, "data")
    candles, _ = clean_ohlcv_data(raw, instantiate_node(cfg.cleaning, "cleaning"))
    candles.attrs["source"] = raw.attrs.get("source", "data")
    bt_cfg = OmegaConf.to_container(cfg.backtest, resolve=True)
    if bt_cfg.get("end"):
        candles = candles.loc[: pd.Timestamp(bt_cfg["end"])]
    strategy = instantiate_node(cfg.strategy, "strategy")
    start, overlap = _start(bt_cfg.get("start"), strategy, candles)
    if overlap:
        log.warning("the backtest window overlaps the model's training period: in-sample")
    backtest = Backtest.from_settings(
        candles, strategy, bt_cfg, risk=instantiate_node(cfg.risk, "risk"), start=start
    )
    result = backtest.run()
    run_id = None
    if cfg.get("log_to_mlflow", True):
        run_id = log_backtest(
            result, strategy, candles, cfg, experiment_id, settings, in_sample=overlap
        )
    return BacktestRun(result=result, run_id=run_id, strategy=strategy, in_sample_overlap=overlap)


def log_backtest(
    result: BacktestResult,
    strategy: Any,
    candles: pd.DataFrame,
    cfg: DictConfig | None,
    experiment_id: str,
    settings: Any,
    *,
    in_sample: bool = False,
    run_name: str | None = None,
    nested: bool = False,
) -> str:
    """One MLflow run for a backtest: params, metrics, figures, trades, model links."""
    tags = {
        "run_type": "backtest",
        "strategy": getattr(strategy, "name", "signals"),
        "strategy_type": getattr(strategy, "strategy_type", "unknown"),
        "in_sample_overlap": str(in_sample).lower(),
    }
    model = strategy.load() if isinstance(strategy, MLStrategy) else None
    if model is not None:
        tags.update(
            model_uri=strategy.uri,
            model_name=str(model.name),
            model_version=str(model.version),
            model_run_id=str(model.run_id),
        )
    name = run_name or (
        f"backtest-{model.name}-v{model.version}" if model else f"backtest-{tags['strategy']}"
    )
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, nested=nested) as run:
        mlflow.set_tags(tags)
        params = config_params(cfg) if cfg is not None else {}
        params.update(flatten({"backtest": result.settings}))
        log_params(params)
        log_dataset(candles, context="backtest")
        mlflow.log_metrics(finite_metrics(result.metrics))
        mlflow.log_metrics(finite_metrics({f"bh_{k}": v for k, v in result.benchmark.items()}))
        with tempfile.TemporaryDirectory(prefix="trademl-bt-") as tmp:
            tmp_path = Path(tmp)
            plot_equity(
                result.equity, result.benchmark_equity, tmp_path / "equity_curve.png", title=name
            )
            result.trades.to_csv(tmp_path / "trades.csv", index=False)
            result.equity.to_frame().assign(position=result.position).to_csv(
                tmp_path / "equity.csv", index_label="timestamp"
            )
            mlflow.log_artifacts(tmp, artifact_path="backtest")
    if model is not None and model.name and model.version:
        settings.client().set_model_version_tag(
            model.name, model.version, "last_backtest_run", run.info.run_id
        )
    return run.info.run_id


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="backtest")
def main(cfg: DictConfig) -> None:
    """Hydra entrypoint of ``trademl backtest``."""
    with exit_on_user_error():
        out = run_backtest(cfg)
    r = out.result
    print(
        f"{getattr(out.strategy, 'name', 'strategy')}: {r.settings['start']} .. "
        f"{r.settings['end']} ({r.settings['bars']} bars)"
    )
    if out.in_sample_overlap:
        print("WARNING: the window overlaps the model's training period (in-sample)")
    print(r.summary())
    if out.run_id:
        print(f"MLflow run {out.run_id} (experiment '{cfg.mlflow.experiment_name}')")


if __name__ == "__main__":  # pragma: no cover
    main()
