"""Strategies: the signal format, batch/single-bar parity, model loading and its errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trademl import ConfigError, InsufficientDataError, ModelError, generate_ohlcv
from trademl.inference import calculate_signal_strength, predict_signal
from trademl.registry import promote_model
from trademl.risk import RiskEngine
from trademl.strategies import MLStrategy, ScalpingEMARSI, Strategy
from trademl.train import train

from .conftest import fast_overrides

SPEC_KEYS = {
    "entry_price",
    "confidence",
    "sl_distance",
    "tp_distance",
    "atr",
    "model_name",
    "strategy_type",
}


@pytest.fixture(scope="module")
def fresh():
    return generate_ohlcv(600, seed=99, momentum=0.3, start="2025-01-01")


def ml(production_model, **kwargs):
    return MLStrategy("baseline_rf", tracking_uri=production_model["store"]["uri"], **kwargs)


def test_ml_signal_has_exactly_the_spec_metadata(production_model, fresh):
    out = ml(production_model).generate_signal(fresh)
    assert out["signal"] in ("LONG", "SHORT", "FLAT")
    meta = out["metadata"]
    assert set(meta) == SPEC_KEYS | {"model_version", "model_uri"}
    assert meta["strategy_type"] == "ml_based" and meta["model_name"] == "baseline_rf"
    assert meta["model_version"] == "1" and meta["model_uri"] == "models:/baseline_rf/Production"
    assert meta["entry_price"] == fresh["close"].iloc[-1]
    assert 0 < meta["sl_distance"] < meta["tp_distance"]


def test_scalping_signal_format_and_both_satisfy_the_protocol(production_model, fresh):
    out = ScalpingEMARSI().generate_signal(fresh)
    assert set(out["metadata"]) == SPEC_KEYS | {"strategy_name"}
    assert out["metadata"]["strategy_type"] == "rule_based"
    assert isinstance(ScalpingEMARSI(), Strategy) and isinstance(ml(production_model), Strategy)


@pytest.mark.parametrize("make", [lambda pm: ml(pm), lambda pm: ScalpingEMARSI()])
def test_batch_signals_equal_single_bar_decisions(production_model, fresh, make):
    strategy = make(production_model)
    batch = strategy.generate_signals(fresh)
    for t in range(strategy.min_bars + 5, len(fresh), 47):
        one = strategy.generate_signal(fresh.iloc[: t + 1])
        assert one["signal"] == {-1: "SHORT", 0: "FLAT", 1: "LONG"}[int(batch["side"].iloc[t])]
        assert one["metadata"]["sl_distance"] == pytest.approx(batch["sl_distance"].iloc[t])


def test_ml_signals_respect_min_confidence(production_model, fresh):
    strict = ml(production_model, min_confidence=0.99).generate_signals(fresh)
    assert (strict["side"] == 0).all()
    loose = ml(production_model, min_confidence=0.34).generate_signals(fresh)
    best = loose[["p_SHORT", "p_FLAT", "p_LONG"]].to_numpy().argmax(axis=1)
    traded = loose["side"] != 0
    assert traded.any()
    assert (best[traded.to_numpy()] != 1).all()  # a trade is never on a FLAT-most-likely bar


def test_suppressed_signals_are_the_threshold_s_flat_bars(production_model, fresh):
    loose = ml(production_model, min_confidence=0.3).generate_signals(fresh)
    strict = ml(production_model, min_confidence=0.6).generate_signals(fresh)
    assert not loose["suppressed"].any()  # the best of three classes has at least 1/3
    # suppressed = a LONG/SHORT the loose threshold trades and the strict one turns FLAT
    became_flat = (loose["side"] != 0) & (strict["side"] == 0)
    assert strict["suppressed"].equals(became_flat) and became_flat.any()


def test_the_strategy_trades_what_the_model_learned(production_model, caplog):
    labels = production_model["result"].report["labels"]
    strategy = ml(production_model)
    stored = strategy.load().trademl["labels"]
    assert stored["method"] == "triple_barrier"  # the default training preset
    assert (strategy.sl_atr_mult, strategy.tp_atr_mult) == (
        stored["sl_atr_mult"],
        stored["tp_atr_mult"],
    )
    assert strategy.atr_period == stored["atr_period"]
    assert strategy.max_holding_bars == stored["horizon"] == 24
    assert strategy.confidence_sl_adjustment == 0.0  # the barrier is fixed: no tightening
    assert labels  # the training reported its labels
    with caplog.at_level("WARNING"):
        other = ml(production_model, sl_atr_mult=2.0, max_holding_bars=5)
        assert other.sl_atr_mult == 2.0 and other.max_holding_bars == 5
    assert "sl_atr_mult=2.0 differs from the model's 1.5" in caplog.text
    assert "max_holding_bars=5 differs from the model's 24" in caplog.text


def test_a_backtest_holds_for_the_label_horizon_and_reports_suppressed_signals(
    production_model, fresh
):
    from trademl.backtest import Backtest

    result = Backtest(fresh, ml(production_model, min_confidence=0.5)).run()
    assert result.settings["max_holding_bars"] == 24
    held = result.trades["exit_time"] - result.trades["entry_time"]
    assert (held <= pd.Timedelta(hours=23)).all()  # entry bar + 23 more: exit at the 24th close
    signals = result.signals.loc[pd.Timestamp(result.settings["start"]) :]
    assert result.metrics["signal_bars"] == (signals["side"] != 0).sum()
    assert result.metrics["suppressed_signals"] == signals["suppressed"].sum() > 0
    assert "more suppressed by the confidence threshold" in result.summary()


def test_one_row_decisions_start_no_thread_pool(production_model, fresh):
    strategy = ml(production_model)
    clf = strategy.load().model[-1]
    clf.set_params(n_jobs=-1)  # as a forest may be stored
    seen = []
    original = clf.predict_proba

    def spy(X):
        seen.append((len(X), clf.n_jobs))
        return original(X)

    clf.predict_proba = spy
    try:
        one = strategy.generate_signal(fresh)
        batch = strategy.generate_signals(fresh)
    finally:
        del clf.predict_proba
    assert seen[0] == (1, 1)  # the live path: one row, one thread
    assert seen[1][1] == -1 and clf.n_jobs == -1  # batches keep the model's setting
    side = {-1: "SHORT", 0: "FLAT", 1: "LONG"}[int(batch["side"].iloc[-1])]
    assert one["signal"] == side


def test_bad_trade_settings_are_refused():
    with pytest.raises(ConfigError, match="strategy.max_holding_bars=0 must be >= 1"):
        MLStrategy(max_holding_bars=0)
    with pytest.raises(ConfigError, match="confidence_sl_adjustment"):
        MLStrategy(confidence_sl_adjustment=1.5)
    with pytest.raises(ConfigError, match="or 'validated'"):
        MLStrategy(min_confidence="best")


def test_alias_and_full_uri_select_the_model(production_model, fresh):
    by_alias = ml(production_model, alias="champion")
    assert by_alias.uri == "models:/baseline_rf@champion" and by_alias.load().version == "1"
    by_uri = ml(production_model, model_uri="models:/baseline_rf/1")
    assert by_uri.generate_signal(fresh)["metadata"]["model_version"] == "1"


def test_feature_config_overrides(production_model, fresh):
    same_columns = ml(production_model, feature_config={"rsi_overbought": 75.0})
    same_columns.generate_signal(fresh)  # changes values, not columns: accepted
    with pytest.raises(ModelError, match="was not trained on"):
        ml(production_model, feature_config={"ema_periods": [5, 10]}).load()
    with pytest.raises(ConfigError, match="unknown key"):
        ml(production_model, feature_config={"ema_period": [5]}).load()


def test_too_little_history_says_how_much(production_model, fresh):
    with pytest.raises(InsufficientDataError, match="needs at least 51"):
        ml(production_model).generate_signal(fresh.iloc[:30])
    with pytest.raises(InsufficientDataError, match="needs at least 22"):
        ScalpingEMARSI().generate_signal(fresh.iloc[:10])


def test_missing_model_is_a_clear_error(production_model):
    with pytest.raises(ModelError, match="no registered model 'btc_rf'"):
        MLStrategy("btc_rf", tracking_uri=production_model["store"]["uri"]).load()
    with pytest.raises(ModelError, match="no version of 'baseline_rf' in stage 'Staging'"):
        ml(production_model, stage="Staging").load()


def test_refresh_picks_up_a_newly_promoted_version(production_model, compose, fresh):
    store = production_model["store"]
    strategy = ml(production_model)
    assert strategy.load().version == "1"
    assert strategy.refresh() is False
    new = train(compose(fast_overrides(store, "seed=5")))
    promote_model("baseline_rf", new.registered_version, tracking_uri=store["uri"])
    assert strategy.refresh() is True
    assert strategy.generate_signal(fresh)["metadata"]["model_version"] == "2"
    promote_model("baseline_rf", 1, tracking_uri=store["uri"])  # leave the fixture as found


def test_inference_helpers(production_model, fresh):
    model = ml(production_model).load()
    out = predict_signal(model.model, fresh, 0.55, model.trademl["features"])
    assert set(out["probabilities"]) == {"SHORT", "FLAT", "LONG"}
    assert out["confidence"] == pytest.approx(max(out["probabilities"].values()))
    sl, tp = calculate_signal_strength(100.0, 0.55)
    assert (sl, tp) == (pytest.approx(150.0), pytest.approx(300.0))
    sl, _ = calculate_signal_strength(100.0, 1.0)
    assert sl == pytest.approx(105.0)  # fully confident: 30% tighter stop
    sl, tp = calculate_signal_strength(np.array([100.0, 200.0]), np.array([0.55, 0.775]))
    np.testing.assert_allclose(sl, [150.0, 200.0 * 1.5 * 0.85])


def test_spec_integration_flow(production_model, fresh):
    """The spec's Module 14 example: signal -> RiskEngine order."""
    signal = ml(production_model, min_confidence=0.34).generate_signal(fresh)
    meta = signal["metadata"]
    side = 1 if signal["signal"] == "LONG" else -1
    order = RiskEngine().apply_risk_to_signal(
        signal=signal["signal"],
        equity=10_000,
        entry_price=meta["entry_price"],
        stop_loss_price=meta["entry_price"] - side * meta["sl_distance"],
        take_profit_price=meta["entry_price"] + side * meta["tp_distance"],
    )
    if signal["signal"] == "FLAT":
        assert not order.approved
    else:
        assert order.approved and order.risk_pct <= 1.0 + 1e-9
