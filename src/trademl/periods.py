"""Data identity: which bars a model learned from, and whether a trading window overlaps them.

A model version stores, with its metadata, the digest and first/last timestamps of the candles
it was built from and the last bar any of its training labels looked at
(:func:`training_periods`). A backtest or a live session compares *dates* with that, whatever
the data's file name: the same CSV by a relative path, an absolute path or a copy is the same
market, and so is another file covering the same days. :func:`out_of_sample_start` gives the
first bar that is out of sample; :func:`check_window` refuses a window that starts inside the
training period unless in-sample trading was asked for explicitly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trademl.errors import ConfigError, DataError

__all__ = [
    "InSample",
    "candles_digest",
    "check_window",
    "last_trained_bar",
    "out_of_sample_start",
    "training_periods",
]


def candles_digest(candles: pd.DataFrame) -> str:
    """A content digest of OHLCV candles (timestamps and the five columns), 16 hex digits."""
    cols = [c for c in ("open", "high", "low", "close", "volume") if c in candles.columns]
    hashed = pd.util.hash_pandas_object(candles[cols], index=True).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


def training_periods(
    candles: pd.DataFrame,
    train_index: pd.Index,
    test_index: pd.Index,
    horizon: int,
    validation_index: pd.Index | None = None,
) -> dict[str, Any]:
    """What a model version stores about its data: digest, span, periods, and the last bar
    its training or validation (anything it was fit or selected on) looked at, labels
    included (``train_labels_end``)."""
    seen = [train_index[-1]]
    out = {
        "data_digest": candles_digest(candles),
        "data_first": str(candles.index[0]),
        "data_last": str(candles.index[-1]),
        "data_rows": len(candles),
        "train_start": str(train_index[0]),
        "train_end": str(train_index[-1]),
    }
    if validation_index is not None and len(validation_index):
        seen.append(validation_index[-1])
        out["validation_start"] = str(validation_index[0])
        out["validation_end"] = str(validation_index[-1])
    pos = candles.index.get_indexer([max(seen)])[0]
    out["train_labels_end"] = str(candles.index[min(pos + int(horizon), len(candles) - 1)])
    out["test_start"] = str(test_index[0])
    out["test_end"] = str(test_index[-1])
    return out


def last_trained_bar(meta: dict[str, Any]) -> pd.Timestamp | None:
    """The last bar a model's training looked at (its labels' horizon included).

    A version from before ``train_labels_end`` was stored: the bar before its test period
    (its labels read up to there: the purge is at least the horizon), else ``train_end``.
    """
    if meta.get("train_labels_end"):
        return pd.Timestamp(meta["train_labels_end"])
    if meta.get("test_start"):
        return pd.Timestamp(meta["test_start"]).as_unit("ns") - pd.Timedelta(1, unit="ns")
    value = meta.get("train_end")
    return None if value is None else pd.Timestamp(value)


@dataclass(frozen=True)
class InSample:
    """How a trading window relates to the model's training period."""

    overlap: bool  # the window starts at or before the last bar the model learned from
    last_trained: pd.Timestamp | None
    window_start: pd.Timestamp
    same_data: bool | None  # the candles over the model's span are the ones it was built from

    def note(self) -> str:
        if not self.overlap:
            return ""
        return (
            f"IN-SAMPLE: the window starts at {self.window_start}, inside the period the model "
            f"was trained on (up to {self.last_trained})"
        )


def out_of_sample_start(candles: pd.DataFrame, meta: dict[str, Any]) -> pd.Timestamp:
    """The first bar after the model's training period, or a DataError if there is none."""
    last = last_trained_bar(meta)
    if last is None:
        return candles.index[0]
    pos = int(np.count_nonzero(candles.index <= last))  # bars up to it (any time unit)
    if pos >= len(candles) - 1:
        raise DataError(
            f"{candles.attrs.get('source', 'the data')}: its candles end at {candles.index[-1]}, "
            f"but the model learned from bars up to {last}: nothing is out of sample. Give "
            f"data after {last}, or set a start with allow_in_sample=true to trade in-sample"
        )
    return candles.index[pos]


def check_window(
    candles: pd.DataFrame, meta: dict[str, Any], start: Any, *, allow: bool, key: str
) -> InSample:
    """Whether trading ``candles`` from ``start`` overlaps the training period (by date).

    ``start`` is a timestamp or ``None`` (the first bar). An overlap is a ConfigError unless
    ``allow`` (the config key ``key``, e.g. ``backtest.allow_in_sample``) is true.
    """
    first = candles.index[0] if start is None else pd.Timestamp(start)
    if first.tzinfo is None:
        first = first.tz_localize("UTC")
    last = last_trained_bar(meta)
    span = _same_data(candles, meta)
    result = InSample(last is not None and first <= last, last, first, span)
    if result.overlap and not allow:
        raise ConfigError(
            f"{result.note()}: in-sample results look better than they are. Use start auto "
            f"(the first bar after {last}), a later start, or {key}=true to run it anyway "
            "(it is then tagged and shown as in-sample)"
        )
    return result


def _same_data(candles: pd.DataFrame, meta: dict[str, Any]) -> bool | None:
    """Are the candles over the model's data span the ones it was built from (digest)?"""
    if "data_digest" not in meta:
        return None
    span = candles.loc[pd.Timestamp(meta["data_first"]) : pd.Timestamp(meta["data_last"])]
    return bool(len(span)) and candles_digest(span) == meta["data_digest"]
