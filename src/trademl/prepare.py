"""The whole preparation chain: candles -> clean -> features -> labels -> split."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from trademl._config import coerce_config
from trademl.cleaning import CleaningConfig, clean_ohlcv_data
from trademl.data import load_ohlcv_data
from trademl.errors import DataError, InsufficientDataError
from trademl.features import FeatureConfig, build_feature_matrix
from trademl.labels import LabelConfig, align_data_for_training
from trademl.splits import CVSplit, SplitConfig, purged_cv_splits, split_train_test

__all__ = ["Dataset", "PreparedData", "build_dataset", "prepare_data_for_ml"]

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Train/validation/test matrices and everything needed to reproduce or audit them.

    ``candles`` is the cleaned OHLCV the features were built from (for
    backtests); ``fwd_*`` are the forward returns of each labelled row (for
    information-coefficient metrics); ``report`` gathers the cleaning, feature,
    label and split reports. ``validation`` is the split's method: with ``holdout`` the
    ``*_val`` rows are the validation segment; with ``purged_kfold`` / ``cpcv`` they are
    empty and ``cv_splits`` holds row positions within the training rows.
    """

    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series
    fwd_train: pd.Series
    fwd_test: pd.Series
    feature_names: list[str]
    candles: pd.DataFrame
    features: FeatureConfig
    labels: LabelConfig
    report: dict[str, Any] = field(default_factory=dict)
    X_val: pd.DataFrame | None = None
    y_val: pd.Series | None = None
    fwd_val: pd.Series | None = None
    validation: str = "none"
    cv_splits: list[CVSplit] = field(default_factory=list)


@dataclass
class Dataset:
    """Aligned, unsplit rows: features ``X``, labels ``y``, forward returns ``fwd``."""

    X: pd.DataFrame
    y: pd.Series
    fwd: pd.Series
    candles: pd.DataFrame
    features: FeatureConfig
    labels: LabelConfig
    report: dict[str, Any] = field(default_factory=dict)


def build_dataset(
    source: str | Path | pd.DataFrame,
    *,
    cleaning: CleaningConfig | dict | None = None,
    features: FeatureConfig | dict | None = None,
    labels: LabelConfig | dict | None = None,
) -> Dataset:
    """Load (if a path), clean, build features and labels, and align them on one index."""
    clean_cfg = coerce_config(cleaning, CleaningConfig, name="cleaning")
    feat_cfg = coerce_config(features, FeatureConfig, name="features")
    label_cfg = coerce_config(labels, LabelConfig, name="labels")
    if isinstance(source, str | Path):
        raw = load_ohlcv_data(source)
    elif isinstance(source, pd.DataFrame):
        raw = source
    else:
        raise DataError(
            f"expected a file path or a DataFrame of candles, got {type(source).__name__}"
        )
    name = raw.attrs.get("source", "data")
    candles, clean_report = clean_ohlcv_data(raw, clean_cfg)
    candles.attrs["source"] = name
    if len(candles) < feat_cfg.min_rows:
        raise InsufficientDataError(
            f"{name}: {len(candles)} clean rows, but the features need at least "
            f"{feat_cfg.min_rows} ({feat_cfg.warmup} warm-up bars plus one) and training needs "
            "many more",
            needed=feat_cfg.min_rows,
            got=len(candles),
        )
    X, feat_report = build_feature_matrix(candles, feat_cfg, return_report=True)
    lab = align_data_for_training(candles, config=label_cfg)
    common = X.index.intersection(lab.y.index)
    report = {
        "source": name,
        "cleaning": clean_report.to_dict(),
        "features": feat_report.to_dict(),
        "labels": lab.report(),
    }
    return Dataset(
        X=X.loc[common],
        y=lab.y.loc[common],
        fwd=lab.forward_return.loc[common],
        candles=candles,
        features=feat_cfg,
        labels=label_cfg,
        report=report,
    )


def prepare_data_for_ml(
    source: str | Path | pd.DataFrame,
    *,
    cleaning: CleaningConfig | dict | None = None,
    features: FeatureConfig | dict | None = None,
    labels: LabelConfig | dict | None = None,
    split: SplitConfig | dict | None = None,
) -> PreparedData:
    """Run the chain from a file path or a raw candle frame to train/validation/test matrices.

    The features of a row use that bar and earlier ones; its label uses the next
    ``labels.horizon`` bars; the last ``purge >= horizon`` rows before the test
    period (and before a validation segment) are dropped from training, so no training
    label sees a held-out period (:mod:`trademl.splits`).
    """
    split_cfg = coerce_config(split, SplitConfig, name="split")
    label_cfg = coerce_config(labels, LabelConfig, name="labels")
    purge = split_cfg.purge_for(label_cfg.horizon)
    ds = build_dataset(source, cleaning=cleaning, features=features, labels=label_cfg)
    X, y, fwd, candles, name = ds.X, ds.y, ds.fwd, ds.candles, ds.report["source"]
    feat_cfg = ds.features
    method = split_cfg.validation
    holdout = method == "holdout"
    what = f"{split_cfg.train_ratio:g} split with purge {purge}"
    try:
        sp = split_train_test(
            X,
            train_ratio=split_cfg.train_ratio,
            purge=purge,
            min_train_rows=split_cfg.min_train_rows,
            validation_ratio=split_cfg.validation_ratio if holdout else 0.0,
        )
        cv = []
        if method in ("purged_kfold", "cpcv"):
            what += (
                f", {method} validation ({split_cfg.cv_folds} folds, embargo "
                f"{split_cfg.embargo}) of the {sp.train.size} rows before the test period"
            )
            try:
                cv = purged_cv_splits(
                    sp.train.size,
                    n_folds=split_cfg.cv_folds,
                    n_test_folds=split_cfg.cv_test_folds if method == "cpcv" else 1,
                    purge=purge,
                    embargo=split_cfg.embargo,
                )
            except InsufficientDataError as exc:  # counted in rows before the test period
                rows = math.ceil((exc.needed + purge) / split_cfg.train_ratio) + 1
                raise InsufficientDataError(str(exc), needed=rows, got=len(X)) from exc
    except InsufficientDataError as exc:
        needed = exc.needed + feat_cfg.warmup + label_cfg.horizon
        if holdout:
            what += f", a {split_cfg.validation_ratio:g} validation segment"
        raise InsufficientDataError(
            f"{name}: {len(candles)} clean candles give {len(X)} labelled feature rows; a "
            f"{what} and {split_cfg.min_train_rows} training rows needs about {needed} candles "
            f"({exc})",
            needed=needed,
            got=len(candles),
        ) from exc

    report = {**ds.report, "split": {"validation": method, **sp.report(X.index)}}
    if cv:
        report["split"]["cv_splits"] = len(cv)
    log.info(
        "prepared %s: %d train / %d validation / %d test rows (%s), %d features, %d purged",
        name,
        sp.train.size,
        sp.validation.size,
        sp.test.size,
        method,
        X.shape[1],
        purge,
    )
    return PreparedData(
        X_train=X.iloc[sp.train],
        X_test=X.iloc[sp.test],
        y_train=y.iloc[sp.train],
        y_test=y.iloc[sp.test],
        fwd_train=fwd.iloc[sp.train],
        fwd_test=fwd.iloc[sp.test],
        feature_names=list(X.columns),
        candles=candles,
        features=feat_cfg,
        labels=label_cfg,
        report=report,
        X_val=X.iloc[sp.validation],
        y_val=y.iloc[sp.validation],
        fwd_val=fwd.iloc[sp.validation],
        validation=method,
        cv_splits=cv,
    )
