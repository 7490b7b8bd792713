"""Several symbols in one backtest: independent books or one shared cash pool.

``portfolio="per_symbol"``: each symbol trades its own ``cash / N`` exactly as a single
:class:`~trademl.backtest.Backtest` would (the books never interact).

``portfolio="shared"``: one cash pool (``cash``), and the rules of :mod:`trademl.backtest`
per symbol, with these additions:

1. **Order of processing.** Bars are processed in time order over the union of the symbols'
   timestamps; the bars of one timestamp in the **alphabetical order of the symbols**. A
   symbol without a bar at a timestamp is not stepped there (its position is held).
2. **Sizing on the portfolio.** When a symbol's bar ``t`` turns a signal into an order, the
   order is sized by the RiskEngine's rule (:func:`trademl.fills.position_size`) on the
   **portfolio equity**: ``cash`` plus every symbol's realised and unrealised P&L, each symbol
   marked at its latest processed close (symbols earlier in the order at the close of ``t``,
   later ones at their previous bar's close). ``risk.max_position_fraction`` caps one position
   at that fraction of the portfolio equity.
3. **Cash is spent once.** The open notional of the other symbols (a pending order's size, or
   else the open position's size, times the symbol's latest close) plus the new order's
   notional at the decision close may not exceed ``risk.max_gross_exposure`` x the portfolio
   equity (default 1.0: no leverage). A larger order is **reduced** to fit (floored to
   ``risk.size_step``) or, when what fits is below ``risk.min_size`` (or nothing fits),
   **rejected**; both are counted per symbol (``result.orders``) and in the metrics
   (``orders_reduced``, ``orders_rejected``). A symbol's own position that a reversal closes
   at the next open does not count against it.
4. A symbol's last bar decides nothing and its position is closed at that bar's close (as the
   single backtest does at the end of data), returning its cash to the pool.

The live runtime's ``live.portfolio=shared`` runs :func:`shared_step` candle by candle in the
same order, so a replay of the same files makes the same trades.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from trademl._config import check_choice
from trademl.backtest import (
    S_EQUITY,
    S_MARK,
    S_PEND,
    S_PEND_SIZE,
    S_POS,
    S_SIZE,
    STATE_SIZE,
    Backtest,
    advance,
    close_out,
    new_state,
    place_order,
    step,
    wants_order,
)
from trademl.errors import ConfigError, DataError
from trademl.fills import position_size
from trademl.performance import observed_periods_per_year, performance_metrics

__all__ = [
    "ORDER_NONE",
    "ORDER_PLACED",
    "ORDER_REDUCED",
    "ORDER_REJECTED",
    "PORTFOLIO_MODES",
    "PortfolioBacktest",
    "PortfolioResult",
    "shared_step",
]

PORTFOLIO_MODES = ("per_symbol", "shared")
# what shared_step did with the bar's signal
ORDER_NONE, ORDER_PLACED, ORDER_REDUCED, ORDER_REJECTED = 0, 1, 2, 3


@njit(cache=True, inline="always")
def _exposure(state):
    """Notional a book holds or is about to hold, at its latest close."""
    if state[S_PEND] != 0.0:
        return state[S_PEND_SIZE] * state[S_MARK]
    if state[S_POS] != 0.0:
        return state[S_SIZE] * state[S_MARK]
    return 0.0


@njit(cache=True)
def shared_step(states, i, out, o, h, lo, c, sig, sl_dist, tp_dist, decide, params, cash, gross):
    """Advance book ``i`` of a shared-cash portfolio by one closed bar.

    ``states`` holds every symbol's book (rows in the symbols' alphabetical order, each
    started with 0 cash: its P&L); ``cash`` is the pool's starting cash and ``gross`` the
    ``risk.max_gross_exposure``. See the module docstring for the rule. Returns the number of
    trades written to ``out``, what became of the signal (``ORDER_*``) and the size the
    risk rule asked for before the exposure cap (0.0 when no order was wanted).
    """
    state = states[i]
    k = advance(state, out, o, h, lo, c, params)
    if not (decide and wants_order(state, sig, sl_dist, params)):
        return k, ORDER_NONE, 0.0
    equity = cash
    others = 0.0
    for j in range(states.shape[0]):
        equity += states[j, S_EQUITY]
        if j != i:
            others += _exposure(states[j])
    sz = position_size(
        equity, c, sl_dist, params[0], params[1], params[2], params[3], params[4], params[5]
    )
    if sz <= 0.0:
        return k, ORDER_NONE, 0.0
    room = gross * equity - others
    if sz * c <= room:
        place_order(state, sig, sz, c, sl_dist, tp_dist)
        return k, ORDER_PLACED, sz
    fit = room / c if room > 0.0 else 0.0
    size_step = params[4]
    if size_step > 0.0:
        fit = np.floor(fit / size_step) * size_step
    if fit <= 0.0 or fit < params[2]:
        return k, ORDER_REJECTED, sz
    place_order(state, sig, fit, c, sl_dist, tp_dist)
    return k, ORDER_REDUCED, sz


@njit(cache=True)
def _simulate(
    o, h, lo, c, sig, sl, tp, offsets, starts, ev_sym, ev_row, ev_end, cash, shared, gross, params
):
    n_sym = offsets.size - 1
    states = np.empty((n_sym, STATE_SIZE))
    for j in range(n_sym):
        states[j] = new_state(0.0 if shared else cash / n_sym)
    base = cash if shared else 0.0
    equity = np.empty(c.size)
    position = np.zeros(c.size, np.int8)
    portfolio = np.empty(int(ev_end.sum()))
    trades = np.empty((2 * c.size + 2 * n_sym, 10))
    counts = np.zeros((n_sym, 2), np.int64)  # reduced, rejected
    buf = np.empty((2, 9))
    k, u = 0, 0
    for e in range(ev_sym.size):
        j, r = ev_sym[e], ev_row[e]
        t = offsets[j] + r
        last = offsets[j + 1] - offsets[j] - 1
        decide = r >= starts[j] and r < last
        if shared:
            m, status, _ = shared_step(
                states,
                j,
                buf,
                o[t],
                h[t],
                lo[t],
                c[t],
                sig[t],
                sl[t],
                tp[t],
                decide,
                params,
                cash,
                gross,
            )
            if status == ORDER_REDUCED:
                counts[j, 0] += 1
            elif status == ORDER_REJECTED:
                counts[j, 1] += 1
        else:
            m = step(states[j], buf, o[t], h[t], lo[t], c[t], sig[t], sl[t], tp[t], decide, params)
        for q in range(m):
            trades[k, 0] = j
            trades[k, 1:] = buf[q]
            k += 1
        if r == last:
            m = close_out(states[j], buf, c[t], params[5], params[6])
            for q in range(m):
                trades[k, 0] = j
                trades[k, 1:] = buf[q]
                k += 1
        equity[t] = states[j, S_EQUITY]
        position[t] = np.int8(states[j, S_POS])
        if ev_end[e]:
            total = base
            for q in range(n_sym):
                total += states[q, S_EQUITY]
            portfolio[u] = total
            u += 1
    return equity, position, portfolio, trades[:k], counts


@dataclass
class PortfolioResult:
    """Trades (with a ``symbol`` column), the portfolio's and each symbol's equity, metrics."""

    trades: pd.DataFrame
    equity: pd.Series  # the portfolio, on the union of the symbols' timestamps
    symbol_equity: dict[str, pd.Series]  # per_symbol: each book; shared: each symbol's P&L
    position: dict[str, pd.Series]
    metrics: dict[str, float]
    orders: pd.DataFrame  # per symbol: orders reduced and rejected by the exposure cap
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        m = self.metrics
        return (
            f"{self.settings.get('portfolio')} portfolio of {len(self.symbol_equity)} symbols: "
            f"{int(m['trades'])} trades, total return {m['total_return']:+.2%}, "
            f"max drawdown {m['max_drawdown']:.2%}, exposure {m['exposure']:.1%}, "
            f"orders reduced {int(m['orders_reduced'])}, rejected {int(m['orders_rejected'])} "
            "by risk.max_gross_exposure"
        )


class PortfolioBacktest:
    """Run a strategy over several symbols' candles, per symbol or on one shared cash pool.

    Parameters
    ----------
    data
        ``{symbol: candles}``: clean OHLCV candles per symbol (their timestamps may differ).
    strategy
        A strategy, used for every symbol, or ``{symbol: signal frame}`` (columns ``side``,
        ``sl_distance``, ``tp_distance`` on that symbol's index).
    portfolio
        ``"shared"`` (one cash pool; see the module docstring) or ``"per_symbol"`` (each symbol
        trades ``cash / N``, exactly as N single backtests).
    cash, risk, fees_bps, slippage_bps, on_opposite, max_holding_bars, start, periods_per_year
        As :class:`~trademl.backtest.Backtest`; ``start`` (a timestamp) applies to every symbol,
        or ``{symbol: timestamp or None}`` gives each its own.
    """

    def __init__(
        self,
        data: Mapping[str, pd.DataFrame],
        strategy: Any,
        *,
        portfolio: str = "shared",
        cash: float = 10_000.0,
        risk: Any = None,
        fees_bps: float = 10.0,
        slippage_bps: float = 2.0,
        on_opposite: str = "reverse",
        max_holding_bars: int | None = None,
        start: Any = None,
        periods_per_year: float | None = None,
    ) -> None:
        check_choice("portfolio", portfolio, PORTFOLIO_MODES)
        if not isinstance(data, Mapping) or not data:
            raise ConfigError("PortfolioBacktest data must be a non-empty {symbol: candles}")
        starts = dict(start) if isinstance(start, Mapping) else dict.fromkeys(data, start)
        if set(starts) != set(data):
            raise ConfigError(
                f"PortfolioBacktest start names {sorted(starts)}, the data {sorted(data)}: "
                "give a start for each symbol (None for its first bar)"
            )
        if any(
            isinstance(v, int | np.integer) and not isinstance(v, bool) for v in starts.values()
        ):
            raise ConfigError(
                f"PortfolioBacktest start={start!r}: give a timestamp (row positions differ "
                "between symbols)"
            )
        self.symbols = sorted(data)  # the fixed order of the bars of one timestamp
        if isinstance(strategy, Mapping):
            missing = set(self.symbols) - set(strategy)
            if missing:
                raise DataError(f"no signal frame for symbol(s) {', '.join(sorted(missing))}")
        self.portfolio, self.cash = portfolio, float(cash)
        n = len(self.symbols)
        self.books = {
            s: Backtest(
                data[s],
                strategy[s] if isinstance(strategy, Mapping) else strategy,
                cash=self.cash / n,
                risk=risk,
                fees_bps=fees_bps,
                slippage_bps=slippage_bps,
                on_opposite=on_opposite,
                max_holding_bars=max_holding_bars,
                start=starts[s],
                periods_per_year=periods_per_year,
            )
            for s in self.symbols
        }
        first = self.books[self.symbols[0]]
        self.risk, self.periods_per_year = first.risk, periods_per_year

    def run(self) -> PortfolioResult:
        books = [self.books[s] for s in self.symbols]
        frames = [b.signals() for b in books]
        lengths = np.array([len(b.data) for b in books])
        offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)

        def cat(get: Any, dtype: Any) -> np.ndarray:
            return np.concatenate(
                [np.asarray(get(b, f), dtype=dtype) for b, f in zip(books, frames, strict=True)]
            )

        o, h, lo, c = (
            cat(lambda b, _, k=k: b.data[k], np.float64) for k in ("open", "high", "low", "close")
        )
        sig = cat(lambda _, f: f["side"], np.int64)
        sl = cat(lambda _, f: f["sl_distance"], np.float64)
        tp = cat(lambda _, f: f["tp_distance"], np.float64)
        # events: every (symbol, row), by timestamp then symbol (a stable sort keeps the order)
        stamps = np.concatenate([b.data.index.as_unit("ns").asi8 for b in books])
        ev_sym = np.repeat(np.arange(len(books), dtype=np.int64), lengths)
        ev_row = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])
        order = np.argsort(stamps, kind="stable")
        stamps, ev_sym, ev_row = stamps[order], ev_sym[order], ev_row[order]
        ev_end = np.append(stamps[1:] != stamps[:-1], True)
        b0 = books[0]
        params = _params(b0)
        equity, position, portfolio, raw, counts = _simulate(
            o,
            h,
            lo,
            c,
            sig,
            sl,
            tp,
            offsets,
            np.array([b.start for b in books], dtype=np.int64),
            ev_sym,
            ev_row,
            ev_end,
            self.cash,
            self.portfolio == "shared",
            float(self.risk.max_gross_exposure),
            params,
        )
        union = pd.DatetimeIndex(
            pd.to_datetime(stamps[ev_end], unit="ns", utc=True), name="timestamp"
        )
        begin = min(b.data.index[b.start] for b in books)
        port = pd.Series(portfolio, index=union, name="equity").loc[begin:]
        sym_eq, sym_pos, held = {}, {}, []
        for j, (s, b) in enumerate(zip(self.symbols, books, strict=True)):
            rows = slice(offsets[j] + b.start, offsets[j + 1])
            idx = b.data.index[b.start :]
            sym_eq[s] = pd.Series(equity[rows], index=idx, name=s)
            sym_pos[s] = pd.Series(position[rows], index=idx, name=s)
            held.append(sym_pos[s].reindex(port.index).ffill().fillna(0).ne(0))
        any_held = pd.concat(held, axis=1).any(axis=1).astype(int)
        trades = self._trades(raw)
        ppy = self.periods_per_year or observed_periods_per_year(union)
        metrics = performance_metrics(port, trades, any_held, periods_per_year=ppy)
        orders = pd.DataFrame(
            counts, index=pd.Index(self.symbols, name="symbol"), columns=["reduced", "rejected"]
        )
        metrics["orders_reduced"] = float(orders["reduced"].sum())
        metrics["orders_rejected"] = float(orders["rejected"].sum())
        settings = {
            "portfolio": self.portfolio,
            "symbols": ",".join(self.symbols),
            "cash": self.cash,
            "fees_bps": b0.fees_bps,
            "slippage_bps": b0.slippage_bps,
            "on_opposite": b0.on_opposite,
            "max_holding_bars": b0.max_holding_bars,
            "start": str(port.index[0]),
            "end": str(port.index[-1]),
            "periods_per_year": float(ppy),
            **{f"risk.{k}": v for k, v in self.risk.__dict__.items()},
        }
        return PortfolioResult(trades, port, sym_eq, sym_pos, metrics, orders, settings)

    def _trades(self, raw: np.ndarray) -> pd.DataFrame:
        parts = []
        sym = raw[:, 0].astype(np.int64) if len(raw) else np.zeros(0, np.int64)
        for j, s in enumerate(self.symbols):
            part = self.books[s]._trades(raw[sym == j, 1:])
            part.insert(0, "symbol", s)
            part.index = np.flatnonzero(sym == j)
            parts.append(part)
        # in the order they closed (the order of the loop), as the live journal records them
        return pd.concat(parts).sort_index().reset_index(drop=True)


def _params(book: Backtest) -> tuple:
    from trademl.backtest import fill_params

    return fill_params(
        book.risk,
        fees_bps=book.fees_bps,
        slippage_bps=book.slippage_bps,
        on_opposite=book.on_opposite,
        max_holding_bars=book.max_holding_bars,
    )
