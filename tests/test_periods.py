"""Which bars a model learned from, for versions of every age."""

from __future__ import annotations

import pandas as pd

from trademl.periods import last_trained_bar, out_of_sample_start

CANDLES = pd.DataFrame(
    {"close": 1.0}, index=pd.date_range("2024-01-01", periods=100, freq="h", tz="UTC")
)


def test_the_last_bar_learned_from_includes_the_labels_horizon():
    meta = {"train_end": "2024-01-02 00:00+00:00", "train_labels_end": "2024-01-02 05:00+00:00"}
    assert last_trained_bar(meta) == pd.Timestamp("2024-01-02 05:00+00:00")
    assert out_of_sample_start(CANDLES, meta) == pd.Timestamp("2024-01-02 06:00+00:00")


def test_an_older_version_without_label_end_starts_at_its_test_period():
    # written before train_labels_end existed: its last training labels read up to the bar
    # before the test period (the purge), so trading may start at test_start, not train_end
    old = {"train_end": "2024-01-02 00:00+00:00", "test_start": "2024-01-03 00:00+00:00"}
    assert out_of_sample_start(CANDLES, old) == pd.Timestamp("2024-01-03 00:00+00:00")
    assert out_of_sample_start(CANDLES, {"train_end": "2024-01-02 00:00+00:00"}) == pd.Timestamp(
        "2024-01-02 01:00+00:00"
    )
    assert last_trained_bar({}) is None
