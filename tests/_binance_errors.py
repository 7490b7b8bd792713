"""Make ccxt read the fake Binance's error codes as it reads Binance's own (tests only).

ccxt picks Binance's per-market error map by the request's host (``https://fapi.binance.com``
...); on 127.0.0.1 it falls back to the common map, where ``-2021`` (would immediately
trigger), ``-2022`` (reduce-only refused) or ``-4116`` (duplicate client id) are plain
``ExchangeError``. ``install()`` maps loopback URLs to the linear (USD-M) map, so the broker
meets the exception classes it meets in production. A ``trademl live`` subprocess gets it by
importing this module first (see ``tests/test_ccxt_broker.py``).
"""

from __future__ import annotations

import ccxt

_original = ccxt.binance.get_exceptions_by_url


def _by_url(self, url, exact_or_broad):
    if url and url.startswith("http://127.0.0.1"):
        return self.safe_dict(self.safe_dict(self.exceptions, "linear", {}), exact_or_broad, {})
    return _original(self, url, exact_or_broad)


def install() -> None:
    ccxt.binance.get_exceptions_by_url = _by_url


def uninstall() -> None:
    ccxt.binance.get_exceptions_by_url = _original
