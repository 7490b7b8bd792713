"""Live paper trading: feeds, the SQLite journal, the runtime and its app (``trademl live``), and
the divergence report (``trademl live report``)."""

from trademl.live.ccxt_feed import CcxtFeed
from trademl.live.divergence import DivergenceReport, divergence_report
from trademl.live.feeds import Candle, Feed, FollowFeed, ReplayFeed
from trademl.live.journal import Journal
from trademl.live.runtime import Execution, LiveRuntime, SymbolTrader

__all__ = [
    "Candle",
    "CcxtFeed",
    "DivergenceReport",
    "Execution",
    "Feed",
    "FollowFeed",
    "Journal",
    "LiveRuntime",
    "ReplayFeed",
    "SymbolTrader",
    "divergence_report",
]
