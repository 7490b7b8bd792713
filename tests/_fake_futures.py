"""A fake Binance USD-M futures API on 127.0.0.1 for the real ccxt client (tests only).

It speaks what ccxt's ``binanceusdm`` calls for one perpetual market (``BTC/USDT:USDT``) in
one-way mode, with the candles and faults of :class:`~tests._fake_exchange.FakeBinance`:

* public: ``/fapi/v1/exchangeInfo``, ``/fapi/v1/time``, ``/fapi/v1/klines``;
* orders (an ``X-MBX-APIKEY`` header is required; signatures are not checked):
  ``POST/GET/DELETE /fapi/v1/order`` (market orders, ``reduceOnly``), ``POST/GET/DELETE
  /fapi/v1/algoOrder`` (conditional ``STOP_MARKET`` and ``TAKE_PROFIT`` orders),
  ``GET /fapi/v1/openAlgoOrders``, ``GET /fapi/v1/userTrades``, ``GET /fapi/v2|v3/positionRisk``.

Matching: a market order fills at once at the forming candle's open worsened by
``slippage_bps`` (the price when the previous candle closed), with ``fee_bps`` commission. A
conditional order placed when its trigger is already crossed is refused (-2021, as Binance
does). When the clock moves past a candle's close, each open conditional order is checked
against that candle with the backtester's rules (a gap through the stop fills at the open, the
stop before the target in one bar, a stop fills with slippage at its trigger, a take-profit
limit at its price); a reduce-only order finding no position expires. Client order ids are
unique among *open* orders only (-4116 otherwise), as on Binance: a market order sent twice
under the same id is executed twice, and a test counts executions per client id
(:meth:`executions`).

``autostep = True`` moves the clock one candle each time a klines request asks for the candle
still forming (the client has everything closed and waits for the next): a session runs in
lockstep with the candles, whatever the machine's speed. ``on_order(hook)`` calls ``hook(path,
phase)`` with phase ``"before"`` (request received, nothing done; a true return drops it; a
hook that sleeps delays the request on its way, and one older than its ``recvWindow`` is then
refused, as Binance refuses it) and
``"after"`` (executed, not yet answered): a test kills its client there.
``partial(fraction)`` fills the next market order only in part (``EXPIRED`` with the rest
unfilled); ``reject(code, msg)`` refuses the next order; ``lose_answer(n)`` executes the next
orders and closes the connection instead of answering.
"""

from __future__ import annotations

import itertools
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

import numpy as np
import pandas as pd

from tests._fake_exchange import FakeBinance

__all__ = ["FakeBinanceFutures"]


def _num(x: float) -> str:
    return repr(float(x))


class FakeBinanceFutures(FakeBinance):
    """Binance USD-M futures for one perpetual market, with matching and fault injection."""

    def __init__(
        self,
        candles: pd.DataFrame,
        *,
        fee_bps: float = 10.0,
        slippage_bps: float = 2.0,
        step_size: str = "0.001",
        min_notional: float = 5.0,
        **kwargs,
    ) -> None:
        kwargs.setdefault("market_id", "BTCUSDT")
        super().__init__(candles, **kwargs)
        self.fee_rate, self.slippage = fee_bps / 1e4, slippage_bps / 1e4
        self.step_size, self.min_notional = step_size, min_notional
        self.orders: list[dict] = []  # every order ever accepted, market and conditional
        self.trades: list[dict] = []
        self.position = 0.0  # signed amount
        self.entry_price = 0.0
        self.autostep = False
        self._ids = itertools.count(1000)
        self._hook = None
        self._partial: list[float] = []
        self._rejects: list[tuple[int, str]] = []
        self._lose = 0
        self.api_keys: set[str] = set()  # the keys private requests came with
        self.late = 0  # signed requests refused as older than their recvWindow

    # -- control -------------------------------------------------------------------------------
    def on_order(self, hook) -> None:
        self._hook = hook

    def partial(self, fraction: float) -> None:
        with self.lock:
            self._partial.append(fraction)

    def lose_answer(self, n: int = 1) -> None:
        """The next ``n`` orders are executed, and their answers lost (the socket closes)."""
        with self.lock:
            self._lose += n

    def reject(self, code: int = -2019, msg: str = "Margin is insufficient.") -> None:
        with self.lock:
            self._rejects.append((code, msg))

    def executions(self) -> dict[str, int]:
        """How many times each client id was executed (filled, in full or in part)."""
        counts: dict[str, int] = {}
        for o in self.orders:
            if o["type"] == "MARKET" and float(o.get("executedQty") or 0) > 0:
                counts[_cid(o)] = counts.get(_cid(o), 0) + 1
        return counts

    def market_orders(self) -> list[dict]:
        return [o for o in self.orders if o["type"] == "MARKET"]

    def ccxt_options(self, **extra) -> dict:
        """``ccxt_options`` pointing ccxt's ``binanceusdm`` at this server."""
        base = self.url
        return {
            "urls": {
                "api": {
                    "fapiPublic": f"{base}/fapi/v1",
                    "fapiPublicV2": f"{base}/fapi/v2",
                    "fapiPublicV3": f"{base}/fapi/v3",
                    "fapiPrivate": f"{base}/fapi/v1",
                    "fapiPrivateV2": f"{base}/fapi/v2",
                    "fapiPrivateV3": f"{base}/fapi/v3",
                    "fapiData": f"{base}/futures/data",
                    "ws": {"linear": f"{self.ws_url}/ws"},
                }
            },
            "options": {
                "fetchMarkets": {"types": ["linear"]},
                "fetchCurrencies": False,
                "recvWindow": 250,  # ms: a late request is refused by the fake, as by Binance
            },
            "timeout": 2000,
            **extra,
        }

    # -- matching ------------------------------------------------------------------------------
    def _forming(self) -> int | None:
        """Index of the candle forming at the clock (None before the first or after the last)."""
        i = int(np.searchsorted(self.times, self.clock, side="right")) - 1
        if i < 0 or self.times[i] + self.interval <= self.clock:
            return None
        return i

    def _move(self, clock: int) -> None:
        """Set the clock, matching conditional orders against each candle that closes."""
        for i in np.flatnonzero(
            (self.times + self.interval > self.clock) & (self.times + self.interval <= clock)
        ):
            self._match(int(i))
        super()._move(clock)

    def _match(self, i: int) -> None:
        o, h, lo, _c, _v = (float(x) for x in self.values[i])
        now = int(self.times[i] + self.interval - 1)
        live = [x for x in self.orders if x["type"] != "MARKET" and x["algoStatus"] == "NEW"]
        if not live:
            return
        pos = np.sign(self.position)
        stops = [x for x in live if x["orderType"] == "STOP_MARKET"]
        targets = [x for x in live if x["orderType"] == "TAKE_PROFIT"]
        fired = None
        for x in stops:  # the stop first, as the backtester assumes
            trig = float(x["triggerPrice"])
            if pos > 0 and x["side"] == "SELL" and (o <= trig or lo <= trig):
                fired = (x, min(o, trig) * (1 - self.slippage))
            elif pos < 0 and x["side"] == "BUY" and (o >= trig or h >= trig):
                fired = (x, max(o, trig) * (1 + self.slippage))
            if fired:
                break
        if fired is None:
            for x in targets:
                trig, px = float(x["triggerPrice"]), float(x["price"])
                if pos > 0 and x["side"] == "SELL" and (o >= trig or h >= trig):
                    fired = (x, max(o, px))
                elif pos < 0 and x["side"] == "BUY" and (o <= trig or lo <= trig):
                    fired = (x, min(o, px))
                if fired:
                    break
        if fired is not None:
            x, px = fired
            qty = min(float(x["quantity"]), abs(self.position))
            child = self._fill_market(x["side"], qty, px, now, reduce_only=True)
            x.update(algoStatus="FINISHED", actualOrderId=child["orderId"], triggerTime=now)
            x["updateTime"] = now
        for x in live:  # reduce-only orders left without a position expire
            if x["algoStatus"] == "NEW" and self.position == 0:
                x.update(algoStatus="EXPIRED", updateTime=now)

    def _fill_market(
        self, side: str, qty: float, px: float, now: int, *, reduce_only: bool, cid: str = ""
    ) -> dict:
        sign = 1.0 if side == "BUY" else -1.0
        before = self.position
        realised = 0.0
        if before != 0 and np.sign(before) != sign:
            closed = min(abs(before), qty)
            realised = np.sign(before) * closed * (px - self.entry_price)
        self.position = before + sign * qty
        if abs(self.position) < 1e-12:
            self.position = 0.0
        if self.position != 0 and (before == 0 or np.sign(before) != np.sign(self.position)):
            self.entry_price = px
        order_id = next(self._ids)
        order = {
            "orderId": order_id,
            "symbol": self.market_id,
            "status": "FILLED",
            "clientOrderId": cid or f"fake{order_id}",
            "price": "0",
            "avgPrice": _num(px),
            "origQty": _num(qty),
            "executedQty": _num(qty),
            "cumQty": _num(qty),
            "cumQuote": _num(px * qty),
            "timeInForce": "GTC",
            "type": "MARKET",
            "reduceOnly": reduce_only,
            "closePosition": False,
            "side": side,
            "positionSide": "BOTH",
            "stopPrice": "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": "MARKET",
            "updateTime": now,
        }
        self.orders.append(order)
        self.trades.append(
            {
                "symbol": self.market_id,
                "id": next(self._ids),
                "orderId": order_id,
                "side": side,
                "price": _num(px),
                "qty": _num(qty),
                "realizedPnl": _num(realised),
                "quoteQty": _num(px * qty),
                "commission": _num(self.fee_rate * px * qty),
                "commissionAsset": "USDT",
                "time": now,
                "positionSide": "BOTH",
                "buyer": side == "BUY",
                "maker": False,
            }
        )
        return order

    # -- requests ------------------------------------------------------------------------------
    def _route(self, req: BaseHTTPRequestHandler, path: str, params: dict[str, str]):
        """``(payload, status)`` of one request (faults were handled by the caller)."""
        if req.command == "POST":
            length = int(req.headers.get("Content-Length") or 0)
            body = req.rfile.read(length).decode() if length else ""
            params = {**params, **{k: v[-1] for k, v in parse_qs(body).items()}}
        if path == "/fapi/v1/exchangeInfo":
            return self._futures_info(), 200
        if path == "/fapi/v1/time":
            with self.lock:
                return {"serverTime": self.clock}, 200
        if path == "/fapi/v1/klines":
            with self.lock:
                waiting = int(params.get("startTime", -1)) >= self._frontier()
                if self.autostep and waiting and self.clock < self.times[-1] + self.interval:
                    self._move(self.clock + self.interval)
            return self._klines(params)
        if not req.headers.get("X-MBX-APIKEY"):
            return {"code": -2014, "msg": "API-key format invalid."}, 401
        self.api_keys.add(req.headers["X-MBX-APIKEY"])
        key = (req.command, path)
        order_paths = {("POST", "/fapi/v1/order"), ("POST", "/fapi/v1/algoOrder")}
        hook = self._hook if key in order_paths else None
        if hook is not None and hook(path, "before"):  # the client is gone: do nothing
            return {"code": -1000, "msg": "dropped by the test"}, 500
        # Binance refuses a signed request older than its recvWindow when it is processed, so
        # an order delayed on its way is never executed after the client has given up on it
        stamp, window = int(params.get("timestamp", 0)), int(params.get("recvWindow", 5000))
        if stamp and time.time() * 1000 > stamp + window:
            self.late += 1
            message = "Timestamp for this request is outside of the recvWindow."
            return {"code": -1021, "msg": message}, 400
        with self.lock:
            payload, code = self._private(key, params)
        if hook is not None:
            hook(path, "after")
        if key in order_paths and self._lose and code == 200:
            self._lose -= 1
            return None, 0  # executed; the answer never arrives
        return payload, code

    def _frontier(self) -> int:
        """Open time of the first candle not closed by the clock."""
        i = int(np.searchsorted(self.times + self.interval, self.clock, side="right"))
        return int(self.times[i]) if i < len(self.times) else int(self.times[-1]) + self.interval

    def _private(self, key: tuple[str, str], p: dict[str, str]):
        method, path = key
        if p.get("symbol", self.market_id) != self.market_id:
            return {"code": -1121, "msg": "Invalid symbol."}, 400
        if key in {("POST", "/fapi/v1/order"), ("POST", "/fapi/v1/algoOrder")}:
            cid = p.get("newClientOrderId") or p.get("clientAlgoId") or ""
            # Binance: "a unique id among open orders": a filled market order's id is free
            if cid and any(_cid(o) == cid and _is_open(o) for o in self.orders):
                return {"code": -4116, "msg": "ClientOrderId is duplicated."}, 400
            if self._rejects:
                code, msg = self._rejects.pop(0)
                return {"code": code, "msg": msg}, 400
        if key == ("POST", "/fapi/v1/order"):
            return self._new_market(p)
        if key == ("POST", "/fapi/v1/algoOrder"):
            return self._new_algo(p)
        if path == "/fapi/v1/order":
            order = self._find(
                "orderId", p.get("orderId"), "clientOrderId", p.get("origClientOrderId")
            )
            if order is None:
                return {"code": -2013, "msg": "Order does not exist."}, 400
            if method == "DELETE":
                return {"code": -2011, "msg": "Unknown order sent."}, 400  # market: filled
            return order, 200
        if path == "/fapi/v1/algoOrder":
            order = self._find("algoId", p.get("algoId"), "clientAlgoId", p.get("clientAlgoId"))
            if order is None:
                return {"code": -2013, "msg": "Order does not exist."}, 400
            if method == "DELETE":
                if order["algoStatus"] != "NEW":
                    return {"code": -2011, "msg": "Unknown order sent."}, 400
                order.update(algoStatus="CANCELED", updateTime=self.clock)
                return {
                    "algoId": order["algoId"],
                    "clientAlgoId": order["clientAlgoId"],
                    "code": "200",
                    "msg": "success",
                }, 200
            return order, 200
        if path == "/fapi/v1/openAlgoOrders":
            return [o for o in self.orders if o.get("algoStatus") == "NEW"], 200
        if path == "/fapi/v1/userTrades":
            return self._user_trades(p), 200
        if path == "/fapi/v1/leverageBracket":
            bracket = {"bracket": 1, "initialLeverage": 20, "notionalCap": 1e9, "notionalFloor": 0}
            return [
                {
                    "symbol": self.market_id,
                    "brackets": [{**bracket, "maintMarginRatio": 0.004, "cum": 0}],
                }
            ], 200
        if path in ("/fapi/v2/positionRisk", "/fapi/v3/positionRisk"):
            return [self._position_row()], 200
        return {"code": -1100, "msg": f"unknown path {method} {path}"}, 404

    def _find(self, id_key, id_value, cid_key, cid_value) -> dict | None:
        for o in self.orders:
            if id_value is not None and str(o.get(id_key)) == str(id_value):
                return o
            if cid_value is not None and o.get(cid_key) == cid_value:
                return o
        return None

    def _check_qty(self, p: dict[str, str]) -> tuple[float, tuple | None]:
        qty = float(p.get("quantity", "nan"))
        step = float(self.step_size)
        if not qty > 0 or abs(qty / step - round(qty / step)) > 1e-6:
            return qty, ({"code": -1111, "msg": "Precision is over the maximum defined."}, 400)
        return qty, None

    def _new_market(self, p: dict[str, str]):
        if p.get("type") != "MARKET":
            return {"code": -1116, "msg": "Invalid orderType (this fake: MARKET only)."}, 400
        qty, bad = self._check_qty(p)
        if bad:
            return bad
        i = self._forming()
        if i is None:
            return {"code": -1122, "msg": "Invalid symbol status (market closed)."}, 400
        side = p["side"]
        sign = 1.0 if side == "BUY" else -1.0
        px = float(self.values[i, 0]) * (1 + sign * self.slippage)
        reduce_only = p.get("reduceOnly") == "true"
        if reduce_only:
            if self.position == 0 or np.sign(self.position) == sign:
                return {"code": -2022, "msg": "ReduceOnly Order is rejected."}, 400
            qty = min(qty, abs(self.position))
        elif px * qty < self.min_notional:
            return {
                "code": -4164,
                "msg": f"Order's notional must be no smaller than {self.min_notional}",
            }, 400
        status = "FILLED"
        if self._partial:
            fraction = self._partial.pop(0)
            step = float(self.step_size)
            filled = np.floor(qty * fraction / step + 1e-9) * step
            status = "EXPIRED"
        else:
            filled = qty
        order = (
            self._fill_market(
                side,
                filled,
                px,
                self.clock,
                reduce_only=reduce_only,
                cid=p.get("newClientOrderId", ""),
            )
            if filled > 0
            else None
        )
        if order is None:
            order_id = next(self._ids)
            order = {
                "orderId": order_id,
                "symbol": self.market_id,
                "clientOrderId": p.get("newClientOrderId", ""),
                "avgPrice": "0",
                "executedQty": "0",
                "cumQuote": "0",
                "type": "MARKET",
                "side": side,
                "reduceOnly": reduce_only,
                "positionSide": "BOTH",
                "updateTime": self.clock,
            }
            self.orders.append(order)
        order.update(status=status, origQty=_num(qty))
        return order, 200

    def _new_algo(self, p: dict[str, str]):
        kind = p.get("type")
        if kind not in ("STOP_MARKET", "TAKE_PROFIT"):
            return {
                "code": -1116,
                "msg": f"Invalid orderType {kind} (this fake: STOP_MARKET, TAKE_PROFIT).",
            }, 400
        qty, bad = self._check_qty(p)
        if bad:
            return bad
        trig = float(p["triggerPrice"])
        i = self._forming()
        if i is None:
            return {"code": -1122, "msg": "Invalid symbol status (market closed)."}, 400
        price = float(self.values[i, 0])  # the last price: the open of the forming candle
        side = p["side"]
        crossed = (
            (side == "SELL" and kind == "STOP_MARKET" and price <= trig)
            or (side == "BUY" and kind == "STOP_MARKET" and price >= trig)
            or (side == "SELL" and kind == "TAKE_PROFIT" and price >= trig)
            or (side == "BUY" and kind == "TAKE_PROFIT" and price <= trig)
        )
        if crossed:
            return {"code": -2021, "msg": "Order would immediately trigger."}, 400
        order = {
            "algoId": next(self._ids),
            "clientAlgoId": p.get("clientAlgoId", ""),
            "algoType": "CONDITIONAL",
            "orderType": kind,
            "type": kind,
            "symbol": self.market_id,
            "side": side,
            "positionSide": "BOTH",
            "timeInForce": p.get("timeInForce", "GTC"),
            "quantity": _num(qty),
            "algoStatus": "NEW",
            "triggerPrice": _num(trig),
            "price": _num(float(p.get("price", "0"))),
            "workingType": "CONTRACT_PRICE",
            "priceMatch": "NONE",
            "closePosition": False,
            "priceProtect": False,
            "reduceOnly": p.get("reduceOnly") == "true",
            "createTime": self.clock,
            "updateTime": self.clock,
            "triggerTime": 0,
            "goodTillDate": 0,
        }
        self.orders.append(order)
        return order, 200

    def _user_trades(self, p: dict[str, str]) -> list[dict]:
        rows = self.trades
        if "orderId" in p:
            rows = [t for t in rows if str(t["orderId"]) == p["orderId"]]
        if "startTime" in p:
            rows = [t for t in rows if t["time"] >= int(p["startTime"])]
        if "endTime" in p:
            rows = [t for t in rows if t["time"] <= int(p["endTime"])]
        if "fromId" in p:
            rows = [t for t in rows if t["id"] >= int(p["fromId"])]
        return rows[: min(int(p.get("limit", 500)), 1000)]

    def _position_row(self) -> dict:
        i = self._forming()
        mark = float(self.values[i, 0]) if i is not None else float(self.values[-1, 3])
        return {
            "symbol": self.market_id,
            "positionSide": "BOTH",
            "positionAmt": _num(self.position),
            "entryPrice": _num(self.entry_price),
            "breakEvenPrice": "0",
            "markPrice": _num(mark),
            "unRealizedProfit": _num(self.position * (mark - self.entry_price)),
            "liquidationPrice": "0",
            "isolatedMargin": "0",
            "notional": _num(self.position * mark),
            "marginAsset": "USDT",
            "isolatedWallet": "0",
            "initialMargin": "0",
            "maintMargin": "0",
            "positionInitialMargin": "0",
            "openOrderInitialMargin": "0",
            "adl": 0,
            "bidNotional": "0",
            "askNotional": "0",
            "updateTime": self.clock,
            "leverage": "1",
            "marginType": "cross",
        }

    def _futures_info(self) -> dict:
        return {
            "timezone": "UTC",
            "serverTime": self.clock,
            "futuresType": "U_MARGINED",
            "rateLimits": [],
            "exchangeFilters": [],
            "assets": [{"asset": self.quote, "marginAvailable": True, "autoAssetExchange": "0"}],
            "symbols": [
                {
                    "symbol": self.market_id,
                    "pair": self.market_id,
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000,
                    "onboardDate": 1569398400000,
                    "status": "TRADING",
                    "baseAsset": self.base,
                    "quoteAsset": self.quote,
                    "marginAsset": self.quote,
                    "pricePrecision": 8,
                    "quantityPrecision": 3,
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "underlyingSubType": [],
                    "triggerProtect": "0.0500",
                    "liquidationFee": "0.012500",
                    "marketTakeBound": "0.05",
                    "maxMoveOrderLimit": 10000,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": "0.00000001",
                            "maxPrice": "10000000",
                            "tickSize": "0.00000001",
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": self.step_size,
                            "maxQty": "1000",
                            "stepSize": self.step_size,
                        },
                        {
                            "filterType": "MARKET_LOT_SIZE",
                            "minQty": self.step_size,
                            "maxQty": "1000",
                            "stepSize": self.step_size,
                        },
                        {"filterType": "MIN_NOTIONAL", "notional": str(self.min_notional)},
                    ],
                    "orderTypes": [
                        "LIMIT",
                        "MARKET",
                        "STOP",
                        "STOP_MARKET",
                        "TAKE_PROFIT",
                        "TAKE_PROFIT_MARKET",
                    ],
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
                }
            ],
        }


def _cid(order: dict) -> str:
    return order.get("clientOrderId") or order.get("clientAlgoId") or ""


def _is_open(order: dict) -> bool:
    return order.get("algoStatus") == "NEW" or order.get("status") == "NEW"
