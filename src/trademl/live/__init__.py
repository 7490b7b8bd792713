"""Live paper trading: feeds, the SQLite journal, the runtime and its app (``trademl live``)."""

from trademl.live.ccxt_feed import CcxtFeed
from trademl.live.feeds import Candle, Feed, FollowFeed, ReplayFeed
from trademl.live.journal import Journal
from trademl.live.runtime import Execution, LiveRuntime, SymbolTrader

__all__ = [
    "Candle",
    "CcxtFeed",
    "Execution",
    "Feed",
    "FollowFeed",
    "Journal",
    "LiveRuntime",
    "ReplayFeed",
    "SymbolTrader",
]
