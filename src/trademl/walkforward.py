"""Walk-forward evaluation: retrain on each fold, trade the fold's test window out of sample.

For each fold of :func:`trademl.splits.walk_forward_folds` (expanding or rolling, with the
purge gap), a fresh model is fitted on the fold's training rows, scored on its test rows,
and its causal signals are backtested on the test window only. Every fold is a child MLflow
run of one parent run; the parent holds the out-of-sample metrics over all test windows
(classification metrics on the concatenated predictions, and one backtest that trades each
window with the model of its fold) plus a per-fold table and the overall equity curve, and
the statistical safeguards of that out-of-sample backtest (:mod:`trademl.safeguards`, as for
``trademl backtest``: metrics beside ``bt_*``, artifacts under ``walkforward/safeguards``).

``trademl walkforward [train overrides...]`` (``conf/walkforward.yaml``: the training config
plus ``risk``, ``backtest`` and ``signal`` settings).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from trademl._hydra import CONFIG_DIR, instantiate_node
from trademl.backtest import Backtest, BacktestResult
from trademl.errors import exit_on_user_error
from trademl.evaluation import class_probabilities, evaluate, probability_metrics
from trademl.performance import plot_equity
from trademl.prepare import build_dataset
from trademl.safeguards import Safeguards, compute_safeguards, log_safeguards
from trademl.schemas import validate_config
from trademl.splits import walk_forward_folds
from trademl.strategies.ml_strategy import model_signals
from trademl.tracking import RunRecorder, config_params, setup_tracking, signals_raise

__all__ = ["WalkForwardResult", "main", "walk_forward"]

log = logging.getLogger(__name__)


@dataclass
class WalkForwardResult:
    folds: pd.DataFrame  # one row per fold: period, classification and trading metrics
    metrics: dict[str, float]  # out-of-sample over all test windows
    backtest: BacktestResult  # the combined out-of-sample backtest
    parent_run_id: str
    fold_run_ids: list[str]
    safeguards: Safeguards | None = None  # of the out-of-sample backtest, unless disabled


def _backtest(candles, signals, start, stop, cfg, risk) -> BacktestResult:
    window = candles.iloc[:stop]
    return Backtest.from_settings(window, signals.iloc[:stop], cfg, risk=risk, start=start).run()


def walk_forward(cfg: DictConfig) -> WalkForwardResult:
    """Run the walk-forward evaluation configured by ``cfg`` and log it to MLflow."""
    checked = validate_config(cfg, "walkforward")  # before MLflow or data are touched
    labels, split, spec = checked["labels"], checked["split"], checked["model"]
    risk, cleaning, features = checked["risk"], checked["cleaning"], checked["features"]
    guard = checked["backtest"].safeguards
    bt_cfg = OmegaConf.to_container(cfg.backtest, resolve=True)
    sig_cfg = dataclasses.asdict(checked["signal"])
    settings, experiment_id = setup_tracking(checked["mlflow"])
    rows, fold_runs, oos_signals, oos_proba = [], [], [], []
    with (
        signals_raise(),
        RunRecorder.start(
            settings,
            experiment_id,
            run_name=f"walkforward-{spec.name}-{split.mode}-{split.n_folds}",
            tags={"run_type": "walkforward", "model_type": spec.name},
        ) as parent,
    ):
        parent.log_params(config_params(cfg))
        ds = build_dataset(
            instantiate_node(cfg.data, "data"), cleaning=cleaning, features=features, labels=labels
        )
        folds = walk_forward_folds(len(ds.X), split, purge=split.purge_for(labels.horizon))
        candles = ds.candles
        position = candles.index.get_indexer
        parent.log_dataset(ds.candles, context="walkforward")
        for fold in tqdm(
            folds,
            desc="walk-forward",
            unit="fold",
            file=sys.stderr,
            disable=not cfg.get("progress", True),
        ):
            X_tr, y_tr = ds.X.iloc[fold.train], ds.y.iloc[fold.train]
            X_te, y_te = ds.X.iloc[fold.test], ds.y.iloc[fold.test]
            model = spec.build(int(cfg.seed))
            model.fit(X_tr, y_tr.to_numpy(), **spec.fit_params(y_tr))
            ev = evaluate(model, X_te, y_te, ds.fwd.iloc[fold.test], y_tr, permutation_repeats=0)
            signals = model_signals(model, candles, ds.features, **sig_cfg)
            start, stop = position([X_te.index[0]])[0], position([X_te.index[-1]])[0] + 1
            signals.loc[signals.index[stop:], "side"] = 0
            bt = _backtest(candles, signals, start, stop, bt_cfg, risk)
            oos_signals.append(signals.iloc[start:stop])
            oos_proba.append((model, X_te))
            period = {
                "fold": fold.number,
                "train_rows": len(X_tr),
                "test_rows": len(X_te),
                "train_start": str(X_tr.index[0]),
                "train_end": str(X_tr.index[-1]),
                "test_start": str(X_te.index[0]),
                "test_end": str(X_te.index[-1]),
            }
            row = {
                **period,
                **{
                    k: ev.metrics[k]
                    for k in ("test_accuracy", "test_balanced_accuracy", "test_f1_macro", "test_ic")
                },
                **{f"bt_{k}": v for k, v in bt.metrics.items()},
            }
            rows.append(row)
            fold_tags = {"run_type": "walkforward_fold", "fold": str(fold.number)}
            with parent.child(f"fold-{fold.number}", fold_tags) as child:
                child.log_params(period)
                child.log_metrics(dict(ev.metrics) | {f"bt_{k}": v for k, v in bt.metrics.items()})
                fold_runs.append(child.run_id)
        combined = pd.concat(oos_signals)
        full = combined.reindex(candles.index)  # bars outside the test windows never trade
        full["side"] = full["side"].fillna(0).astype(np.int8)
        first = position([combined.index[0]])[0]
        overall_bt = _backtest(candles, full, first, len(candles), bt_cfg, risk)
        y_all = pd.concat([ds.y.iloc[f.test] for f in folds])
        fwd_all = pd.concat([ds.fwd.iloc[f.test] for f in folds])
        overall = _pooled_metrics(oos_proba, y_all, fwd_all, ds.y.iloc[folds[0].train])
        overall.update({f"bt_{k}": v for k, v in overall_bt.metrics.items()})
        overall.update({f"bh_{k}": v for k, v in overall_bt.benchmark.items()})
        table = pd.DataFrame(rows)
        parent.log_metrics(overall)
        safeguards = None
        if guard.enabled:
            options = dataclasses.asdict(guard)
            del options["enabled"]
            safeguards = compute_safeguards(candles, overall_bt, **options)
            log_safeguards(
                parent, safeguards, "walkforward/safeguards", title="walk-forward out of sample"
            )
        with parent.artifact_dir("walkforward") as tmp:
            table.to_csv(tmp / "folds.csv", index=False)
            overall_bt.trades.to_csv(tmp / "trades.csv", index=False)
            plot_equity(
                overall_bt.equity,
                overall_bt.benchmark_equity,
                tmp / "equity_curve.png",
                title=f"walk-forward out-of-sample ({len(folds)} folds)",
            )
    return WalkForwardResult(
        folds=table,
        metrics=overall,
        backtest=overall_bt,
        parent_run_id=parent.run_id,
        fold_run_ids=fold_runs,
        safeguards=safeguards,
    )


def _pooled_metrics(models_and_X, y, fwd, y_train) -> dict[str, float]:
    """Classification metrics of all out-of-sample predictions, each from its fold's model."""
    proba = np.vstack([class_probabilities(m, X) for m, X in models_and_X])
    metrics, *_ = probability_metrics(proba, y, fwd, y_train)
    return {
        f"oos_{k.removeprefix('test_')}": v for k, v in metrics.items() if k.startswith("test_")
    }


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="walkforward")
def main(cfg: DictConfig) -> None:
    """Hydra entrypoint of ``trademl walkforward``."""
    with exit_on_user_error():
        result = walk_forward(cfg)
    cols = [
        "fold",
        "test_start",
        "test_end",
        "test_balanced_accuracy",
        "test_ic",
        "bt_total_return",
        "bt_sharpe",
        "bt_trades",
    ]
    with pd.option_context("display.width", 200):
        print(result.folds[cols].to_string(index=False))
    m = result.metrics
    print(
        f"out of sample: balanced accuracy {m['oos_balanced_accuracy']:.4f}, IC "
        f"{m['oos_ic']:+.4f}; trading {m['bt_total_return']:+.2%} (buy & hold "
        f"{m['bh_total_return']:+.2%}), Sharpe {m['bt_sharpe']:.2f}, "
        f"{int(m['bt_trades'])} trades"
    )
    for line in result.safeguards.summary() if result.safeguards is not None else []:
        print(line)
    print(f"MLflow parent run {result.parent_run_id} with {len(result.fold_run_ids)} fold runs")


if __name__ == "__main__":  # pragma: no cover
    main()
