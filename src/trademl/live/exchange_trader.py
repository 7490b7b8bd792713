"""A symbol's book traded on an exchange (``broker.type: ccxt``), with the backtester's rules.

The paper trader simulates every fill with :func:`trademl.backtest.step`. This one decides
exactly as that step does (sizing on the equity at the close, reversals, the holding limit)
but takes its fills from the exchange:

1. **The bar's protective fills.** The open position's stop and take-profit rest on the
   exchange (reduce-only); when one was triggered during the bar, its fills close the book
   (the price and fees the exchange reports) and the other is cancelled. Where the exchange
   takes no such orders (``broker.stops: runtime``), the runtime checks the bar's range
   against them and closes at the next open.
2. **The plan**, from the book and the candle: a time exit, a reversal's exit and a new entry
   (sized, with its stop and target, as the backtester does: on the equity at the close; the
   entry's price is the exchange's). Only a candle that has just closed (the latest at the
   exchange's clock) may open a position: candles the feed catches up on warm the strategy
   up but never send an order.
3. **Write-ahead**: the new book and every planned order with its client order id are
   committed to the journal *before* anything is sent; then each order is sent, and its
   result (filled amount, average price, fees from the exchange's trades; partial fills and
   refusals included) is committed with the book it leads to.

On start, every order the journal holds as not yet settled is looked up on the exchange by its
client id: one that was filled is booked, one that never arrived is sent (if its candle is
still the latest; else it is recorded as unsent), and then the account's position must equal
the book's, or the session refuses to start. ``kill -9`` at any point therefore neither loses
an order nor sends one twice.

Dating follows the backtester: a time exit is dated on the bar whose close decided it, an
entry and a reversal's exit on the next bar (whose open they fill at).
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import Any

import numpy as np
import pandas as pd

from trademl.backtest import (
    S_BAR,
    S_CASH,
    S_ENTRY,
    S_ENTRY_FEE,
    S_ENTRY_I,
    S_EQUITY,
    S_MARK,
    S_PEND,
    S_PEND_SIZE,
    S_PEND_STOP,
    S_PEND_TARGET,
    S_POS,
    S_SIZE,
    S_STOP,
    S_TARGET,
)
from trademl.errors import ConfigError
from trademl.fills import EXIT_NONE, EXIT_REASONS, EXIT_TIME, exit_in_bar, position_size
from trademl.live.ccxt_broker import BrokerError, CcxtBroker, OrderResult
from trademl.live.feeds import Candle
from trademl.live.runtime import SymbolTrader

__all__ = ["ExchangeTrader"]

log = logging.getLogger("trademl.live")

_KIND_CODE = {"entry": "e", "exit": "x", "stop": "s", "target": "t"}


class ExchangeTrader(SymbolTrader):
    """The book of one symbol whose orders go to an exchange (see the module docstring)."""

    def __init__(
        self,
        symbol: str,
        feed: Any,
        strategy: Any,
        journal: Any,
        *,
        broker: CcxtBroker,
        session: str,
        stops: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(symbol, feed, strategy, journal, **kwargs)
        self.broker = broker
        self.step_ms = int(getattr(feed, "step", 0)) or None
        if self.step_ms is None:
            raise ConfigError(
                f"feed {symbol}: broker.type=ccxt trades on the exchange's own candles; give "
                "the symbol a ccxt feed (feeds.N.type=ccxt) on the market traded"
            )
        if stops == "exchange" and not broker.exchange_stops:
            raise ConfigError(
                f"broker.stops=exchange, but {broker.exchange_id} takes no stop-loss and "
                "take-profit orders through ccxt; use broker.stops=runtime (or auto)"
            )
        self.exchange_stops = stops == "exchange" or (stops == "auto" and broker.exchange_stops)
        self.tag = f"tml{session[:6]}{zlib.crc32(symbol.encode()) & 0xFFFF:04x}"
        self.recover()

    # -- the candle ----------------------------------------------------------------------------
    def process(self, candle: Candle) -> list[dict[str, Any]]:
        start = time.perf_counter()
        side, sl, tp, meta = self._decide(candle)
        self.last_close = candle.close
        new = self.state.copy()
        new[S_BAR] += 1.0
        events: list[tuple[str, dict[str, Any]]] = []
        trades: list[dict[str, Any]] = []
        orders: list[dict[str, Any]] = []
        entry_ts = self.entry_ts
        if new[S_POS] != 0 and self.exchange_stops:
            entry_ts = self._settle_protection(new, candle.timestamp, events, trades, orders)
        plan = self._plan(new, candle, side, sl, tp, meta, self._fresh(candle))
        self._mark(new, candle.close)
        self.latencies.append(time.perf_counter() - start)
        self.journal.commit(
            self.symbol, candle.timestamp, new, entry_ts, events, trades, orders + plan
        )
        self.state, self.entry_ts, self.last_ts = new, entry_ts, candle.timestamp
        for order in plan:
            trades += self._execute(order, candle.close)
        log.info(
            "%s %s close=%.2f signal=%s pos=%+g equity=%.2f trades=%d",
            self.symbol,
            candle.timestamp,
            candle.close,
            {1: "LONG", -1: "SHORT", 0: "FLAT"}[side],
            self.state[S_POS] * self.state[S_SIZE],
            self.state[S_EQUITY],
            len(trades),
        )
        return trades

    def finish(self) -> list[dict[str, Any]]:
        """An exchange feed does not end; a stopped session leaves its position and its
        protective orders on the exchange (a restart takes them over)."""
        return []

    # -- deciding ------------------------------------------------------------------------------
    def _fresh(self, candle: Candle) -> bool:
        """The candle is the latest closed one at the exchange's clock (not a catch-up)."""
        now = getattr(self.feed, "clock_ms", None) or int(time.time() * 1000)
        return candle.timestamp.value // 1_000_000 + 2 * self.step_ms > now

    def _next_bar(self, ts: pd.Timestamp) -> pd.Timestamp:
        return ts + pd.Timedelta(self.step_ms, unit="ms")

    def _plan(self, new, candle, side, sl, tp, meta, fresh) -> list[dict[str, Any]]:
        """The orders this candle calls for, as journal rows (see the module docstring)."""
        rf, mf, min_size, max_size, size_step, fee_rate, slip, reverse, max_hold = self._params
        t, ts, nxt = int(new[S_BAR]), candle.timestamp, self._next_bar(candle.timestamp)
        pos, cash, c = new[S_POS], new[S_CASH], candle.close
        plan: list[dict[str, Any]] = []
        exit_reason = EXIT_NONE
        if pos != 0 and not self.exchange_stops:  # the runtime's own stop and target
            exit_reason, _ = exit_in_bar(
                pos, candle.open, candle.high, candle.low, new[S_STOP], new[S_TARGET], slip
            )
            dated = nxt
        held = t - new[S_ENTRY_I] + 1
        if pos != 0 and exit_reason == EXIT_NONE and 0 < max_hold <= held:
            exit_reason, dated = EXIT_TIME, ts  # at this close, as the backtester
        if exit_reason != EXIT_NONE:
            plan.append(self._order(t, "exit", -pos, new[S_SIZE], EXIT_REASONS[exit_reason], dated))
            px = c * (1.0 - pos * slip)  # the backtester's price: sizing as it sizes
            cash += pos * new[S_SIZE] * (px - new[S_ENTRY]) - fee_rate * px * new[S_SIZE]
            pos = 0.0
        equity = cash + (pos * new[S_SIZE] * (c - new[S_ENTRY]) if pos != 0 else 0.0)
        wants = side != 0 and (pos == 0 or (reverse and side == -pos)) and sl > 0
        if wants and not fresh:
            log.info("%s %s: a catch-up candle; no order sent on it", self.symbol, ts)
        elif wants:
            size = position_size(equity, c, sl, rf, mf, min_size, max_size, size_step, fee_rate)
            if size > 0:
                if pos != 0:
                    plan.append(self._order(t, "exit", -pos, new[S_SIZE], "signal", nxt))
                stop = c - side * sl
                target = c + side * tp if tp > 0 else 0.0
                entry = self._order(t, "entry", side, size, "signal", nxt)
                entry["detail"].update(stop=stop, target=target, signal=_plain(meta))
                plan.append(entry)
                new[S_PEND], new[S_PEND_SIZE] = side, size
                new[S_PEND_STOP], new[S_PEND_TARGET] = stop, target
        return plan

    def _order(self, t: int, kind: str, side: float, amount: float, reason: str, dated) -> dict:
        return {
            "client_id": f"{self.tag}-{t}{_KIND_CODE[kind]}",
            "kind": kind,
            "side": int(np.sign(side)),
            "amount": float(amount),
            "reason": reason,
            "status": "new",
            "seq": {"exit": 0, "entry": 1, "stop": 2, "target": 3}[kind],
            "detail": {"dated": str(dated)},
        }

    @staticmethod
    def _mark(state: np.ndarray, close: float) -> None:
        state[S_MARK] = close
        pos = state[S_POS]
        state[S_EQUITY] = state[S_CASH] + (
            pos * state[S_SIZE] * (close - state[S_ENTRY]) if pos != 0 else 0.0
        )

    # -- executing -----------------------------------------------------------------------------
    def _execute(
        self, order: dict[str, Any], close: float, known: OrderResult | None = None
    ) -> list[dict[str, Any]]:
        """Send one planned order (unless its result is ``known``: executed before a restart)
        and book its result; returns the trades it closed."""
        new = self.state.copy()
        events: list[tuple[str, dict[str, Any]]] = []
        trades: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        entry_ts = self.entry_ts
        kind, cid, dated = order["kind"], order["client_id"], order["detail"]["dated"]
        if kind == "exit":
            if self.exchange_stops:  # a stop may have closed it since the candle
                entry_ts = self._settle_protection(new, dated, events, trades, updates)
            if new[S_POS] == 0:
                updates.append({"client_id": cid, "status": "canceled"})
                events.append(("order_dropped", {"client_id": cid, "why": "already flat"}))
            else:
                self._cancel_protection(updates)
                result = known or self._send_market(order, reduce_only=True)
                updates.append({"client_id": cid, **result.record()})
                if result.filled > 0:
                    trades.append(self._close(new, result, order["reason"], dated, entry_ts))
                    entry_ts = None
                    if result.status == "partial":
                        raise BrokerError(
                            f"{self.symbol}: the exit {cid} filled {result.filled} of "
                            f"{order['amount']}; the rest of the position is open on the "
                            "exchange: close it by hand, then restart"
                        )
                else:
                    raise BrokerError(
                        f"{self.symbol}: the exchange refused to close the position "
                        f"({cid}: {result.message}); the session stops with the position open"
                    )
        elif kind == "entry":
            result = known or self._send_market(order, reduce_only=False)
            updates.append({"client_id": cid, **result.record()})
            new[S_PEND] = 0.0
            if result.filled > 0:
                self._open(new, order, result)
                entry_ts = dated
                if result.status == "partial":
                    events.append(
                        (
                            "partial_fill",
                            {"client_id": cid, "of": order["amount"], "filled": result.filled},
                        )
                    )
            else:
                events.append(("rejected", {"client_id": cid, "why": result.message}))
                log.error("%s: entry %s refused: %s", self.symbol, cid, result.message)
        self._mark(new, close)
        self.journal.commit(self.symbol, self.last_ts, new, entry_ts, events, trades, updates)
        self.state, self.entry_ts = new, entry_ts
        if kind == "entry" and new[S_POS] != 0:
            trades += self._protect(order, close)
        return trades

    def _send_market(self, order: dict[str, Any], *, reduce_only: bool) -> OrderResult:
        return self.broker.market(
            self.symbol, order["side"], order["amount"], order["client_id"], reduce_only=reduce_only
        )

    def _open(self, state: np.ndarray, order: dict[str, Any], result: OrderResult) -> None:
        state[S_CASH] -= result.fee
        state[S_POS], state[S_SIZE], state[S_ENTRY] = order["side"], result.filled, result.price
        state[S_ENTRY_FEE] = result.fee
        state[S_STOP] = order["detail"]["stop"]
        state[S_TARGET] = order["detail"]["target"]
        state[S_ENTRY_I] = state[S_BAR] + 1.0

    def _close(self, state, result: OrderResult, reason: str, dated, entry_ts) -> dict[str, Any]:
        """Close the book at the exchange's fill; the trade as the paper trader writes it."""
        pos, size, entry_px = state[S_POS], state[S_SIZE], state[S_ENTRY]
        gross = pos * size * (result.price - entry_px)
        state[S_CASH] += gross - result.fee
        trade = {
            "entry_time": entry_ts,
            "exit_time": str(dated),
            "side": "LONG" if pos > 0 else "SHORT",
            "size": float(size),
            "entry_price": float(entry_px),
            "exit_price": float(result.price),
            "fees": float(state[S_ENTRY_FEE] + result.fee),
            "pnl": float(gross - state[S_ENTRY_FEE] - result.fee),
            "exit_reason": reason,
        }
        state[S_POS] = 0.0
        return trade

    # -- protection ----------------------------------------------------------------------------
    def _protect(self, entry: dict[str, Any], close: float) -> list[dict[str, Any]]:
        """Place the new position's stop and target on the exchange (journaled first); a level
        the price has already crossed closes the position at once."""
        if not self.exchange_stops:
            return []
        t = int(self.state[S_BAR])
        side, size = int(self.state[S_POS]), float(self.state[S_SIZE])
        rows = []
        for kind, level in (("stop", self.state[S_STOP]), ("target", self.state[S_TARGET])):
            if level > 0:
                row = self._order(t, kind, side, size, kind, entry["detail"]["dated"])
                row["price"] = float(level)
                row["detail"]["since"] = self._entry_time()
                rows.append(row)
        self.journal.commit(self.symbol, self.last_ts, self.state, self.entry_ts, [], [], rows)
        return [trade for row in rows for trade in self._place(row, close)]

    def _place(self, row: dict[str, Any], close: float) -> list[dict[str, Any]]:
        if self.state[S_POS] == 0:  # closed by the other one being crossed
            self.journal.commit(
                self.symbol,
                self.last_ts,
                self.state,
                self.entry_ts,
                [],
                [],
                [{"client_id": row["client_id"], "status": "canceled"}],
            )
            return []
        result = self.broker.protect(
            self.symbol, row["kind"], row["side"], row["amount"], row["price"], row["client_id"]
        )
        if result.status == "open":
            self.journal.commit(
                self.symbol,
                self.last_ts,
                self.state,
                self.entry_ts,
                [],
                [],
                [{"client_id": row["client_id"], **result.record()}],
            )
            return []
        # crossed (the price is already beyond it) or refused: close now, at market
        log.warning(
            "%s: %s %s not placed (%s); closing at market",
            self.symbol,
            row["kind"],
            row["client_id"],
            result.message,
        )
        self.journal.commit(
            self.symbol,
            self.last_ts,
            self.state,
            self.entry_ts,
            [("protection_failed", {"client_id": row["client_id"], "why": result.message})],
            [],
            [{"client_id": row["client_id"], **result.record()}],
        )
        exit_row = self._order(
            int(self.state[S_BAR]),
            "exit",
            -self.state[S_POS],
            self.state[S_SIZE],
            row["kind"],
            row["detail"]["dated"],
        )
        exit_row["client_id"] += "p"
        self.journal.commit(
            self.symbol, self.last_ts, self.state, self.entry_ts, [], [], [exit_row]
        )
        return self._execute(exit_row, close)

    def _entry_time(self) -> int | None:
        rows = [r for r in self.journal.orders(self.symbol) if r["kind"] == "entry"]
        return rows[-1]["detail"].get("time") if rows else None

    def _protection_rows(self) -> list[dict[str, Any]]:
        return [
            r
            for r in self.journal.orders(self.symbol, open_only=True)
            if r["kind"] in ("stop", "target")
        ]

    def _cancel_protection(self, updates: list[dict[str, Any]]) -> None:
        for row in self._protection_rows():
            self.broker.cancel(self.symbol, row["client_id"], conditional=True)
            updates.append({"client_id": row["client_id"], "status": "canceled"})

    def _settle_protection(self, new, dated, events, trades, updates) -> str | None:
        """Book a stop or target the exchange triggered; cancel the other. Returns the open
        position's entry time (``None`` once closed). One request when nothing happened: the
        account's position still equals the book's, so neither order was triggered."""
        entry_ts = self.entry_ts
        rows = self._protection_rows()
        book = float(new[S_POS] * new[S_SIZE])
        if rows and _same(self.broker.position(self.symbol), book):
            return entry_ts
        for row in rows:
            result = self.broker.result(
                self.symbol, row["client_id"], conditional=True, amount=row["amount"]
            )
            if result.status != "triggered":
                if result.status in ("canceled", "expired", "rejected"):
                    updates.append({"client_id": row["client_id"], **result.record()})
                    events.append(
                        (
                            "protection_lost",
                            {"client_id": row["client_id"], "status": result.status},
                        )
                    )
                continue
            seen = {
                tid
                for r in self.journal.orders(self.symbol)
                for tid in (r["detail"] or {}).get("trades", [])
            }
            fills = self.broker.closing_fills(
                self.symbol, int(new[S_POS]), int(row["detail"].get("since") or 0), seen
            )
            if fills.filled <= 0:
                continue  # triggered, its fills not listed yet: the next candle books them
            updates.append({"client_id": row["client_id"], **fills.record()})
            trades.append(self._close(new, fills, row["kind"], dated, entry_ts))
            entry_ts = None
            for other in rows:
                if other is not row:
                    self.broker.cancel(self.symbol, other["client_id"], conditional=True)
                    updates.append({"client_id": other["client_id"], "status": "canceled"})
            break
        return entry_ts

    # -- restart -------------------------------------------------------------------------------
    def recover(self) -> None:
        """Settle every order the journal left unsettled, then check the account's position
        equals the book's (see the module docstring)."""
        pending = self.journal.orders(self.symbol, open_only=True)
        close = self.last_close if self.last_close == self.last_close else float("nan")
        for row in pending:
            if row["status"] == "open":  # resting protection, confirmed before
                continue
            conditional = row["kind"] in ("stop", "target")
            result = self.broker.result(
                self.symbol, row["client_id"], conditional=conditional, amount=row["amount"]
            )
            log.info(
                "%s: recovering %s (%s): %s on the exchange",
                self.symbol,
                row["client_id"],
                row["kind"],
                result.status,
            )
            if result.status == "missing":
                if conditional:
                    self._place(row, close)
                elif self._still_due(row):
                    self._execute(row, close)
                else:
                    self._unsent(row)
            elif conditional:
                status = "open" if result.status in ("open", "triggered") else result.status
                self.journal.commit(
                    self.symbol,
                    self.last_ts,
                    self.state,
                    self.entry_ts,
                    [],
                    [],
                    [
                        {
                            "client_id": row["client_id"],
                            "status": status,
                            "exchange_id": result.exchange_id,
                        }
                    ],
                )
            else:  # sent and executed before the crash: book it
                self._execute(row, close, known=result)
        if self.state[S_POS] != 0 and self.exchange_stops and not self._protection_rows():
            log.warning("%s: the open position has no protective orders; placing them", self.symbol)
            last_entry = [r for r in self.journal.orders(self.symbol) if r["kind"] == "entry"]
            if last_entry:
                self._protect(last_entry[-1], close)
        self._check_position()

    def _still_due(self, row: dict[str, Any]) -> bool:
        decided = pd.Timestamp(row["bar_ts"]).value // 1_000_000
        return decided + 2 * self.step_ms > self.broker.now()

    def _unsent(self, row: dict[str, Any]) -> None:
        state = self.state.copy()
        if row["kind"] == "entry":
            state[S_PEND] = 0.0
        log.warning(
            "%s: order %s was never sent and its bar has passed; not sending it",
            self.symbol,
            row["client_id"],
        )
        self.journal.commit(
            self.symbol,
            self.last_ts,
            state,
            self.entry_ts,
            [
                (
                    "unsent",
                    {"client_id": row["client_id"], "why": "the session was down past its bar"},
                )
            ],
            [],
            [{"client_id": row["client_id"], "status": "unsent"}],
        )
        self.state = state

    def _check_position(self) -> None:
        held = self.broker.position(self.symbol)
        book = float(self.state[S_POS] * self.state[S_SIZE])
        triggered = (
            any(
                self.broker.result(
                    self.symbol, r["client_id"], conditional=True, amount=r["amount"]
                ).status
                == "triggered"
                for r in self._protection_rows()
            )
            if book != 0 and held == 0
            else False
        )
        if triggered:
            return  # closed by its stop or target while the session was down: booked next
        if not _same(held, book):
            raise BrokerError(
                f"{self.symbol}: the {self.broker.exchange_id} account holds {held:+g} but the "
                f"journal's book holds {book:+g}; a session trades only positions it opened. "
                "Close or adjust the position on the exchange, or check live.journal is this "
                "account's journal"
            )


def _plain(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k != "strategy_type"}


def _same(held: float, book: float) -> bool:
    """The account's position equals the book's (to rounding of the exchange's decimals)."""
    return abs(held - book) <= 1e-9 * max(1.0, abs(book))
