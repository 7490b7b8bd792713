"""Orders on a real exchange through ccxt (``broker.type: ccxt``).

The broker knows nothing of strategies or books: it sends market orders and protective
(stop and take-profit) orders under the client order ids the runtime chose and journaled
first, finds them again by those ids, and reports what the exchange did (the filled amount,
the average price and the fees, from the exchange's own trades).

Sending is made safe to repeat. A network error or timeout while sending leaves it unknown
whether the exchange took the order; the broker then looks the order up by its client id,
waits ``resend_grace`` seconds and looks again before sending it once more, under the same
id, which exchanges refuse to execute twice. A restart does the same for every order the
journal holds as sent or about to be sent.

Credentials come only from environment variables (their names are configured, never their
values); ``ccxt_options`` may not hold them, and nothing here logs them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trademl.errors import ConfigError, DataError

__all__ = ["CREDENTIAL_KEYS", "BrokerError", "CcxtBroker", "OrderResult", "credentials"]

log = logging.getLogger("trademl.live")

CREDENTIAL_KEYS = ("apiKey", "secret", "password", "uid", "privateKey", "walletAddress", "token")


class BrokerError(DataError):
    """The exchange refused or lost something the session cannot trade on without."""


@dataclass
class OrderResult:
    """What the exchange did with one order."""

    status: str  # filled | partial | rejected | open | canceled | expired | crossed | missing
    filled: float = 0.0
    price: float = float("nan")  # the average fill price
    fee: float = 0.0
    exchange_id: str | None = None
    message: str = ""
    trades: list[str] = field(default_factory=list)  # the exchange's trade ids
    time: int | None = None  # ms of the last fill

    def record(self) -> dict[str, Any]:
        """The fields of a journal order row."""
        return {
            "status": self.status,
            "exchange_id": self.exchange_id,
            "filled": self.filled,
            "avg_price": None if self.price != self.price else self.price,
            "fee": self.fee,
            "detail": {"message": self.message, "trades": self.trades, "time": self.time},
        }


class CcxtBroker:
    """One ccxt exchange account (see the module docstring)."""

    def __init__(
        self,
        exchange: str,
        *,
        ccxt_options: dict[str, Any] | None = None,
        api_key_env: str = "TRADEML_EXCHANGE_API_KEY",
        secret_env: str = "TRADEML_EXCHANGE_SECRET",
        password_env: str | None = None,
        resend_grace: float = 12.0,
        backoff: float = 0.5,
        max_retries: int = 6,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import ccxt

        options = dict(ccxt_options or {})
        creds = credentials(options, api_key_env, secret_env, password_env)
        if exchange not in ccxt.exchanges:
            raise ConfigError(f"broker.exchange={exchange!r} is not a ccxt exchange id")
        # ccxt logs every request's headers (the API key among them) at DEBUG: through a
        # logger of ours that blanks the credentials out of every record
        options.setdefault("logger", _redacting_logger(creds.values()))
        self._ccxt, self.exchange_id = ccxt, exchange
        self.resend_grace, self.backoff, self.max_retries = resend_grace, backoff, max_retries
        self._sleep = sleep
        self.ex = getattr(ccxt, exchange)({**options, **creds, "enableRateLimit": True})
        window = (self.ex.options or {}).get("recvWindow")  # Binance's, in ms
        if window and resend_grace * 1000 <= float(window):
            raise ConfigError(
                f"broker.resend_grace={resend_grace} s does not exceed {exchange}'s receive "
                f"window ({float(window) / 1000:g} s): an order lost on its way could still be "
                f"executed after it is sent again; set broker.resend_grace above "
                f"{float(window) / 1000:g} (or lower ccxt_options.options.recvWindow)"
            )
        self.markets = self._retry(self.ex.load_markets, "loading the markets")

    # -- set-up checks -------------------------------------------------------------------------
    def check_market(self, symbol: str, size_step: float | None, min_size: float) -> None:
        """Refuse a market the exchange does not have, or sizes it would round or refuse."""
        if symbol not in self.markets:
            raise ConfigError(
                f"broker: {symbol!r} is not a market of {self.exchange_id} (a perpetual "
                "swap looks like BTC/USDT:USDT); the feed's symbol is the market traded"
            )
        market = self.markets[symbol]
        step = (market.get("precision") or {}).get("amount")
        if step and self.ex.precisionMode == self._ccxt.TICK_SIZE:
            ratio = (size_step or 0.0) / step
            if not size_step or abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
                raise ConfigError(
                    f"risk.size_step={size_step} does not fit {symbol}'s amount step {step} on "
                    f"{self.exchange_id}: the exchange would round every order; set "
                    f"risk.size_step to a multiple of {step}"
                )
        least = ((market.get("limits") or {}).get("amount") or {}).get("min")
        if least and min_size < least:
            raise ConfigError(
                f"risk.min_size={min_size} is below {symbol}'s minimum amount {least} on "
                f"{self.exchange_id}; set risk.min_size >= {least}"
            )

    @property
    def exchange_stops(self) -> bool:
        """Whether the exchange takes stop-loss and take-profit orders."""
        has = self.ex.has
        return bool(has.get("createStopLossOrder") and has.get("createTakeProfitOrder"))

    def position(self, symbol: str) -> float:
        """The account's signed position in ``symbol`` (contracts or base units)."""
        rows = self._retry(lambda: self.ex.fetch_positions([symbol]), "fetching the position")
        total = 0.0
        for row in rows:
            if row.get("symbol") != symbol:
                continue
            amount = float(row.get("contracts") or 0.0) * float(row.get("contractSize") or 1.0)
            total += -amount if row.get("side") == "short" else amount
        return total

    def now(self) -> int:
        """The exchange's clock, in ms."""
        return int(self._retry(self.ex.fetch_time, "fetching the time"))

    # -- orders --------------------------------------------------------------------------------
    def market(
        self, symbol: str, side: int, amount: float, client_id: str, *, reduce_only: bool
    ) -> OrderResult:
        """A market order; the exchange's result (looked up if the answer was lost)."""
        params = {"clientOrderId": client_id}
        if reduce_only:
            params["reduceOnly"] = True
        order = self._send(
            lambda: self.ex.create_order(
                symbol, "market", "buy" if side > 0 else "sell", amount, None, params
            ),
            symbol,
            client_id,
            conditional=False,
        )
        if isinstance(order, OrderResult):
            return order
        return self._filled(symbol, order, amount)

    def protect(
        self, symbol: str, kind: str, side: int, amount: float, price: float, client_id: str
    ) -> OrderResult:
        """A reduce-only stop (``kind="stop"``: a stop-market order triggered at ``price``)
        or target (``"target"``: a take-profit limit order at ``price``) that closes a
        position of ``side``. ``crossed`` if the price is already beyond it."""
        close = "sell" if side > 0 else "buy"
        params: dict[str, Any] = {"clientOrderId": client_id, "reduceOnly": True}
        if kind == "stop":
            params["stopLossPrice"] = price
            call = lambda: self.ex.create_order(symbol, "market", close, amount, None, params)  # noqa: E731
        else:
            params["takeProfitPrice"] = price
            call = lambda: self.ex.create_order(symbol, "limit", close, amount, price, params)  # noqa: E731
        order = self._send(call, symbol, client_id, conditional=True)
        if isinstance(order, OrderResult):
            return order
        return OrderResult("open", exchange_id=str(order.get("id")))

    def status(self, symbol: str, client_id: str, *, conditional: bool) -> dict | None:
        """The exchange's view of an order (ccxt's order structure), ``None`` if unknown."""
        params: dict[str, Any] = {"clientOrderId": client_id}
        if conditional:
            params["trigger"] = True
        try:
            return self._retry(
                lambda: self.ex.fetch_order(None, symbol, params), f"looking up {client_id}"
            )
        except BrokerError as exc:
            if isinstance(exc.__cause__, self._ccxt.OrderNotFound):
                return None
            raise

    def cancel(self, symbol: str, client_id: str, *, conditional: bool) -> None:
        """Cancel a resting order; an order already gone (filled, cancelled) is fine."""
        params: dict[str, Any] = {"clientOrderId": client_id}
        if conditional:
            params["trigger"] = True
        try:
            self._retry(
                lambda: self.ex.cancel_order(None, symbol, params), f"cancelling {client_id}"
            )
        except BrokerError as exc:
            if not isinstance(exc.__cause__, self._ccxt.OrderNotFound | self._ccxt.InvalidOrder):
                raise

    def result(
        self, symbol: str, client_id: str, *, conditional: bool, amount: float
    ) -> OrderResult:
        """What became of an order sent earlier (``missing`` if the exchange never got it)."""
        order = self.status(symbol, client_id, conditional=conditional)
        if order is None:
            return OrderResult("missing")
        if conditional and order.get("status") == "open":
            return OrderResult("open", exchange_id=str(order.get("id")))
        if conditional and order.get("status") in ("canceled", "expired", "rejected"):
            return OrderResult(str(order["status"]), exchange_id=str(order.get("id")))
        if conditional:  # triggered: the fills are the closing trades since it was placed
            return OrderResult("triggered", exchange_id=str(order.get("id")))
        return self._filled(symbol, order, amount)

    def closing_fills(self, symbol: str, side: int, since_ms: int, seen: set[str]) -> OrderResult:
        """The trades closing a position of ``side`` since ``since_ms`` (not in ``seen``),
        paged a week at a time (Binance answers at most 7 days a request) up to now."""
        week, end = 7 * 86_400_000, self.now()
        trades, start = [], int(since_ms or 0)
        start = max(start, end - 52 * week)  # a year back at most
        while start <= end:
            page = self._retry(
                lambda s=start: self.ex.fetch_my_trades(
                    symbol, s, 1000, {"endTime": min(s + week - 1, end)}
                ),
                "fetching the account's trades",
            )
            trades += page
            if len(page) >= 1000:  # a full page: go on from its last trade
                start = int(page[-1]["timestamp"]) + 1
            else:
                start += week
        close = "sell" if side > 0 else "buy"
        mine = [t for t in trades if t.get("side") == close and str(t.get("id")) not in seen]
        return _aggregate(mine, "filled")

    def order_fills(
        self, symbol: str, order: dict, side: int, since_ms: int | None, seen: set[str]
    ) -> OrderResult:
        """The fills of a triggered stop or take-profit: the trades of the order it became
        (Binance says which in ``actualOrderId``), else the closing trades since it was
        placed."""
        actual = (order.get("info") or {}).get("actualOrderId")
        if actual:
            trades = self._retry(
                lambda: self.ex.fetch_my_trades(symbol, None, None, {"orderId": str(actual)}),
                f"fetching the fills of order {actual}",
            )
            return _aggregate([t for t in trades if str(t.get("id")) not in seen], "filled")
        return self.closing_fills(symbol, side, since_ms or 0, seen)

    # -- plumbing ------------------------------------------------------------------------------
    def _filled(self, symbol: str, order: dict, amount: float) -> OrderResult:
        """A market order's result from its trades (fees are in the trades, not the order)."""
        oid = str(order.get("id"))
        filled = float(order.get("filled") or 0.0)
        if filled <= 0:
            status = order.get("status") or "rejected"
            return OrderResult(
                "rejected", exchange_id=oid, message=f"nothing filled (exchange status {status})"
            )
        trades = self._retry(
            lambda: self.ex.fetch_my_trades(symbol, None, None, {"orderId": oid}),
            f"fetching the fills of order {oid}",
        )
        result = _aggregate(trades, "filled")
        if result.filled <= 0:  # the trades are not listed yet: the order's own figures
            result = OrderResult("filled", filled, float(order.get("average") or "nan"))
        result.exchange_id = oid
        if result.filled < amount * (1 - 1e-9):
            result.status = "partial"
            result.message = f"filled {result.filled} of {amount}"
        return result

    def _send(self, call, symbol: str, client_id: str, *, conditional: bool):
        """Send an order; when the outcome is unknown (a network error, a timeout, an
        answer the exchange itself calls unknown, a duplicate client id) find it by its
        client id, and send it again (same id) only when the exchange still does not know it
        ``resend_grace`` seconds after it was sent. Returns ccxt's order, or an
        :class:`OrderResult` for a refusal."""
        ccxt = self._ccxt
        for attempt in range(1, self.max_retries + 1):
            sent = time.monotonic()
            try:
                return call()
            except ccxt.AuthenticationError as exc:
                raise BrokerError(
                    f"{self.exchange_id} refused the credentials ({_describe(exc)}); check the "
                    "API key and secret in the environment variables broker.api_key_env and "
                    "broker.secret_env name"
                ) from exc
            except ccxt.BaseError as exc:
                text = _describe(exc)
                duplicate = isinstance(exc, ccxt.DuplicateOrderId) or "duplicate" in text.lower()
                if isinstance(exc, ccxt.OrderImmediatelyFillable) or "immediately trigger" in text:
                    return OrderResult("crossed", message=text)
                refused = (ccxt.InvalidOrder, ccxt.InsufficientFunds, ccxt.BadRequest)
                refused += (ccxt.OperationRejected, ccxt.PermissionDenied)
                if isinstance(exc, refused) and not duplicate:
                    return OrderResult("rejected", message=text)
                log.warning(
                    "order %s: %s; looking it up before sending it again (attempt %d)",
                    client_id,
                    text,
                    attempt,
                )
                found = self._find(symbol, client_id, conditional, sent)
                if found is not None:
                    return found
                self._sleep(min(self.backoff * 2 ** (attempt - 1), 30.0))
        raise BrokerError(
            f"order {client_id} on {self.exchange_id}: no answer after {self.max_retries} "
            "attempts; the session stops (a restart looks it up again and never sends it twice)"
        )

    def _find(self, symbol: str, client_id: str, conditional: bool, sent: float) -> dict | None:
        """The order if the exchange knows it, waiting until ``resend_grace`` seconds after
        it was ``sent`` (monotonic) before concluding it does not."""
        order = self.status(symbol, client_id, conditional=conditional)
        wait = sent + self.resend_grace - time.monotonic()
        if order is None and wait > 0:
            self._sleep(wait)  # a request still on its way may arrive now
            order = self.status(symbol, client_id, conditional=conditional)
        return order

    def _retry(self, call: Callable[[], Any], what: str) -> Any:
        """A read (or an idempotent call) retried on network errors; refusals raise
        :class:`BrokerError` with the ccxt exception as its cause."""
        ccxt = self._ccxt
        delay = self.backoff
        for attempt in range(1, self.max_retries + 1):
            try:
                return call()
            except (ccxt.NetworkError, ccxt.ExchangeNotAvailable) as exc:
                if attempt == self.max_retries:
                    raise BrokerError(
                        f"{self.exchange_id}: {what} failed {attempt} times, last: {_describe(exc)}"
                    ) from exc
                log.warning(
                    "%s: %s: %s; retrying in %.3g s", self.exchange_id, what, _describe(exc), delay
                )
                self._sleep(delay)
                delay = min(delay * 2, 30.0)
            except ccxt.BaseError as exc:
                raise BrokerError(f"{self.exchange_id}: {what}: {_describe(exc)}") from exc
        raise AssertionError("unreachable")  # pragma: no cover


_ENV_KEYS = {"apiKey": "api_key_env", "secret": "secret_env", "password": "password_env"}


def credentials(
    ccxt_options: dict[str, Any] | None,
    api_key_env: str,
    secret_env: str,
    password_env: str | None,
) -> dict[str, str]:
    """The exchange's credentials from the environment; refuses them in ``ccxt_options``
    and names an unset variable (checked before a session starts)."""
    given = _credential_keys(ccxt_options or {})
    unsafe = [k for k in ("verbose", "headers") if (ccxt_options or {}).get(k)]
    if unsafe:
        raise ConfigError(
            f"broker.ccxt_options.{unsafe[0]}: ccxt would print or send the request headers "
            "(the API key among them) outside trademl's logs; leave it out (DEBUG logging of "
            "trademl.live.exchange shows the requests with the credentials blanked out)"
        )
    if given:
        raise ConfigError(
            f"broker.ccxt_options holds {', '.join(given)}: credentials are taken only "
            "from environment variables (broker.api_key_env, broker.secret_env, "
            "broker.password_env), so that they never reach a config file, a log or MLflow"
        )
    creds = {}
    names = {"apiKey": api_key_env, "secret": secret_env, "password": password_env}
    for key, env in names.items():
        if env is None:
            continue
        value = os.environ.get(env)
        if not value:
            raise ConfigError(
                f"broker: the environment variable {env} (broker.{_ENV_KEYS[key]}) is not "
                f"set; export the exchange's {key} in it before starting"
            )
        creds[key] = value
    return creds


def _credential_keys(options: Any, path: str = "") -> list[str]:
    """The credential keys anywhere in a nested mapping (``options.apiKey`` too)."""
    found = []
    if isinstance(options, dict):
        for key, value in options.items():
            name = f"{path}{key}"
            if key in CREDENTIAL_KEYS:
                found.append(name)
            found += _credential_keys(value, name + ".")
    return found


class _Redact(logging.Filter):
    """Blanks the given secrets out of every record of the logger it is on."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if any(s in text for s in self.secrets):
            for secret in self.secrets:
                text = text.replace(secret, "***")
            record.msg, record.args = text, None
        return True


def _redacting_logger(secrets) -> logging.Logger:
    logger = logging.getLogger("trademl.live.exchange")
    for old in [f for f in logger.filters if isinstance(f, _Redact)]:
        logger.removeFilter(old)
    logger.addFilter(_Redact(list(secrets)))
    return logger


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def _aggregate(trades: list[dict], status: str) -> OrderResult:
    amount = sum(float(t.get("amount") or 0.0) for t in trades)
    if amount <= 0:
        return OrderResult(status, 0.0)
    prices = {float(t.get("price") or 0.0) for t in trades}
    if len(prices) == 1:  # one price: itself, not a weighted mean that may round it
        price = prices.pop()
    else:
        cost = sum(float(t.get("amount") or 0.0) * float(t.get("price") or 0.0) for t in trades)
        price = cost / amount
    fee = sum(float((t.get("fee") or {}).get("cost") or 0.0) for t in trades)
    times = [int(t["timestamp"]) for t in trades if t.get("timestamp") is not None]
    return OrderResult(
        status,
        amount,
        price,
        fee,
        trades=[str(t.get("id")) for t in trades],
        time=max(times) if times else None,
    )
