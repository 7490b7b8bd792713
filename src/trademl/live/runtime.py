"""The live paper-trading runtime (the spec's Module 16 ``run_live.py``).

On every closed candle of every symbol (concurrently, one asyncio task per symbol):

1. give the candle to the symbol's signal stream (``strategy.stream()``: streamed features and
   the fast predictor, in constant time per candle; a strategy without one is asked for
   ``generate_signal`` on a trailing window instead); this is the decision, and its latency
   is measured;
3. advance the symbol's book with :func:`trademl.backtest.step` (the backtester's own code:
   fill the pending order at this open, check the stop/target within the bar, mark to
   market, size the new signal with the RiskEngine's rule into an order for the next open);
4. journal the decision row (the candle, the signal, its probabilities and the model version
   that made it), the orders, fills, trades and the new book in one SQLite transaction, then
   adopt the new book (write-ahead: a crash loses nothing committed and repeats nothing).

Every journal row a candle produces says who made it: decision rows and ``order``, ``fill``
and ``exit`` events carry the model name and version (``model``, ``model_version``) of an
MLStrategy, or the ``strategy`` type of a strategy without a model. A fill and an exit carry
the version that decided the order they fill or close (see :mod:`trademl.live.divergence`).

Each symbol trades its own share of the cash, so the books are independent and a replay gives
exactly the backtest's trades. When a finite feed ends, open positions are closed at the last
close (as in the backtester). SIGINT/SIGTERM stop after the candle in hand; a restart with the
same journal resumes after the last committed candle. The model is reloaded when the
configured stage/alias moves to another version (checked every ``reload_interval`` seconds).

With ``live.portfolio=shared`` the books share one cash pool instead, and one task trades the
feeds through a barrier across the symbols (:mod:`trademl.live.portfolio`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from trademl.backtest import (
    S_BAR,
    S_ENTRY,
    S_ENTRY_FEE,
    S_ENTRY_I,
    S_EQUITY,
    S_PEND,
    S_PEND_SIZE,
    S_PEND_STOP,
    S_PEND_TARGET,
    S_POS,
    STATE_SIZE,
    close_out,
    fill_params,
    new_state,
    step,
)
from trademl.fills import EXIT_REASONS
from trademl.live.feeds import Candle, Feed
from trademl.live.journal import Journal
from trademl.periods import last_trained_bar
from trademl.risk import RiskConfig
from trademl.strategies import SIDE, MLStrategy
from trademl.strategies.base import SIDE_NAME

__all__ = ["Execution", "LiveRuntime", "SymbolTrader"]

log = logging.getLogger("trademl.live")


@dataclass(frozen=True)
class Execution:
    """Fill settings (the same as the backtester's ``backtest`` config group)."""

    cash: float = 10_000.0
    fees_bps: float = 10.0
    slippage_bps: float = 2.0
    on_opposite: str = "reverse"
    max_holding_bars: int | None = None


class SymbolTrader:
    """The book of one symbol: deterministic, journaled candle by candle."""

    def __init__(
        self,
        symbol: str,
        feed: Feed,
        strategy: Any,
        journal: Journal,
        *,
        risk: RiskConfig,
        execution: Execution,
        cash: float,
        window: int | None = 1000,
        pool: Any = None,
    ) -> None:
        self.symbol, self.feed, self.strategy, self.journal = symbol, feed, strategy, journal
        self.risk, self.execution, self.window_size = risk, execution, window
        self.cash0, self.pool = cash, pool  # pool: the SharedCash of live.portfolio=shared
        self.stream = _stream(strategy, symbol, window)
        self.window = pd.DataFrame()  # the trailing window of a strategy without a stream
        self.last_close = float("nan")
        self._by_model: Any = None  # the loaded model version self._by describes
        self._by: dict[str, Any] = {"strategy": getattr(strategy, "strategy_type", "unknown")}
        # who decided the pending order and the open position (their fills and exits say so)
        self._order_by: dict[str, Any] = {}
        self._position_by: dict[str, Any] = {}
        restored = journal.load_book(symbol)
        self.resumed = restored is not None
        if restored is None:
            self.state, self.last_ts, self.entry_ts = new_state(cash), None, None
        else:
            self.state, self.last_ts, self.entry_ts = restored
            self._order_by = (
                _by_of(journal.last_event(symbol, "order")) if self.state[S_PEND] else {}
            )
            self._position_by = (
                _by_of(journal.last_event(symbol, "fill")) if self.state[S_POS] else {}
            )
            history = feed.history(self.last_ts)
            if not len(history):  # e.g. a rotated file: the next candles rebuild the state
                log.warning(
                    "%s: the feed has no history up to %s; the strategy starts again from "
                    "the next candles",
                    symbol,
                    self.last_ts,
                )
            elif self.stream is not None:  # the whole history: the features the session had
                self.stream.warm_up(history)
            else:
                self.window = history if window is None else history.iloc[-window:]
            if len(history):
                self.last_close = float(history["close"].iloc[-1])
            if len(self.state) < STATE_SIZE:  # journaled before S_MARK: the last close
                self.state = np.append(self.state, self.last_close)
            log.info(
                "%s: resumed after %s (bar %d, position %+d)",
                symbol,
                self.last_ts,
                int(self.state[S_BAR]),
                int(self.state[S_POS]),
            )
        self.latencies: list[float] = []
        self.buffer = np.empty((2, 9))
        self._params = self._fill_params(execution.max_holding_bars)

    def _fill_params(self, max_holding_bars: int | None) -> tuple:
        ex = self.execution
        return fill_params(
            self.risk,
            fees_bps=ex.fees_bps,
            slippage_bps=ex.slippage_bps,
            on_opposite=ex.on_opposite,
            max_holding_bars=max_holding_bars,
        )

    def set_max_holding(self, bars: int | None) -> None:
        """A new holding limit from the next candle on (the open position included)."""
        self._params = self._fill_params(bars)

    def _decide(self, candle: Candle) -> tuple[int, float, float, dict[str, Any]]:
        if self.stream is not None:
            out = self.stream.update(candle)
        else:
            self._append(candle)
            enough = len(self.window) >= self.strategy.min_bars
            out = self.strategy.generate_signal(self.window) if enough else None
        if out is None:  # warming up
            return 0, float("nan"), float("nan"), {}
        meta = out["metadata"]
        if self.stream is not None and self.stream.details:  # e.g. the class probabilities
            meta = {**meta, **self.stream.details}
        return SIDE[out["signal"]], meta["sl_distance"], meta["tp_distance"], meta

    def who(self) -> dict[str, Any]:
        """Who decides now: ``{strategy, model, model_version}`` for an MLStrategy (the loaded
        version), ``{strategy}`` for a strategy without a model."""
        strategy = self.strategy
        if isinstance(strategy, MLStrategy):
            loaded = strategy.load()  # cached: an attribute check per candle
            if loaded is not self._by_model:
                self._by_model = loaded
                self._by = {
                    "strategy": strategy.strategy_type,
                    "model": loaded.name or strategy.model_name,
                    "model_version": str(loaded.version),
                }
        return self._by

    def _append(self, candle: Candle) -> None:
        row = pd.DataFrame(
            [[candle.open, candle.high, candle.low, candle.close, candle.volume]],
            columns=["open", "high", "low", "close", "volume"],
            index=pd.DatetimeIndex([candle.timestamp], name="timestamp"),
        )
        window = pd.concat([self.window, row]) if len(self.window) else row
        if self.window_size is not None:
            window = window.iloc[-self.window_size :]
        window.attrs["source"] = self.symbol
        self.window = window

    def process(self, candle: Candle) -> list[dict[str, Any]]:
        """Trade one closed candle; returns the trades it closed."""
        start = time.perf_counter()
        side, sl, tp, meta = self._decide(candle)
        self.last_close = candle.close
        new = self.state.copy()
        capped: list[tuple[str, dict[str, Any]]] = []  # orders cut by the shared pool's cap
        if self.pool is None:
            k = step(
                new,
                self.buffer,
                candle.open,
                candle.high,
                candle.low,
                candle.close,
                side,
                sl,
                tp,
                True,
                self._params,
            )
        else:
            k, capped = self.pool.step(self, new, candle, side, sl, tp, self._params)
        self.latencies.append(time.perf_counter() - start)
        by = self.who()
        decision = self.decision_row(candle, side, sl, tp, meta, by)
        events, trades, entry_ts, order_by, position_by = self._changes(
            candle, new, self.buffer[:k], meta, by
        )
        events += capped
        self.journal.commit(
            self.symbol, candle.timestamp, new, entry_ts, events, trades, decision=decision
        )
        self.state, self.entry_ts, self.last_ts = new, entry_ts, candle.timestamp
        self._order_by, self._position_by = order_by, position_by
        log.info(
            "%s %s close=%.2f signal=%s pos=%+d equity=%.2f trades=%d latency=%.1fms",
            self.symbol,
            candle.timestamp,
            candle.close,
            {1: "LONG", -1: "SHORT", 0: "FLAT"}[side],
            int(new[S_POS]),
            new[S_EQUITY],
            len(trades),
            1e3 * self.latencies[-1],
        )
        log.debug(
            "decision %s",
            {"symbol": self.symbol, "bar": str(candle.timestamp), "side": side, **meta},
        )
        return trades

    def _trade(
        self, row: np.ndarray, exit_ts: pd.Timestamp, entry_ts: str | None
    ) -> dict[str, Any]:
        return {
            "entry_time": entry_ts,
            "exit_time": str(exit_ts),
            "side": "LONG" if row[2] > 0 else "SHORT",
            "size": float(row[3]),
            "entry_price": float(row[4]),
            "exit_price": float(row[5]),
            "fees": float(row[6]),
            "pnl": float(row[7]),
            "exit_reason": EXIT_REASONS[int(row[8])],
        }

    @staticmethod
    def decision_row(candle, side, sl, tp, meta, by) -> tuple:
        """The journal's decision row of a candle (:data:`journal.DECISION_COLUMNS`): the
        candle, the signal (None while the strategy warms up), its probabilities, stop and
        target distances, and who decided."""
        return (
            candle.open,
            candle.high,
            candle.low,
            candle.close,
            candle.volume,
            SIDE_NAME[side] if meta else None,
            meta.get("confidence"),
            meta.get("p_SHORT"),
            meta.get("p_FLAT"),
            meta.get("p_LONG"),
            sl if meta else None,
            tp if meta else None,
            by["strategy"],
            by.get("model"),
            by.get("model_version"),
        )

    def _changes(self, candle, new, closed, meta, by):
        """Journal events and trades of one step, the open position's entry time, and who
        decided the pending order and the open position after it."""
        old, now, bar = self.state, str(candle.timestamp), int(new[S_BAR])
        order_by, position_by = self._order_by, self._position_by
        events: list[tuple[str, dict[str, Any]]] = []
        trades = [
            self._trade(row, candle.timestamp, now if int(row[0]) == bar else self.entry_ts)
            for row in closed
        ]
        if old[S_PEND] != 0:  # filled at this open: the entry price and fee of the new state
            events.append(
                (
                    "fill",
                    {
                        "side": int(old[S_PEND]),
                        "size": old[S_PEND_SIZE],
                        "bar": now,
                        "price": new[S_ENTRY],
                        "fee": new[S_ENTRY_FEE],
                        **order_by,
                    },
                )
            )
        events += [
            ("exit", {**t, **(order_by if int(row[0]) == bar else position_by)})
            for t, row in zip(trades, closed, strict=True)
        ]
        opened_now = int(new[S_ENTRY_I]) == bar
        if new[S_POS] == 0:
            position_by = {}
        elif opened_now:
            position_by = order_by
        order_by = {}
        if new[S_PEND] != 0:
            order_by = by
            events.append(
                (
                    "order",
                    {
                        "side": int(new[S_PEND]),
                        "size": new[S_PEND_SIZE],
                        "stop": new[S_PEND_STOP],
                        "target": new[S_PEND_TARGET],
                        "decided_on": now,
                        "signal": {k: v for k, v in meta.items() if k != "strategy_type"},
                        **by,
                    },
                )
            )
        entry_ts = None if new[S_POS] == 0 else (now if opened_now else self.entry_ts)
        return events, trades, entry_ts, order_by, position_by

    def finish(self) -> list[dict[str, Any]]:
        """End of a finite feed: cancel the pending order, close the position at the close."""
        if self.last_ts is None:
            return []
        if self.last_close != self.last_close:  # NaN: resumed without a candle or history
            if self.state[S_POS] != 0:
                log.warning(
                    "%s: no last close to close the position at; it stays open", self.symbol
                )
            return []
        new = self.state.copy()
        k = close_out(new, self.buffer, self.last_close, self._params[5], self._params[6])
        trades = [self._trade(r, self.last_ts, self.entry_ts) for r in self.buffer[:k]]
        events = [("exit", {**t, **self._position_by}) for t in trades] + (
            [("cancel", {"bar": str(self.last_ts), **self._order_by})]
            if self.state[S_PEND] != 0
            else []
        )
        if events:
            self.journal.commit(self.symbol, self.last_ts, new, None, events, trades)
        self.state, self.entry_ts = new, None
        self._order_by, self._position_by = {}, {}
        return trades


_BY_KEYS = ("strategy", "model", "model_version")


def _by_of(payload: dict[str, Any] | None) -> dict[str, Any]:
    """Who made a journaled order or fill (empty for a journal written before they said)."""
    return {k: payload[k] for k in _BY_KEYS if payload and k in payload}


def _stream(strategy: Any, symbol: str, window: int | None) -> Any:
    """The strategy's signal stream for ``symbol``, or ``None`` if it has none (a strategy
    that implements the protocol's ``generate_signal`` only). Errors building it propagate."""
    from trademl.strategies.base import BaseStrategy

    make = getattr(type(strategy), "stream", None)
    if make is None or make is BaseStrategy.stream:
        log.info("%s: %s has no stream; deciding on a trailing window", symbol, strategy)
        return None
    return strategy.stream(what=symbol, keep=window or 1000)


@dataclass
class LiveSummary:
    trades: pd.DataFrame
    equity: dict[str, float]
    latency_ms: dict[str, float]
    candles: int
    stopped_by_signal: bool
    model_switches: list[str] = field(default_factory=list)


class LiveRuntime:
    """Runs the symbol traders concurrently; MLflow session run; reload; clean shutdown."""

    def __init__(
        self,
        traders: list[SymbolTrader],
        journal: Journal,
        *,
        strategy: Any,
        tracker: Any = None,
        reload_interval: float = 60.0,
        close_at_end: bool = True,
        metrics_every: int = 50,
        allow_in_sample: bool = False,
        holding_from_model: bool = False,
        pool: Any = None,
    ) -> None:
        self.pool = pool  # live.portfolio=shared: its SharedCash runs the traders (barrier)
        self.allow_in_sample, self.holding_from_model = allow_in_sample, holding_from_model
        self.traders, self.journal, self.strategy = traders, journal, strategy
        self.tracker, self.reload_interval = tracker, reload_interval
        self.close_at_end, self.metrics_every = close_at_end, metrics_every
        self.stop = asyncio.Event()
        self.model_switches: list[str] = []
        self._stopped_by_signal = False
        self._tasks: list[asyncio.Task] = []

    def request_stop(self, *_: Any) -> None:
        """Stop after the candle in hand. Candles are processed synchronously, so a symbol
        task can only be suspended between candles (waiting on its feed): cancelling it there
        never interrupts a step or a journal write."""
        if not self.stop.is_set():
            log.info("stop requested: finishing the candle in hand")
        self._stopped_by_signal = True
        self.stop.set()
        for task in self._tasks:
            task.cancel()

    async def _symbol(self, trader: SymbolTrader) -> bool:
        """Trade a symbol's feed; True if a finite feed ran to its end."""
        if trader.resumed:  # the divergence report names a restart as a possible cause
            self.journal.note(
                trader.symbol,
                trader.last_ts,
                "resumed",
                {"bar": int(trader.state[S_BAR]), "position": int(trader.state[S_POS])},
            )
        async for candle in trader.feed.candles(after=trader.last_ts):
            trader.process(candle)
            if self.tracker is not None:
                self.tracker.candle(trader)
            if self.stop.is_set():
                return False
        return trader.feed.finite and not self.stop.is_set()

    async def _reload(self) -> None:
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=self.reload_interval)
                return
            except TimeoutError:
                pass
            self.check_model()

    def check_model(self) -> bool:
        if not isinstance(self.strategy, MLStrategy):
            return False
        before = self.strategy.load().version
        try:
            changed = self.strategy.refresh(accept=self._vet)
        except Exception as exc:  # keep trading on the loaded model
            log.error("model reload check failed, keeping version %s: %s", before, exc)
            return False
        if changed:
            after = self.strategy.load().version
            note = f"{self.strategy.uri}: version {before} -> {after}"
            self.model_switches.append(note)
            log.warning("model switched: %s", note)
            if self.holding_from_model:  # the new version's label horizon, as a backtest would
                for trader in self.traders:
                    trader.set_max_holding(self.strategy.max_holding_bars)
            for trader in self.traders:
                self.journal.commit(
                    trader.symbol,
                    trader.last_ts or pd.Timestamp(0, tz="UTC"),
                    trader.state,
                    trader.entry_ts,
                    [("model_reloaded", {"from": before, "to": after})],
                    [],
                )
            if self.tracker is not None:
                self.tracker.model_switched(after)
        return changed

    def _vet(self, loaded: Any) -> str:
        """Why a new version may not be traded now ("" if it may): it learned from bars later
        than the last candle a symbol traded, so the candles that follow could be in its
        training data (the check ``trademl live`` makes at start, by date)."""
        last = last_trained_bar(loaded.trademl)
        traded = [t.last_ts for t in self.traders if t.last_ts is not None]
        if last is None or not traded or last <= min(traded):
            return ""
        text = (
            f"it learned from bars up to {last}, later than the last candle traded "
            f"({min(traded)}): the candles that follow could be in its training data"
        )
        if self.allow_in_sample:
            log.warning("live.allow_in_sample: taking it anyway: %s", text)
            return ""
        return text + "; retrain on older data or set live.allow_in_sample=true"

    async def run(self) -> LiveSummary:
        loop = asyncio.get_running_loop()
        # the handlers in place before (trademl's: SIGTERM unwinds, the run ends KILLED) are
        # put back afterwards: asyncio's remove_signal_handler would leave SIG_DFL instead
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:  # (not available outside the main thread)
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.request_stop)
        reload_task = (
            asyncio.create_task(self._reload())
            if isinstance(self.strategy, MLStrategy) and self.reload_interval > 0
            else None
        )
        if self.pool is None:
            self._tasks = [asyncio.create_task(self._symbol(t)) for t in self.traders]
        else:  # one task: every candle of a timestamp before any later one
            self._tasks = [asyncio.create_task(self.pool.run(self))]
        try:
            results = await asyncio.gather(*self._tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError
                ):
                    raise result
            ended = [result is True for result in results] if self.pool is None else []
        finally:
            self.stop.set()
            if reload_task is not None:
                await reload_task
            for sig, handler in previous.items():
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)
                    if handler is not None:
                        signal.signal(sig, handler)
        if self.close_at_end and self.pool is None:  # (a shared pool closes each as it ends)
            for trader, done in zip(self.traders, ended, strict=True):
                if done:
                    trader.finish()
        return self._summary()

    def _summary(self) -> LiveSummary:
        lat = np.concatenate([np.asarray(t.latencies) for t in self.traders]) * 1e3
        latency = {f"p{q}": float(np.percentile(lat, q)) for q in (50, 95, 99)} if lat.size else {}
        return LiveSummary(
            trades=self.journal.trades(),
            equity={t.symbol: float(t.state[S_EQUITY]) for t in self.traders}
            | ({"portfolio": self.pool.equity()} if self.pool is not None else {}),
            latency_ms=latency,
            candles=int(lat.size),
            stopped_by_signal=self._stopped_by_signal,
            model_switches=list(self.model_switches),
        )
