"""The stateful strategy API: warm_up(history) then update(candle) equals generate_signal on
all the candles so far, for every bar, for both strategies."""

from __future__ import annotations

import pandas as pd
import pytest

from trademl import DataError, generate_ohlcv
from trademl.live.feeds import Candle
from trademl.strategies import MLStrategy, ScalpingEMARSI

SIDE_NAME = {-1: "SHORT", 0: "FLAT", 1: "LONG"}
FLOATS = ("entry_price", "confidence", "sl_distance", "tp_distance", "atr")


@pytest.fixture(scope="module")
def fresh():
    return generate_ohlcv(700, seed=42, momentum=0.3, start="2025-01-01")


def ml(production_model, **kwargs):
    return MLStrategy("baseline_rf", tracking_uri=production_model["store"]["uri"], **kwargs)


def make(kind, production_model):
    if kind == "ml":
        return ml(production_model, min_confidence=0.4)
    if kind == "scalping-long-rsi":  # an RSI period longer than the EMAs and the ATR
        return ScalpingEMARSI(fast_period=5, slow_period=8, rsi_period=21, atr_period=7)
    return ScalpingEMARSI()


def assert_same(out: dict, want: dict, rel: float) -> None:
    assert out["signal"] == want["signal"]
    assert set(out["metadata"]) == set(want["metadata"])
    for key, value in want["metadata"].items():
        if key in FLOATS:
            assert out["metadata"][key] == pytest.approx(value, rel=rel, abs=rel), key
        else:
            assert out["metadata"][key] == value, key


@pytest.mark.parametrize("kind", ["ml", "scalping", "scalping-long-rsi"])
@pytest.mark.parametrize("seed_rows", [0, 30, 400])
def test_update_equals_generate_signal_on_every_bar(production_model, fresh, kind, seed_rows):
    strategy = make(kind, production_model)
    batch = strategy.generate_signals(fresh)  # equals generate_signal(fresh[:t+1]) at each t
    # a compiled predictor may differ from scikit-learn's by up to 1e-5 in probability
    rel = 1e-5 if kind == "ml" and strategy.predictor().kind != "sklearn" else 1e-9
    first = strategy.warm_up(fresh.iloc[:seed_rows]) if seed_rows else None
    assert (first is None) == (seed_rows < strategy.min_bars)
    checked = trades = 0
    for t in range(seed_rows, len(fresh)):
        ts = fresh.index[t]
        bar = fresh.iloc[t]
        candle = Candle("X", ts, bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"])
        out = strategy.update(candle)
        if t + 1 < strategy.min_bars:
            assert out is None
            continue
        row = batch.iloc[t]
        assert out["signal"] == SIDE_NAME[int(row["side"])], ts
        for key in FLOATS:
            assert out["metadata"][key] == pytest.approx(row[key], rel=rel, abs=rel), (ts, key)
        trades += out["signal"] != "FLAT"
        if t % 97 == 0 or t == len(fresh) - 1:  # the whole dict, against the window call
            assert_same(out, strategy.generate_signal(fresh.iloc[: t + 1]), rel)
            checked += 1
    assert checked >= 3
    assert trades > 0, "the comparison should include bars that trade"


def test_candles_come_as_objects_mappings_or_rows(fresh):
    a, b, c = ScalpingEMARSI(), ScalpingEMARSI(), ScalpingEMARSI()
    for ts, bar in fresh.iloc[:200].iterrows():
        one = a.update(bar)  # a row named by its timestamp
        two = b.update({"timestamp": ts, **bar.to_dict()})
        three = c.update(Candle("X", ts, *bar[["open", "high", "low", "close", "volume"]]))
        assert one == two == three


def test_streams_are_independent_per_symbol(fresh):
    strategy = ScalpingEMARSI()
    other = generate_ohlcv(300, seed=7, start="2025-01-01")
    s1, s2 = strategy.stream(what="A"), strategy.stream(what="B")
    s1.warm_up(fresh.iloc[:300])
    s2.warm_up(other)
    alone = ScalpingEMARSI().stream()
    alone.warm_up(fresh.iloc[:300])
    for _, bar in fresh.iloc[300:400].iterrows():
        assert s1.update(bar) == alone.update(bar)
    assert s2.recent_frame().index[-1] == other.index[-1]


def test_a_bad_candle_is_refused_and_the_stream_carries_on(fresh):
    strategy = ScalpingEMARSI()
    strategy.warm_up(fresh.iloc[:300])
    bad = fresh.iloc[300].copy()
    bad["low"] = bad["close"] * 2
    with pytest.raises(DataError, match="do not contain"):
        strategy.update(bad)
    with pytest.raises(DataError, match="repeats the last one"):
        strategy.update(fresh.iloc[299])
    out = strategy.update(fresh.iloc[300])
    assert out == strategy.generate_signal(fresh.iloc[:301])


def test_a_stream_reseeds_when_the_strategy_switches_version(production_model, fresh):
    strategy = ml(production_model)
    stream = strategy.stream(keep=600)
    stream.warm_up(fresh.iloc[:650])
    old = strategy.load()
    # as refresh() does when the stage moves: a new load of the model (here the same version)
    strategy._loaded = None
    strategy.load()
    assert strategy.load() is not old
    out = stream.update(fresh.iloc[650])
    assert stream.loaded is strategy.load()
    assert stream.features.count == 601  # the 600 candles it held, then the new one
    # re-seeded on the 600 candles it held, then the new one
    want = strategy.generate_signal(pd.concat([fresh.iloc[50:650], fresh.iloc[650:651]]))
    assert_same(out, want, 1e-5)


def test_warm_up_predicts_only_the_last_candle(production_model, fresh, monkeypatch):
    strategy = ml(production_model)
    calls = []
    predictor = strategy.predictor()
    original = predictor.predict_proba
    monkeypatch.setattr(predictor, "predict_proba", lambda X: calls.append(len(X)) or original(X))
    out = strategy.warm_up(fresh.iloc[:500])
    assert calls == [1]
    assert out["signal"] == strategy.generate_signal(fresh.iloc[:500])["signal"]
