"""Chronological splits with purge: no training label reaches into the test period."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trademl import ConfigError, InsufficientDataError
from trademl.splits import SplitConfig, split_train_test, walk_forward_folds


def test_split_by_hand():
    sp = split_train_test(100, train_ratio=0.8, purge=3)
    assert sp.train.tolist() == list(range(77))
    assert sp.test.tolist() == list(range(80, 100))
    assert sp.purged == 3


@given(n=st.integers(60, 5000), ratio=st.floats(0.3, 0.95), horizon=st.integers(1, 30))
def test_no_training_label_reaches_the_test_period(n, ratio, horizon):
    try:
        sp = split_train_test(n, train_ratio=ratio, purge=horizon)
    except InsufficientDataError:
        return
    # label of row t covers rows t+1 .. t+horizon
    assert sp.train[-1] + horizon < sp.test[0]
    assert sp.test[-1] == n - 1
    assert np.intersect1d(sp.train, sp.test).size == 0


def test_purge_shorter_than_horizon_is_refused():
    with pytest.raises(ConfigError, match="would look into the test period"):
        SplitConfig(purge=2).purge_for(5)
    assert SplitConfig().purge_for(5) == 5
    assert SplitConfig(purge=8).purge_for(5) == 8


def test_too_few_rows():
    with pytest.raises(InsufficientDataError, match="too few"):
        split_train_test(10, purge=5, min_train_rows=5)


@pytest.mark.parametrize("mode", ["expanding", "rolling"])
def test_walk_forward(mode):
    folds = walk_forward_folds(1200, SplitConfig(n_folds=5, mode=mode), purge=4)
    assert len(folds) == 5
    tests = np.concatenate([f.test for f in folds])
    assert tests.tolist() == list(range(200, 1200))  # tiles the end, no overlap
    for f in folds:
        assert f.train[-1] + 4 < f.test[0]
        if mode == "expanding":
            assert f.train[0] == 0
        else:
            assert f.train.size == 196
    assert [f.number for f in folds] == list(range(5))


def test_walk_forward_sizes_and_errors():
    folds = walk_forward_folds(
        1000, SplitConfig(n_folds=3, test_size=100, mode="rolling", train_size=300), purge=2
    )
    assert [f.train.size for f in folds] == [300, 300, 300]
    assert folds[-1].test[-1] == 999
    with pytest.raises(InsufficientDataError, match="too few"):
        walk_forward_folds(100, SplitConfig(n_folds=5, min_train_rows=50), purge=2)


@pytest.mark.parametrize(
    "kwargs", [{"train_ratio": 1.2}, {"mode": "sideways"}, {"n_folds": 0}, {"purge": -1}]
)
def test_bad_split_config(kwargs):
    with pytest.raises(ConfigError):
        SplitConfig(**kwargs)
