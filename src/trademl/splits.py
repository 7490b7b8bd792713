"""Chronological splits with a purge gap: no training label looks into the test period.

A label at row ``t`` with horizon ``h`` is computed from rows ``t+1 .. t+h``.
If the test period starts at row ``s``, every training row must satisfy
``t + h < s``: the last ``purge >= h`` rows before the test period are removed
from training. Test periods never move; only the end of the training set is
trimmed, so test metrics stay comparable across horizons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trademl._config import check_choice, check_positive_int
from trademl.errors import ConfigError, DataError, InsufficientDataError

__all__ = ["Fold", "SplitConfig", "TrainTestSplit", "split_train_test", "walk_forward_folds"]


@dataclass(frozen=True)
class SplitConfig:
    """Split settings.

    Attributes
    ----------
    train_ratio
        Share of rows before the test period (the spec's 0.8).
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

    def report(self, index: pd.Index | None = None) -> dict[str, object]:
        out: dict[str, object] = {
            "train_rows": int(self.train.size),
            "test_rows": int(self.test.size),
            "purged_rows": self.purged,
        }
        if index is not None and self.train.size and self.test.size:
            out.update(
                train_start=str(index[self.train[0]]),
                train_end=str(index[self.train[-1]]),
                test_start=str(index[self.test[0]]),
                test_end=str(index[self.test[-1]]),
            )
        return out


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
) -> TrainTestSplit:
    """Chronological train/test split of ``n`` rows with ``purge`` rows removed between.

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
    """
    n = _length(data)
    if (
        isinstance(data, pd.DataFrame | pd.Series)
        and isinstance(data.index, pd.DatetimeIndex)
        and not data.index.is_monotonic_increasing
    ):
        raise DataError("split_train_test: rows are not in time order; sort them first")
    SplitConfig(train_ratio=train_ratio, purge=purge)  # validates both
    boundary = math.floor(n * train_ratio)
    train_end = boundary - purge
    if train_end < min_train_rows or boundary >= n:
        needed = math.ceil((min_train_rows + purge) / train_ratio) + 1
        raise InsufficientDataError(
            f"{n} rows are too few for a {train_ratio:g} split with a purge of {purge} rows and "
            f"at least {min_train_rows} training rows; need about {needed}",
            needed=needed,
            got=n,
        )
    return TrainTestSplit(train=np.arange(train_end), test=np.arange(boundary, n), purged=purge)


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
