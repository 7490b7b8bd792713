"""The backtester: any strategy over history, without look-ahead, with stated fills and costs.

Rules (the fill model is :mod:`trademl.fills`, shared with the live paper broker):

1. The strategy's signals come from one causal batch (``strategy.generate_signals``): the
   signal of bar ``t`` uses bars up to ``t`` and is decided on the close of ``t``.
2. A LONG/SHORT signal while flat is sized by the RiskEngine's rule on the equity at the close
   of ``t``, with the stop and target as absolute levels ``close[t] -/+ sl_distance`` and
   ``close[t] +/- tp_distance``, and fills at the open of ``t+1`` plus slippage.
3. Stops and targets are checked within every bar from the entry bar on; when one bar could
   hit both, the stop is assumed first; gaps fill at the open.
4. One position at a time, long or short. An opposite signal while in a position reverses it
   at the next open (``on_opposite="reverse"``, default) or is ignored (``"ignore"``);
   same-side signals are ignored. ``max_holding_bars`` closes a position at the close of its
   N-th bar.
5. Fees (``fees_bps`` per side) on every fill, slippage (``slippage_bps``) on market fills;
   position sizing counts the round-trip fees. Open positions close at the last close.
6. Signals before ``start`` are ignored (the history before it only warms up indicators).

The bar loop is compiled with numba.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from trademl._config import check_choice, coerce_config
from trademl.data import validate_ohlcv
from trademl.errors import ConfigError, DataError
from trademl.fills import (
    EXIT_END,
    EXIT_NONE,
    EXIT_REASONS,
    EXIT_SIGNAL,
    EXIT_TIME,
    entry_price,
    exit_in_bar,
    market_exit_price,
    position_size,
)
from trademl.performance import observed_periods_per_year, performance_metrics
from trademl.risk import RiskConfig

__all__ = [
    "Backtest",
    "BacktestResult",
    "advance",
    "close_out",
    "fill_params",
    "new_state",
    "place_order",
    "step",
    "wants_order",
]

_TRADE_COLUMNS = (
    "entry_i",
    "exit_i",
    "side",
    "size",
    "entry_price",
    "exit_price",
    "fees",
    "pnl",
    "reason",
)


# Position state of one instrument, a float64 vector shared by the backtester's loop and the
# live runtime (which journals it after every candle).
S_CASH, S_POS, S_SIZE, S_ENTRY, S_STOP, S_TARGET, S_ENTRY_FEE, S_ENTRY_I = range(8)
S_PEND, S_PEND_SIZE, S_PEND_STOP, S_PEND_TARGET, S_EQUITY, S_BAR, S_MARK = range(8, 15)
STATE_SIZE = 15  # S_MARK (the last close) came last: a 14-long journaled book lacks only it


@njit(cache=True)
def new_state(cash: float) -> np.ndarray:
    """A flat book with ``cash``: no position, no pending order, no bar seen."""
    state = np.zeros(STATE_SIZE)
    state[S_CASH] = state[S_EQUITY] = cash
    state[S_ENTRY_I] = -1.0
    state[S_BAR] = -1.0
    state[S_MARK] = np.nan
    return state


def fill_params(
    risk: RiskConfig,
    *,
    fees_bps: float,
    slippage_bps: float,
    on_opposite: str,
    max_holding_bars: int | None,
) -> tuple:
    """The parameters :func:`step` takes, from the risk limits and the fill settings.

    Sizing counts the fill fees (``fees_bps``): one fee setting for both.
    """
    return (
        float(risk.risk_per_trade),
        float(risk.max_position_fraction),
        float(risk.min_size),
        float(risk.max_size or 0.0),
        float(risk.size_step or 0.0),
        fees_bps / 1e4,
        slippage_bps / 1e4,
        on_opposite == "reverse",
        int(max_holding_bars or 0),
    )


@njit(cache=True, inline="always")
def _close(state, out, k, t, px, fee_rate, reason):
    """Close the position at ``px``: cash, and a trade row in ``out[k]``; returns k + 1."""
    pos, size, entry_px = state[S_POS], state[S_SIZE], state[S_ENTRY]
    fee = fee_rate * px * size
    gross = pos * size * (px - entry_px)
    state[S_CASH] += gross - fee
    row = out[k]
    row[0], row[1], row[2], row[3], row[4] = state[S_ENTRY_I], t, pos, size, entry_px
    row[5], row[6], row[7], row[8] = (
        px,
        state[S_ENTRY_FEE] + fee,
        gross - state[S_ENTRY_FEE] - fee,
        reason,
    )
    state[S_POS] = 0.0
    return k + 1


@njit(cache=True, inline="always")
def advance(state, out, o, h, lo, c, params):
    """The first part of :func:`step`: fill a pending order at the open (closing first on a
    reversal), check the position's stop/target/time exit within the bar and mark to market at
    the close (``S_EQUITY``, ``S_MARK``). Returns the number of trades written to ``out``."""
    fee_rate, slippage, max_hold = params[5], params[6], params[8]
    t = state[S_BAR] + 1.0
    state[S_BAR] = t
    k = 0
    pend = state[S_PEND]
    if pend != 0.0:
        if state[S_POS] != 0.0:  # reversal: close at this open first
            k = _close(
                state,
                out,
                k,
                t,
                market_exit_price(o, state[S_POS], slippage),
                fee_rate,
                EXIT_SIGNAL,
            )
        px = entry_price(o, pend, slippage)
        state[S_ENTRY_FEE] = fee_rate * px * state[S_PEND_SIZE]
        state[S_CASH] -= state[S_ENTRY_FEE]
        state[S_POS], state[S_SIZE], state[S_ENTRY] = pend, state[S_PEND_SIZE], px
        state[S_STOP], state[S_TARGET], state[S_ENTRY_I] = (
            state[S_PEND_STOP],
            state[S_PEND_TARGET],
            t,
        )
        state[S_PEND] = 0.0
    pos = state[S_POS]
    if pos != 0.0:
        reason, px = exit_in_bar(pos, o, h, lo, state[S_STOP], state[S_TARGET], slippage)
        if reason == EXIT_NONE and max_hold > 0 and t - state[S_ENTRY_I] + 1 >= max_hold:
            reason, px = EXIT_TIME, market_exit_price(c, pos, slippage)
        if reason != EXIT_NONE:
            k = _close(state, out, k, t, px, fee_rate, reason)
    pos = state[S_POS]
    equity = state[S_CASH]
    if pos != 0.0:
        equity += pos * state[S_SIZE] * (c - state[S_ENTRY])
    state[S_EQUITY] = equity
    state[S_MARK] = c
    return k


@njit(cache=True, inline="always")
def wants_order(state, sig, sl_dist, params):
    """Whether the bar's signal asks for a new order: a side while flat, or the opposite side
    of the position when reversing; with a positive stop distance."""
    pos = state[S_POS]
    return sig != 0 and (pos == 0.0 or (params[7] and sig == -pos)) and sl_dist > 0.0


@njit(cache=True, inline="always")
def place_order(state, sig, sz, c, sl_dist, tp_dist):
    """A pending order of ``sz`` units for the next open, with its stop and target levels."""
    state[S_PEND], state[S_PEND_SIZE] = sig, sz
    state[S_PEND_STOP] = c - sig * sl_dist
    state[S_PEND_TARGET] = c + sig * tp_dist if tp_dist > 0.0 else 0.0


@njit(cache=True, inline="always")
def step(state, out, o, h, lo, c, sig, sl_dist, tp_dist, decide, params):
    """Advance ``state`` by one closed bar; closed trades go to ``out`` (2 rows at most).

    In order: fill a pending order at the open (closing first on a reversal), check the
    position's stop/target/time exit within the bar, mark to market at the close, and, if
    ``decide``, turn the bar's signal into a pending order for the next open, sized on this
    book's equity. Returns the number of trades written.
    """
    k = advance(state, out, o, h, lo, c, params)
    if decide and wants_order(state, sig, sl_dist, params):
        sz = position_size(
            state[S_EQUITY],
            c,
            sl_dist,
            params[0],
            params[1],
            params[2],
            params[3],
            params[4],
            params[5],
        )
        if sz > 0.0:
            place_order(state, sig, sz, c, sl_dist, tp_dist)
    return k


@njit(cache=True)
def close_out(state, out, c, fee_rate, slippage):
    """End of data: cancel a pending order, close the position at the close ``c``."""
    state[S_PEND] = 0.0
    k = 0
    if state[S_POS] != 0.0:
        k = _close(
            state,
            out,
            0,
            state[S_BAR],
            market_exit_price(c, state[S_POS], slippage),
            fee_rate,
            EXIT_END,
        )
        state[S_EQUITY] = state[S_CASH]
    return k


@njit(cache=True)
def _simulate(open_, high, low, close, sig, sl_dist, tp_dist, start, cash0, params):
    n = close.size
    state = new_state(cash0)
    equity = np.empty(n)
    position = np.zeros(n, np.int8)
    trades = np.empty((2 * n + 2, 9))
    buf = np.empty((2, 9))
    k = 0
    for t in range(n):
        m = step(
            state,
            buf,
            open_[t],
            high[t],
            low[t],
            close[t],
            sig[t],
            sl_dist[t],
            tp_dist[t],
            t >= start and t < n - 1,
            params,
        )
        for j in range(m):
            trades[k] = buf[j]
            k += 1
        equity[t] = state[S_EQUITY]
        position[t] = np.int8(state[S_POS])
    m = close_out(state, buf, close[n - 1], params[5], params[6])
    if m:
        trades[k] = buf[0]
        k += 1
        equity[n - 1] = state[S_EQUITY]
        position[n - 1] = 0
    return equity, position, trades[:k]


@dataclass
class BacktestResult:
    """Trades, equity curve and metrics of one backtest (and buy-and-hold beside it)."""

    trades: pd.DataFrame
    equity: pd.Series
    position: pd.Series
    metrics: dict[str, float]
    benchmark: dict[str, float]
    benchmark_equity: pd.Series  # buy and hold: cash x close / first close
    settings: dict[str, Any] = field(default_factory=dict)
    signals: pd.DataFrame | None = None
    note: str = ""  # e.g. "IN-SAMPLE: ...", shown first in every summary line

    def summary(self) -> str:
        m, b = self.metrics, self.benchmark

        def known(value: float, spec: str) -> str:
            return "n/a" if np.isnan(value) else format(value, spec)

        return (f"[{self.note}] " if self.note else "") + (
            f"{int(m['trades'])} trades, total return {m['total_return']:+.2%} "
            f"(buy & hold {b['total_return']:+.2%}), Sharpe {known(m['sharpe'], '.2f')}, "
            f"max drawdown {m['max_drawdown']:.2%}, win rate {known(m['win_rate'], '.1%')}, "
            f"profit factor {known(m['profit_factor'], '.2f')}, exposure {m['exposure']:.1%}"
            + _signals_text(m)
        )


def _signal_counts(frame: pd.DataFrame) -> dict[str, float]:
    """Bars with a LONG/SHORT signal in the traded window, and (for a strategy that reports
    them, such as MLStrategy) predictions the confidence threshold turned into FLAT."""
    out = {"signal_bars": float((frame["side"] != 0).sum())}
    if "suppressed" in frame:
        out["suppressed_signals"] = float(frame["suppressed"].fillna(False).astype(bool).sum())
    return out


def _signals_text(m: dict[str, float]) -> str:
    if "signal_bars" not in m:
        return ""
    text = f", {int(m['signal_bars'])} signal bars"
    if m.get("suppressed_signals"):
        text += f" ({int(m['suppressed_signals'])} more suppressed by the confidence threshold)"
    return text


class Backtest:
    """Run a strategy (or a precomputed signal frame) over candles.

    Parameters
    ----------
    data
        Clean OHLCV candles.
    strategy
        A strategy (anything with ``generate_signals(df)``) or a DataFrame with the columns
        ``side`` (-1/0/1), ``sl_distance`` and ``tp_distance`` on ``data``'s index.
    cash, risk, fees_bps, slippage_bps, on_opposite, max_holding_bars, start
        See the module docstring. ``start`` is a timestamp or a row position.
    periods_per_year
        For annualising Sharpe and Sortino; by default the bars per year observed over the
        whole of ``data`` (:func:`trademl.performance.observed_periods_per_year`: about 252
        for daily equities, 6,260 for hourly FX, 8,766 for hourly crypto).
    """

    def __init__(
        self,
        data: pd.DataFrame,
        strategy: Any,
        *,
        cash: float = 10_000.0,
        risk: RiskConfig | dict | None = None,
        fees_bps: float = 10.0,
        slippage_bps: float = 2.0,
        on_opposite: str = "reverse",
        max_holding_bars: int | None = None,
        start: Any = None,
        periods_per_year: float | None = None,
    ) -> None:
        validate_ohlcv(data, what=data.attrs.get("source", "backtest data"))
        check_choice("backtest.on_opposite", on_opposite, ("reverse", "ignore"))
        if not cash > 0:
            raise ConfigError(f"backtest.cash={cash!r} must be positive")
        if fees_bps < 0 or slippage_bps < 0:
            raise ConfigError("backtest.fees_bps and slippage_bps must be >= 0")
        if max_holding_bars is not None and int(max_holding_bars) < 1:
            raise ConfigError(f"backtest.max_holding_bars={max_holding_bars!r} must be >= 1")
        self.data, self.strategy = data, strategy
        self.cash, self.fees_bps, self.slippage_bps = (
            float(cash),
            float(fees_bps),
            float(slippage_bps),
        )
        self.risk = coerce_config(risk, RiskConfig, name="risk")
        if max_holding_bars is None:  # an ML strategy's holding limit: its labels' horizon
            max_holding_bars = getattr(strategy, "max_holding_bars", None)
        self.on_opposite, self.max_holding_bars = on_opposite, max_holding_bars
        self.start = self._start_position(start)
        self.periods_per_year = periods_per_year

    @classmethod
    def from_settings(
        cls,
        data: pd.DataFrame,
        strategy: Any,
        settings: dict[str, Any],
        *,
        risk: RiskConfig | dict | None = None,
        start: Any = None,
    ) -> Backtest:
        """A backtest from the ``backtest`` config group's values (``start`` given apart)."""
        return cls(
            data,
            strategy,
            cash=settings["cash"],
            risk=risk,
            fees_bps=settings["fees_bps"],
            slippage_bps=settings["slippage_bps"],
            on_opposite=settings["on_opposite"],
            max_holding_bars=settings.get("max_holding_bars"),
            start=start,
            periods_per_year=settings.get("periods_per_year"),
        )

    def _start_position(self, start: Any) -> int:
        if start is None:
            return 0
        if isinstance(start, int | np.integer):
            pos = int(start)
        else:
            ts = pd.Timestamp(start)
            ts = ts.tz_localize("UTC") if ts.tz is None else ts
            pos = int(self.data.index.searchsorted(ts))
        if not 0 <= pos < len(self.data) - 1:
            raise DataError(
                f"backtest start {start!r} leaves no bar to trade "
                f"({len(self.data)} bars, {self.data.index[0]} .. {self.data.index[-1]})"
            )
        return pos

    def signals(self) -> pd.DataFrame:
        if isinstance(self.strategy, pd.DataFrame):
            frame = self.strategy
        else:
            frame = self.strategy.generate_signals(self.data)
        missing = {"side", "sl_distance", "tp_distance"} - set(frame.columns)
        if missing:
            raise DataError(f"signals lack column(s) {', '.join(sorted(missing))}")
        if not frame.index.equals(self.data.index):
            raise DataError("signals must be on the candles' index")
        return frame

    def run(self) -> BacktestResult:
        frame = self.signals()
        d = self.data
        arrays = [d[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close")]
        params = fill_params(
            self.risk,
            fees_bps=self.fees_bps,
            slippage_bps=self.slippage_bps,
            on_opposite=self.on_opposite,
            max_holding_bars=self.max_holding_bars,
        )
        equity, position, raw = _simulate(
            *arrays,
            frame["side"].to_numpy(dtype=np.int64),
            frame["sl_distance"].to_numpy(dtype=np.float64),
            frame["tp_distance"].to_numpy(dtype=np.float64),
            self.start,
            self.cash,
            params,
        )
        trades = self._trades(raw)
        idx = d.index
        equity_s = pd.Series(equity, index=idx, name="equity").iloc[self.start :]
        position_s = pd.Series(position, index=idx, name="position").iloc[self.start :]
        close = d["close"].iloc[self.start :]
        bench_equity = self.cash * close / close.iloc[0]
        ppy = self.periods_per_year or observed_periods_per_year(idx)  # the whole data's rate
        metrics = performance_metrics(equity_s, trades, position_s, periods_per_year=ppy)
        metrics.update(_signal_counts(frame.iloc[self.start :]))
        benchmark = performance_metrics(
            bench_equity, None, pd.Series(1, index=close.index), periods_per_year=ppy
        )
        settings = {
            "cash": self.cash,
            "fees_bps": self.fees_bps,
            "slippage_bps": self.slippage_bps,
            "on_opposite": self.on_opposite,
            "max_holding_bars": self.max_holding_bars,
            "start": str(idx[self.start]),
            "end": str(idx[-1]),
            "bars": len(idx) - self.start,
            "periods_per_year": float(ppy),
            **{f"risk.{k}": v for k, v in self.risk.__dict__.items()},
        }
        return BacktestResult(
            trades=trades,
            equity=equity_s,
            position=position_s,
            metrics=metrics,
            benchmark=benchmark,
            benchmark_equity=bench_equity.rename("buy_and_hold"),
            settings=settings,
            signals=frame,
        )

    def _trades(self, raw: np.ndarray) -> pd.DataFrame:
        t = pd.DataFrame(raw, columns=list(_TRADE_COLUMNS))
        idx = self.data.index
        entry_i, exit_i = t["entry_i"].astype(np.int64), t["exit_i"].astype(np.int64)
        return pd.DataFrame(
            {
                "entry_time": idx[entry_i.to_numpy()],
                "exit_time": idx[exit_i.to_numpy()],
                "side": np.where(t["side"] > 0, "LONG", "SHORT"),
                "size": t["size"],
                "entry_price": t["entry_price"],
                "exit_price": t["exit_price"],
                "fees": t["fees"],
                "pnl": t["pnl"],
                "return_pct": 100.0 * t["pnl"] / (t["size"] * t["entry_price"]),
                "bars_held": (exit_i - entry_i + 1).to_numpy(),
                "exit_reason": t["reason"].astype(int).map(EXIT_REASONS).to_numpy(),
            }
        ).astype({"side": "str", "exit_reason": "str"})  # the same dtypes with no trades
