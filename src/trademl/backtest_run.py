"""``trademl backtest``: a strategy over candles, logged as an MLflow run linked to the model.

``run_backtest(cfg)`` is pure (returns the result and the run id); :func:`main` is the thin
Hydra entrypoint (``conf/backtest.yaml``). The run holds the strategy, risk and backtest
settings as params, the metrics (and buy-and-hold's as ``bh_*``), the equity curve and
drawdown as PNG, the trades as CSV, and tags linking it to the model version (the model
version gets a ``last_backtest_run`` tag back).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from trademl._hydra import CONFIG_DIR, instantiate_node
from trademl.backtest import Backtest, BacktestResult
from trademl.cleaning import clean_ohlcv_data
from trademl.errors import exit_on_user_error
from trademl.performance import plot_equity
from trademl.schemas import validate_config
from trademl.strategies import MLStrategy
from trademl.tracking import RunRecorder, config_params, flatten, setup_tracking, signals_raise

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
    """Load data, build the strategy, backtest it, and log the run (``log_to_mlflow``).

    The run is open from the strategy's loading to the last artifact: it ends FINISHED,
    FAILED (any error) or KILLED (SIGINT/SIGTERM).
    """
    checked = validate_config(cfg, "backtest")  # before MLflow or data are touched
    log_run = bool(cfg.get("log_to_mlflow", True))
    cleaning, risk, strategy = checked["cleaning"], checked["risk"], checked["strategy"]
    bt_cfg = OmegaConf.to_container(cfg.backtest, resolve=True)
    # the model first: a lookup never creates a store, the backtest's run would
    model = strategy.load() if isinstance(strategy, MLStrategy) else None
    settings, experiment_id = setup_tracking(checked["mlflow"]) if log_run else (None, None)
    with signals_raise(), _open_run(settings, experiment_id, strategy, model) as rec:
        raw = instantiate_node(cfg.data, "data")
        candles, _ = clean_ohlcv_data(raw, cleaning)
        candles.attrs["source"] = raw.attrs.get("source", "data")
        if bt_cfg.get("end"):
            candles = candles.loc[: pd.Timestamp(bt_cfg["end"])]
        start, overlap = _start(bt_cfg.get("start"), strategy, candles)
        if overlap:
            log.warning("the backtest window overlaps the model's training period: in-sample")
        backtest = Backtest.from_settings(candles, strategy, bt_cfg, risk=risk, start=start)
        result = backtest.run()
        if rec is not None:
            log_backtest(rec, result, strategy, candles, cfg, in_sample=overlap)
    return BacktestRun(
        result=result,
        run_id=rec.run_id if rec is not None else None,
        strategy=strategy,
        in_sample_overlap=overlap,
    )


def _open_run(settings, experiment_id, strategy, model) -> Any:
    """The backtest's run (named after the model version or the strategy), or none."""
    if settings is None:
        return contextlib.nullcontext()
    name = getattr(strategy, "name", "signals")
    tags = {"run_type": "backtest", "strategy": name}
    if model is not None:
        tags.update(
            model_uri=strategy.uri,
            model_name=str(model.name),
            model_version=str(model.version),
            model_run_id=str(model.run_id),
        )
    run_name = f"backtest-{model.name}-v{model.version}" if model else f"backtest-{name}"
    return RunRecorder.start(settings, experiment_id, run_name=run_name, tags=tags)


def log_backtest(
    rec: RunRecorder,
    result: BacktestResult,
    strategy: Any,
    candles: pd.DataFrame,
    cfg: DictConfig | None,
    *,
    in_sample: bool = False,
) -> None:
    """What a backtest run holds: params, metrics, figures, trades, links to the model."""
    rec.set_tags(
        {
            "strategy_type": getattr(strategy, "strategy_type", "unknown"),
            "in_sample_overlap": str(in_sample).lower(),
        }
    )
    params = config_params(cfg) if cfg is not None else {}
    params.update(flatten({"backtest": result.settings}))
    rec.log_params(params)
    rec.log_dataset(candles, context="backtest")
    rec.log_metrics(result.metrics)
    rec.log_metrics({f"bh_{k}": v for k, v in result.benchmark.items()})
    title = rec.client.get_run(rec.run_id).info.run_name
    with rec.artifact_dir("backtest") as tmp:
        plot_equity(result.equity, result.benchmark_equity, tmp / "equity_curve.png", title=title)
        result.trades.to_csv(tmp / "trades.csv", index=False)
        result.equity.to_frame().assign(position=result.position).to_csv(
            tmp / "equity.csv", index_label="timestamp"
        )
    model = strategy.load() if isinstance(strategy, MLStrategy) else None
    if model is not None and model.name and model.version:
        rec.client.set_model_version_tag(model.name, model.version, "last_backtest_run", rec.run_id)


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
