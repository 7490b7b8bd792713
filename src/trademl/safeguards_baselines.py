"""Baselines of a backtest, run through the backtester's own engine: random signals and costs.

* :func:`random_signal_baseline`: ``n_runs`` backtests of random trades that reproduce the
  strategy's number of trades and each trade's length (bars held, as in ``trades.csv``) at
  random entry times, through the backtester's compiled bar step (:func:`trademl.backtest.step`:
  the same fills, fees, slippage and position sizing). Each random trade is sized like the
  strategy's trade it copies (the same stop distance relative to the price) but **has no stop
  and no target: it exits at the close of its last bar** (a market exit with slippage and fees),
  so that the lengths are kept exactly. Reversals are kept too: trades the strategy reversed
  into each other (an opposite signal closing one position and opening the next at the same
  open) form chains; every run keeps the number and sizes of the chains, deals the trades to
  the chain positions at random, and places the chains in a uniformly random order at
  uniformly random non-overlapping times in the backtest window (so even a strategy that is
  always in the market gets other reversal times). Directions are the strategy's own
  (``sides="strategy"``: the same long/short pattern, so the baseline tests the timing, not a
  long bias) or random (``"random"``: each chain flipped with probability 1/2). The p-value of
  the strategy's total return is ``(1 + #runs >= strategy) / (n_runs + 1)``.
* :func:`cost_sensitivity`: the same signals backtested again at multiples of the configured
  fees and slippage.

:mod:`trademl.safeguards` puts them together with the bootstrap intervals for a report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numba import njit

from trademl.backtest import (
    S_EQUITY,
    S_PEND,
    S_PEND_STOP,
    Backtest,
    BacktestResult,
    close_out,
    fill_params,
    new_state,
    step,
)
from trademl.errors import DataError
from trademl.risk import RiskConfig

__all__ = ["COST_MULTIPLIERS", "RandomBaseline", "cost_sensitivity", "random_signal_baseline"]

COST_MULTIPLIERS = (0.0, 0.5, 1.0, 1.5, 2.0)


@dataclass(frozen=True)
class RandomBaseline:
    """Total returns of random-signal runs beside the strategy's."""

    returns: np.ndarray  # total return of each run
    strategy_return: float
    trades: int  # the strategy's trades, reproduced by every run
    trades_made: np.ndarray  # per run: fewer only when sizing rejected a random trade
    held: np.ndarray  # (runs, trades): bars held by each random trade, -1 if not made
    decided_at: np.ndarray  # (runs, trades): row of the candles each trade was decided on
    directions: np.ndarray  # (runs, trades): +1 long, -1 short
    sides: str

    @property
    def n_runs(self) -> int:
        return int(self.returns.size)

    @property
    def p_value(self) -> float:
        """``(1 + #runs with a return >= the strategy's) / (n_runs + 1)``."""
        beaten_by = int(np.sum(self.returns >= self.strategy_return))
        return (1 + beaten_by) / (self.n_runs + 1)

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.returns, q))


# -- the random-signal baseline -------------------------------------------------------------------
@njit(cache=True)
def _random_runs_nb(open_, high, low, close, cash0, params, decide_at, side, sl_frac, hold):
    """Each row of ``decide_at`` (bars, in time order) is one run; returns the total return,
    the trades made and the bars each one was held."""
    runs, m = decide_at.shape
    n = close.size
    rf, mf, min_size, max_size, size_step, fee, slip, reverse, _ = params
    totals = np.empty(runs)
    made = np.zeros(runs, np.int64)
    held = np.full((runs, m), -1, np.int64)
    buf = np.empty((2, 9))
    for r in range(runs):
        state = new_state(cash0)
        j = 0
        cur = 0  # bars the open position is held for
        nxt = 0  # ... and the pending one
        for t in range(n):
            if state[S_PEND] != 0.0:
                cur = nxt  # the pending trade fills at this open
            p = (rf, mf, min_size, max_size, size_step, fee, slip, reverse, cur)
            decide = j < m and decide_at[r, j] == t
            sig = side[r, j] if decide else 0
            sl = sl_frac[r, j] * close[t] if decide else 0.0
            k = step(state, buf, open_[t], high[t], low[t], close[t], sig, sl, 0.0, decide, p)
            for q in range(k):
                if made[r] < m:
                    held[r, made[r]] = np.int64(buf[q, 1] - buf[q, 0] + 1.0)
                made[r] += 1
            if decide:
                if state[S_PEND] != 0.0:
                    state[S_PEND_STOP] = 0.0  # no stop: the trade ends after its length
                    nxt = hold[r, j]
                j += 1
        k = close_out(state, buf, close[n - 1], fee, slip)
        for q in range(k):
            if made[r] < m:
                held[r, made[r]] = np.int64(buf[q, 1] - buf[q, 0] + 1.0)
            made[r] += 1
        totals[r] = state[S_EQUITY] / cash0 - 1.0
    return totals, made, held


def _window(candles: pd.DataFrame, result: BacktestResult) -> int:
    """Row of ``candles`` where the backtest's window starts (checked against ``result``)."""
    idx = candles.index
    if result.signals is None or not result.signals.index.equals(idx):
        raise DataError("the safeguards need the candles the backtest ran on (and its signals)")
    start = int(idx.get_indexer([result.equity.index[0]])[0])
    if start < 0 or idx[-1] != result.equity.index[-1]:
        raise DataError("the safeguards need the candles the backtest ran on")
    return start


def _risk(result: BacktestResult) -> RiskConfig:
    return RiskConfig(**{k[5:]: v for k, v in result.settings.items() if k.startswith("risk.")})


def _schedules(trades, sl_frac, start, slots, n_runs, sides, rng):
    """Random decision bars of the strategy's trades.

    The strategy's trades form chains (trades reversed into each other); each run keeps the
    chains' sizes and sides pattern, deals the trades (length and sizing) to the chain
    positions at random (a trade followed by a reversal needs 2 bars or more), and places the
    chains in a random order at uniformly random non-overlapping positions among ``slots``
    decision bars. Returns ``(decide_at, side, sl_frac, hold)``, each ``(n_runs, trades)`` in
    time order.
    """
    m = len(trades)
    length = trades["bars_held"].to_numpy(np.int64)
    side = np.where(trades["side"].to_numpy() == "LONG", 1, -1)
    if sides == "long":
        side[:] = 1
    entry = trades["_entry"].to_numpy()
    linked = (trades["exit_reason"].to_numpy()[:-1] == "signal") & (
        entry[1:] == trades["_exit"].to_numpy()[:-1]
    )
    reversed_ = np.concatenate((linked, [False]))  # position i is reversed into i + 1
    chain = np.concatenate(([0], np.cumsum(~linked)))  # chain id of every position
    first = np.flatnonzero(np.concatenate(([True], ~linked)))
    k = first.size
    # a trade reversed into the next leaves its exit bar to the next one: occupancy L - 1
    free = slots - int(length.sum() - reversed_.sum())
    if free < 0:  # cannot happen for the trades of one backtest
        raise DataError("the strategy's trades do not fit in its window")
    at_link, at_end = np.flatnonzero(reversed_), np.flatnonzero(~reversed_)
    long_enough, short = np.flatnonzero(length >= 2), np.flatnonzero(length < 2)
    decide_at = np.empty((n_runs, m), np.int64)
    sides_out = np.empty((n_runs, m), np.int64)
    fracs = np.empty((n_runs, m))
    hold = np.empty((n_runs, m), np.int64)
    for r in range(n_runs):
        deal = np.empty(m, np.int64)  # the trade at each position
        pick = rng.permutation(long_enough)
        deal[at_link] = pick[: at_link.size]
        deal[at_end] = rng.permutation(np.concatenate((pick[at_link.size :], short)))
        occupy = length[deal] - reversed_
        offset = np.concatenate(([0], np.cumsum(occupy)[:-1]))
        offset -= offset[first][chain]  # decision bar within the chain
        occ = np.bincount(chain, weights=occupy, minlength=k).astype(np.int64)
        order = rng.permutation(k)
        pos = np.sort(rng.choice(free + k, size=k, replace=False))
        at = np.empty(k, np.int64)
        at[order] = start + pos - np.arange(k) + np.cumsum(occ[order]) - occ[order]
        dec = at[chain] + offset
        flip = rng.choice((-1, 1), size=k) if sides == "random" else np.ones(k, np.int64)
        by_time = np.argsort(dec)
        decide_at[r], sides_out[r] = dec[by_time], (side * flip[chain])[by_time]
        fracs[r], hold[r] = sl_frac[deal][by_time], length[deal][by_time]
    return decide_at, sides_out, fracs, hold


def random_signal_baseline(
    candles: pd.DataFrame,
    result: BacktestResult,
    *,
    n_runs: int = 200,
    seed: int = 0,
    sides: Literal["strategy", "random"] = "strategy",
) -> RandomBaseline | None:
    """Total returns of ``n_runs`` random-signal backtests with the strategy's trade lengths.

    Parameters
    ----------
    candles
        The candles the backtest ran on (``result`` keeps its signals and fill settings).
    result
        The strategy's backtest.
    n_runs
        Number of random runs.
    seed
        Seed of the random entry times (and directions).
    sides
        ``"strategy"``: the strategy's own directions, in random order; ``"random"``: each
        chain of trades flipped with probability 1/2 (only longs if shorts are not allowed).

    Returns
    -------
    RandomBaseline or None
        ``None`` when the strategy made no trade (there is nothing to reproduce).

    Notes
    -----
    See the module docstring: random trades are sized like the strategy's trade they copy,
    have no stop or target and exit at the close of their last bar, with the same fees and
    slippage; trades reversed into each other stay back to back.
    """
    if n_runs < 1:
        raise ValueError(f"n_runs={n_runs!r} must be >= 1")
    if sides not in ("strategy", "random"):
        raise ValueError(f"sides={sides!r} is not valid; choose strategy or random")
    if result.trades.empty:
        return None
    start = _window(candles, result)
    idx = candles.index
    trades = result.trades.assign(
        _entry=idx.get_indexer(result.trades["entry_time"]),
        _exit=idx.get_indexer(result.trades["exit_time"]),
    )
    close = candles["close"].to_numpy(np.float64)
    decision = trades["_entry"].to_numpy() - 1
    sl_frac = result.signals["sl_distance"].to_numpy(np.float64)[decision] / close[decision]
    risk = _risk(result)
    rng = np.random.default_rng(seed)
    mode = sides if sides == "strategy" or risk.allow_short else "long"
    schedule = _schedules(trades, sl_frac, start, len(idx) - 1 - start, n_runs, mode, rng)
    s = result.settings
    params = fill_params(
        risk,
        fees_bps=s["fees_bps"],
        slippage_bps=s["slippage_bps"],
        on_opposite=s["on_opposite"],
        max_holding_bars=None,
    )
    arrays = [candles[c].to_numpy(np.float64) for c in ("open", "high", "low")]
    totals, made, held = _random_runs_nb(*arrays, close, float(s["cash"]), params, *schedule)
    return RandomBaseline(
        returns=totals,
        strategy_return=float(result.metrics["total_return"]),
        trades=len(trades),
        trades_made=made,
        held=held,
        decided_at=schedule[0],
        directions=schedule[1],
        sides=sides,
    )


# -- cost sensitivity -----------------------------------------------------------------------------
def cost_sensitivity(
    candles: pd.DataFrame,
    result: BacktestResult,
    multipliers: Sequence[float] = COST_MULTIPLIERS,
) -> pd.DataFrame:
    """The same signals backtested at ``multipliers`` x the configured fees and slippage.

    Returns
    -------
    DataFrame
        One row per multiplier: ``multiplier``, ``fees_bps``, ``slippage_bps``,
        ``total_return``, ``sharpe``, ``max_drawdown``, ``trades``, ``total_fees``.
    """
    start = _window(candles, result)
    s = result.settings
    rows = []
    for x in multipliers:
        if not x >= 0:
            raise ValueError(f"cost multiplier {x!r} must be >= 0")
        rerun = Backtest(
            candles,
            result.signals,
            cash=s["cash"],
            risk=_risk(result),
            fees_bps=s["fees_bps"] * x,
            slippage_bps=s["slippage_bps"] * x,
            on_opposite=s["on_opposite"],
            max_holding_bars=s["max_holding_bars"],
            start=start,
            periods_per_year=s["periods_per_year"],
        ).run()
        m = rerun.metrics
        rows.append(
            {
                "multiplier": float(x),
                "fees_bps": s["fees_bps"] * x,
                "slippage_bps": s["slippage_bps"] * x,
                **{k: m[k] for k in ("total_return", "sharpe", "max_drawdown", "trades")},
                "total_fees": m["total_fees"],
            }
        )
    return pd.DataFrame(rows)
