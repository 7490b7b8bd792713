"""Chronological splits with purge: no training label reaches into the test period."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trademl import ConfigError, InsufficientDataError
from trademl.splits import SplitConfig, purged_cv_splits, split_train_test, walk_forward_folds


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


def test_validation_segment_by_hand():
    # 100 rows, test from 80, validation 0.2 of all rows before it, purge 3 on both sides.
    sp = split_train_test(100, train_ratio=0.8, purge=3, validation_ratio=0.2)
    assert sp.train.tolist() == list(range(57))
    assert sp.validation.tolist() == list(range(60, 77))
    assert sp.test.tolist() == list(range(80, 100))
    assert sp.report()["validation_rows"] == 17


@given(
    n=st.integers(60, 5000),
    ratio=st.floats(0.3, 0.95),
    share=st.floats(0.05, 0.5),
    horizon=st.integers(1, 30),
)
def test_no_training_label_reaches_validation_and_no_validation_label_reaches_test(
    n, ratio, share, horizon
):
    val_ratio = share * ratio
    try:
        sp = split_train_test(n, train_ratio=ratio, purge=horizon, validation_ratio=val_ratio)
    except InsufficientDataError:
        return
    assert sp.train[-1] + horizon < sp.validation[0]
    assert sp.validation[-1] + horizon < sp.test[0]
    assert sp.test[-1] == n - 1
    # the test period is the one without a validation segment: comparable across settings
    assert sp.test.tolist() == split_train_test(n, train_ratio=ratio, purge=horizon).test.tolist()


def test_validation_ratio_must_fit_before_the_test_period():
    with pytest.raises(ConfigError, match="validation_ratio"):
        SplitConfig(train_ratio=0.6, validation_ratio=0.6)
    with pytest.raises(ConfigError, match="cv_test_folds"):
        SplitConfig(validation="cpcv", cv_folds=4, cv_test_folds=4)
    with pytest.raises(ConfigError, match="split.validation"):
        SplitConfig(validation="kfold")


def test_purged_kfold_by_hand():
    # 23 rows, 4 folds of 5 (the last 8), purge 1, embargo 1.
    splits = purged_cv_splits(23, n_folds=4, purge=1, embargo=1)
    assert [s.groups for s in splits] == [(0,), (1,), (2,), (3,)]
    assert splits[0].test.tolist() == [0, 1, 2, 3, 4]
    assert splits[0].train.tolist() == list(range(7, 23))  # 5 purged, 6 embargoed
    assert splits[1].train.tolist() == [0, 1, 2, 3, *range(12, 23)]
    assert splits[3].test.tolist() == list(range(15, 23))
    assert splits[3].train.tolist() == list(range(14))


def _reference_cpcv(n, n_folds, n_test, purge, embargo):
    """Leakage by definition, one row at a time: a training row t is kept if its label's
    rows t+1..t+purge avoid every held-out row and no held-out row lies within purge+embargo
    bars before it."""
    import itertools

    size = n // n_folds
    group = np.minimum(np.arange(n) // size, n_folds - 1)
    out = []
    for groups in itertools.combinations(range(n_folds), n_test):
        held = np.isin(group, groups)
        train = [
            t
            for t in range(n)
            if not held[t]
            and not held[t + 1 : t + 1 + purge].any()
            and not held[max(0, t - purge - embargo) : t].any()
        ]
        out.append((groups, train, np.flatnonzero(held).tolist()))
    return out


@given(
    n=st.integers(40, 400),
    n_folds=st.integers(2, 8),
    n_test=st.integers(1, 3),
    purge=st.integers(0, 4),
    embargo=st.integers(0, 3),
)
def test_purged_cv_matches_the_definition(n, n_folds, n_test, purge, embargo):
    if n_test >= n_folds or n // n_folds - purge - embargo < 2:
        return
    splits = purged_cv_splits(n, n_folds=n_folds, n_test_folds=n_test, purge=purge, embargo=embargo)
    ref = _reference_cpcv(n, n_folds, n_test, purge, embargo)
    assert [(s.groups, s.train.tolist(), s.test.tolist()) for s in splits] == ref


@pytest.mark.parametrize(
    ("n", "n_folds", "n_test", "purge", "embargo"),
    [(30, 6, 2, 2, 1), (101, 5, 2, 3, 0), (257, 8, 3, 4, 2), (64, 4, 3, 1, 1), (500, 10, 2, 5, 5)],
)
def test_cpcv_folds_equal_skfolio(n, n_folds, n_test, purge, embargo):
    from skfolio.model_selection import CombinatorialPurgedCV  # a dev dependency

    cv = CombinatorialPurgedCV(
        n_folds=n_folds, n_test_folds=n_test, purged_size=purge, embargo_size=embargo
    )
    theirs = [(tr.tolist(), np.concatenate(te).tolist()) for tr, te in cv.split(np.zeros((n, 1)))]
    ours = purged_cv_splits(n, n_folds=n_folds, n_test_folds=n_test, purge=purge, embargo=embargo)
    assert [(s.train.tolist(), sorted(s.test.tolist())) for s in ours] == [
        (tr, sorted(te)) for tr, te in theirs
    ]


def test_cv_with_too_few_rows_per_fold():
    with pytest.raises(InsufficientDataError, match="cross-validation folds"):
        purged_cv_splits(20, n_folds=5, purge=2, embargo=1)
