"""An exchange feed through ccxt (``feeds.N.type: ccxt``): REST klines, closed candles only.

``history(until)`` pages ``fetch_ohlcv`` (1,000 candles a request, ccxt's rate limiter on);
``candles(after)`` polls ``fetch_ohlcv`` every ``poll_interval`` seconds from the candle after
the last one delivered, so after a disconnect or an exchange error (backed off exponentially,
``backoff`` doubling up to ``max_backoff`` seconds, logged as a warning) the gap is paged in
over REST before anything newer. A candle is delivered once it has closed by the exchange's
clock (``fetch_time``; without it the last candle of a response is taken as still forming),
de-duplicated by timestamp, strictly after the previous one, and checked by
:func:`trademl.data.validate_ohlcv`: a bad candle is a :class:`~trademl.errors.DataError`
raised after the good candles before it, never passed on. A missing candle (a hole in the
exchange's answer) is waited for ``gap_wait`` polls; if it is still missing the feed goes on
past it and counts the gap.

With ``stream: websocket`` (``auto``, the default, where ``ccxt.pro`` offers ``watch_ohlcv``
for the exchange) the feed first catches up over REST, then takes candles from the exchange's
kline stream: a candle is closed once an update of a later candle arrives, and is delivered
with the last values the stream gave it, checked and de-duplicated as above. A hole between
the last candle delivered and the stream's (a reconnection, a candle that closed while
subscribing) is paged in over REST before anything newer; a stream error backs off as above,
catches up over REST and subscribes again.

ccxt is imported when a feed is built, never by ``import trademl``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pandas as pd

from trademl._config import did_you_mean
from trademl.data import OHLCV_COLUMNS, validate_ohlcv
from trademl.errors import ConfigError, DataError
from trademl.live.feeds import Candle, Feed, _rows

__all__ = ["CcxtFeed"]

log = logging.getLogger("trademl.live")

PAGE = 1000  # candles per fetch_ohlcv request (Binance's maximum)
# ccxt errors that retrying cannot fix: raised at once (as a DataError)
_PERMANENT = (
    "AuthenticationError",
    "BadRequest",
    "NotSupported",
    "ArgumentsRequired",
)


def _utc(value: str) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _ms(ts: pd.Timestamp) -> int:
    return int(pd.Timestamp(ts).value // 1_000_000)


class CcxtFeed(Feed):
    """Closed candles of one market of a ccxt exchange (see the module docstring).

    Parameters
    ----------
    symbol
        The exchange's unified symbol, e.g. ``BTC/USDT``.
    exchange
        A ccxt exchange id (``binance``); it must be in ``ccxt.exchanges``.
    timeframe
        A candle interval the exchange offers (``1h``).
    ccxt_options
        Passed as-is to the exchange's constructor (``urls``, ``options``, ``timeout``,
        credentials); ``enableRateLimit`` is always on.
    poll_interval
        Seconds between polls once the feed has caught up.
    since
        The first candle of a new session (``candles(None)``) and of ``history``; ``None``
        starts with the last ``warmup`` closed candles.
    warmup
        Candles before the first live one when ``since`` is not given.
    backoff, max_backoff
        Seconds to wait after the first error, doubled after each further one up to
        ``max_backoff``.
    gap_wait
        Polls to wait for a missing candle before going on without it.
    stream
        ``websocket`` (candles from ``ccxt.pro``'s ``watch_ohlcv``), ``rest`` (polling) or
        ``auto``: websocket where the installed ccxt offers it for the exchange.
    max_retries
        Attempts of ``history`` and of loading the markets before giving up with a
        ``DataError`` (``candles`` retries without end: a live session outlives outages).
    """

    finite = False

    def __init__(
        self,
        symbol: str,
        *,
        exchange: str,
        timeframe: str = "1h",
        ccxt_options: dict[str, Any] | None = None,
        poll_interval: float = 10.0,
        since: str | None = None,
        warmup: int = 1000,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        gap_wait: int = 3,
        max_retries: int = 5,
        stream: str = "auto",
    ) -> None:
        check_settings(
            symbol, exchange, timeframe, poll_interval, warmup, backoff, max_backoff, since, stream
        )
        from trademl.live.ccxt_broker import _credential_keys

        given = _credential_keys(ccxt_options or {})
        if given:
            raise ConfigError(
                f"feed {symbol}: ccxt_options holds {', '.join(given)}; a feed reads public "
                "candles and needs no credentials (in a config they would reach the run's "
                "params): remove them (the ccxt broker reads its own from the environment)"
            )
        import ccxt

        self.symbol, self.exchange_id, self.timeframe = symbol, exchange, timeframe
        self.poll_interval, self.warmup = float(poll_interval), int(warmup)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.gap_wait, self.max_retries = int(gap_wait), max(1, int(max_retries))
        self.since = None if since is None else _utc(since)
        self.step = ccxt.Exchange.parse_timeframe(timeframe) * 1000  # ms
        self.stats = {"polls": 0, "errors": 0, "duplicates": 0, "gaps": 0}
        self._ccxt = ccxt
        self._permanent = tuple(getattr(ccxt, name) for name in _PERMANENT)
        self._options = {**(ccxt_options or {}), "enableRateLimit": True}
        self._ex = getattr(ccxt, exchange)(self._options)
        self.websocket = stream != "rest" and _has_watch(exchange)
        if stream == "websocket" and not self.websocket:
            raise ConfigError(
                f"feed {symbol}: stream=websocket, but the installed ccxt offers no watch_ohlcv "
                f"for {exchange}; use stream=rest (or auto)"
            )
        offered = getattr(self._ex, "timeframes", None) or {}
        if offered and timeframe not in offered:
            raise ConfigError(
                f"feed {symbol}: timeframe={timeframe!r} is not offered by {exchange}; choose "
                f"one of {', '.join(offered)}{did_you_mean(timeframe, list(offered))}"
            )
        markets = self._retrying(self._ex.load_markets, "loading the markets")
        if symbol not in markets:
            raise ConfigError(
                f"feed {symbol}: symbol {symbol!r} is not a market of {exchange}"
                f"{did_you_mean(symbol, list(markets))} (symbols look like BTC/USDT)"
            )
        self._has_time = bool(self._ex.has.get("fetchTime"))
        self._offset = 0  # ms: the exchange's clock minus ours, at the last poll

    @property
    def clock_ms(self) -> int:
        """The exchange's clock now: ours, corrected by the offset seen at the last poll."""
        return int(self._ex.milliseconds() + self._offset)

    # -- exchange calls ------------------------------------------------------------------------
    def _describe(self, exc: Exception) -> str:
        text = " ".join(str(exc).split())
        return f"{type(exc).__name__}: {text[:200]}"

    def _retrying(self, call: Callable[[], Any], what: str) -> Any:
        delay = self.backoff
        for attempt in range(1, self.max_retries + 1):
            try:
                return call()
            except self._permanent as exc:
                raise DataError(
                    f"feed {self.symbol}: {self.exchange_id} refused {what}: {self._describe(exc)}"
                ) from exc
            except self._ccxt.BaseError as exc:
                self.stats["errors"] += 1
                if attempt == self.max_retries:
                    raise DataError(
                        f"feed {self.symbol}: {self.exchange_id} failed {what} "
                        f"{attempt} times, last: {self._describe(exc)}"
                    ) from exc
                log.warning(
                    "feed %s: %s %s; retrying in %.3g s",
                    self.symbol,
                    what,
                    self._describe(exc),
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
        raise AssertionError("unreachable")  # pragma: no cover

    def _poll(self, since_ms: int) -> tuple[list, int | None]:
        """The exchange's clock (before the candles: what closed by then is closed) and up
        to a page of candles from ``since_ms``."""
        now = self._ex.fetch_time() if self._has_time else None
        if now is not None:  # the exchange's clock against ours, for clock_ms between polls
            self._offset = now - self._ex.milliseconds()
        rows = self._ex.fetch_ohlcv(self.symbol, self.timeframe, since=since_ms, limit=PAGE)
        return rows, now

    def _closed(self, rows: list, now: int | None, after: pd.Timestamp | None) -> pd.DataFrame:
        """The closed candles of a response strictly after ``after``: sorted, de-duplicated
        (the last copy of a timestamp wins), validated."""
        if not rows:
            return _empty()
        arr = np.asarray([r[:6] for r in rows], dtype=np.float64)
        ts = arr[:, 0].astype(np.int64)
        # without the exchange's clock the newest candle may still be forming
        keep = ts < ts.max() if now is None else ts + self.step <= now
        order = np.argsort(ts[keep], kind="stable")
        ts, arr = ts[keep][order], arr[keep][order]
        last_copy = np.r_[ts[1:] != ts[:-1], True] if len(ts) else np.zeros(0, bool)
        self.stats["duplicates"] += int((~last_copy).sum())
        ts, arr = ts[last_copy], arr[last_copy]
        if after is not None:
            new = ts > _ms(after)
            self.stats["duplicates"] += int((~new).sum())
            ts, arr = ts[new], arr[new]
        if not len(ts):
            return _empty()
        index = pd.DatetimeIndex(
            pd.to_datetime(ts, unit="ms", utc=True).as_unit("ns"), name="timestamp"
        )
        frame = pd.DataFrame(arr[:, 1:], index=index, columns=list(OHLCV_COLUMNS))
        validate_ohlcv(frame, what=f"{self.exchange_id} {self.symbol} {self.timeframe} candles")
        return frame

    def _good_prefix(self, rows: list, now: int | None, after: pd.Timestamp | None):
        """``(candles, error)``: the closed candles up to the first bad one, and the
        ``DataError`` naming it (``None`` if all are good)."""
        try:
            return self._closed(rows, now, after), None
        except DataError as exc:
            good = []
            for row in sorted(rows, key=lambda r: r[0]):
                try:
                    one = self._closed([row], now, good[-1].index[-1] if good else after)
                except DataError:
                    break
                if len(one):
                    good.append(one)
            return (pd.concat(good) if good else _empty()), exc

    # -- the Feed interface --------------------------------------------------------------------
    def _start_ms(self, end_ms: int) -> int:
        if self.since is not None:
            return _ms(self.since)
        return (end_ms // self.step) * self.step - self.warmup * self.step

    def history(self, until: pd.Timestamp | None = None) -> pd.DataFrame:
        now = self._retrying(self._ex.fetch_time, "fetching the time") if self._has_time else None
        if until is None:
            end = now if now is not None else self._ex.milliseconds()
            cursor = self._start_ms(end)
        else:
            end = _ms(until)
            cursor = self._start_ms(end + self.step)
        pages, last = [], None
        while cursor <= end:
            rows = self._retrying(
                lambda c=cursor: self._ex.fetch_ohlcv(
                    self.symbol, self.timeframe, since=c, limit=PAGE
                ),
                "fetching candles",
            )
            # closed by the clock read before paging (without one, a page's newest candle
            # waits for the next page)
            page = self._closed(rows, now, last)
            page = page.loc[page.index <= pd.Timestamp(end, unit="ms", tz="UTC")]
            if not len(page):
                break
            pages.append(page)
            last = page.index[-1]
            cursor = _ms(last) + self.step
            if len(rows) < PAGE:
                break
        frame = pd.concat(pages) if pages else _empty()
        frame.attrs["source"] = f"{self.exchange_id}:{self.symbol}:{self.timeframe}"
        return frame

    async def candles(self, after: pd.Timestamp | None = None) -> AsyncIterator[Candle]:
        source = self._stream_candles(after) if self.websocket else self._rest_candles(after)
        async for candle in source:
            yield candle

    async def _rest_candles(
        self, after: pd.Timestamp | None, *, catch_up: bool = False
    ) -> AsyncIterator[Candle]:
        """Polled candles; ``catch_up``: return once an answer brings nothing more."""
        last = after
        if last is None:
            now = await asyncio.to_thread(
                self._retrying,
                (self._ex.fetch_time if self._has_time else self._ex.milliseconds),
                "fetching the time",
            )
            cursor = self._start_ms(now)
        else:
            cursor = _ms(last) + self.step
        delay, gap_polls = self.backoff, 0
        while True:
            self.stats["polls"] += 1
            ok, answer, delay = await self._attempt(
                lambda c=cursor: asyncio.to_thread(self._poll, c),
                "the candles request",
                "",
                lambda c=cursor: f"backfilling from {pd.Timestamp(c, unit='ms', tz='UTC')}",
                delay,
            )
            if not ok:
                continue
            rows, now = answer
            new, bad = self._good_prefix(rows, now, last)
            ready = _contiguous(new, last, self.step)
            if bad is not None:  # the good candles before it, then the error
                for candle in _rows(self.symbol, new.iloc[:ready]):
                    yield candle
                raise bad
            if ready < len(new):  # a hole before new.index[ready]
                if gap_polls < self.gap_wait:
                    gap_polls += 1
                    log.info(
                        "feed %s: candle %s missing; waiting (%d/%d)",
                        self.symbol,
                        new.index[ready] - pd.Timedelta(self.step, unit="ms"),
                        gap_polls,
                        self.gap_wait,
                    )
                else:
                    self.stats["gaps"] += 1
                    log.warning(
                        "feed %s: candles missing before %s after %d polls; going on without",
                        self.symbol,
                        new.index[ready],
                        gap_polls,
                    )
                    ready, gap_polls = len(new), 0
            else:
                gap_polls = 0
            for candle in _rows(self.symbol, new.iloc[:ready]):
                yield candle
                last = candle.timestamp
            if last is not None:
                cursor = _ms(last) + self.step
            if ready and len(rows) >= PAGE:  # catching up: the next page at once
                continue
            if catch_up and not gap_polls:
                return
            await asyncio.sleep(self.poll_interval)

    async def _attempt(self, call, what: str, prefix: str, then, delay: float):
        """``(True, answer, backoff)`` of one awaited exchange call; a refusal raises a
        ``DataError``; any other ccxt error is counted, logged and waited out for ``delay``
        seconds, giving ``(False, None, the next delay)`` (doubled, up to ``max_backoff``);
        ``then()`` says what follows, in the warning."""
        try:
            return True, await call(), self.backoff
        except self._permanent as exc:
            raise DataError(
                f"feed {self.symbol}: {self.exchange_id} refused {what}: {self._describe(exc)}"
            ) from exc
        except self._ccxt.BaseError as exc:
            self.stats["errors"] += 1
            log.warning(
                "feed %s: %s%s; reconnecting in %.3g s, then %s",
                self.symbol,
                prefix,
                self._describe(exc),
                delay,
                then(),
            )
            await asyncio.sleep(delay)
            return False, None, min(delay * 2, self.max_backoff)

    async def _stream_candles(self, after: pd.Timestamp | None) -> AsyncIterator[Candle]:
        """REST up to now, then the websocket kline stream (see the module docstring)."""
        import ccxt.pro

        last = after
        async for candle in self._rest_candles(last, catch_up=True):
            yield candle
            last = candle.timestamp
        pro = getattr(ccxt.pro, self.exchange_id)(self._options)
        seen: dict[int, list] = {}  # timestamp: the stream's latest values of that candle
        delay = self.backoff
        try:
            while True:
                ok, rows, delay = await self._attempt(
                    lambda: pro.watch_ohlcv(self.symbol, self.timeframe),
                    "the kline stream",
                    "stream ",
                    lambda: "backfilling over REST",
                    delay,
                )
                if not ok:
                    seen.clear()  # a candle's last values may have been lost: REST has them
                    async for candle in self._rest_candles(last, catch_up=True):
                        yield candle
                        last = candle.timestamp
                    continue
                self.stats["polls"] += 1
                for row in rows:
                    seen[int(row[0])] = list(row[:6])
                newest = max(seen)
                closed = [seen.pop(ts) for ts in sorted(seen) if ts < newest]
                if last is not None:
                    closed = [r for r in closed if r[0] > _ms(last)]
                if not closed:
                    continue
                if _ms(last) + self.step < closed[0][0] if last is not None else False:
                    # a hole before the stream's first candle: page it in first
                    async for candle in self._rest_candles(last, catch_up=True):
                        yield candle
                        last = candle.timestamp
                    closed = [r for r in closed if r[0] > _ms(last)]
                new, bad = self._good_prefix(closed, newest, last)  # closed: before newest
                for candle in _rows(self.symbol, new):
                    yield candle
                    last = candle.timestamp
                if bad is not None:
                    raise bad
        finally:
            await pro.close()


def _contiguous(new: pd.DataFrame, last: pd.Timestamp | None, step: int) -> int:
    """How many of ``new``'s first candles follow ``last`` (or each other) without a hole."""
    if not len(new):
        return 0
    ts = new.index.asi8 // 1_000_000
    expected = np.r_[ts[0] if last is None else _ms(last) + step, ts[:-1] + step]
    holes = np.flatnonzero(ts != expected)
    return int(holes[0]) if len(holes) else len(ts)


def _empty() -> pd.DataFrame:
    index = pd.DatetimeIndex([], tz="UTC", name="timestamp").as_unit("ns")
    return pd.DataFrame({c: pd.Series(dtype=np.float64) for c in OHLCV_COLUMNS}, index=index)


def check_settings(
    symbol: str,
    exchange: str,
    timeframe: str,
    poll_interval: float = 10.0,
    warmup: int = 1000,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    since: str | None = None,
    stream: str = "auto",
) -> None:
    """The checks that need no network: a known exchange id, a parseable timeframe, a
    symbol, positive intervals, a readable ``since`` (a ``ConfigError`` naming the key)."""
    import ccxt

    if stream not in ("auto", "websocket", "rest"):
        raise ConfigError(
            f"feed {symbol}: stream={stream!r} must be auto, websocket or rest"
            f"{did_you_mean(str(stream), ['auto', 'websocket', 'rest'])}"
        )

    if not symbol or not str(symbol).strip():
        raise ConfigError("feed: a ccxt feed needs a symbol, e.g. BTC/USDT")
    if exchange not in ccxt.exchanges:
        raise ConfigError(
            f"feed {symbol}: exchange={exchange!r} is not a ccxt exchange id"
            f"{did_you_mean(str(exchange), ccxt.exchanges)} (see ccxt.exchanges)"
        )
    try:
        seconds = ccxt.Exchange.parse_timeframe(timeframe)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, ccxt.BaseError) as exc:
        raise ConfigError(
            f"feed {symbol}: timeframe={timeframe!r} is not a candle interval like 1m, 1h, 1d"
        ) from exc
    if not seconds or seconds <= 0:
        raise ConfigError(f"feed {symbol}: timeframe={timeframe!r} must be a positive interval")
    for key, value in (
        ("poll_interval", poll_interval),
        ("warmup", warmup),
        ("backoff", backoff),
        ("max_backoff", max_backoff),
    ):
        if value is None or value <= 0:
            raise ConfigError(f"feed {symbol}: {key}={value!r} must be > 0")
    if since is not None:
        try:
            pd.Timestamp(since)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"feed {symbol}: since={since!r} is not a time, e.g. 2025-01-01T00:00:00Z"
            ) from exc


def _has_watch(exchange: str) -> bool:
    """Whether the installed ccxt streams ``exchange``'s candles (``ccxt.pro``)."""
    try:
        import ccxt.pro
    except ImportError:  # pragma: no cover - ccxt >= 4 ships ccxt.pro
        return False
    cls = getattr(ccxt.pro, exchange, None)
    return cls is not None and bool(cls().has.get("watchOHLCV"))
