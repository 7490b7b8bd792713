"""``live.portfolio=shared``: the symbols' traders share one cash pool.

The rule is the shared backtest's (:mod:`trademl.portfolio`, :func:`~trademl.portfolio.
shared_step`): every symbol's book starts with 0 cash (it holds that symbol's P&L), an order is
sized on the portfolio equity (``backtest.cash`` plus every book's P&L, each marked at its
latest close) and capped by ``risk.max_gross_exposure``; a reduced or rejected order is
journaled (``order_reduced`` / ``order_rejected`` events) and counted.

**The barrier.** The books must see the candles in the backtester's order: by timestamp, and
the candles of one timestamp in the symbols' alphabetical order. So the runtime holds the next
candle (the *head*) of every feed and always processes the smallest ``(timestamp, symbol)``;
it cannot take a decision before every feed has shown a candle at or after that timestamp. A
symbol whose candle for ``T`` has not arrived therefore holds all the others back (for a
real-time feed: until its candle arrives, or a later one). A feed that **skips** a bar simply
has no candle at ``T``: once its next candle (``T+1`` or later) arrives, the others' ``T`` are
traded without it, as the backtest over the union of timestamps does. A finite feed that
**ends early** is closed out (``live.close_at_end``: its pending order cancelled, its position
closed at its last close) right after its last candle, before any later candle of another
symbol, as the backtest closes a symbol at its last bar; the others carry on. A feed that
stops delivering without ending holds the session (every head is needed to know the order).

**Recovery.** Each candle's book is committed in one journal transaction with its events and
trades (as in ``per_symbol``), and the pool's cash is a function of the committed books, so a
restart after ``kill -9`` resumes with the same cash: each feed resumes after its book's last
candle and the smallest head goes first again (a symbol that was behind at the crash catches
up before the others move on). The pool's settings (cash, symbols) are recorded in the
journal and a restart with other settings is refused.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from trademl.backtest import S_EQUITY, S_PEND_SIZE
from trademl.errors import ConfigError
from trademl.portfolio import ORDER_REDUCED, ORDER_REJECTED, shared_step

if TYPE_CHECKING:
    from trademl.live.feeds import Candle
    from trademl.live.journal import Journal
    from trademl.live.runtime import LiveRuntime, SymbolTrader

__all__ = ["SharedCash", "check_journal_portfolio"]

log = logging.getLogger("trademl.live")


class SharedCash:
    """The cash pool of ``live.portfolio=shared`` and the barrier across its traders."""

    def __init__(self, cash: float, max_gross_exposure: float) -> None:
        self.cash, self.gross = float(cash), float(max_gross_exposure)
        self.traders: list[SymbolTrader] = []
        self.reduced: dict[str, int] = {}
        self.rejected: dict[str, int] = {}

    def attach(self, traders: list[SymbolTrader]) -> None:
        """The traders, in the fixed order: their symbols' alphabetical order."""
        self.traders = sorted(traders, key=lambda t: t.symbol)
        self.reduced = {t.symbol: 0 for t in self.traders}
        self.rejected = {t.symbol: 0 for t in self.traders}

    def equity(self) -> float:
        """Cash plus every book's P&L at its latest close (the backtest's sum, in its order)."""
        total = self.cash
        for trader in self.traders:
            total += float(trader.state[S_EQUITY])
        return total

    def step(
        self,
        trader: SymbolTrader,
        new: np.ndarray,
        candle: Candle,
        side: int,
        sl: float,
        tp: float,
        params: tuple,
    ) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
        """Advance ``new`` (a copy of ``trader``'s book) on ``candle`` with the shared rule;
        returns the trades written to ``trader.buffer`` and the cap's journal events."""
        states = np.stack([new if t is trader else t.state for t in self.traders])
        i = self.traders.index(trader)
        k, status, wanted = shared_step(
            states,
            i,
            trader.buffer,
            candle.open,
            candle.high,
            candle.low,
            candle.close,
            side,
            sl,
            tp,
            True,
            params,
            self.cash,
            self.gross,
        )
        new[:] = states[i]
        if status not in (ORDER_REDUCED, ORDER_REJECTED):
            return k, []
        kind = "order_reduced" if status == ORDER_REDUCED else "order_rejected"
        counts = self.reduced if status == ORDER_REDUCED else self.rejected
        counts[trader.symbol] += 1
        detail = {
            "side": int(side),
            "wanted": float(wanted),
            "size": float(new[S_PEND_SIZE]) if status == ORDER_REDUCED else 0.0,
            "portfolio_equity": float(states[:, S_EQUITY].sum() + self.cash),
            "decided_on": str(candle.timestamp),
            "reason": f"risk.max_gross_exposure={self.gross}: the open notionals leave no room",
        }
        log.info("%s %s %s %s", trader.symbol, candle.timestamp, kind, detail)
        return k, [(kind, detail)]

    async def run(self, runtime: LiveRuntime) -> None:
        """Trade every feed through the barrier (see the module docstring) until the feeds
        end or a stop is requested; a finite feed that ends is closed out at once."""
        order = {t.symbol: n for n, t in enumerate(self.traders)}
        iters = {t.symbol: t.feed.candles(after=t.last_ts).__aiter__() for t in self.traders}
        by_symbol = {t.symbol: t for t in self.traders}
        heads: dict[str, Candle] = {}

        async def refill(trader: SymbolTrader) -> None:
            try:
                heads[trader.symbol] = await anext(iters[trader.symbol])
            except StopAsyncIteration:
                if trader.feed.finite and runtime.close_at_end and not runtime.stop.is_set():
                    trader.finish()
                    log.info("%s: feed ended; its book is closed out", trader.symbol)

        for trader in self.traders:
            await refill(trader)
        while heads and not runtime.stop.is_set():
            symbol = min(heads, key=lambda s: (heads[s].timestamp, order[s]))
            trader = by_symbol[symbol]
            trader.process(heads.pop(symbol))
            if runtime.tracker is not None:
                runtime.tracker.candle(trader)
            if runtime.stop.is_set():
                return
            await refill(trader)


def check_journal_portfolio(journal: Journal, mode: str, symbols: list[str], cash: float) -> None:
    """Record the session's portfolio settings in a new journal; refuse to resume a journal
    written with other ones (the books of ``per_symbol`` hold cash / N each, those of
    ``shared`` only P&L: mixing them would count cash twice or lose it)."""
    settings = {"mode": mode}
    if mode == "shared":
        settings.update(cash=float(cash), symbols=sorted(symbols))
    if not len(journal.books()):  # nothing traded yet: this session's settings
        journal.set_meta("portfolio", json.dumps(settings))
        return
    recorded = journal.get_meta("portfolio")
    # a journal written before live.portfolio existed holds per_symbol books
    before = json.loads(recorded) if recorded is not None else {"mode": "per_symbol"}
    if before == settings or (mode == "per_symbol" and before.get("mode") == "per_symbol"):
        return
    raise ConfigError(
        f"{journal.path} was written with live.portfolio settings {before}, not {settings} "
        "(backtest.cash and the feeds' symbols count for shared): resume it with the same "
        "settings, or give this session its own live.journal"
    )
