"""Exceptions that users can cause and fix.

Every error raised on bad input derives from :class:`TradeMLError`. The message
names what is wrong (file, column, row, value, config key) and, where there is
one, how to fix it. The ``trademl`` command prints the message on one line and
exits with status 2.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "InsufficientDataError",
    "ModelError",
    "TradeMLError",
]


class TradeMLError(Exception):
    """Base class of every error a user can cause and fix."""


class DataError(TradeMLError, ValueError):
    """Input data is missing, unreadable or invalid (names file, column and row)."""


class InsufficientDataError(DataError):
    """Fewer rows than a computation needs; ``needed`` and ``got`` say how many."""

    def __init__(self, message: str, *, needed: int, got: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.got = got


class ConfigError(TradeMLError, ValueError):
    """A configuration value is unknown, missing or out of range."""


class ModelError(TradeMLError):
    """A model, registry entry or model version is missing or unusable."""
