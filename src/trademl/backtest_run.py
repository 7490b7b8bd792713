"""``trademl backtest``: a strategy over candles, logged as an MLflow run linked to the model.

``run_backtest(cfg)`` is pure (returns the result and the run id); :func:`main` is the thin
Hydra entrypoint (``conf/backtest.yaml``). The run holds the strategy, risk and backtest
settings as params, the metrics (and buy-and-hold's as ``bh_*``), the equity curve and
drawdown as PNG, the trades as CSV, the statistical safeguards (:mod:`trademl.safeguards`:
``random_*``, ``*_ci_*``, ``psr``, ``cost_x*`` metrics, ``safeguards/cost_sensitivity.csv`` and
``safeguards/random_baseline.png``; ``backtest.safeguards.enabled=false`` skips them), and
tags linking it to the model version (the model version gets a ``last_backtest_run`` tag back).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from trademl._hydra import CONFIG_DIR, instantiate_node
from trademl.backtest import Backtest, BacktestResult
from trademl.cleaning import clean_ohlcv_data
from trademl.errors import ConfigError, DataError, exit_on_user_error
from trademl.performance import plot_equity
from trademl.periods import check_window, last_trained_bar, out_of_sample_start
from trademl.safeguards import Safeguards, compute_safeguards, log_safeguards
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
    safeguards: Safeguards | None = None  # None when backtest.safeguards.enabled is false
    costs_note: str = ""  # the costs do not fit the market (crypto fees on FX hours)


_MODEL_DATA_TARGETS = ("trademl.data.load_ohlcv_data", "trademl.synthetic.generate_ohlcv")


def _model_data(model: Any) -> Any:
    """``data=model``: a loader of the candles the model was trained on (its stored config).

    Only trademl's own loaders may be named there (the metadata is read from the model's
    files, so it is not allowed to call anything else).
    """
    from trademl._config import check_mapping

    if model is None:
        raise ConfigError(
            "data=model (the default) trades the data of an ML strategy's model; for this "
            "strategy give data=csv data.path=... or data=synthetic"
        )
    meta = model.trademl
    stored = meta.get("data_config")
    if not isinstance(stored, dict):
        raise ConfigError(
            f"{model.uri}: the model was trained on {meta.get('data_source', 'unknown data')!r} "
            "but does not store its data config (an older trademl); give data=csv "
            "data.path=... (or data=synthetic ...) to say what to trade"
        )
    values = dict(stored)
    target = values.pop("_target_", None)
    if target not in _MODEL_DATA_TARGETS:
        raise ConfigError(f"{model.uri}: its stored data config names {target!r}; refusing it")
    module, _, name = target.rpartition(".")
    loader = getattr(importlib.import_module(module), name)
    check_mapping("data (stored with the model)", values, loader)
    if target == "trademl.data.load_ohlcv_data" and not Path(values["path"]).exists():
        raise DataError(
            f"{model.uri} was trained on {values['path']}, which no longer exists; give "
            "data=csv data.path=... to say what to trade"
        )
    return lambda: loader(**values)


def _window(bt_cfg: dict[str, Any], model: Any, candles: pd.DataFrame) -> tuple[Any, Any]:
    """``backtest.start`` resolved by date against the model's training period, and the
    in-sample check (``None`` without a model that records its period)."""
    meta = model.trademl if model is not None else {}
    start = bt_cfg.get("start")
    if last_trained_bar(meta) is None:
        return (None if start == "auto" else start), None
    if start == "auto":
        start = out_of_sample_start(candles, meta)
    check = check_window(
        candles,
        meta,
        start,
        allow=bool(bt_cfg.get("allow_in_sample")),
        key="backtest.allow_in_sample",
    )
    return start, check


def run_backtest(cfg: DictConfig) -> BacktestRun:
    """Load data, build the strategy, backtest it, and log the run (``log_to_mlflow``).

    The run is open from the strategy's loading to the last artifact: it ends FINISHED,
    FAILED (any error) or KILLED (SIGINT/SIGTERM).
    """
    checked = validate_config(cfg, "backtest")  # before MLflow or data are touched
    if cfg.backtest.get("symbols"):
        raise ConfigError(
            "backtest.symbols is set: several symbols are a portfolio backtest, run by "
            "trademl.portfolio_run.run_portfolio_backtest(cfg) (trademl backtest does so)"
        )
    log_run = bool(cfg.get("log_to_mlflow", True))
    cleaning, risk, strategy = checked["cleaning"], checked["risk"], checked["strategy"]
    bt_cfg = OmegaConf.to_container(cfg.backtest, resolve=True)
    # the model first: a lookup never creates a store, the backtest's run would
    model = strategy.load() if isinstance(strategy, MLStrategy) else None
    load = (
        _model_data(model)  # checked now, loaded in the run
        if cfg.data.get("from_model")
        else lambda: instantiate_node(cfg.data, "data")
    )
    settings, experiment_id = setup_tracking(checked["mlflow"]) if log_run else (None, None)
    with signals_raise(), _open_run(settings, experiment_id, strategy, model) as rec:
        raw = load()
        candles, report = clean_ohlcv_data(raw, cleaning)
        candles.attrs["source"] = raw.attrs.get("source", "data")
        costs_note = cost_mismatch(report.calendar, bt_cfg["fees_bps"])
        if costs_note:
            log.warning("%s", costs_note)
        if bt_cfg.get("end"):
            candles = candles.loc[: pd.Timestamp(bt_cfg["end"])]
        start, check = _window(bt_cfg, model, candles)
        overlap = bool(check is not None and check.overlap)
        if overlap:
            log.warning("%s", check.note())
        backtest = Backtest.from_settings(candles, strategy, bt_cfg, risk=risk, start=start)
        result = backtest.run()
        result.note = check.note() if check is not None else ""
        result.settings["calendar"] = report.calendar
        guard = checked["backtest"].safeguards
        safeguards = None
        if guard.enabled:
            options = dataclasses.asdict(guard)
            del options["enabled"]
            safeguards = compute_safeguards(candles, result, **options)
        if rec is not None:
            log_backtest(
                rec,
                result,
                strategy,
                candles,
                cfg,
                in_sample=overlap,
                check=check,
                safeguards=safeguards,
            )
    return BacktestRun(
        result=result,
        run_id=rec.run_id if rec is not None else None,
        strategy=strategy,
        in_sample_overlap=overlap,
        safeguards=safeguards,
        costs_note=costs_note,
    )


def cost_mismatch(calendar: str | None, fees_bps: float) -> str:
    """A warning when the costs are the crypto preset's but the candles keep market hours
    (FX 24/5, exchange weekdays): those markets cost a fraction of it (``""`` otherwise)."""
    if calendar not in ("24/5", "weekdays") or fees_bps < 5:
        return ""
    preset = "fx_major" if calendar == "24/5" else "us_equity"
    return (
        f"the candles keep {calendar} market hours but the fees are {fees_bps:g} bps per side "
        f"(the crypto preset): results will look worse than that market costs; choose "
        f"backtest/costs={preset} (or set backtest.fees_bps to your venue's)"
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
    check: Any = None,
    safeguards: Safeguards | None = None,
) -> None:
    """What a backtest run holds: params, metrics, figures, trades, the safeguards, links to
    the model, and how its window relates to the model's training period."""
    tags = {
        "strategy_type": getattr(strategy, "strategy_type", "unknown"),
        "in_sample_overlap": str(in_sample).lower(),
    }
    if check is not None:
        tags["model_last_trained_bar"] = str(check.last_trained)
        if check.same_data is not None:
            tags["same_data_as_training"] = str(check.same_data).lower()
    rec.set_tags(tags)
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
    if safeguards is not None:
        log_safeguards(rec, safeguards, "safeguards", title=title)
    model = strategy.load() if isinstance(strategy, MLStrategy) else None
    if model is not None and model.name and model.version:
        rec.client.set_model_version_tag(model.name, model.version, "last_backtest_run", rec.run_id)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="backtest")
def main(cfg: DictConfig) -> None:
    """Hydra entrypoint of ``trademl backtest``."""
    if cfg.backtest.get("symbols"):
        _portfolio_main(cfg)
        return
    with exit_on_user_error():
        out = run_backtest(cfg)
    r = out.result
    print(
        f"{getattr(out.strategy, 'name', 'strategy')}: {r.settings['start']} .. "
        f"{r.settings['end']} ({r.settings['bars']} bars)"
    )
    print(r.summary())
    for line in out.safeguards.summary() if out.safeguards is not None else []:
        print(line)
    if out.costs_note:
        print(f"note: {out.costs_note}")
    if out.run_id:
        print(f"MLflow run {out.run_id} (experiment '{cfg.mlflow.experiment_name}')")


def _portfolio_main(cfg: DictConfig) -> None:
    from trademl.portfolio_run import run_portfolio_backtest

    with exit_on_user_error():
        out = run_portfolio_backtest(cfg)
    r = out.result
    print(
        f"{getattr(out.strategy, 'name', 'strategy')}: {r.settings['symbols']}, "
        f"{r.settings['start']} .. {r.settings['end']}"
    )
    print(r.summary())
    print(r.orders.to_string())
    for note in out.notes:
        print(f"note: {note}")
    if out.run_id:
        print(f"MLflow run {out.run_id} (experiment '{cfg.mlflow.experiment_name}')")


if __name__ == "__main__":  # pragma: no cover
    main()
