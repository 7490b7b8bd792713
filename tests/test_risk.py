"""RiskEngine: the spec's worked example exactly, and every rejection reason."""

from __future__ import annotations

import pytest

from trademl import ConfigError
from trademl.risk import RiskConfig, RiskEngine


def test_spec_worked_example():
    order = RiskEngine(
        {"risk_per_trade": 0.01, "max_position_fraction": 0.999}
    ).apply_risk_to_signal(
        "LONG",
        equity=10_000,
        entry_price=50_000,
        stop_loss_price=50_000 - 475.30,
        take_profit_price=50_000 + 1425.90,
    )
    assert order.approved
    assert order.size == pytest.approx(0.1998, abs=1e-12)  # capped: 1% risk would be 0.2104
    assert order.position_value == pytest.approx(9990.0)
    assert round(order.risk_amount) == 95 and round(order.risk_pct, 2) == 0.95
    assert order.side == "LONG" and order.take_profit == pytest.approx(51425.90)


def test_risk_based_size_when_the_cap_does_not_bind():
    order = RiskEngine().apply_risk_to_signal("SHORT", 10_000, 100.0, 102.0, 94.0)
    assert order.size == pytest.approx(50.0)  # 100 risk / 2.0 per unit
    assert order.risk_amount == pytest.approx(100.0) and order.risk_pct == pytest.approx(1.0)


def test_fees_count_in_the_risk_and_lots_round_down():
    engine = RiskEngine({"size_step": 0.5}, fees_bps=10)
    order = engine.apply_risk_to_signal("LONG", 10_000, 100.0, 98.0)
    # risk per unit = 2.0 + 2 * 0.001 * 100 = 2.2 -> 45.45 units -> 45.0 in steps of 0.5
    assert order.size == 45.0
    assert order.risk_amount == pytest.approx(45.0 * 2.2)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("FLAT", 10_000, 100.0, 99.0), "FLAT signal"),
        (("LONG", 10_000, 100.0, 101.0), "must be below the entry"),
        (("SHORT", 10_000, 100.0, 99.0), "must be above the entry"),
        (("LONG", 10_000, 100.0, 100.0), "zero distance"),
        (("LONG", 10_000, 100.0, 99.0, 98.0), "take profit 98.0 must be above"),
        (("LONG", 0, 100.0, 99.0), "equity 0 must be positive"),
        (("HOLD", 10_000, 100.0, 99.0), "unknown signal"),
    ],
)
def test_rejections_say_why(args, reason):
    order = RiskEngine().apply_risk_to_signal(*args)
    assert not order.approved and reason in order.reason
    assert "REJECTED" in str(order)


def test_size_limits_and_short_switch():
    assert (
        "below the minimum"
        in RiskEngine({"min_size": 100}).apply_risk_to_signal("LONG", 10_000, 100.0, 98.0).reason
    )
    assert RiskEngine({"max_size": 3}).apply_risk_to_signal("LONG", 10_000, 100.0, 98.0).size == 3
    assert (
        "disabled"
        in RiskEngine({"allow_short": False})
        .apply_risk_to_signal("SHORT", 10_000, 100.0, 102.0)
        .reason
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"risk_per_trade": 0}, {"risk_per_trade": 2}, {"max_position_fraction": 0}, {"min_size": -1}],
)
def test_bad_risk_config(kwargs):
    with pytest.raises(ConfigError):
        RiskConfig(**kwargs)


def test_one_fee_setting():
    """The fee is an execution setting (backtest.fees_bps), not a risk limit: the old
    risk.fee_bps, which the backtester ignored, is refused with where it went."""
    with pytest.raises(ConfigError, match="risk.fee_bps was removed: the one fee is backtest"):
        RiskEngine({"fee_bps": 10})
    with pytest.raises(ConfigError, match="fees_bps=-1 must be in"):
        RiskEngine(fees_bps=-1)
