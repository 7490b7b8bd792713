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
   up and never open one (exits they call for, a time exit or a runtime stop, are sent).
3. **Write-ahead**: the new book and every planned order with its client order id are
   committed to the journal *before* anything is sent; then each order is sent, and its
   result (filled amount, average price, fees from the exchange's trades; partial fills and
   refusals included) is committed with the book it leads to.

On start, in three phases run for every symbol before the next: every order the journal
holds as not yet settled is looked up on the exchange by its client id, and one that was
executed is booked (an order the exchange does not know is looked up again once
``broker.resend_grace`` has passed since it was sent); the account's position must then equal
the book's (or what its triggered stop or target left of it), or the session refuses to
start; last, orders that never arrived are sent if their candle is still the latest (else
recorded as unsent) and an open position lacking its stop and target gets them again.
``kill -9`` at any point therefore neither loses an order nor sends one twice.

On every candle the account's position is read (one request): a difference from the book is
a stop or target the exchange triggered (booked from that order's trades, in full or in part)
or a close from outside the session (a liquidation, a manual close: booked from the account's
closing trades as ``external``, with an event); a position the book does not have stops the
session.

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
        self._trading_from = journal.get_meta(f"trading_from:{symbol}")

    # -- the candle ----------------------------------------------------------------------------
    def process(self, candle: Candle) -> list[dict[str, Any]]:
        start = time.perf_counter()
        side, sl, tp, meta = self._decide(candle)
        self.last_close = candle.close
        trades = self._settle(candle.timestamp)  # what the exchange did during the bar
        new = self.state.copy()
        new[S_BAR] += 1.0
        fresh = self._fresh(candle)
        if fresh and self._trading_from is None:  # the report's backtest starts here too
            self._trading_from = str(candle.timestamp)
            self.journal.set_meta(f"trading_from:{self.symbol}", self._trading_from)
        plan = self._plan(new, candle, side, sl, tp, meta, fresh)
        self._mark(new, candle.close)
        self.latencies.append(time.perf_counter() - start)
        by = self.who()
        for row in plan:  # who decided each order, with the signal's probabilities
            row["detail"].update(
                strategy=by["strategy"],
                model=by.get("model"),
                model_version=by.get("model_version"),
            )
        decision = self.decision_row(candle, side, sl, tp, meta, by)
        self.journal.commit(
            self.symbol, candle.timestamp, new, self.entry_ts, [], [], plan, decision=decision
        )
        self.state, self.last_ts = new, candle.timestamp
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
        base = f"{self.tag}-{t}{_KIND_CODE[kind]}"
        taken = self.journal.order_ids(base)  # an order placed again (a retry, protection)
        cid = base if base not in taken else f"{base}{len(taken)}"
        return {
            "client_id": cid,
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
    def _commit(self, state, entry_ts, events=(), trades=(), orders=()) -> None:
        """Commit order rows with the book they lead to, then adopt it."""
        self.journal.commit(
            self.symbol, self.last_ts, state, entry_ts, list(events), list(trades), list(orders)
        )
        self.state, self.entry_ts = state, entry_ts

    def _execute(
        self,
        order: dict[str, Any],
        close: float,
        known: OrderResult | None = None,
        *,
        protect: bool = True,
    ) -> list[dict[str, Any]]:
        """Send one planned order (unless its result is ``known``: executed before a restart)
        and book its result; returns the trades it closed. ``protect=False``: a new
        position's stop and target are left for later (a restart's last phase)."""
        if order["kind"] == "entry":
            return self._enter(order, close, known, protect)
        return self._exit(order, close, known)

    def _enter(self, order, close, known, protect=True) -> list[dict[str, Any]]:
        cid = order["client_id"]
        result = known or self._send_market(order, reduce_only=False)
        new, events = self.state.copy(), []
        new[S_PEND] = 0.0
        entry_ts = self.entry_ts
        if result.filled > 0:
            self._open(new, order, result)
            entry_ts = order["detail"]["dated"]
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
        self._commit(new, entry_ts, events, [], [{"client_id": cid, **result.record()}])
        if new[S_POS] != 0 and protect:
            self._protect(order["detail"]["dated"])
        return []

    def _exit(self, order, close, known) -> list[dict[str, Any]]:
        """Close the position at market: its protective orders cancelled first (journaled
        as cancelling before the exchange is asked), a partial fill booked and the rest sent
        again; a refusal puts the protection back and stops the session."""
        cid, dated = order["client_id"], order["detail"]["dated"]
        trades: list[dict[str, Any]] = []
        if known is None:
            trades += self._settle()  # a stop may have closed it since the candle
            if self.state[S_POS] == 0:
                self._commit(
                    self.state.copy(),
                    self.entry_ts,
                    [("order_dropped", {"client_id": cid, "why": "already flat"})],
                    [],
                    [{"client_id": cid, "status": "dropped"}],
                )
                return trades
            self._cancel_protection()
        result = known or self._send_market(order, reduce_only=True)
        new = self.state.copy()
        booked = []
        if result.filled > 0:
            booked.append(self._close(new, result, order["reason"], dated))
        self._mark(new, close)
        self._commit(
            new,
            self.entry_ts if new[S_POS] != 0 else None,
            [("partial_fill", {"client_id": cid, "filled": result.filled})]
            if result.status == "partial"
            else [],
            booked,
            [{"client_id": cid, **result.record()}],
        )
        trades += booked
        if new[S_POS] == 0:
            return trades
        if result.filled > 0 and order.get("attempt", 0) < 2:  # the rest, once more
            rest = self._order(
                int(new[S_BAR]), "exit", -new[S_POS], new[S_SIZE], order["reason"], dated
            )
            rest["attempt"] = order.get("attempt", 0) + 1
            self._commit(self.state.copy(), self.entry_ts, [], [], [rest])
            return trades + self._exit(rest, close, None)
        self._protect(self.entry_ts or dated)
        raise BrokerError(
            f"{self.symbol}: the exchange did not close the position ({cid}: "
            f"{result.message or result.status}); it stays open with its stop and target "
            "placed again, and the session stops: see the exchange, then restart"
        )

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

    def _close(self, state, result: OrderResult, reason: str, dated) -> dict[str, Any]:
        """Close ``result.filled`` of the book at the exchange's fill (all of it, or part:
        the entry fee shared pro rata); the trade as the paper trader writes it."""
        pos, size, entry_px = state[S_POS], state[S_SIZE], state[S_ENTRY]
        amount = min(result.filled, size)
        share = amount / size
        entry_fee = state[S_ENTRY_FEE] * share
        gross = pos * amount * (result.price - entry_px)
        state[S_CASH] += gross - result.fee
        trade = {
            "entry_time": self.entry_ts,
            "exit_time": str(dated),
            "side": "LONG" if pos > 0 else "SHORT",
            "size": float(amount),
            "entry_price": float(entry_px),
            "exit_price": float(result.price),
            "fees": float(entry_fee + result.fee),
            "pnl": float(gross - entry_fee - result.fee),
            "exit_reason": reason,
        }
        if _same(amount, size):
            state[S_POS] = 0.0
        else:
            state[S_SIZE] -= amount
            state[S_ENTRY_FEE] -= entry_fee
        return trade

    # -- protection ----------------------------------------------------------------------------
    def _protect(self, dated) -> None:
        """Place the position's stop and target on the exchange (journaled first); a level the
        price has already crossed closes the position at once, at market."""
        if not self.exchange_stops or self.state[S_POS] == 0:
            return
        t = int(self.state[S_BAR])
        side, size = int(self.state[S_POS]), float(self.state[S_SIZE])
        rows = []
        for kind, level in (("stop", self.state[S_STOP]), ("target", self.state[S_TARGET])):
            if level > 0:
                row = self._order(t, kind, side, size, kind, dated)
                row["price"] = float(level)
                row["detail"]["since"] = self._entry_time()
                rows.append(row)
        self._commit(self.state.copy(), self.entry_ts, [], [], rows)
        for row in rows:
            self._place(row)

    def _place(self, row: dict[str, Any]) -> None:
        if self.state[S_POS] == 0:  # closed already (the other one was crossed)
            self._commit(
                self.state.copy(),
                None,
                [],
                [],
                [{"client_id": row["client_id"], "status": "dropped"}],
            )
            return
        result = self.broker.protect(
            self.symbol, row["kind"], row["side"], row["amount"], row["price"], row["client_id"]
        )
        self._commit(
            self.state.copy(),
            self.entry_ts,
            [],
            [],
            [{"client_id": row["client_id"], **result.record()}],
        )
        if result.status == "open":
            return
        # crossed (the price is already beyond it) or refused: close now, at market
        log.warning(
            "%s: %s %s not placed (%s); closing at market",
            self.symbol,
            row["kind"],
            row["client_id"],
            result.message,
        )
        self._commit(
            self.state.copy(),
            self.entry_ts,
            [("protection_failed", {"client_id": row["client_id"], "why": result.message})],
        )
        exit_row = self._order(
            int(self.state[S_BAR]),
            "exit",
            -self.state[S_POS],
            self.state[S_SIZE],
            row["kind"],
            row["detail"]["dated"],
        )
        self._commit(self.state.copy(), self.entry_ts, [], [], [exit_row])
        self._exit(exit_row, self.state[S_MARK], None)

    def _entry_time(self) -> int | None:
        rows = [r for r in self.journal.orders(self.symbol) if r["kind"] == "entry" and r["filled"]]
        return rows[-1]["detail"].get("time") if rows else None

    def _protection_rows(self, *statuses: str) -> list[dict[str, Any]]:
        return [
            r
            for r in self.journal.orders(self.symbol, open_only=True)
            if r["kind"] in ("stop", "target") and (not statuses or r["status"] in statuses)
        ]

    def _cancel_protection(self) -> None:
        """Cancel the resting stop and target: marked cancelling in the journal first (a
        restart finishes the job), then cancelled on the exchange, then marked cancelled."""
        rows = self._protection_rows()
        if not rows:
            return
        mark = [{"client_id": r["client_id"], "status": "canceling"} for r in rows]
        self._commit(self.state.copy(), self.entry_ts, [], [], mark)
        for row in rows:
            self.broker.cancel(self.symbol, row["client_id"], conditional=True)
        done = [{"client_id": r["client_id"], "status": "canceled"} for r in rows]
        self._commit(self.state.copy(), self.entry_ts, [], [], done)

    def _settle(self, dated=None) -> list[dict[str, Any]]:
        """Book what the exchange did to the position on its own: a stop or target triggered
        (in full or in part), or a close from outside the session (a liquidation, a manual
        close: booked as ``external``). One request when nothing happened: the account's
        position still equals the book's."""
        book = float(self.state[S_POS] * self.state[S_SIZE])
        held = self.broker.position(self.symbol)
        if _same(held, book):
            return []
        if book == 0:
            raise BrokerError(
                f"{self.symbol}: the {self.broker.exchange_id} account holds {held:+g} that "
                "this session did not open (its book is flat); the session stops: close it on "
                "the exchange, then restart"
            )
        seen = {
            tid
            for r in self.journal.orders(self.symbol)
            for tid in (r["detail"] or {}).get("trades", [])
        }
        side = int(self.state[S_POS])
        rows = self._protection_rows()
        fills, reason = None, "external"
        for row in rows:
            order = self.broker.status(self.symbol, row["client_id"], conditional=True)
            if order is None or (order.get("status") in ("open", None) and not order.get("filled")):
                continue
            if order.get("status") in ("canceled", "expired", "rejected") and not order.get(
                "filled"
            ):
                continue
            fills = self.broker.order_fills(
                self.symbol, order, side, row["detail"].get("since"), seen
            )
            reason = row["kind"]
            if fills.filled > 0:
                break
        if fills is None or fills.filled <= 0:
            since = self._entry_time()
            fills = self.broker.closing_fills(self.symbol, side, since or 0, seen)
            reason = "external"
        if fills.filled <= 0:
            log.warning(
                "%s: the account holds %+g, the book %+g; the fills are not listed yet",
                self.symbol,
                held,
                book,
            )
            return []
        new = self.state.copy()
        when = dated if dated is not None else (self.last_ts if self.last_ts is not None else "")
        trade = self._close(new, fills, reason, when)
        events = []
        if reason == "external":
            events.append(("external_close", {"filled": fills.filled, "held": held}))
            log.error(
                "%s: %g closed outside the session (%s); booked at the exchange's fills",
                self.symbol,
                fills.filled,
                self.broker.exchange_id,
            )
        marks = []  # the fills are remembered on the order they came from
        if reason == "external":  # on a row of their own: never booked twice
            row = self._order(int(new[S_BAR]), "exit", -side, fills.filled, "external", when)
            marks.append(
                {**row, **fills.record(), "detail": {**row["detail"], **fills.record()["detail"]}}
            )
        for row in rows:
            if row["kind"] == reason:
                seen_here = list((row["detail"] or {}).get("trades", [])) + fills.trades
                status = "filled" if new[S_POS] == 0 else row["status"]
                marks.append(
                    {
                        "client_id": row["client_id"],
                        "status": status,
                        "detail": {"trades": seen_here},
                    }
                )
        self._mark(new, new[S_MARK] if new[S_MARK] == new[S_MARK] else fills.price)
        self._commit(new, self.entry_ts if new[S_POS] != 0 else None, events, [trade], marks)
        if new[S_POS] == 0:
            self._cancel_protection()
        return [trade]

    # -- restart -------------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Restart, first phase: book every market order the exchange executed before the
        crash (nothing is sent), finish cancellations, check resting protective orders."""
        for row in self.journal.orders(self.symbol, open_only=True):
            kind, cid = row["kind"], row["client_id"]
            if kind in ("entry", "exit"):
                result = self.broker.result(
                    self.symbol, cid, conditional=False, amount=row["amount"]
                )
                if result.status == "missing":
                    result = self._missing_after_grace(row)
                log.info("%s: recovering %s (%s): %s", self.symbol, cid, kind, result.status)
                if result.status != "missing":
                    self._execute(row, self.state[S_MARK], known=result, protect=False)
            elif row["status"] == "canceling":
                self.broker.cancel(self.symbol, cid, conditional=True)
                self._commit(
                    self.state.copy(),
                    self.entry_ts,
                    [],
                    [],
                    [{"client_id": cid, "status": "canceled"}],
                )
            else:
                result = self.broker.result(
                    self.symbol, cid, conditional=True, amount=row["amount"]
                )
                if result.status in ("canceled", "expired", "rejected"):
                    lost = self.state[S_POS] != 0  # (a closed position's are simply gone)
                    self._commit(
                        self.state.copy(),
                        self.entry_ts,
                        [("protection_lost", {"client_id": cid, "status": result.status})]
                        if lost
                        else [],
                        [],
                        [{"client_id": cid, "status": result.status}],
                    )
                elif result.status in ("open", "triggered"):
                    self._commit(
                        self.state.copy(),
                        self.entry_ts,
                        [],
                        [],
                        [{"client_id": cid, "status": "open", "exchange_id": result.exchange_id}],
                    )

    def check_position(self) -> None:
        """Restart, second phase: the account's position must be the book's, or what the
        book's triggered protective orders left of it."""
        held = self.broker.position(self.symbol)
        book = float(self.state[S_POS] * self.state[S_SIZE])
        if _same(held, book):
            return
        shrunk = book != 0 and abs(held) < abs(book) and np.sign(held) in (0, np.sign(book))
        if shrunk and any(self._triggered(r) for r in self._protection_rows()):
            return  # closed (in part) by its stop or target while the session was down
        raise BrokerError(
            f"{self.symbol}: the {self.broker.exchange_id} account holds {held:+g} but the "
            f"journal's book holds {book:+g}; a session trades only positions it opened. "
            "Close or adjust the position on the exchange, or check live.journal is this "
            "account's journal"
        )

    def _triggered(self, row: dict[str, Any]) -> bool:
        result = self.broker.result(
            self.symbol, row["client_id"], conditional=True, amount=row["amount"]
        )
        return result.status == "triggered"

    def resume(self) -> None:
        """Restart, last phase: send the orders that never reached the exchange (those of
        the latest candle; older ones are recorded as unsent), book protective fills, and
        put back the protection an open position lacks."""
        for row in self.journal.orders(self.symbol, open_only=True):
            if row["kind"] not in ("entry", "exit") or row["status"] != "new":
                continue
            if self._still_due(row):
                self._execute(row, self.state[S_MARK])
            else:
                self._unsent(row)
        self._settle()
        unplaced = self._protection_rows("new")  # journaled, never reached the exchange
        for row in unplaced:
            self._place(row)  # (marked dropped if the position is closed meanwhile)
        if self.state[S_POS] != 0 and self.exchange_stops and not self._protection_rows("open"):
            log.warning("%s: the open position has no protective orders; placing them", self.symbol)
            self._protect(self.entry_ts or "")

    def recover(self) -> None:
        """All three phases for one symbol (``trademl live`` runs each phase for every symbol
        before the next, so no order is sent before every position is checked)."""
        self.reconcile()
        self.check_position()
        self.resume()

    def _missing_after_grace(self, row: dict[str, Any]) -> OrderResult:
        """An order the exchange does not know: looked up again once ``resend_grace`` has
        passed since it was sent (a request still on its way may yet arrive)."""
        wait = row["updated"] + self.broker.resend_grace - time.time()
        if wait > 0:
            time.sleep(wait)
        return self.broker.result(
            self.symbol, row["client_id"], conditional=False, amount=row["amount"]
        )

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
        self._commit(
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


def _same(held: float, book: float) -> bool:
    """The account's position equals the book's (to rounding of the exchange's decimals)."""
    return abs(held - book) <= 1e-9 * max(1.0, abs(book))


def _plain(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k != "strategy_type"}
