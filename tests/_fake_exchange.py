"""A fake Binance spot REST API on 127.0.0.1 for the real ccxt client (tests only).

It speaks what ccxt's ``binance`` calls for a spot market with
``options: {defaultType: spot, fetchMarkets: [spot], fetchCurrencies: False}``:

* ``GET /api/v3/exchangeInfo`` (``load_markets``): one market, ``BTC/USDT`` by default;
* ``GET /api/v3/time`` (``fetch_time``): the server's clock;
* ``GET /api/v3/klines`` (``fetch_ohlcv``): ``symbol``, ``interval``, ``startTime``,
  ``endTime`` and ``limit`` as Binance reads them (open times in ``[startTime, endTime]``,
  ascending, ``limit`` 500 by default and at most 1000). Only candles that have opened by the
  server's clock are served; the last one is still forming while its close time is after the
  clock, and is served with partial values (as Binance does), so that a feed passing it on is
  caught by comparing with the series.

Faults, each for the next requests: ``drop(n)`` closes the socket without an answer,
``error(n, status)`` answers 5xx (or 429 with ``Retry-After``), ``delay(n, seconds)`` answers
late, ``repeat(n, k)`` serves ``k`` candles before ``startTime`` again (ccxt filters those out)
and the first and last candles twice,
``withhold(timestamps)`` leaves candles out until ``release()``, ``corrupt(ts, **values)``
changes a candle's values. ``clock`` is the server's time (ms), moved by ``advance``.

Use it as a context manager (or ``start``/``stop``); the fixture stops it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd

__all__ = ["FakeBinance"]

INTERVALS_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "1d": 86_400_000}


class FakeBinance:
    """Binance spot klines for one symbol, with a controllable clock and fault injection."""

    def __init__(
        self,
        candles: pd.DataFrame,
        *,
        timeframe: str = "1h",
        market_id: str = "BTCUSDT",
        base: str = "BTC",
        quote: str = "USDT",
        clock: pd.Timestamp | int | None = None,
    ) -> None:
        self.timeframe, self.interval = timeframe, INTERVALS_MS[timeframe]
        self.market_id, self.base, self.quote = market_id, base, quote
        self.times = (candles.index.asi8 // 1_000_000).astype(np.int64)
        self.values = candles[["open", "high", "low", "close", "volume"]].to_numpy(
            np.float64, copy=True
        )
        self.lock = threading.Lock()
        # the clock: by default just after the last candle closed
        self.clock = (
            int(self.times[-1]) + self.interval
            if clock is None
            else (clock if isinstance(clock, int) else int(pd.Timestamp(clock).value // 1e6))
        )
        self._faults: deque[tuple[str, float]] = deque()  # (drop | error | delay, argument)
        self._repeat_n = self._repeat_k = 0
        self._withheld: set[int] = set()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.faults = {"dropped": 0, "errors": 0, "delayed": 0, "repeated": 0}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ws_clients: list[dict] = []
        self._ws_loop = None
        self.ws_port: int | None = None
        self.ws_stats = {"connections": 0, "subscriptions": 0, "events": 0}

    # -- control -------------------------------------------------------------------------------
    def advance(self, bars: int = 1, ms: int = 0) -> None:
        with self.lock:
            self._move(self.clock + bars * self.interval + ms)

    def set_clock(self, ts: pd.Timestamp | int) -> None:
        with self.lock:
            self._move(ts if isinstance(ts, int) else int(pd.Timestamp(ts).value // 1_000_000))

    def _move(self, clock: int) -> None:
        """Set the clock (under the lock); the kline stream sends what changed."""
        events = self._kline_events(self.clock, clock)
        self.clock = clock
        self._ws_push(events)

    def ws_drop(self) -> None:
        """Close every kline stream connection (the client must reconnect)."""
        for client in list(self._ws_clients):
            self._ws_loop.call_soon_threadsafe(client["queue"].put_nowait, None)

    def drop(self, n: int = 1) -> None:
        """The next ``n`` requests (after the faults already queued) get no answer."""
        with self.lock:
            self._faults.extend([("drop", 0)] * n)

    def error(self, n: int = 1, status: int = 500) -> None:
        """The next ``n`` requests are answered ``status`` (429 with ``Retry-After: 1``)."""
        with self.lock:
            self._faults.extend([("error", status)] * n)

    def delay(self, n: int = 1, seconds: float = 0.5) -> None:
        """The next ``n`` requests are answered after ``seconds``."""
        with self.lock:
            self._faults.extend([("delay", seconds)] * n)

    def repeat(self, n: int = 1, k: int = 3) -> None:
        with self.lock:
            self._repeat_n, self._repeat_k = n, k

    def withhold(self, timestamps) -> None:
        with self.lock:
            self._withheld |= {int(pd.Timestamp(t).value // 1_000_000) for t in timestamps}

    def release(self) -> None:
        with self.lock:
            self._withheld.clear()

    def corrupt(self, ts: pd.Timestamp, **values: float) -> None:
        i = int(np.searchsorted(self.times, int(pd.Timestamp(ts).value // 1_000_000)))
        with self.lock:
            for name, value in values.items():
                self.values[i, ["open", "high", "low", "close", "volume"].index(name)] = value

    def closed(self) -> pd.DataFrame:
        """The candles closed by the server's clock, as served (a frame like the input)."""
        with self.lock:
            n = int(np.searchsorted(self.times + self.interval, self.clock, side="right"))
            times, values = self.times[:n].copy(), self.values[:n].copy()
        index = pd.DatetimeIndex(
            pd.to_datetime(times, unit="ms", utc=True).as_unit("ns"), name="timestamp"
        )
        return pd.DataFrame(values, index=index, columns=["open", "high", "low", "close", "volume"])

    def klines_requests(self) -> int:
        return sum(1 for path, _ in self.requests if path.endswith("/klines"))

    # -- server --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start the fake exchange first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def ccxt_options(self, **extra) -> dict:
        """``ccxt_options`` pointing ccxt's ``binance`` at this server, spot markets only."""
        api = f"{self.url}/api/v3"
        ws = f"{self.ws_url}/stream/ws"  # ccxt tells spot streams by "/stream" in the url
        return {
            "urls": {"api": {"public": api, "private": api, "ws": {"spot": ws, "margin": ws}}},
            "options": {"defaultType": "spot", "fetchMarkets": ["spot"], "fetchCurrencies": False},
            "timeout": 2000,
            **extra,
        }

    def start(self) -> FakeBinance:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as exchanges serve ccxt's session
            disable_nagle_algorithm = True  # headers and body leave at once

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                fake._handle(self)

            do_POST = do_DELETE = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        self._ws_start()
        return self

    # -- the kline stream (websocket) ---------------------------------------------------------
    @property
    def stream_name(self) -> str:
        return f"{self.market_id.lower()}@kline_{self.timeframe}"

    def _kline_events(self, old: int, new: int) -> list[dict]:
        """Binance kline events for a clock move: each candle that closed (final values,
        ``x: true``), then the one forming at the new clock (partial values)."""
        iv, events = self.interval, []
        closes = self.times + iv
        for i in np.flatnonzero((closes > old) & (closes <= new)):
            if int(self.times[i]) not in self._withheld:
                events.append(self._kline(int(i), new, final=True))
        j = int(np.searchsorted(self.times, new, side="right")) - 1
        if j >= 0 and self.times[j] + iv > new:
            events.append(self._kline(j, new, final=False))
        return events

    def _kline(self, i: int, clock: int, *, final: bool) -> dict:
        t = int(self.times[i])
        o, h, lo, c, v = (float(x) for x in self.values[i])
        if not final:
            c = (o + c) / 2
            h, lo, v = max(o, c), min(o, c), v / 2
        k = {"t": t, "T": t + self.interval - 1, "s": self.market_id, "i": self.timeframe}
        k.update(f=0, L=0, o=repr(o), c=repr(c), h=repr(h), l=repr(lo), v=repr(v), n=1, x=final)
        k.update(q="0", V="0", Q="0", B="0")
        return {"e": "kline", "E": clock, "s": self.market_id, "k": k}

    def _ws_push(self, events: list[dict]) -> None:
        if not events or self._ws_loop is None:
            return
        for client in list(self._ws_clients):
            if self.stream_name in client["streams"]:
                for event in events:
                    self._ws_loop.call_soon_threadsafe(client["queue"].put_nowait, event)
                self.ws_stats["events"] += len(events)

    async def _ws_handler(self, request):
        import asyncio

        from aiohttp import WSMsgType, web

        ws = web.WebSocketResponse()
        await ws.prepare(request)
        client = {"queue": asyncio.Queue(), "streams": set()}
        self._ws_clients.append(client)
        self.ws_stats["connections"] += 1

        async def writer():
            while True:
                message = await client["queue"].get()
                if message is None:
                    await ws.close()
                    return
                await ws.send_str(json.dumps(message))

        task = asyncio.create_task(writer())
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if data.get("method") == "SUBSCRIBE":
                    client["streams"].update(data.get("params") or [])
                    self.ws_stats["subscriptions"] += 1
                    client["queue"].put_nowait({"result": None, "id": data.get("id")})
        finally:
            self._ws_clients.remove(client)
            task.cancel()
        return ws

    def _ws_start(self) -> None:
        import asyncio

        from aiohttp import web

        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            app = web.Application()
            app.router.add_route("GET", "/{tail:.*}", self._ws_handler)
            runner = web.AppRunner(app)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.ws_port = site._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._ws_thread = threading.Thread(target=run, daemon=True)
        self._ws_thread.start()
        ready.wait(10)
        self._ws_loop = loop

    def _ws_stop(self) -> None:
        if self._ws_loop is not None:
            self._ws_loop.call_soon_threadsafe(self._ws_loop.stop)
            self._ws_thread.join(timeout=5)
            self._ws_loop = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    def stop(self) -> None:
        self._ws_stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> FakeBinance:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- requests ------------------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        parsed = urlparse(req.path)
        params = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        with self.lock:
            self.requests.append((parsed.path, params))
            fault, arg = self._faults.popleft() if self._faults else (None, 0)
            if fault is not None:
                self.faults[{"drop": "dropped", "error": "errors", "delay": "delayed"}[fault]] += 1
        if fault == "drop":
            req.close_connection = True
            with contextlib.suppress(OSError):
                req.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "error":
            body = b"<html>Service Unavailable</html>"
            req.send_response(int(arg))
            req.send_header("Content-Type", "text/html")
            req.send_header("Content-Length", str(len(body)))
            if arg == 429:
                req.send_header("Retry-After", "1")
            req.end_headers()
            req.wfile.write(body)
            return
        if fault == "delay":
            time.sleep(arg)
        payload, code = self._route(req, parsed.path, params)
        if code == 0:  # done, but the answer is lost on its way back
            req.close_connection = True
            with contextlib.suppress(OSError):
                req.connection.shutdown(socket.SHUT_RDWR)
            return
        body = json.dumps(payload).encode()
        try:
            req.send_response(code)
            req.send_header("Content-Type", "application/json")
            req.send_header("Content-Length", str(len(body)))
            req.end_headers()
            req.wfile.write(body)
        except OSError:  # the client gave up (a timeout)
            pass

    def _route(self, req: BaseHTTPRequestHandler, path: str, params: dict[str, str]):
        """``(payload, status)`` of one request (faults were handled by the caller)."""
        if path == "/api/v3/exchangeInfo":
            return self._exchange_info(), 200
        if path == "/api/v3/time":
            with self.lock:
                return {"serverTime": self.clock}, 200
        if path == "/api/v3/klines":
            return self._klines(params)
        return {"code": -1100, "msg": f"unknown path {path}"}, 404

    def _exchange_info(self) -> dict:
        return {
            "timezone": "UTC",
            "serverTime": self.clock,
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": [
                {
                    "symbol": self.market_id,
                    "status": "TRADING",
                    "baseAsset": self.base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": self.quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "orderTypes": ["LIMIT", "MARKET"],
                    "icebergAllowed": True,
                    "ocoAllowed": True,
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": "0.01",
                            "maxPrice": "1000000.00",
                            "tickSize": "0.01",
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": "0.00001",
                            "maxQty": "9000.00",
                            "stepSize": "0.00001",
                        },
                    ],
                    "permissions": [],
                    "permissionSets": [["SPOT"]],
                }
            ],
        }

    def _klines(self, params: dict[str, str]) -> tuple[object, int]:
        if params.get("symbol") != self.market_id:
            return {"code": -1121, "msg": "Invalid symbol."}, 400
        if params.get("interval") != self.timeframe:
            return {"code": -1120, "msg": "Invalid interval."}, 400
        limit = min(int(params.get("limit", 500)), 1000)
        with self.lock:
            clock, iv = self.clock, self.interval
            start = int(params.get("startTime", 0))
            end = int(params.get("endTime", clock))
            keep = (self.times >= start) & (self.times <= end) & (self.times <= clock)
            if self._withheld:
                keep &= ~np.isin(self.times, list(self._withheld))
            idx = np.flatnonzero(keep)
            if "startTime" not in params:  # Binance: the most recent `limit` candles
                idx = idx[-limit:]
            idx = idx[:limit]
            repeat = bool(self._repeat_n) and len(idx) > 0
            if repeat:
                self._repeat_n -= 1
                self.faults["repeated"] += 1
                before = np.arange(max(0, idx[0] - self._repeat_k), idx[0])
                idx = np.concatenate([before, idx[:1], idx, idx[-1:]])
            rows = []
            for i in idx:
                t = int(self.times[i])
                o, h, lo, c, v = (float(x) for x in self.values[i])
                if t + iv > clock:  # still forming: partial values
                    c = (o + c) / 2
                    h, lo, v = max(o, c), min(o, c), v / 2
                rows.append([t, repr(o), repr(h), repr(lo), repr(c), repr(v), t + iv - 1, "0"])
        return rows, 200
