"""Synthetic candles: valid, deterministic, clustered volatility, and a planted, learnable edge."""

from __future__ import annotations

import numpy as np
import pytest

from trademl import ConfigError, build_feature_matrix, generate_ohlcv, validate_ohlcv
from trademl.labels import align_data_for_training


def test_valid_and_deterministic():
    a = generate_ohlcv(3000, seed=3, momentum=0.3)
    validate_ohlcv(a)
    b = generate_ohlcv(3000, seed=3, momentum=0.3)
    assert a.to_numpy().tobytes() == b.to_numpy().tobytes()
    assert not a.equals(generate_ohlcv(3000, seed=4, momentum=0.3))
    assert a.index.freq == "h" and str(a.index.tz) == "UTC"


def test_volatility_clusters():
    df = generate_ohlcv(20_000, seed=1)
    r = np.log(df["close"]).diff().dropna().to_numpy()
    sq = r**2 - (r**2).mean()
    acf1 = (sq[1:] * sq[:-1]).mean() / (sq * sq).mean()
    assert acf1 > 0.1  # squared returns are autocorrelated: GARCH + regimes
    plain = generate_ohlcv(20_000, seed=1, garch=False, regimes=False)
    r = np.log(plain["close"]).diff().dropna().to_numpy()
    sq = r**2 - (r**2).mean()
    assert abs((sq[1:] * sq[:-1]).mean() / (sq * sq).mean()) < 0.05


@pytest.mark.parametrize(("momentum", "low", "high"), [(0.3, 0.2, 0.4), (0.0, -0.05, 0.05)])
def test_planted_momentum_lives_in_the_trending_regime(momentum, low, high):
    df, regime = generate_ohlcv(40_000, seed=5, momentum=momentum, return_regime=True)
    r = np.log(df["close"]).diff().to_numpy()
    trend = (regime[1:] == 1) & (regime[:-1] == 1)
    trend[0] = False
    x, y = r[:-1][trend[:]], r[1:][trend]
    assert low < np.corrcoef(x, y)[0, 1] < high
    calm = (regime[1:] == 0) & (regime[:-1] == 0)
    calm[0] = False
    assert abs(np.corrcoef(r[:-1][calm], r[1:][calm])[0, 1]) < 0.05


def test_effect_is_visible_to_causal_features_only_when_planted():
    for momentum, expect_edge in ((0.35, True), (0.0, False)):
        df = generate_ohlcv(30_000, seed=11, momentum=momentum, regimes=False, garch=False)
        X = build_feature_matrix(df)
        labels = align_data_for_training(df, config={"threshold_type": "fixed", "threshold": 0.0})
        fwd = labels.forward_return.reindex(X.index).dropna()
        ic = np.corrcoef(X.loc[fwd.index, "return_1"], fwd)[0, 1]
        assert (ic > 0.25) if expect_edge else (abs(ic) < 0.03), (momentum, ic)


@pytest.mark.parametrize(
    "kwargs", [{"n": 1}, {"momentum": 1.5}, {"volatility": 0}, {"freq": "every now and then"}]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        generate_ohlcv(**({"n": 100} | kwargs))
