"""Statistical safeguards: random-signal baseline, bootstrap intervals, PSR/DSR, cost table."""

from __future__ import annotations

import functools
import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trademl import ConfigError, generate_ohlcv
from trademl.backtest import Backtest
from trademl.safeguards import compute_safeguards, cost_sensitivity, random_signal_baseline
from trademl.safeguards_stats import (
    annualised_sharpe,
    bootstrap_ci,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    return_moments,
)
from trademl.tracking import finite_metrics

from .conftest import client_for, ohlcv_frames


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return generate_ohlcv(3000, seed=11, momentum=0.3)


def frame(df: pd.DataFrame, sides: np.ndarray, *, stop: float) -> pd.DataFrame:
    """A signal frame: ``sides`` per bar, stops ``stop`` x close away, no target."""
    close = df["close"].to_numpy()
    return pd.DataFrame(
        {"side": sides.astype(np.int64), "sl_distance": stop * close, "tp_distance": 0.0},
        index=df.index,
    )


def random_sides(n: int, seed: int, share: float = 0.03) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < share, rng.choice((-1, 1), n), 0)


def test_random_runs_keep_the_number_of_trades_and_every_length(bars):
    """Reversals (chains of trades) included: every run makes the strategy's trades, with
    exactly the strategy's multiset of bars held, at other times."""
    result = Backtest(bars, frame(bars, random_sides(len(bars), 1), stop=0.02)).run()
    reasons = set(result.trades["exit_reason"])
    assert {"signal", "stop"} <= reasons  # chains of reversals and stopped trades
    base = random_signal_baseline(bars, result, n_runs=100, seed=3)
    lengths = np.sort(result.trades["bars_held"].to_numpy())
    assert (base.trades_made == len(result.trades)).all()
    assert all(np.array_equal(np.sort(row), lengths) for row in base.held)
    # the strategy's own long/short mix, at random times that differ between runs
    assert (base.directions == 1).sum(axis=1).tolist() == [
        (result.trades["side"] == "LONG").sum()
    ] * 100
    assert len({tuple(row) for row in base.decided_at}) == 100
    start = bars.index.get_loc(result.equity.index[0])
    assert base.decided_at.min() >= start and base.decided_at.max() <= len(bars) - 2


def test_an_always_invested_strategy_fits_only_with_its_reversals_kept(bars):
    """Reversing every 7 bars, the trades hold one bar more than the window has (each exit
    bar is the next entry bar): they fit only as back-to-back chains."""
    sides = np.zeros(len(bars), np.int64)
    sides[::7] = np.resize([1, -1], sides[::7].size)
    result = Backtest(bars, frame(bars, sides, stop=0.5)).run()
    assert result.metrics["exposure"] > 0.99
    assert result.trades["bars_held"].sum() > len(bars) - 1
    base = random_signal_baseline(bars, result, n_runs=10, seed=0, sides="random")
    lengths = np.sort(result.trades["bars_held"].to_numpy())
    assert (base.trades_made == len(lengths)).all()
    assert all(np.array_equal(np.sort(row), lengths) for row in base.held)
    # no free bar left, yet the reversals fall at other times in every run
    assert len({tuple(row) for row in base.decided_at}) == 10


@given(
    df=ohlcv_frames(),
    marks=arrays(np.int64, 140, elements=st.sampled_from([0, 0, 0, -1, 1])),
    opposite=st.sampled_from(["reverse", "ignore"]),
    hold=st.sampled_from([None, 1, 3]),
)
def test_any_trades_fit_and_keep_their_lengths(df, marks, opposite, hold):
    """Whatever the trades (dense, reversed, one bar long, open at the end), every random run
    places them all in the window and holds each for the strategy's number of bars, unless
    it ran out of equity first."""
    kw = {"on_opposite": opposite, "max_holding_bars": hold}
    result = Backtest(df, frame(df, marks[: len(df)], stop=0.02), start=3, **kw).run()
    base = random_signal_baseline(df, result, n_runs=20, seed=1)
    if result.trades.empty:
        assert base is None
        return
    lengths = np.sort(result.trades["bars_held"].to_numpy())
    for made, held, total in zip(base.trades_made, base.held, base.returns, strict=True):
        assert made == len(lengths) or total <= -1.0
        if made == len(lengths):
            assert np.array_equal(np.sort(held), lengths)
    assert base.decided_at.min() >= 3 and base.decided_at.max() <= len(df) - 2


def test_random_trades_are_filled_by_the_backtester_itself(bars):
    """A random run equals the engine on the same decisions: trades of 5 bars, stops too far
    to be reached, each run rebuilt as a signal frame and backtested."""
    sides = random_sides(len(bars), 2)
    sides[-10:] = 0  # every trade lasts its 5 bars
    kw = {"on_opposite": "ignore", "max_holding_bars": 5, "fees_bps": 10.0, "slippage_bps": 2.0}
    result = Backtest(bars, frame(bars, sides, stop=0.5), **kw).run()
    assert set(result.trades["bars_held"]) == {5}
    base = random_signal_baseline(bars, result, n_runs=5, seed=0)
    for r in range(5):
        planned = np.zeros(len(bars), np.int64)
        planned[base.decided_at[r]] = base.directions[r]
        rerun = Backtest(bars, frame(bars, planned, stop=0.5), **kw).run()
        assert len(rerun.trades) == len(result.trades)
        assert rerun.metrics["total_return"] == pytest.approx(base.returns[r], abs=1e-12)


def test_perfect_foresight_beats_every_random_run(bars):
    close, open_ = bars["close"].to_numpy(), bars["open"].to_numpy()
    sides = np.zeros(len(bars), np.int64)
    for t in range(0, len(bars) - 12, 12):  # long or short on the next 5 bars' move
        sides[t] = 1 if close[t + 5] > open_[t + 1] else -1
    kw = {"on_opposite": "ignore", "max_holding_bars": 5}
    result = Backtest(bars, frame(bars, sides, stop=0.5), **kw).run()
    base = random_signal_baseline(bars, result, n_runs=99, seed=0)
    assert base.p_value == pytest.approx(1 / 100)
    assert base.returns.max() < result.metrics["total_return"]


def test_p_values_of_random_signals_are_spread_out(bars):
    """Under the null the p-value is about uniform: over 8 random strategies it is not always
    small (all 8 below 0.1 would have probability 1e-8)."""
    p = []
    for seed in range(8):
        result = Backtest(bars, frame(bars, random_sides(len(bars), 100 + seed), stop=0.02)).run()
        p.append(random_signal_baseline(bars, result, n_runs=49, seed=seed).p_value)
    assert sum(v > 0.1 for v in p) >= 3, p
    assert 0.15 < np.mean(p) < 0.85, p


def test_bootstrap_interval_covers_the_true_sharpe_of_iid_returns():
    mu, sd, ppy, n = 0.001, 0.01, 252.0, 500
    true = mu / sd * math.sqrt(ppy)
    sharpe = functools.partial(annualised_sharpe, periods_per_year=ppy)
    rng = np.random.default_rng(0)
    hits = 0
    for rep in range(20):
        ci = bootstrap_ci(rng.normal(mu, sd, n), sharpe, n_boot=300, seed=rep)
        assert ci.low < ci.estimate < ci.high and ci.block == 8  # round(500 ** (1/3))
        hits += ci.contains(true)
    assert hits >= 16


def test_longer_blocks_widen_the_interval_on_autocorrelated_returns():
    rng = np.random.default_rng(1)
    noise, r = rng.normal(0.0005, 0.01, 3000), np.empty(3000)
    r[0] = noise[0]
    for t in range(1, r.size):  # AR(1), phi = 0.7: the mean varies ~2.4x more than iid
        r[t] = 0.7 * r[t - 1] + noise[t]
    sharpe = functools.partial(annualised_sharpe, periods_per_year=252.0)
    iid = bootstrap_ci(r, sharpe, n_boot=400, block=1)
    blocks = bootstrap_ci(r, sharpe, n_boot=400, block=60)
    assert blocks.high - blocks.low > 1.6 * (iid.high - iid.low)


def test_bootstrap_is_reproducible_and_checks_its_arguments():
    r = np.random.default_rng(2).normal(0, 1, 100)
    assert bootstrap_ci(r, np.mean, seed=5) == bootstrap_ci(r, np.mean, seed=5)
    with pytest.raises(ValueError, match="block=200"):
        bootstrap_ci(r, np.mean, block=200)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(r, np.mean, alpha=1.5)


def test_cost_table_from_zero_fees_down_as_costs_rise(bars):
    result = Backtest(bars, frame(bars, random_sides(len(bars), 4), stop=0.02)).run()
    table = cost_sensitivity(bars, result, (0, 0.5, 1, 1.5, 2))
    assert table["multiplier"].tolist() == [0, 0.5, 1, 1.5, 2]
    assert table["fees_bps"].tolist() == [0, 5, 10, 15, 20]
    assert table.loc[0, "total_fees"] == 0.0 and table.loc[1, "total_fees"] > 0
    assert table["total_return"].is_monotonic_decreasing
    assert table["sharpe"].is_monotonic_decreasing
    assert table.loc[2, "total_return"] == pytest.approx(result.metrics["total_return"])
    assert (table["trades"] == len(result.trades)).all()


def test_without_trades_everything_is_not_available_not_zero(bars):
    result = Backtest(bars, frame(bars, np.zeros(len(bars)), stop=0.02)).run()
    guard = compute_safeguards(bars, result, random_runs=10, bootstrap=10)
    assert guard.random is None and guard.sharpe_ci is None and guard.costs is None
    metrics = guard.metrics()
    assert metrics["flat_total_return"] == 0.0
    assert all(math.isnan(v) for k, v in metrics.items() if k != "flat_total_return")
    assert finite_metrics(metrics) == {"flat_total_return": 0.0}
    text = "\n".join(guard.summary())
    assert text.count("n/a (no trades)") == 3 and "p = " not in text


def test_summary_and_metrics_of_a_strategy_with_trades(bars):
    result = Backtest(bars, frame(bars, random_sides(len(bars), 5), stop=0.02)).run()
    result.note = "IN-SAMPLE: test"
    guard = compute_safeguards(bars, result, random_runs=20, bootstrap=50, block=10)
    lines = guard.summary()
    assert len(lines) == 4 and all(line.startswith("[IN-SAMPLE: test] ") for line in lines)
    assert "always-FLAT +0.00% (Sharpe n/a)" in lines[0]
    assert "fees (10 bps) and slippage (2 bps) per side: x0 -24.32% (Sharpe" in lines[3]
    m = guard.metrics()
    assert m["random_runs"] == 20 and m["bootstrap_block"] == 10
    assert m["sharpe_ci_low"] < result.metrics["sharpe"] < m["sharpe_ci_high"]
    assert m["total_return_ci_low"] < result.metrics["total_return"] < m["total_return_ci_high"]
    assert m["cost_x1_total_return"] == pytest.approx(result.metrics["total_return"])
    assert {"cost_x0.5_sharpe", "cost_x2_trades", "random_p_value", "psr"} <= set(m)
    assert 0 < m["random_p_value"] <= 1 and 0 <= m["psr"] <= 1
    with pytest.raises(ConfigError, match="block=5000 is longer than the backtest's 2999"):
        compute_safeguards(bars, result, random_runs=1, bootstrap=1, block=5000)


# -- probabilistic and deflated Sharpe ratios, from the formulas by hand -------------------------
def test_psr_by_hand():
    # sr 0.1 over 252 normal returns: z = 0.1 sqrt(251) / sqrt(1 + 2/4 0.01) = 1.580352
    assert probabilistic_sharpe_ratio(0.1, 252, 0.0, 3.0) == pytest.approx(0.942987, abs=1e-6)
    # skew -1, kurt 6, benchmark 0.05: z = 0.05 sqrt(99) / sqrt(1 + 0.1 + 5/4 0.01) = 0.471669
    assert probabilistic_sharpe_ratio(0.1, 100, -1.0, 6.0, 0.05) == pytest.approx(
        NormalDist().cdf(0.05 * math.sqrt(99) / math.sqrt(1.1125)), abs=1e-12
    )
    assert probabilistic_sharpe_ratio(0.1, 100, -1.0, 6.0, 0.05) == pytest.approx(
        0.681419, abs=1e-6
    )
    assert probabilistic_sharpe_ratio(0.0, 50, 0.0, 3.0) == 0.5


def test_dsr_reproduces_bailey_and_lopez_de_prado_example():
    """Their numerical example (2014): 100 trials with annualised Sharpe variance 1/2, the best
    at an annualised 2.5 over 1,250 daily returns with skew -3 and kurtosis 10: the expected
    maximum is 0.1132 per day and the DSR 0.9004."""
    v = 0.5 / 250
    assert expected_max_sharpe(100, v) == pytest.approx(0.1132, abs=5e-5)
    # sqrt(v) * (0.42278 * Phi^-1(0.99) + 0.57722 * Phi^-1(1 - 1/(100 e)))
    z = 0.4227843350984671 * 2.3263478740408408 + 0.5772156649015329 * 2.680210
    assert expected_max_sharpe(100, v) == pytest.approx(math.sqrt(v) * z, abs=1e-6)
    dsr = deflated_sharpe_ratio(2.5 / math.sqrt(250), 1250, -3.0, 10.0, 100, v)
    assert dsr == pytest.approx(0.9004, abs=5e-4)
    assert expected_max_sharpe(1, v) == 0.0  # one trial: nothing selected
    assert deflated_sharpe_ratio(0.1, 252, 0.0, 3.0, 1, v) == probabilistic_sharpe_ratio(
        0.1, 252, 0.0, 3.0
    )


def test_return_moments_of_a_known_series():
    r = np.array([0.01, -0.02, 0.03, 0.0, 0.01])
    sr, n, skew, kurt = return_moments(r)
    d = r - r.mean()
    assert n == 5 and sr == pytest.approx(r.mean() / r.std(ddof=1))
    assert skew == pytest.approx(np.mean(d**3) / np.mean(d**2) ** 1.5)
    assert kurt == pytest.approx(np.mean(d**4) / np.mean(d**2) ** 2)
    assert math.isnan(return_moments(np.zeros(10))[0])


# -- configuration --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("backtest.safeguards.random_runs=0", r"random_runs=0 must be > 0"),
        ("backtest.safeguards.bootstrap=-5", r"bootstrap=-5 must be > 0"),
        ("backtest.safeguards.block=2.5", r"block=2.5 must be an integer or null"),
        ("backtest.safeguards.cost_multipliers=[1,-1]", r"cost_multipliers=\[1, -1\] must be"),
        ("backtest.safeguards.cost_multipliers=[]", r"must be a non-empty list"),
        ("backtest.safeguards.sides=both", r"sides='both' must be one of strategy, random"),
        ("backtest.safeguards.randm_runs=5", r"did you mean 'backtest.safeguards.random_runs'"),
        ("backtest.safeguards=5", r"backtest.safeguards=5 must be a mapping of enabled"),
    ],
)
def test_bad_safeguard_settings_are_one_clear_error(compose, override, message):
    from trademl.schemas import validate_config

    with pytest.raises(ConfigError, match=message):
        validate_config(compose(["data=synthetic", override], "backtest"), "backtest")


def test_cost_presets_per_asset_class(compose):
    for preset, costs in (("", (10.0, 2.0)), ("crypto", (10.0, 2.0)), ("us_equity", (1.0, 1.0))):
        cfg = compose([f"backtest/costs={preset}"] if preset else [], "backtest")
        assert (cfg.backtest.fees_bps, cfg.backtest.slippage_bps) == costs
    cfg = compose(["backtest/costs=fx_major"], "walkforward")
    assert (cfg.backtest.fees_bps, cfg.backtest.slippage_bps) == (0.5, 0.5)
    cfg = compose(["backtest/costs=fx_major", "backtest.fees_bps=3"], "backtest")
    assert (cfg.backtest.fees_bps, cfg.backtest.slippage_bps) == (3, 0.5)  # a value still wins


# -- end to end -----------------------------------------------------------------------------------
def test_backtest_run_logs_the_safeguards_beside_its_metrics(store, compose):
    from trademl.backtest_run import run_backtest

    overrides = [
        f"mlflow.tracking_uri={store['uri']}",
        f"mlflow.artifact_root={store['artifacts']}",
        "data=synthetic",
        "data.n=2000",
        "strategy=scalping_ema_rsi",
    ]
    out = run_backtest(compose(overrides, "backtest"))
    assert out.safeguards is not None and out.safeguards.random.n_runs == 200
    client = client_for(store)
    run = client.get_run(out.run_id)
    expected = finite_metrics(out.safeguards.metrics())
    assert {
        "random_p_value",
        "sharpe_ci_low",
        "total_return_ci_high",
        "cost_x0_total_return",
    } <= set(expected)
    assert {k: run.data.metrics[k] for k in expected} == pytest.approx(expected)
    assert run.data.metrics["sharpe"] == pytest.approx(out.result.metrics["sharpe"])
    files = {a.path for a in client.list_artifacts(out.run_id, "safeguards")}
    assert files == {
        "safeguards/summary.txt",
        "safeguards/cost_sensitivity.csv",
        "safeguards/random_returns.csv",
        "safeguards/random_baseline.png",
    }
    table = pd.read_csv(client.download_artifacts(out.run_id, "safeguards/cost_sensitivity.csv"))
    assert table["multiplier"].tolist() == [0, 0.5, 1, 1.5, 2]
    assert run.data.params["backtest.safeguards.random_runs"] == "200"
    off = run_backtest(compose([*overrides, "backtest.safeguards.enabled=false"], "backtest"))
    assert off.safeguards is None
    assert "random_p_value" not in client.get_run(off.run_id).data.metrics
