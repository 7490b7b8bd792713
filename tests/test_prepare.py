"""The whole chain from a file or frame to leakage-free train/test matrices."""

from __future__ import annotations

import numpy as np
import pytest

from trademl import ConfigError, InsufficientDataError, generate_ohlcv
from trademl.prepare import prepare_data_for_ml

from .conftest import write_csv


def test_chain_from_csv(tmp_path, candles):
    raw = candles.copy()
    raw.iloc[300, 3] = np.nan  # one missing close, filled and counted
    path = write_csv(raw, tmp_path / "c.csv")
    data = prepare_data_for_ml(path, labels={"horizon": 3})
    assert data.feature_names == list(data.X_train.columns) and len(data.feature_names) == 49
    assert data.report["cleaning"]["missing_rows_filled"] == 1
    assert data.report["features"]["warmup_rows"] == 50
    assert data.report["labels"]["rows_dropped"]["no_future"] == 3
    assert data.report["split"]["purged_rows"] == 3
    total = len(data.X_train) + len(data.X_val) + len(data.X_test) + 3 + 3
    assert total == len(candles) - 50 - 3
    assert data.validation == "holdout" and data.report["split"]["validation"] == "holdout"
    # purge: the last training label (t .. t+3) ends before the first validation bar, and the
    # last validation label before the first test bar
    pos = data.candles.index.get_indexer
    assert pos([data.X_train.index[-1]])[0] + 3 < pos([data.X_val.index[0]])[0]
    assert pos([data.X_val.index[-1]])[0] + 3 < pos([data.X_test.index[0]])[0]
    assert data.X_train.index.equals(data.y_train.index)
    assert data.fwd_test.index.equals(data.X_test.index)
    assert set(data.report["labels"]["class_counts"]) == {"SHORT", "FLAT", "LONG"}


def test_chain_from_frame_with_triple_barrier():
    df = generate_ohlcv(2000, seed=2, momentum=0.3)
    data = prepare_data_for_ml(
        df, labels={"method": "triple_barrier", "horizon": 24}, split={"train_ratio": 0.7}
    )
    assert data.report["split"]["purged_rows"] == 24
    assert len(data.X_test) == len(df) - 50 - 24 - int((len(df) - 74) * 0.7)


@pytest.mark.parametrize(("method", "splits"), [("purged_kfold", 5), ("cpcv", 10)])
def test_cross_validation_splits_the_rows_before_the_test_period(candles, method, splits):
    data = prepare_data_for_ml(
        candles, labels={"horizon": 2}, split={"validation": method, "embargo": 3}
    )
    assert len(data.X_val) == 0 and len(data.cv_splits) == splits
    n = len(data.X_train)
    for split in data.cv_splits:  # positions within the training rows, purged and embargoed
        assert split.train.max() < n and split.test.max() < n
        assert np.intersect1d(split.train, split.test).size == 0
    no_val = prepare_data_for_ml(candles, labels={"horizon": 2}, split={"validation": "none"})
    assert data.X_test.index.equals(no_val.X_test.index)
    assert data.X_train.index.equals(no_val.X_train.index)


def test_too_few_rows_for_the_validation_method_say_which_constraint(candles):
    with pytest.raises(InsufficientDataError, match=r"empty: 0.002 of the rows is not more") as e:
        prepare_data_for_ml(candles, labels={"horizon": 5}, split={"validation_ratio": 0.002})
    assert e.value.needed > len(candles)  # more candles, not fewer
    with pytest.raises(InsufficientDataError, match="each fold needs more than") as e:
        prepare_data_for_ml(candles, split={"validation": "purged_kfold", "embargo": 400})
    assert e.value.needed > len(candles)


def test_purge_below_horizon_refused(candles):
    with pytest.raises(ConfigError, match="shorter than the label horizon"):
        prepare_data_for_ml(candles, labels={"horizon": 5}, split={"purge": 1})


def test_too_few_candles_say_how_many(candles):
    with pytest.raises(InsufficientDataError, match=r"needs about \d+ candles"):
        prepare_data_for_ml(candles.iloc[:90])
    with pytest.raises(InsufficientDataError, match="at least 51"):
        prepare_data_for_ml(candles.iloc[:40])
