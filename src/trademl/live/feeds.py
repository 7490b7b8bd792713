"""Candle feeds: the one interface the live runtime reads from.

A feed delivers **closed** candles of one symbol, in time order:

* ``history(until)`` returns the candles up to and including ``until`` (all of them for
  ``None``) as a clean OHLCV frame: the runtime warms its window with it, and rebuilds it
  after a restart;
* ``candles(after)`` is an async iterator of :class:`Candle` strictly after ``after``. It ends
  when a finite feed is exhausted (``finite = True``) and runs until cancelled otherwise.

To connect an exchange, implement these two methods (for instance ``history`` from the REST
klines endpoint, ``candles`` from the websocket's closed-kline events) and name the class in
the live config's ``feeds`` (``type: my_package.MyFeed``); nothing in the runtime changes.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from trademl.cleaning import clean_ohlcv_data
from trademl.data import canonical_frame, load_ohlcv_data, validate_ohlcv
from trademl.data_io import parse_csv_text
from trademl.errors import DataError

__all__ = ["Candle", "Feed", "FollowFeed", "ReplayFeed"]


@dataclass(frozen=True)
class Candle:
    """One closed candle."""

    symbol: str
    timestamp: pd.Timestamp
    open: float
    high: float
    low: float
    close: float
    volume: float


def _rows(symbol: str, df: pd.DataFrame) -> list[Candle]:
    return [
        Candle(symbol, ts, o, h, lo, c, v)
        for ts, o, h, lo, c, v in zip(
            df.index, df["open"], df["high"], df["low"], df["close"], df["volume"], strict=True
        )
    ]


class Feed(ABC):
    """A source of closed candles for one symbol (see the module docstring)."""

    symbol: str
    finite: bool = False

    @property
    def replayable(self) -> bool:
        """Whether the feed can give its candles again (a file replayed as fast as possible):
        its journal need not fsync each candle (see ``live.durable``)."""
        return False

    @abstractmethod
    def history(self, until: pd.Timestamp | None = None) -> pd.DataFrame: ...

    @abstractmethod
    def candles(self, after: pd.Timestamp | None = None) -> AsyncIterator[Candle]: ...


class ReplayFeed(Feed):
    """Replays a CSV or Parquet file, as fast as possible or ``speed`` times real time.

    ``delay`` (seconds per candle) slows a replay down independently of the bar interval.
    """

    finite = True

    def __init__(
        self, path: str | Path, symbol: str, *, speed: float | None = None, delay: float = 0.0
    ) -> None:
        if speed is not None and speed <= 0:
            raise DataError(f"feed {symbol}: speed={speed!r} must be positive (or null)")
        self.path, self.symbol, self.speed, self.delay = Path(path), symbol, speed, float(delay)
        raw = load_ohlcv_data(self.path)
        self._data, self.report = clean_ohlcv_data(raw)
        self._data.attrs["source"] = str(self.path)

    @property
    def replayable(self) -> bool:
        return self.speed is None and self.delay == 0.0

    def history(self, until: pd.Timestamp | None = None) -> pd.DataFrame:
        return self._data if until is None else self._data.loc[:until]

    async def candles(self, after: pd.Timestamp | None = None) -> AsyncIterator[Candle]:
        data = self._data if after is None else self._data.loc[self._data.index > after]
        interval = (
            (self._data.index[1] - self._data.index[0]).total_seconds()
            if len(self._data) > 1
            else 0.0
        )
        for candle in _rows(self.symbol, data):
            yield candle
            pause = self.delay + (interval / self.speed if self.speed else 0.0)
            await asyncio.sleep(pause)


class FollowFeed(Feed):
    """Follows a CSV file that another process appends closed candles to (like ``tail -f``).

    The file must have a header line; every complete line appended is one closed candle.
    ``idle_timeout`` (seconds without a new candle) ends the feed; ``None`` follows forever.
    """

    def __init__(
        self,
        path: str | Path,
        symbol: str,
        *,
        poll_interval: float = 1.0,
        idle_timeout: float | None = None,
    ) -> None:
        self.path, self.symbol = Path(path), symbol
        self.poll_interval, self.idle_timeout = float(poll_interval), idle_timeout
        if not self.path.exists():
            raise DataError(f"{self.path}: file not found (feed {symbol})")
        self._header: str | None = None
        self._offset = 0
        self._buffer = ""
        self._lines_read = 0  # complete file lines consumed, the header included

    def history(self, until: pd.Timestamp | None = None) -> pd.DataFrame:
        df = load_ohlcv_data(self.path)
        validate_ohlcv(df, what=str(self.path))
        return df if until is None else df.loc[:until]

    def _read_new(self) -> pd.DataFrame | None:
        with self.path.open("r", encoding="utf-8") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
            self._offset = fh.tell()
        text = self._buffer + chunk
        lines = text.split("\n")
        self._buffer = lines.pop()  # an incomplete last line waits for its newline
        while self._header is None and lines:
            self._lines_read += 1
            line = lines.pop(0)
            if line.strip():
                self._header = line
        before = self._lines_read  # file line of the header text's line 1 is found below
        self._lines_read += len(lines)
        if self._header is None or not any(line.strip() for line in lines):
            return None
        # the same reader as load_ohlcv_data (delimiters, trailing commas, bad lines named);
        # text line k >= 2 is file line before + k - 1
        table = parse_csv_text("\n".join([self._header, *lines]), self.path)
        return canonical_frame(
            table.frame, self.path, 0, "line", locate=lambda i: table.locate(i) + before - 1
        )

    async def candles(self, after: pd.Timestamp | None = None) -> AsyncIterator[Candle]:
        last = after
        idle = 0.0
        while True:
            new = self._read_new()
            if new is not None:
                if last is not None:
                    new = new.loc[new.index > last]
                if len(new):
                    validate_ohlcv(new, what=f"{self.path} (appended candles)")
                    for candle in _rows(self.symbol, new):
                        yield candle
                    last, idle = new.index[-1], 0.0
                    continue
            if self.idle_timeout is not None and idle >= self.idle_timeout:
                return
            await asyncio.sleep(self.poll_interval)
            idle += self.poll_interval
