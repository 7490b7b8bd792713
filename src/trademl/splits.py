"""Chronological splits with a purge gap: no training label looks into a held-out period.

A label at row ``t`` with horizon ``h`` is computed from rows ``t+1 .. t+h``.
If the test period starts at row ``s``, every training row must satisfy
``t + h < s``: the last ``purge >= h`` rows before the test period are removed
from training. Test periods never move; only the end of the training set is
trimmed, so test metrics stay comparable across horizons.

Model selection never looks at the test period: the rows before it are split again into
training and *validation* (``holdout``: train | purge | validation | purge | test), or
cross-validated with purged k-fold or combinatorial purged cross-validation (CPCV,
López de Prado, *Advances in Financial Machine Learning*, ch. 7 and 12), where training rows
within ``purge`` bars before a held-out block and ``purge + embargo`` bars after it are
removed (the convention of skfolio's ``CombinatorialPurgedCV``, checked against it in the
tests).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from trademl._config import check_choice, check_positive_int
from trademl.errors import ConfigError, DataError, InsufficientDataError

__all__ = [
    "VALIDATION_METHODS",
    "CVSplit",
    "Fold",
    "SplitConfig",
    "TrainTestSplit",
    "purged_cv_splits",
    "split_train_test",
    "walk_forward_folds",
]

VALIDATION_METHODS = ("holdout", "purged_kfold", "cpcv", "none")
_EMPTY = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class SplitConfig:
    """Split settings.

    Attributes
    ----------
    train_ratio
        Share of rows before the test period (the spec's 0.8).
    validation
        How models, thresholds and sweeps are selected without the test period:
        ``holdout`` (the last ``validation_ratio`` of all rows before the test period, purged
        on both sides; the model is fit on the rows before it), ``purged_kfold`` (``cv_folds``
        folds of the rows before the test period), ``cpcv`` (``cv_folds`` groups, every
        combination of ``cv_test_folds`` of them held out), or ``none`` (no validation: nothing
        can be selected, test metrics only). With the two cross-validations, validation
        metrics are the mean over the splits and the model is then fit on all rows before the
        test period.
    validation_ratio
        ``holdout``: share of all rows in the validation segment.
    cv_folds, cv_test_folds
        Cross-validation groups, and held-out groups per split (``cpcv`` only; purged k-fold
        holds out one).
    embargo
        Cross-validation: training rows also removed after each held-out block, beyond the
        purge (serially correlated features).
    purge
        Rows removed between train and test; ``None`` means the label horizon.
        Values below the horizon are rejected (they would leak).
    n_folds, mode, train_size, test_size
        Walk-forward: number of folds, ``expanding`` or ``rolling`` training
        windows, and window lengths in rows (``None``: test = n // (folds + 1),
        rolling train = the first fold's training length).
    min_train_rows
        Smallest training set accepted.
    """

    train_ratio: float = 0.8
    validation: str = "holdout"
    validation_ratio: float = 0.2
    cv_folds: int = 5
    cv_test_folds: int = 2
    embargo: int = 0
    purge: int | None = None
    n_folds: int = 5
    mode: str = "expanding"
    train_size: int | None = None
    test_size: int | None = None
    min_train_rows: int = 50

    def __post_init__(self) -> None:
        if (
            isinstance(self.train_ratio, bool)
            or not isinstance(self.train_ratio, int | float)
            or not 0.0 < self.train_ratio < 1.0
        ):
            raise ConfigError(f"split.train_ratio={self.train_ratio!r} must be in (0, 1)")
        check_choice("split.validation", self.validation, VALIDATION_METHODS)
        if (
            isinstance(self.validation_ratio, bool)
            or not isinstance(self.validation_ratio, int | float)
            or not 0.0 < self.validation_ratio < self.train_ratio
        ):
            raise ConfigError(
                f"split.validation_ratio={self.validation_ratio!r} must be in (0, "
                f"split.train_ratio={self.train_ratio:g}): the validation segment is part of "
                "the rows before the test period"
            )
        check_positive_int("split.cv_folds", self.cv_folds, minimum=2)
        check_positive_int("split.cv_test_folds", self.cv_test_folds)
        if self.validation == "cpcv" and not self.cv_test_folds < self.cv_folds:
            raise ConfigError(
                f"split.cv_test_folds={self.cv_test_folds} must be below split.cv_folds="
                f"{self.cv_folds} (groups held out per CPCV split)"
            )
        check_positive_int("split.embargo", self.embargo, minimum=0)
        if self.purge is not None:
            check_positive_int("split.purge", self.purge, minimum=0)
        check_positive_int("split.n_folds", self.n_folds)
        check_choice("split.mode", self.mode, ("expanding", "rolling"))
        for name in ("train_size", "test_size"):
            if getattr(self, name) is not None:
                check_positive_int(f"split.{name}", getattr(self, name))
        check_positive_int("split.min_train_rows", self.min_train_rows)

    def purge_for(self, horizon: int) -> int:
        """The purge gap to use with labels of ``horizon`` bars."""
        if self.purge is None:
            return horizon
        if self.purge < horizon:
            raise ConfigError(
                f"split.purge={self.purge} is shorter than the label horizon {horizon}: training "
                f"labels would look into the test period; use split.purge>={horizon} or null"
            )
        return self.purge


@dataclass(frozen=True)
class TrainTestSplit:
    """Row positions of one chronological split."""

    train: np.ndarray
    test: np.ndarray
    purged: int
    validation: np.ndarray = field(default_factory=lambda: _EMPTY)

    def report(self, index: pd.Index | None = None) -> dict[str, object]:
        out: dict[str, object] = {
            "train_rows": int(self.train.size),
            "validation_rows": int(self.validation.size),
            "test_rows": int(self.test.size),
            "purged_rows": self.purged,
        }
        if index is not None:
            for name in ("train", "validation", "test"):
                rows = getattr(self, name)
                if rows.size:
                    out[f"{name}_start"] = str(index[rows[0]])
                    out[f"{name}_end"] = str(index[rows[-1]])
        return out


@dataclass(frozen=True)
class CVSplit:
    """One cross-validation split: training rows, held-out rows and the held-out groups."""

    train: np.ndarray
    test: np.ndarray
    groups: tuple[int, ...]


@dataclass(frozen=True)
class Fold(TrainTestSplit):
    """One walk-forward fold; ``number`` counts from 0."""

    number: int = 0


def _length(data: int | pd.DataFrame | pd.Series | np.ndarray) -> int:
    if isinstance(data, int | np.integer):
        return int(data)
    return len(data)


def split_train_test(
    data: int | pd.DataFrame | pd.Series | np.ndarray,
    *,
    train_ratio: float = 0.8,
    purge: int = 1,
    min_train_rows: int = 1,
    validation_ratio: float = 0.0,
) -> TrainTestSplit:
    """Chronological train/test split of ``n`` rows with ``purge`` rows removed between, and
    with ``validation_ratio > 0`` a validation segment purged on both sides:
    ``train | purge | validation | purge | test``.

    Parameters
    ----------
    data
        The rows (a frame, series or array in time order), or their count.
    train_ratio
        Test period = the last ``n - floor(n * train_ratio)`` rows.
    purge
        Rows dropped from the end of the training period (>= label horizon).
    min_train_rows
        Raise :class:`InsufficientDataError` if fewer training rows remain.
    validation_ratio
        Share of all rows in the validation segment, which ends ``purge`` rows before the
        test period (0: no validation segment).
    """
    n = _length(data)
    if (
        isinstance(data, pd.DataFrame | pd.Series)
        and isinstance(data.index, pd.DatetimeIndex)
        and not data.index.is_monotonic_increasing
    ):
        raise DataError("split_train_test: rows are not in time order; sort them first")
    SplitConfig(  # validates all three
        train_ratio=train_ratio,
        purge=purge,
        validation_ratio=validation_ratio or train_ratio / 2,
    )
    boundary = math.floor(n * train_ratio)
    val_start = math.floor(n * (train_ratio - validation_ratio)) if validation_ratio else boundary
    val_end = boundary - purge if validation_ratio else boundary
    train_end = val_start - purge
    no_validation_rows = bool(validation_ratio) and val_end <= val_start
    if train_end < min_train_rows or boundary >= n or no_validation_rows:
        if validation_ratio:
            rows_before = min_train_rows + 2 * purge + 1
            needed = max(
                math.ceil(rows_before / (train_ratio - validation_ratio)) + 1,
                math.ceil((purge + 2) / validation_ratio),  # a segment longer than the purge
            )
            what = f", a {validation_ratio:g} validation segment"
            if no_validation_rows:
                what += f" (empty: {validation_ratio:g} of the rows is not more than the purge)"
        else:
            needed, what = math.ceil((min_train_rows + purge) / train_ratio) + 1, ""
        raise InsufficientDataError(
            f"{n} rows are too few for a {train_ratio:g} split{what} with a purge of {purge} "
            f"rows and at least {min_train_rows} training rows; need about {needed}",
            needed=needed,
            got=n,
        )
    return TrainTestSplit(
        train=np.arange(train_end),
        test=np.arange(boundary, n),
        purged=purge,
        validation=np.arange(val_start, val_end) if validation_ratio else _EMPTY,
    )


def purged_cv_splits(
    n: int, *, n_folds: int, n_test_folds: int = 1, purge: int = 1, embargo: int = 0
) -> list[CVSplit]:
    """Purged k-fold (``n_test_folds=1``) or combinatorial purged cross-validation.

    The ``n`` rows are cut into ``n_folds`` consecutive groups of ``n // n_folds`` rows (the
    last one takes the remainder). Each split holds out one combination of ``n_test_folds``
    groups (in ``itertools.combinations`` order) and trains on the other rows, less the
    ``purge`` rows before each held-out block (their labels reach into it) and the
    ``purge + embargo`` rows after it. Adjacent held-out groups form one block.
    """
    size = n // n_folds
    if size - purge - embargo < 2:
        raise InsufficientDataError(
            f"{n} rows are too few for {n_folds} cross-validation folds with a purge of "
            f"{purge} and an embargo of {embargo} rows; each fold needs more than "
            f"{purge + embargo + 1} rows",
            needed=n_folds * (purge + embargo + 2),
            got=n,
        )
    starts = [g * size for g in range(n_folds)] + [n]
    splits = []
    for groups in itertools.combinations(range(n_folds), n_test_folds):
        held = np.zeros(n, dtype=bool)
        for g in groups:
            held[starts[g] : starts[g + 1]] = True
        removed = held.copy()
        edges = np.flatnonzero(np.diff(held.astype(np.int8)))
        for e in edges:
            if held[e + 1]:  # a block starts at e + 1: purge the rows before it
                removed[max(0, e + 1 - purge) : e + 1] = True
            else:  # a block ends at e: purge and embargo the rows after it
                removed[e + 1 : e + 1 + purge + embargo] = True
        splits.append(
            CVSplit(train=np.flatnonzero(~removed), test=np.flatnonzero(held), groups=groups)
        )
    return splits


def walk_forward_folds(
    data: int | pd.DataFrame | pd.Series | np.ndarray,
    config: SplitConfig | None = None,
    *,
    purge: int = 1,
) -> list[Fold]:
    """Walk-forward folds: consecutive test windows, each trained on the past only.

    Expanding mode trains on every row before the purge gap; rolling mode on the
    last ``train_size`` rows before it. Test windows tile the end of the data.
    """
    cfg = config or SplitConfig()
    n = _length(data)
    k = cfg.n_folds
    test_size = cfg.test_size or n // (k + 1)
    first_test = n - k * test_size
    if test_size < 1 or first_test - purge < cfg.min_train_rows:
        needed = cfg.min_train_rows + purge + k * max(test_size, 1)
        raise InsufficientDataError(
            f"{n} rows are too few for {k} walk-forward folds of {test_size} test rows with a "
            f"purge of {purge} and at least {cfg.min_train_rows} training rows; need {needed}",
            needed=needed,
            got=n,
        )
    train_size = cfg.train_size or (first_test - purge)
    folds = []
    for i in range(k):
        start = first_test + i * test_size
        stop = n if i == k - 1 else start + test_size
        train_end = start - purge
        train_start = 0 if cfg.mode == "expanding" else max(0, train_end - train_size)
        if train_end - train_start < cfg.min_train_rows:
            raise InsufficientDataError(
                f"walk-forward fold {i}: {train_end - train_start} training rows, need "
                f"{cfg.min_train_rows}",
                needed=cfg.min_train_rows,
                got=train_end - train_start,
            )
        folds.append(
            Fold(
                train=np.arange(train_start, train_end),
                test=np.arange(start, stop),
                purged=purge,
                number=i,
            )
        )
    return folds
